"""Bring a bundle written before bundles carried a digest up to date, without changing its function.

    python tools/upgrade_bundle.py BUNDLE [BUNDLE ...]

Checks every file against the SHA-256 that bundle.json already records (a damaged bundle is refused, not
upgraded), adds the raw-observation golden pairs (integer bundles; computed by the ``int`` reference, so
they pin the function as it is) and the digest, and rewrites the bundle in place. The integer arrays, the
float state, the ONNX model and the code golden vectors are written back byte for byte.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from qpolicy_hw.bundle import (  # noqa: E402
    FLOAT_STATE_FILE,
    GOLDEN_IN,
    GOLDEN_OUT,
    KNOWN_FILES,
    ONNX_FILE,
    Bundle,
    BundleError,
    _read_npz,
    _regular_file,
    bundle_digest,
    load_bundle,
    sha256_bytes,
    validate,
    write_bundle,
)


def upgrade(path: Path) -> str:
    meta = json.loads((path / "bundle.json").read_text())
    if "digest" in meta:
        return f"{path}: already has a digest ({meta['digest'][:16]}...)"
    blobs = {}
    for name, digest in meta["files"].items():
        if name not in KNOWN_FILES:
            raise BundleError(f"{path}: unknown file {name!r}")
        blobs[name] = _regular_file(path, name, 1 << 28)
        if sha256_bytes(blobs[name]) != digest:
            raise BundleError(f"{path}: SHA-256 mismatch for {name}; not upgrading a damaged bundle")
    arrays = _read_npz(blobs["arrays.npz"], "arrays.npz", set(meta.get("arrays", {}))) if "arrays.npz" in blobs else {}
    float_state = _read_npz(blobs[FLOAT_STATE_FILE], FLOAT_STATE_FILE, None) if FLOAT_STATE_FILE in blobs else None
    probe = Bundle(path=path, meta=meta, arrays=arrays, float_state=float_state)
    validate(probe)
    golden = golden_raw = None
    if probe.is_integer:
        from qpolicy_train.export import golden_observations

        golden = tuple(np.load(path / n, allow_pickle=False) for n in (GOLDEN_IN, GOLDEN_OUT))
        golden_raw = golden_observations(probe)
    content = {k: v for k, v in meta.items() if k not in ("files", "arrays", "schema")}
    write_bundle(path, content, arrays, float_state, blobs.get(ONNX_FILE), golden, golden_raw)
    for name in meta["files"]:   # the old files come back unchanged
        if sha256_bytes((path / name).read_bytes()) != meta["files"][name]:
            raise BundleError(f"{path}: {name} changed while upgrading")
    new = load_bundle(path)
    assert new.digest == bundle_digest(new.meta)
    return f"{path}: digest {new.digest[:16]}..." + (" and raw golden pairs added" if golden_raw else " added")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(upgrade(Path(arg)))

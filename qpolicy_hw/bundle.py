"""The policy bundle: one directory that carries the integer function and everything needed to trust it.

Layout (safe formats only; nothing is unpickled)::

    bundle.json        schema, task, normalization, bit widths, scales, layers, provenance, SHA-256 of every file
    arrays.npz         integer weights, biases, thresholds and the action table
    float_state.npz    the actor's float (Brevitas) parameters, for the ``float`` backend and the float rungs
    model.onnx         QONNX graph of the quantized actor (interchange with FINN/hls4ml)
    golden/q_in.npy    input codes for hardware bring-up
    golden/q_out.npy   the output codes the integer reference gives for them
    golden/obs.npy     raw (un-normalized) observations ...
    golden/actions.npy ... and the actions the whole host path gives for them (normalize, quantize, core, table)

``bundle.json``'s ``digest`` is the SHA-256 of its own content (every field but ``provenance``, which only
records where the bundle came from) and so, through ``files``, of every file: one value a user compares,
that ``qpolicy verify`` prints and the hardware carries (the ``BUNDLE_HASH`` register). Loading checks the
digest, every file hash, and every field the integer function uses; each failure is one line naming it.

Every file read is bounded (``bundle_files``), every field checked (``bundle_schema``), and an integer bundle
must carry its golden vectors: loading self-tests the function against them, so a re-hashed semantic edit is
refused unless its golden files were forged with it (a signature or a pinned digest covers that case:
``trust.py``). This module imports numpy only, so the ``int`` runtime runs on a board without torch or ROS.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from qpolicy_hw.bundle_files import (  # noqa: F401  the names callers import from here
    MAX_GOLDEN_BYTES,
    MAX_META_BYTES,
    MAX_NPZ_BYTES,
    MAX_ONNX_BYTES,
    npy_bytes,
    npz_bytes,
    read_npy,
    read_npz,
    regular_file,
    sha256_bytes,
)
from qpolicy_hw.bundle_schema import (  # noqa: F401
    GOLDEN_ACTIONS,
    GOLDEN_FILES,
    GOLDEN_IN,
    GOLDEN_OBS,
    GOLDEN_OUT,
    Bundle,
    Layer,
    check_digest,
    check_env_id,
    check_golden,
    validate,
)
from qpolicy_hw.core_function import bundle_layers, chain_codes
from qpolicy_hw.errors import BundleError
from qpolicy_hw.host_float import normalize_observation, quantize_input
from qpolicy_hw.integer_ranges import (  # noqa: F401
    channel_acc_range,
    code_range,
    signed_range,
    signed_width,
    unsigned_range,
)
from qpolicy_hw.trust import TrustPolicy

SCHEMA = "qpolicy.bundle/1"
ARRAYS_FILE = "arrays.npz"
FLOAT_STATE_FILE = "float_state.npz"
ONNX_FILE = "model.onnx"
FILE_LIMITS = {ARRAYS_FILE: MAX_NPZ_BYTES, FLOAT_STATE_FILE: MAX_NPZ_BYTES, ONNX_FILE: MAX_ONNX_BYTES,
               **{name: MAX_GOLDEN_BYTES for name in GOLDEN_FILES}}
"""The only files a bundle may list, each with the most bytes loading reads of it."""
KNOWN_FILES = tuple(FILE_LIMITS)
UNDIGESTED = ("provenance", "digest")
REGENERATE_GOLDEN = "re-export it from its training run (qpolicy export RUN --out DIR) to regenerate them"


# --- writing ----------------------------------------------------------------------------------
def bundle_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of bundle.json's content without ``provenance`` and the digest itself (canonical JSON)."""
    content = {k: v for k, v in meta.items() if k not in UNDIGESTED}
    return sha256_bytes(json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())


def write_bundle(out_dir: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                 float_state: dict[str, np.ndarray] | None, onnx_bytes: bytes | None,
                 golden: tuple[np.ndarray, np.ndarray] | None,
                 golden_raw: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Write a bundle directory; bundle.json records the SHA-256 of every other file and its own digest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    if arrays:
        files[ARRAYS_FILE] = npz_bytes(arrays)
    if float_state is not None:
        files[FLOAT_STATE_FILE] = npz_bytes(float_state)
    if onnx_bytes is not None:
        files[ONNX_FILE] = onnx_bytes
    if golden is not None:
        files[GOLDEN_IN] = npy_bytes(golden[0])
        files[GOLDEN_OUT] = npy_bytes(golden[1])
    if golden_raw is not None:
        files[GOLDEN_OBS] = npy_bytes(np.asarray(golden_raw[0], dtype=np.float64))
        files[GOLDEN_ACTIONS] = npy_bytes(np.asarray(golden_raw[1], dtype=np.float64))
    meta = dict(meta)
    meta["schema"] = SCHEMA
    meta["files"] = {name: sha256_bytes(data) for name, data in sorted(files.items())}
    meta["arrays"] = {name: {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": sha256_bytes(npy_bytes(a))}
                      for name, a in sorted(arrays.items())}
    meta["digest"] = bundle_digest(meta)
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    _write_meta(out, meta)
    return out


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    (out / "bundle.json").write_text(json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n")


def record_evaluation(path: str | Path, evaluation: dict[str, Any]) -> None:
    """Add an evaluation to a bundle's provenance (bundle.json only; the digest and the files stay as they are)."""
    bundle = load_bundle(path)
    bundle.meta.setdefault("provenance", {})["evaluation"] = evaluation
    _write_meta(bundle.path, bundle.meta)



# --- reading: only regular files inside the bundle, bounded, no pickle -------------------------
def _no_constants(token: str):
    raise ValueError(f"{token} is not a number JSON allows")


def _read_meta(meta_path: Path) -> dict[str, Any]:
    data = regular_file(meta_path.parent, meta_path.name, MAX_META_BYTES)
    try:
        meta = json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise BundleError(f"{meta_path}: bundle.json is not UTF-8 text") from None
    except RecursionError:
        raise BundleError(f"{meta_path}: bundle.json is nested too deeply") from None
    except ValueError as exc:
        raise BundleError(f"{meta_path}: bundle.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "schema" not in meta:
        raise BundleError(f"{meta_path}: no schema field; not a qpolicy bundle")
    if meta["schema"] != SCHEMA:
        raise BundleError(f"{meta_path}: schema {meta['schema']!r} is not supported (expected {SCHEMA!r})")
    return meta


def load_bundle(path: str | Path, verify_hashes: bool = True, trust: TrustPolicy | None = None) -> Bundle:
    """Load and validate a bundle; any inconsistency raises :class:`BundleError` naming it, in one line.

    Besides the digest, the hashes and the fields, loading runs a self-test: the integer function must
    reproduce the bundle's golden codes and, from raw observations, its golden actions (a few milliseconds),
    so a semantic edit that was re-hashed is still refused unless its golden files were forged with it.
    ``verify_hashes=False`` skips the digest and the file hashes (for tools that rewrite a bundle). With an
    active ``trust`` policy, a bundle it does not accept is refused right after the digest check."""
    if trust is not None and trust.active and not verify_hashes:
        raise ValueError("a trust policy needs the digest verified")
    root = Path(path)
    if not root.exists():
        raise BundleError(f"no policy bundle at {root}")
    meta_path = root / "bundle.json" if root.is_dir() else root
    root = meta_path.parent
    if not meta_path.exists():
        raise BundleError(f"{root}: not a policy bundle (no bundle.json)")
    meta = _read_meta(meta_path)
    try:
        return _load(root, meta, verify_hashes, trust)
    except BundleError:
        raise
    except RecursionError:
        raise BundleError(f"{root}: bundle.json is nested too deeply") from None
    except Exception as exc:  # a field of the wrong type that no check above named: still one line
        raise BundleError(f"{root}: malformed bundle.json ({type(exc).__name__}: {str(exc)[:120]})") from None




def _load(root: Path, meta: dict[str, Any], verify_hashes: bool, trust: TrustPolicy | None = None) -> Bundle:
    for key in ("kind", "task", "normalization", "files", "digest"):
        if key not in meta:
            raise BundleError(f"{root}: bundle.json has no {key!r} field" + (
                "; it was written by an older qpolicy: re-export it (qpolicy export RUN --out DIR)"
                if key == "digest" else ""))
    try:
        check_digest(meta["digest"])
    except BundleError as exc:
        raise BundleError(f"{root}: {exc}") from None
    if verify_hashes and meta["digest"] != bundle_digest(meta):
        raise BundleError(f"{root}: bundle.json changed after export (its content does not match its digest "
                          f"{str(meta['digest'])[:16]}...)")
    if trust is not None and trust.active:
        trust.check(root, meta["digest"])
    files = meta["files"]
    if not isinstance(files, dict):
        raise BundleError(f"{root}: bundle.json 'files' must map file names to SHA-256 digests")
    if meta["kind"] == "integer" and not set(GOLDEN_FILES) <= set(files):
        missing = ", ".join(sorted(set(GOLDEN_FILES) - set(files)))
        raise BundleError(f"{root}: an integer bundle without its golden vectors ({missing}) cannot be "
                          f"self-tested; {REGENERATE_GOLDEN}")
    blobs: dict[str, bytes] = {}
    for name, digest in files.items():
        if name not in FILE_LIMITS:
            raise BundleError(f"{root}: bundle.json lists {str(name)[:60]!r}, which is not a bundle file "
                              f"(expected some of {', '.join(KNOWN_FILES)})")
        blobs[name] = regular_file(root, name, FILE_LIMITS[name])
        if verify_hashes and sha256_bytes(blobs[name]) != digest:
            raise BundleError(f"{root}: SHA-256 mismatch for {name} (file changed or corrupt)")
    declared = meta.get("arrays", {})
    if not isinstance(declared, dict):
        raise BundleError(f"{root}: bundle.json 'arrays' must be a mapping")
    arrays = read_npz(blobs[ARRAYS_FILE], ARRAYS_FILE, set(declared)) if ARRAYS_FILE in blobs else {}
    float_state = read_npz(blobs[FLOAT_STATE_FILE], FLOAT_STATE_FILE, None) if FLOAT_STATE_FILE in blobs else None
    bundle = Bundle(path=root, meta=meta, arrays=arrays, float_state=float_state)
    validate(bundle)
    golden = {n: read_npy(blobs[n], n) for n in GOLDEN_FILES if n in blobs}
    check_golden(bundle, golden)
    if bundle.is_integer:
        self_test(bundle, golden)
    return bundle


def self_test(bundle: Bundle, golden: dict[str, np.ndarray]) -> None:
    """The integer function, composed from the contract's own steps, must give the golden codes from the
    golden input codes and the golden actions from the golden raw observations."""
    layers = bundle_layers(bundle)
    if not np.array_equal(chain_codes(layers, golden[GOLDEN_IN]), golden[GOLDEN_OUT]):
        raise BundleError(f"{GOLDEN_OUT}: the integer function does not reproduce its golden codes "
                          "(a weight, bias or threshold changed)")
    norm = bundle.normalization
    normalized = normalize_observation(golden[GOLDEN_OBS], np.asarray(norm["mean"], dtype=np.float64),
                                       np.asarray(norm["var"], dtype=np.float64), norm["clip"], norm["epsilon"])
    q_out = chain_codes(layers, quantize_input(normalized, bundle.input_scale, bundle.bits["input"]))
    lo = layers[-1].out_range[0]
    actions = bundle.action_table[np.arange(bundle.act_dim), q_out - lo]
    if not np.array_equal(actions, golden[GOLDEN_ACTIONS]):
        raise BundleError(f"{GOLDEN_ACTIONS}: the bundle does not reproduce its golden actions from raw "
                          "observations (the normalization, a scale or the action table changed)")

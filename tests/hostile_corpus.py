"""A corpus of crafted bundles, each a copy of a good one with one hostile change, re-hashed with the project's
own functions (as an attacker who can write a bundle would), and a probe that loads each as a server does.

``python -m tests.hostile_corpus PROBE CORPUS_DIR`` loads every case with ``make_policy(case, "int")`` (which
also builds the compiled library of a bundle that passes) and prints one JSON line per case, then the peak RSS.
"""
from __future__ import annotations

import io
import json
import resource
import shutil
import struct
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from qpolicy_hw.bundle import bundle_digest, npy_bytes, npz_bytes, sha256_bytes

CONSTRUCTOR = ("Hopper-v5 */ __attribute__((constructor)) static void p(void){{ "
               "extern int system(const char*); system(\"touch {marker}\"); }} /*")


def rehash(path: Path) -> None:
    """Recompute every file hash, the array table and the digest, as anyone can."""
    meta = json.loads((path / "bundle.json").read_text())
    for name in list(meta.get("files", {})):
        if (path / name).is_file() and not (path / name).is_symlink():
            meta["files"][name] = sha256_bytes((path / name).read_bytes())
    if (path / "arrays.npz").is_file() and isinstance(meta.get("arrays"), dict):
        try:
            with np.load(path / "arrays.npz", allow_pickle=False) as z:
                meta["arrays"] = {k: {"shape": list(z[k].shape), "dtype": z[k].dtype.str,
                                      "sha256": sha256_bytes(npy_bytes(z[k]))} for k in z.files}
        except Exception:  # a deliberately broken archive keeps its old table
            pass
    meta["digest"] = bundle_digest(meta)
    (path / "bundle.json").write_text(json.dumps(meta, indent=1))


def _meta(path: Path) -> dict:
    return json.loads((path / "bundle.json").read_text())


def _set_meta(path: Path, meta: dict) -> None:
    (path / "bundle.json").write_text(json.dumps(meta))


def _arrays(path: Path) -> dict:
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _edit_meta(fn):
    def mutate(path: Path, marker: Path) -> None:
        meta = _meta(path)
        fn(meta, marker)
        _set_meta(path, meta)
    return mutate


def _edit_arrays(fn):
    def mutate(path: Path, marker: Path) -> None:
        arrays = _arrays(path)
        fn(arrays)
        (path / "arrays.npz").write_bytes(npz_bytes(arrays))
    return mutate


def _zip_bomb(members: int, size: int):
    """An archive of ``members`` deflated zero arrays of ``size`` bytes each (a few MB on disk)."""
    def mutate(path: Path, marker: Path) -> None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for i in range(members):
                head = io.BytesIO()
                np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": (size,)})
                with zf.open(zipfile.ZipInfo(f"layer{i}.weight.npy"), "w", force_zip64=True) as f:
                    f.write(head.getvalue())
                    chunk = bytes(1 << 22)
                    for _ in range(size // len(chunk)):
                        f.write(chunk)
        (path / "arrays.npz").write_bytes(buf.getvalue())
    return mutate


def _understated_member(path: Path, marker: Path) -> None:
    """A member whose zip headers say 1 KB but whose stream inflates to 64 MiB."""
    arrays = _arrays(path)
    name = sorted(arrays)[0]
    big = np.zeros(64 << 20, np.uint8)
    raw = npz_bytes({**arrays, name: big})
    comp = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(comp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(zipfile.ZipInfo(info.filename), src.read(info))
    data = bytearray(comp.getvalue())
    target = f"{name}.npy".encode()
    pos = 0
    while (pos := data.find(b"PK\x03\x04", pos)) >= 0:      # local headers: uncompressed size at +22
        n = struct.unpack_from("<H", data, pos + 26)[0]
        if data[pos + 30:pos + 30 + n] == target:
            struct.pack_into("<I", data, pos + 22, 1024)
        pos += 4
    pos = 0
    while (pos := data.find(b"PK\x01\x02", pos)) >= 0:      # central directory: uncompressed size at +24
        n = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46:pos + 46 + n] == target:
            struct.pack_into("<I", data, pos + 24, 1024)
        pos += 4
    (path / "arrays.npz").write_bytes(bytes(data))


def _npy_header_lies(path: Path, marker: Path) -> None:
    """A golden file whose header declares 2^40 elements over 0 bytes of data."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<i2", "fortran_order": False, "shape": (1 << 38, 11)})
    (path / "golden" / "q_in.npy").write_bytes(b"\x93NUMPY\x01\x00" + head.getvalue()[8:])


def _pickled_member(path: Path, marker: Path) -> None:
    arrays = _arrays(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in arrays.items():
            member = io.BytesIO()
            if k == sorted(arrays)[0]:
                np.lib.format.write_array(member, np.array([print], dtype=object), allow_pickle=True)
            else:
                np.lib.format.write_array(member, v)
            zf.writestr(f"{k}.npy", member.getvalue())
    (path / "arrays.npz").write_bytes(buf.getvalue())


def _golden_rows(rows: int):
    def mutate(path: Path, marker: Path) -> None:
        q = np.load(path / "golden" / "q_in.npy")
        out = np.load(path / "golden" / "q_out.npy")
        reps = -(-rows // len(q))
        (path / "golden" / "q_in.npy").write_bytes(npy_bytes(np.tile(q, (reps, 1))[:rows]))
        (path / "golden" / "q_out.npy").write_bytes(npy_bytes(np.tile(out, (reps, 1))[:rows]))
    return mutate


def _drop_golden_and_scale_input(path: Path, marker: Path) -> None:
    meta = _meta(path)
    meta["files"] = {k: v for k, v in meta["files"].items() if not k.startswith("golden/")}
    meta["quant"]["input_scale"] *= 1.5
    _set_meta(path, meta)
    shutil.rmtree(path / "golden")


def _symlink(path: Path, marker: Path) -> None:
    (path / "golden" / "obs.npy").unlink()
    (path / "golden" / "obs.npy").symlink_to("/etc/passwd")


def _file(name: str, size: int):
    def mutate(path: Path, marker: Path) -> None:
        with open(path / name, "wb") as f:
            f.truncate(size)
        meta = _meta(path)
        meta["files"][name] = "0" * 64
        _set_meta(path, meta)
    return mutate


def _many_members(path: Path, marker: Path) -> None:
    arrays = _arrays(path)
    arrays.update({f"extra{i}": np.zeros(1, np.int8) for i in range(100)})
    (path / "arrays.npz").write_bytes(npz_bytes(arrays))


def _lzma_member(path: Path, marker: Path) -> None:
    arrays = _arrays(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_LZMA) as zf:
        for k, v in arrays.items():
            zf.writestr(f"{k}.npy", npy_bytes(v))
    (path / "arrays.npz").write_bytes(buf.getvalue())


def _member_path(path: Path, marker: Path) -> None:
    arrays = _arrays(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in arrays.items():
            zf.writestr(f"../{k}.npy" if k == sorted(arrays)[0] else f"{k}.npy", npy_bytes(v))
    (path / "arrays.npz").write_bytes(buf.getvalue())


def _weights(delta):
    def fn(arrays):
        w = next(k for k in sorted(arrays) if k.endswith(".weight"))
        arrays[w] = delta(arrays[w])
    return fn


def _thresholds_unsorted(arrays):
    t = next(k for k in sorted(arrays) if k.endswith(".thresholds"))
    arrays[t] = arrays[t][:, ::-1].copy()


def _table(value):
    def fn(arrays):
        arrays["action_table"] = arrays["action_table"].copy()
        arrays["action_table"][0, 0] = value
    return fn


def _nested(path: Path, marker: Path) -> None:
    """100,000 levels of nesting in the (undigested) provenance: the digest stays valid."""
    text = (path / "bundle.json").read_text()
    (path / "bundle.json").write_text(text.replace('"provenance": {', '"provenance": {"deep": '
                                                   + '{"x":' * 100_000 + "{}" + "}" * 100_000 + ", ", 1))


def _set(path_keys: tuple, value):
    def fn(meta, marker):
        target = meta
        for k in path_keys[:-1]:
            target = target[k] if not isinstance(k, int) else target[k]
        target[path_keys[-1]] = value(meta, marker) if callable(value) else value
    return fn


CASES = {
    # strings that would become code
    "env_id_c_constructor": _edit_meta(_set(("task", "env_id"), lambda m, marker: CONSTRUCTOR.format(marker=marker))),
    "env_id_module_import": _edit_meta(_set(("task", "env_id"), "this:Hopper-v5")),
    "env_id_newline": _edit_meta(_set(("task", "env_id"), "Hopper-v5\n#include </etc/passwd>")),
    "env_id_quote": _edit_meta(_set(("task", "env_id"), 'Hopper-v5"; system("touch x')),
    "env_id_not_a_string": _edit_meta(_set(("task", "env_id"), ["Hopper-v5"])),
    "env_id_empty": _edit_meta(_set(("task", "env_id"), "")),
    "layer_name_verilog": _edit_meta(_set(("layers", 0, "name"), "l0; initial $system(\"touch x\")")),
    "layer_name_unicode": _edit_meta(_set(("layers", 0, "name"), "ℓayer0")),
    "digest_not_hex": _edit_meta(_set(("digest",), "*/ system(\"touch x\"); /*" + "0" * 40)),
    "provenance_strings": _edit_meta(_set(("provenance", "note"), "*/ __attribute__((constructor)) /* $(touch x)")),
    # memory and time
    "npz_zip_bomb": _zip_bomb(10, 256 << 20),
    "npz_understated_member": _understated_member,
    "npy_header_lies": _npy_header_lies,
    "npz_pickled_member": _pickled_member,
    "npz_100_members": _many_members,
    "npz_lzma": _lzma_member,
    "npz_member_path": _member_path,
    "golden_million_rows": _golden_rows(1_000_000),
    "golden_5000_rows": _golden_rows(5000),
    "bundle_json_20mb": _edit_meta(_set(("provenance", "pad"), "x" * (20 << 20))),
    "bundle_json_nested": _nested,
    "onnx_40mb": _file("model.onnx", 40 << 20),
    "obs_dim_huge": _edit_meta(_set(("task", "obs_dim"), 1 << 30)),
    "in_features_huge": _edit_meta(_set(("layers", 0, "in_features"), 1 << 20)),
    # the self-test and the fields
    "no_golden_scaled_input": _drop_golden_and_scale_input,
    "input_scale_scaled": _edit_meta(lambda m, marker: m["quant"].__setitem__("input_scale", m["quant"]["input_scale"] * 1.5)),
    "weights_changed": _edit_arrays(_weights(lambda w: np.clip(w + 1, -2, 1).astype(w.dtype))),
    "thresholds_unsorted": _edit_arrays(_thresholds_unsorted),
    "action_table_inf": _edit_arrays(_table(np.inf)),
    "action_table_outside_box": _edit_arrays(_table(5.0)),
    "acc_bits_too_small": _edit_meta(_set(("layers", 0, "acc_bits"), 3)),
    "safe_action_outside": _edit_meta(lambda m, marker: m["task"].__setitem__("safe_action", [9.0] * m["task"]["act_dim"])),
    "normalization_nan": _edit_meta(_set(("normalization", "mean", 0), float("nan"))),
    "files_traversal": _edit_meta(lambda m, marker: m["files"].__setitem__("../../../etc/passwd", "0" * 64)),
    "files_unknown": _edit_meta(lambda m, marker: m["files"].__setitem__("evil.py", "0" * 64)),
    "symlink_golden": _symlink,
    "schema_other": _edit_meta(_set(("schema",), "qpolicy.bundle/99")),
    "float_kind_without_state": _edit_meta(lambda m, marker: (m.__setitem__("kind", "float"),
                                                               m["files"].pop("float_state.npz", None))),
}
"""case -> mutation; the acceptance asks for at least 30."""

RESCUE_REHASH = {"digest_not_hex", "bundle_json_nested", "normalization_nan"}
"""Cases whose hostile part is the digest itself, or text the project's JSON writer refuses to produce."""


def build_corpus(base: Path, out: Path, marker: Path) -> list[str]:
    for name, mutate in CASES.items():
        case = out / name
        shutil.copytree(base, case, symlinks=True)
        mutate(case, marker)
        if name not in RESCUE_REHASH:
            rehash(case)
    return list(CASES)


def peak_rss_mb() -> float:
    """This process's peak resident memory since its exec (``VmHWM``; ``ru_maxrss`` would carry the parent's
    peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe(corpus: Path, base: Path) -> None:
    from qpolicy_hw.runtime import make_policy

    reference = make_policy(base, "int")
    obs = np.load(base / "golden" / "obs.npy")
    want = np.array([reference.act(o) for o in obs])
    for case in sorted(p for p in corpus.iterdir() if p.is_dir()):
        t0 = time.perf_counter()
        try:
            policy = make_policy(case, "int")
            same = bool(np.array_equal(np.array([policy.act(o) for o in obs]), want))
            row = {"case": case.name, "refused": None, "same_actions": same}
        except Exception as exc:  # noqa: BLE001  every outcome is recorded, the test judges it
            row = {"case": case.name, "refused": f"{type(exc).__name__}: {exc}"}
        row["seconds"] = time.perf_counter() - t0
        row["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(row), flush=True)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}), flush=True)


if __name__ == "__main__":
    probe(Path(sys.argv[1]), Path(sys.argv[2]))

"""The policy bundle: one directory that carries the integer function and everything needed to trust it.

Layout (safe formats only; nothing is unpickled)::

    bundle.json        schema, task, normalization, bit widths, scales, layers, provenance, SHA-256 of every file
    arrays.npz         integer weights, biases, thresholds and the action table
    float_state.npz    the actor's float (Brevitas) parameters, for the ``float`` backend and the float rungs
    model.onnx         QONNX graph of the quantized actor (interchange with FINN/hls4ml)
    golden/q_in.npy    input codes for hardware bring-up
    golden/q_out.npy   the output codes the integer reference gives for them

This module imports numpy only, so the ``int`` runtime runs on a board without torch or ROS.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qpolicy_hw.errors import BundleError

SCHEMA = "qpolicy.bundle/1"
ARRAYS_FILE = "arrays.npz"
FLOAT_STATE_FILE = "float_state.npz"
ONNX_FILE = "model.onnx"
GOLDEN_IN = "golden/q_in.npy"
GOLDEN_OUT = "golden/q_out.npy"
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # npz members get a fixed time so equal content gives equal bytes


def signed_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def signed_width(lo: int, hi: int) -> int:
    """The fewest two's-complement bits that hold every integer in [lo, hi]."""
    bits = 1
    while not (signed_range(bits)[0] <= lo and hi <= signed_range(bits)[1]):
        bits += 1
    return bits


def unsigned_range(bits: int) -> tuple[int, int]:
    return 0, (1 << bits) - 1


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    return signed_range(bits) if signed else unsigned_range(bits)


def channel_acc_range(w: np.ndarray, b: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel, the least and greatest ``W q + B`` over input codes ``q`` in ``[lo, hi]``."""
    w = np.asarray(w, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    return b + np.minimum(w * lo, w * hi).sum(1), b + np.maximum(w * lo, w * hi).sum(1)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A deterministic .npz (sorted members, fixed timestamps, no pickle)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_TIME)
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    member = io.BytesIO()
    np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    return member.getvalue()


@dataclass(frozen=True)
class Layer:
    """One integer layer: ``acc = W q + B``; ``q' = lo + #{k : acc >= T[c, k]}``."""

    name: str
    in_features: int
    out_features: int
    weight_bits: int
    in_bits: int
    in_signed: bool
    out_bits: int
    out_signed: bool
    acc_bits: int
    acc_min: int
    acc_max: int
    weight_scale: float
    in_scale: float
    out_scale: float
    shift: int | None = None
    """Set when the requantization equals ``round_half_even(acc * 2^-shift)`` with saturation (po2 scales)."""

    @property
    def out_range(self) -> tuple[int, int]:
        return code_range(self.out_bits, self.out_signed)

    @property
    def in_range(self) -> tuple[int, int]:
        return code_range(self.in_bits, self.in_signed)

    @property
    def n_thresholds(self) -> int:
        return (1 << self.out_bits) - 1


@dataclass
class Bundle:
    """A loaded, validated policy bundle."""

    path: Path | None
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    float_state: dict[str, np.ndarray] | None = None
    layers: list[Layer] = field(default_factory=list)

    # --- convenient views of bundle.json ---------------------------------------------------
    @property
    def env_id(self) -> str:
        return self.meta["task"]["env_id"]

    @property
    def obs_dim(self) -> int:
        return int(self.meta["task"]["obs_dim"])

    @property
    def act_dim(self) -> int:
        return int(self.meta["task"]["act_dim"])

    @property
    def is_integer(self) -> bool:
        return self.meta["kind"] == "integer"

    @property
    def bits(self) -> dict[str, int]:
        return self.meta["quant"]["bits"]

    @property
    def input_scale(self) -> np.float32:
        return np.float32(self.meta["quant"]["input_scale"])

    @property
    def output_scale(self) -> np.float32:
        return np.float32(self.meta["quant"]["output_scale"])

    @property
    def normalization(self) -> dict[str, Any]:
        return self.meta["normalization"]

    @property
    def safe_action(self) -> np.ndarray:
        """The action served when an input is rejected: the centre of the action box (zero torque for MuJoCo)."""
        return np.asarray(self.meta["task"]["safe_action"], dtype=np.float64)

    def weights(self, i: int) -> np.ndarray:
        return self.arrays[f"{self.layers[i].name}.weight"]

    def bias(self, i: int) -> np.ndarray:
        return self.arrays[f"{self.layers[i].name}.bias"]

    def thresholds(self, i: int) -> np.ndarray:
        return self.arrays[f"{self.layers[i].name}.thresholds"]

    @property
    def action_table(self) -> np.ndarray:
        return self.arrays["action_table"]


# --- writing ----------------------------------------------------------------------------------
def write_bundle(out_dir: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                 float_state: dict[str, np.ndarray] | None, onnx_bytes: bytes | None,
                 golden: tuple[np.ndarray, np.ndarray] | None) -> Path:
    """Write a bundle directory; bundle.json records the SHA-256 of every other file."""
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
    meta = dict(meta)
    meta["schema"] = SCHEMA
    meta["files"] = {name: sha256_bytes(data) for name, data in sorted(files.items())}
    meta["arrays"] = {name: {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": sha256_bytes(npy_bytes(a))}
                      for name, a in sorted(arrays.items())}
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    _write_meta(out, meta)
    return out


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    (out / "bundle.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def record_evaluation(path: str | Path, evaluation: dict[str, Any]) -> None:
    """Add an evaluation to a bundle's provenance (bundle.json only; the hashed files stay as they are)."""
    bundle = load_bundle(path)
    bundle.meta.setdefault("provenance", {})["evaluation"] = evaluation
    _write_meta(bundle.path, bundle.meta)


# --- loading ----------------------------------------------------------------------------------
def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise BundleError(f"{path.name}: unreadable ({exc})") from None


def load_bundle(path: str | Path, verify_hashes: bool = True) -> Bundle:
    """Load and validate a bundle; any inconsistency raises :class:`BundleError` naming it."""
    root = Path(path)
    if not root.exists():
        raise BundleError(f"no policy bundle at {root}")
    meta_path = root / "bundle.json" if root.is_dir() else root
    root = meta_path.parent
    if not meta_path.exists():
        raise BundleError(f"{root}: not a policy bundle (no bundle.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{meta_path}: bundle.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "schema" not in meta:
        raise BundleError(f"{meta_path}: no schema field; not a qpolicy bundle")
    if meta["schema"] != SCHEMA:
        raise BundleError(f"{meta_path}: schema {meta['schema']!r} is not supported (expected {SCHEMA!r})")
    for key in ("kind", "task", "normalization", "files"):
        if key not in meta:
            raise BundleError(f"{meta_path}: missing field {key!r}")

    for name, digest in meta["files"].items():
        f = root / name
        if not f.exists():
            raise BundleError(f"{root}: missing file {name}")
        if verify_hashes and sha256_bytes(f.read_bytes()) != digest:
            raise BundleError(f"{root}: SHA-256 mismatch for {name} (file changed or corrupt)")

    arrays = _read_npz(root / ARRAYS_FILE) if ARRAYS_FILE in meta["files"] else {}
    float_state = _read_npz(root / FLOAT_STATE_FILE) if FLOAT_STATE_FILE in meta["files"] else None
    bundle = Bundle(path=root, meta=meta, arrays=arrays, float_state=float_state)
    validate(bundle)
    return bundle


def validate(bundle: Bundle) -> None:
    """Check shapes, dtypes, code ranges and threshold order against bundle.json."""
    meta = bundle.meta
    task = meta["task"]
    for key in ("env_id", "obs_dim", "act_dim", "action_low", "action_high", "safe_action"):
        if key not in task:
            raise BundleError(f"bundle.json: task is missing {key!r}")
    norm = meta["normalization"]
    for key in ("mean", "var"):
        if len(norm.get(key, [])) != bundle.obs_dim:
            raise BundleError(f"normalization {key} has {len(norm.get(key, []))} entries, expected {bundle.obs_dim}")
    if meta["kind"] == "float":
        if bundle.float_state is None:
            raise BundleError("float bundle without float_state.npz")
        return
    if meta["kind"] != "integer":
        raise BundleError(f"unknown bundle kind {meta['kind']!r}")

    declared = meta.get("arrays", {})
    for name, info in declared.items():
        if name not in bundle.arrays:
            raise BundleError(f"arrays.npz: missing array {name!r}")
        a = bundle.arrays[name]
        if list(a.shape) != info["shape"]:
            raise BundleError(f"arrays.npz: {name} has shape {list(a.shape)}, bundle.json says {info['shape']}")
        if a.dtype.str != info["dtype"]:
            raise BundleError(f"arrays.npz: {name} has dtype {a.dtype.str}, bundle.json says {info['dtype']}")
        if sha256_bytes(npy_bytes(a)) != info["sha256"]:
            raise BundleError(f"arrays.npz: SHA-256 mismatch for array {name}")

    layers = [Layer(**d) for d in meta["layers"]]
    bundle.layers = layers
    fan_in = bundle.obs_dim
    prev_bits, prev_signed = bundle.bits["input"], True
    for i, layer in enumerate(layers):
        for suffix in ("weight", "bias", "thresholds"):
            if f"{layer.name}.{suffix}" not in bundle.arrays:
                raise BundleError(f"arrays.npz: missing array {layer.name}.{suffix!r}")
        if layer.in_features != fan_in or (layer.in_bits, layer.in_signed) != (prev_bits, prev_signed):
            raise BundleError(f"{layer.name}: input ({layer.in_features}, {layer.in_bits} bits) does not match "
                              f"the previous stage ({fan_in}, {prev_bits} bits)")
        w, b, t = bundle.weights(i), bundle.bias(i), bundle.thresholds(i)
        if w.shape != (layer.out_features, layer.in_features):
            raise BundleError(f"{layer.name}.weight: shape {w.shape}, expected {(layer.out_features, layer.in_features)}")
        if b.shape != (layer.out_features,):
            raise BundleError(f"{layer.name}.bias: shape {b.shape}, expected {(layer.out_features,)}")
        if t.shape != (layer.out_features, layer.n_thresholds):
            raise BundleError(f"{layer.name}.thresholds: shape {t.shape}, expected "
                              f"{(layer.out_features, layer.n_thresholds)}")
        lo, hi = signed_range(layer.weight_bits)
        if w.size and (w.min() < lo or w.max() > hi):
            raise BundleError(f"{layer.name}.weight: codes outside the {layer.weight_bits}-bit range [{lo}, {hi}]")
        if t.shape[1] > 1 and np.any(np.diff(t.astype(np.int64), axis=1) < 0):
            raise BundleError(f"{layer.name}.thresholds: not monotone (non-decreasing) in every channel")
        acc_lo, acc_hi = signed_range(layer.acc_bits)
        if t.size and (t.min() < acc_lo or t.max() > acc_hi) or b.size and (b.min() < acc_lo or b.max() > acc_hi):
            raise BundleError(f"{layer.name}: thresholds or bias exceed the {layer.acc_bits}-bit accumulator")
        fan_in, prev_bits, prev_signed = layer.out_features, layer.out_bits, layer.out_signed
    if fan_in != bundle.act_dim or not prev_signed or prev_bits != bundle.bits["output"]:
        raise BundleError(f"last layer gives {fan_in} signed={prev_signed} {prev_bits}-bit codes, expected "
                          f"{bundle.act_dim} signed {bundle.bits['output']}-bit")
    table = bundle.arrays.get("action_table")
    if table is None or table.shape != (bundle.act_dim, 1 << bundle.bits["output"]):
        raise BundleError(f"action_table: shape {None if table is None else table.shape}, "
                          f"expected {(bundle.act_dim, 1 << bundle.bits['output'])}")
    if not np.all(np.isfinite(table)):
        raise BundleError("action_table: contains NaN or Inf")

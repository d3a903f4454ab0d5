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

This module imports numpy only, so the ``int`` runtime runs on a board without torch or ROS.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import stat
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
GOLDEN_OBS = "golden/obs.npy"
GOLDEN_ACTIONS = "golden/actions.npy"
KNOWN_FILES = (ARRAYS_FILE, FLOAT_STATE_FILE, ONNX_FILE, GOLDEN_IN, GOLDEN_OUT, GOLDEN_OBS, GOLDEN_ACTIONS)
"""The only files a bundle may list; anything else in ``files`` is refused."""
MAX_META_BYTES = 16 << 20
MAX_FILE_BYTES = 256 << 20
"""Bounds on what loading reads (the largest shipped bundle is about 2 MB)."""
UNDIGESTED = ("provenance", "digest")
MAX_BITS = 16
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
    def digest(self) -> str:
        """The bundle's SHA-256 (see the module docstring); ``BUNDLE_HASH`` holds its first 32 bits."""
        return self.meta["digest"]

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

    def random_observations(self, n: int, seed: int = 0,
                            spreads: tuple[float, ...] = (0.01, 0.3, 1.0, 3.0, 30.0)) -> np.ndarray:
        """``n`` raw observations around the training data: the normalization's mean plus Gaussian noise of
        its std times a spread drawn per row, so that checks reach both the centre and the clipped edges."""
        norm = self.normalization
        std = np.sqrt(np.asarray(norm["var"]) + norm["epsilon"])
        rng = np.random.default_rng(seed)
        spread = rng.choice(np.asarray(spreads, dtype=np.float64), size=(n, 1))
        return np.asarray(norm["mean"]) + rng.standard_normal((n, self.obs_dim)) * spread * std

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
def _regular_file(root: Path, name: str, limit: int) -> bytes:
    """The bytes of ``root/name``: a regular file (not a link, FIFO or directory) inside ``root``, at most
    ``limit`` bytes."""
    path = root / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise BundleError(f"{root}: missing file {name}") from None
    except OSError as exc:
        raise BundleError(f"{root}: cannot read {name} ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise BundleError(f"{root}: {name} is a symbolic link; bundle files must be regular files in the bundle")
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{root}: {name} is not a regular file")
    if st.st_size > limit:
        raise BundleError(f"{root}: {name} is {st.st_size} bytes, more than the {limit}-byte limit")
    if not path.resolve().is_relative_to(root.resolve()):
        raise BundleError(f"{root}: {name} resolves outside the bundle")
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)[:limit]
    except OSError as exc:
        raise BundleError(f"{root}: cannot read {name} ({exc.strerror})") from None


def _npy(data: bytes, name: str) -> np.ndarray:
    try:
        a = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # truncated, not an .npy, an object array (needs pickle)
        raise BundleError(f"{name}: unreadable array ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        raise BundleError(f"{name}: not a numeric array")
    return a


def _read_npz(data: bytes, file_name: str, expected: set[str] | None) -> dict[str, np.ndarray]:
    """The arrays of an .npz held in ``data``; with ``expected``, exactly those members (no more, no fewer)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise BundleError(f"{file_name}: unreadable ({exc})") from None
    with zf:
        names = {}
        for info in infos:
            if not info.filename.endswith(".npy") or "/" in info.filename:
                raise BundleError(f"{file_name}: member {info.filename!r} is not an array")
            if info.file_size > MAX_FILE_BYTES:
                raise BundleError(f"{file_name}: member {info.filename} expands to {info.file_size} bytes")
            names[info.filename[:-4]] = info
        if expected is not None and set(names) != expected:
            extra, missing = sorted(set(names) - expected), sorted(expected - set(names))
            raise BundleError(f"{file_name}: " + (f"undeclared member(s) {', '.join(extra)}" if extra else
                                                  f"missing array(s) {', '.join(missing)}"))
        try:
            return {k: _npy(zf.read(info), f"{file_name}:{k}") for k, info in names.items()}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
            raise BundleError(f"{file_name}: unreadable ({exc})") from None


def _no_constants(token: str):
    raise ValueError(f"{token} is not a number JSON allows")


def _read_meta(meta_path: Path) -> dict[str, Any]:
    data = _regular_file(meta_path.parent, meta_path.name, MAX_META_BYTES)
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


def load_bundle(path: str | Path, verify_hashes: bool = True) -> Bundle:
    """Load and validate a bundle; any inconsistency raises :class:`BundleError` naming it, in one line.

    Besides the digest, the hashes and the fields, loading runs a self-test: the integer function must
    reproduce the bundle's golden codes and, from raw observations, its golden actions (a few milliseconds),
    so a semantic edit that was re-hashed is still refused unless its golden files were forged with it.
    ``verify_hashes=False`` skips the digest and the file hashes (for tools that rewrite a bundle)."""
    root = Path(path)
    if not root.exists():
        raise BundleError(f"no policy bundle at {root}")
    meta_path = root / "bundle.json" if root.is_dir() else root
    root = meta_path.parent
    if not meta_path.exists():
        raise BundleError(f"{root}: not a policy bundle (no bundle.json)")
    meta = _read_meta(meta_path)
    try:
        return _load(root, meta, verify_hashes)
    except BundleError:
        raise
    except RecursionError:
        raise BundleError(f"{root}: bundle.json is nested too deeply") from None
    except Exception as exc:  # a field of the wrong type that no check above named: still one line
        raise BundleError(f"{root}: malformed bundle.json ({type(exc).__name__}: {str(exc)[:120]})") from None


def _load(root: Path, meta: dict[str, Any], verify_hashes: bool) -> Bundle:
    for key in ("kind", "task", "normalization", "files", "digest"):
        if key not in meta:
            hint = ("; it was written by an older qpolicy: re-export it (qpolicy export RUN --out DIR) or "
                    "run tools/upgrade_bundle.py on it" if key == "digest" else "")
            raise BundleError(f"{root}: bundle.json has no {key!r} field{hint}")
    if verify_hashes and meta["digest"] != bundle_digest(meta):
        raise BundleError(f"{root}: bundle.json changed after export (its content does not match its digest "
                          f"{str(meta['digest'])[:16]}...)")
    files = meta["files"]
    if not isinstance(files, dict):
        raise BundleError(f"{root}: bundle.json 'files' must map file names to SHA-256 digests")
    blobs: dict[str, bytes] = {}
    for name, digest in files.items():
        if name not in KNOWN_FILES:
            raise BundleError(f"{root}: bundle.json lists {name!r}, which is not a bundle file "
                              f"(expected some of {', '.join(KNOWN_FILES)})")
        blobs[name] = _regular_file(root, name, MAX_FILE_BYTES)
        if verify_hashes and sha256_bytes(blobs[name]) != digest:
            raise BundleError(f"{root}: SHA-256 mismatch for {name} (file changed or corrupt)")
    declared = meta.get("arrays", {})
    if not isinstance(declared, dict):
        raise BundleError(f"{root}: bundle.json 'arrays' must be a mapping")
    arrays = _read_npz(blobs[ARRAYS_FILE], ARRAYS_FILE, set(declared)) if ARRAYS_FILE in blobs else {}
    float_state = _read_npz(blobs[FLOAT_STATE_FILE], FLOAT_STATE_FILE, None) if FLOAT_STATE_FILE in blobs else None
    bundle = Bundle(path=root, meta=meta, arrays=arrays, float_state=float_state)
    validate(bundle)
    golden = {n: _npy(blobs[n], n) for n in (GOLDEN_IN, GOLDEN_OUT, GOLDEN_OBS, GOLDEN_ACTIONS) if n in blobs}
    _check_golden(bundle, golden)
    if bundle.is_integer:
        _self_test(bundle, golden)
    return bundle


def _self_test(bundle: Bundle, golden: dict[str, np.ndarray]) -> None:
    from qpolicy_hw.runtime.int_backend import IntegerPolicy  # the runtime imports this module: import late

    reference = IntegerPolicy(bundle)
    if GOLDEN_IN in golden and not np.array_equal(reference.codes(golden[GOLDEN_IN]), golden[GOLDEN_OUT]):
        raise BundleError(f"{GOLDEN_OUT}: the integer function does not reproduce its golden codes "
                          "(a weight, bias or threshold changed)")
    if GOLDEN_OBS in golden:
        actions = np.array([reference.act(o) for o in golden[GOLDEN_OBS]])
        if not np.array_equal(actions, golden[GOLDEN_ACTIONS]):
            raise BundleError(f"{GOLDEN_ACTIONS}: the bundle does not reproduce its golden actions from raw "
                              "observations (the normalization, a scale or the action table changed)")


# --- validation: every field the function uses ----------------------------------------------
def _integer(value, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BundleError(f"{name}: expected an integer, got {value!r}"[:160])
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BundleError(f"{name}={value}: outside [{lo}, {hi}]")
    return value


def _number(value, name: str, positive: bool = False) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise BundleError(f"{name}: expected a finite number, got {value!r}"[:160])
    if positive and not value > 0:
        raise BundleError(f"{name}={value}: must be positive")
    return float(value)


def _vector(value, name: str, n: int) -> np.ndarray:
    if not isinstance(value, list) or len(value) != n:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise BundleError(f"{name}: expected a list of {n} numbers, got {got}")
    return np.array([_number(v, f"{name}[{i}]") for i, v in enumerate(value)], dtype=np.float64)


def _mapping(value, name: str) -> dict:
    if not isinstance(value, dict):
        raise BundleError(f"{name}: expected a mapping, got {type(value).__name__}")
    return value


_LAYER_TYPES = {"name": str, "in_features": int, "out_features": int, "weight_bits": int, "in_bits": int,
                "in_signed": bool, "out_bits": int, "out_signed": bool, "acc_bits": int, "acc_min": int,
                "acc_max": int, "weight_scale": float, "in_scale": float, "out_scale": float}


def _layer(d, i: int) -> Layer:
    where = f"layers[{i}]"
    d = _mapping(d, where)
    unknown = sorted(set(d) - set(_LAYER_TYPES) - {"shift"})
    missing = sorted(set(_LAYER_TYPES) - set(d))
    if unknown or missing:
        raise BundleError(f"{where}: " + (f"unknown field(s) {', '.join(unknown)}" if unknown
                                          else f"missing field(s) {', '.join(missing)}"))
    for key, kind in _LAYER_TYPES.items():
        v = d[key]
        if kind is float:
            _number(v, f"{where}.{key}", positive=True)
        elif kind is int:
            _integer(v, f"{where}.{key}")
        elif not isinstance(v, kind):
            raise BundleError(f"{where}.{key}: expected {kind.__name__}, got {v!r}"[:160])
    if not d["name"].isidentifier():
        raise BundleError(f"{where}.name={d['name']!r}: not a plain identifier")
    for key in ("in_features", "out_features"):
        _integer(d[key], f"{where}.{key}", 1, 1 << 16)
    for key in ("weight_bits", "in_bits", "out_bits"):
        _integer(d[key], f"{where}.{key}", 1, MAX_BITS)
    _integer(d["acc_bits"], f"{where}.acc_bits", 2, 62)
    if d.get("shift") is not None:
        _integer(d["shift"], f"{where}.shift", -62, 62)
    return Layer(**d)


def validate(bundle: Bundle) -> None:
    """Check every field the function uses (types, finiteness, signs, shapes, dtypes, code ranges,
    threshold order, the action box) against bundle.json; one line per failure, naming the field."""
    meta = bundle.meta
    if meta.get("kind") not in ("integer", "float"):
        raise BundleError(f"unknown bundle kind {meta.get('kind')!r}")
    task = _mapping(meta["task"], "task")
    for key in ("env_id", "obs_dim", "act_dim", "action_low", "action_high", "safe_action"):
        if key not in task:
            raise BundleError(f"bundle.json: task is missing {key!r}")
    if not isinstance(task["env_id"], str) or not task["env_id"]:
        raise BundleError(f"task.env_id: expected a Gymnasium id, got {task['env_id']!r}"[:160])
    obs_dim = _integer(task["obs_dim"], "task.obs_dim", 1, 1 << 16)
    act_dim = _integer(task["act_dim"], "task.act_dim", 1, 1 << 16)
    low = _vector(task["action_low"], "task.action_low", act_dim)
    high = _vector(task["action_high"], "task.action_high", act_dim)
    if np.any(low >= high):
        raise BundleError("task.action_low must be below task.action_high in every dimension")
    safe = _vector(task["safe_action"], "task.safe_action", act_dim)
    if np.any(safe < low) or np.any(safe > high):
        raise BundleError("task.safe_action: outside the action box [action_low, action_high]")
    norm = _mapping(meta["normalization"], "normalization")
    for key in ("mean", "var", "clip", "epsilon"):
        if key not in norm:
            raise BundleError(f"normalization is missing {key!r}")
    _vector(norm["mean"], "normalization.mean", obs_dim)
    if np.any(_vector(norm["var"], "normalization.var", obs_dim) < 0):
        raise BundleError("normalization.var: a variance is negative")
    _number(norm["clip"], "normalization.clip", positive=True)
    _number(norm["epsilon"], "normalization.epsilon", positive=True)
    if meta["kind"] == "float":
        if bundle.float_state is None:
            raise BundleError("float bundle without float_state.npz")
        return

    quant = _mapping(meta.get("quant"), "quant")
    bits = _mapping(quant.get("bits"), "quant.bits")
    for key in ("input", "core", "output"):
        _integer(bits.get(key), f"quant.bits.{key}", 2, MAX_BITS)
    for key in ("input_scale", "output_scale"):   # used in float32, as trained
        value = _number(quant.get(key), f"quant.{key}", positive=True)
        with np.errstate(over="ignore", under="ignore"):
            if not (np.isfinite(np.float32(value)) and np.float32(value) > 0):
                raise BundleError(f"quant.{key}={value}: not a positive float32")
    declared = meta.get("arrays", {})
    for name, info in declared.items():
        info = _mapping(info, f"arrays.{name}")
        if name not in bundle.arrays:
            raise BundleError(f"arrays.npz: missing array {name!r}")
        a = bundle.arrays[name]
        if list(a.shape) != info.get("shape"):
            raise BundleError(f"arrays.npz: {name} has shape {list(a.shape)}, bundle.json says {info.get('shape')}")
        if a.dtype.str != info.get("dtype"):
            raise BundleError(f"arrays.npz: {name} has dtype {a.dtype.str}, bundle.json says {info.get('dtype')}")
        if sha256_bytes(npy_bytes(a)) != info.get("sha256"):
            raise BundleError(f"arrays.npz: SHA-256 mismatch for array {name}")

    if not isinstance(meta.get("layers"), list) or not meta["layers"]:
        raise BundleError("layers: expected a non-empty list")
    layers = [_layer(d, i) for i, d in enumerate(meta["layers"])]
    bundle.layers = layers
    fan_in = obs_dim
    prev_bits, prev_signed = bits["input"], True
    for i, layer in enumerate(layers):
        for suffix in ("weight", "bias", "thresholds"):
            if f"{layer.name}.{suffix}" not in bundle.arrays:
                raise BundleError(f"arrays.npz: missing array {layer.name}.{suffix!r}")
            if bundle.arrays[f"{layer.name}.{suffix}"].dtype.kind != "i":
                raise BundleError(f"{layer.name}.{suffix}: integer codes expected, got dtype "
                                  f"{bundle.arrays[f'{layer.name}.{suffix}'].dtype}")
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
        reach_lo, reach_hi = channel_acc_range(w, b, *layer.in_range)
        if reach_lo.min() < acc_lo or reach_hi.max() > acc_hi:
            raise BundleError(f"{layer.name}: W q + B reaches [{reach_lo.min()}, {reach_hi.max()}], beyond the "
                              f"declared {layer.acc_bits}-bit accumulator")
        fan_in, prev_bits, prev_signed = layer.out_features, layer.out_bits, layer.out_signed
    if fan_in != act_dim or not prev_signed or prev_bits != bits["output"]:
        raise BundleError(f"last layer gives {fan_in} signed={prev_signed} {prev_bits}-bit codes, expected "
                          f"{act_dim} signed {bits['output']}-bit")
    table = bundle.arrays.get("action_table")
    if table is None or table.shape != (act_dim, 1 << bits["output"]):
        raise BundleError(f"action_table: shape {None if table is None else table.shape}, "
                          f"expected {(act_dim, 1 << bits['output'])}")
    if table.dtype.kind != "f" or not np.all(np.isfinite(table)):
        raise BundleError("action_table: must hold finite floats")
    slack = 1e-9 * (high - low)[:, None]
    if np.any(table < low[:, None] - slack) or np.any(table > high[:, None] + slack):
        raise BundleError("action_table: an action outside the action box [action_low, action_high]")


def _check_golden(bundle: Bundle, golden: dict[str, np.ndarray]) -> None:
    """The golden files' shapes, dtypes and code ranges (their values are checked by ``qpolicy verify``)."""
    shapes = {GOLDEN_IN: bundle.obs_dim, GOLDEN_OUT: bundle.act_dim, GOLDEN_OBS: bundle.obs_dim,
              GOLDEN_ACTIONS: bundle.act_dim}
    for name, a in golden.items():
        if a.ndim != 2 or a.shape[1] != shapes[name]:
            raise BundleError(f"{name}: shape {a.shape}, expected (n, {shapes[name]})")
        integer = name in (GOLDEN_IN, GOLDEN_OUT)
        if integer != (a.dtype.kind == "i") or (not integer and not np.all(np.isfinite(a))):
            raise BundleError(f"{name}: " + ("integer codes expected" if integer else "finite floats expected"))
    for a, b in ((GOLDEN_IN, GOLDEN_OUT), (GOLDEN_OBS, GOLDEN_ACTIONS)):
        if (a in golden) != (b in golden) or a in golden and len(golden[a]) != len(golden[b]):
            raise BundleError(f"{a} and {b} must come together, with one row each per vector")
    if bundle.is_integer and GOLDEN_IN in golden:
        lo, hi = signed_range(bundle.bits["input"])
        if golden[GOLDEN_IN].size and (golden[GOLDEN_IN].min() < lo or golden[GOLDEN_IN].max() > hi):
            raise BundleError(f"{GOLDEN_IN}: codes outside the {bundle.bits['input']}-bit input range")

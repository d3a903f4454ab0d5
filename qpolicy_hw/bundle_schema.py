"""What a bundle holds, and the checks on every field the integer function uses.

:class:`Layer` and :class:`Bundle` are the loaded form of ``bundle.json`` and its arrays; :func:`validate`
checks types, finiteness, signs, shapes, dtypes, code ranges, threshold order and the action box, and
:func:`check_golden` the golden files' shapes and sizes. Strings from a bundle are held to strict grammars
here (``task.env_id``, layer names, the digest), because generated C, Verilog, TCL and shell text and
Gymnasium's ``make`` use them: a bundle is data, and no string from it may become code.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qpolicy_hw.bundle_files import MAX_GOLDEN_ROWS, npy_bytes, sha256_bytes
from qpolicy_hw.errors import BundleError
from qpolicy_hw.integer_ranges import channel_acc_range, code_range, signed_range

GOLDEN_IN = "golden/q_in.npy"
GOLDEN_OUT = "golden/q_out.npy"
GOLDEN_OBS = "golden/obs.npy"
GOLDEN_ACTIONS = "golden/actions.npy"
GOLDEN_FILES = (GOLDEN_IN, GOLDEN_OUT, GOLDEN_OBS, GOLDEN_ACTIONS)
MAX_BITS = 16
MAX_FEATURES = 4096
"""Widest layer input or output (shipped: 348 inputs, 256 units)."""
ENV_ID = re.compile(r"[A-Za-z0-9_/.-]+-v[0-9]+")
"""A Gymnasium id of the usual form (``Hopper-v5``, ``ALE/Pong-v5``); the ``module:Env`` form is refused."""
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
DIGEST = re.compile(r"[0-9a-f]{64}")


def task_family(env_id: str) -> str:
    """The task an id names, without namespace or version: ``Hopper-v5`` and ``my_robot/Hopper-v4`` -> Hopper."""
    return env_id.split("/")[-1].split("-v")[0]


def check_env_id(env_id: object, where: str = "task.env_id") -> str:
    """``env_id`` if it is a Gymnasium id of the usual form, else :class:`BundleError` in one line."""
    if not isinstance(env_id, str) or not ENV_ID.fullmatch(env_id):
        raise BundleError(f"{where}={str(env_id)[:60]!r}: not a Gymnasium id of the form NAME-vN "
                          "(letters, digits, _ / . -); a module to import is given on the command line, "
                          "never by a bundle")
    return env_id


def check_digest(digest: object) -> str:
    """``digest`` if it is 64 lowercase hex digits, else :class:`BundleError` (it goes into C and Verilog)."""
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise BundleError(f"digest {str(digest)[:20]!r}...: expected 64 lowercase hex digits (a SHA-256)")
    return digest


@dataclass(frozen=True)
class Layer:
    """One integer layer: ``acc = W q + B``; ``q' = lo + #{k : acc >= T[c, k]}``. The metadata comes from
    ``bundle.json``; the arrays (int64) are bound by ``core_function.bundle_layers`` (or ``int_layer`` for a
    hand-made chain), which makes the layer callable: the one class every generator and reference uses."""

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
    weights: np.ndarray | None = field(default=None, repr=False, compare=False)      # (out, in)
    bias: np.ndarray | None = field(default=None, repr=False, compare=False)         # (out,)
    thresholds: np.ndarray | None = field(default=None, repr=False, compare=False)   # (out, 2^out_bits - 1)

    @property
    def out_range(self) -> tuple[int, int]:
        return code_range(self.out_bits, self.out_signed)

    @property
    def in_range(self) -> tuple[int, int]:
        return code_range(self.in_bits, self.in_signed)

    @property
    def n_thresholds(self) -> int:
        return (1 << self.out_bits) - 1

    @property
    def shape(self) -> tuple[int, int]:
        return self.out_features, self.in_features

    def product_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, the least and greatest ``W q`` (no bias) over the input code range."""
        return channel_acc_range(self.weights, np.zeros(self.out_features, np.int64), *self.in_range)

    def __call__(self, q: np.ndarray) -> np.ndarray:
        acc = np.asarray(q, np.int64) @ self.weights.T + self.bias
        return requantize(acc, self.thresholds, self.out_range[0])


_BROADCAST_LIMIT = 1 << 22  # elements of the (batch, out, thresholds) comparison before switching to searchsorted


def requantize(acc: np.ndarray, thresholds: np.ndarray, lo: int) -> np.ndarray:
    """``lo + #{k : acc[..., c] >= thresholds[c, k]}`` for every channel c (thresholds sorted per channel);
    memory stays linear in the batch for any number of thresholds."""
    acc2 = acc.reshape(-1, acc.shape[-1])
    n, c = acc2.shape
    if n * c * thresholds.shape[1] <= _BROADCAST_LIMIT:
        counts = (acc2[:, :, None] >= thresholds[None, :, :]).sum(axis=2)
    else:
        counts = np.empty((n, c), dtype=np.int64)
        for ch in range(c):
            counts[:, ch] = np.searchsorted(thresholds[ch], acc2[:, ch], side="right")
    return (counts + lo).reshape(acc.shape)


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
    def control_rate_hz(self) -> float | None:
        """The rate the policy was trained to be stepped at (1/env.dt, or the user's), where recorded."""
        rate = self.meta["task"].get("control_rate_hz")
        return None if rate is None else float(rate)

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
    if not IDENTIFIER.fullmatch(d["name"]):
        raise BundleError(f"{where}.name={d['name'][:60]!r}: not a plain ASCII identifier")
    for key in ("in_features", "out_features"):
        _integer(d[key], f"{where}.{key}", 1, MAX_FEATURES)
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
    check_env_id(task["env_id"])
    obs_dim = _integer(task["obs_dim"], "task.obs_dim", 1, MAX_FEATURES)
    act_dim = _integer(task["act_dim"], "task.act_dim", 1, MAX_FEATURES)
    low = _vector(task["action_low"], "task.action_low", act_dim)
    high = _vector(task["action_high"], "task.action_high", act_dim)
    if np.any(low >= high):
        raise BundleError("task.action_low must be below task.action_high in every dimension")
    safe = _vector(task["safe_action"], "task.safe_action", act_dim)
    if np.any(safe < low) or np.any(safe > high):
        raise BundleError("task.safe_action: outside the action box [action_low, action_high]")
    if "control_rate_hz" in task:
        _number(task["control_rate_hz"], "task.control_rate_hz", positive=True)
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


def check_golden(bundle: Bundle, golden: dict[str, np.ndarray]) -> None:
    """The golden files' shapes, dtypes and code ranges (their values are checked by ``qpolicy verify``)."""
    shapes = {GOLDEN_IN: bundle.obs_dim, GOLDEN_OUT: bundle.act_dim, GOLDEN_OBS: bundle.obs_dim,
              GOLDEN_ACTIONS: bundle.act_dim}
    for name, a in golden.items():
        if a.ndim != 2 or a.shape[1] != shapes[name]:
            raise BundleError(f"{name}: shape {a.shape}, expected (n, {shapes[name]})")
        if not 1 <= len(a) <= MAX_GOLDEN_ROWS:
            raise BundleError(f"{name}: {len(a)} vectors, expected 1 to {MAX_GOLDEN_ROWS}")
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


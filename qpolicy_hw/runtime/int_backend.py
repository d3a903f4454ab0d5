"""The integer contract, executed in numpy: the reference every other implementation must match.

``act(obs) = table[codes(quantize(obs))]`` where

1. host, float to int: :func:`~qpolicy_hw.host_float.normalize_observation` then
   :func:`~qpolicy_hw.host_float.quantize_input` (round half to even, as torch);
2. core, int to int: per layer ``acc = W q + B`` (int64, proven not to overflow ``acc_bits``)
   and ``q' = lo + #{k : acc >= T[c, k]}`` (ReLU folded into the thresholds);
3. host, int to float: ``action[j] = table[j, q_out[j] - lo_out]``.

numpy only: no torch, no rclpy, so this runs on a PYNQ board as the software fallback. Served through
``make_policy``, ``act()`` runs the bundle's C library where a compiler is at hand and it proved equal
(:mod:`qpolicy_hw.runtime.compiled`); the numpy path stays the reference and the fallback.
"""
from __future__ import annotations

import numpy as np

from qpolicy_hw.bundle import Bundle, Layer
from qpolicy_hw.core_function import requantize
from qpolicy_hw.errors import BundleError, CoreFault, ObservationError
from qpolicy_hw.host_float import ObservationHost, quantize_input


def shift_requantize(acc: np.ndarray, shift: int, lo: int, hi: int) -> np.ndarray:
    """The shift-and-saturate form for power-of-two scales: ``clip(round_half_even(acc / 2^shift))``.

    The exporter records ``Layer.shift`` only where it proved this equal to the thresholds; the tests
    check that equality. The runtimes and the RTL use the thresholds throughout.
    """
    acc = np.asarray(acc, dtype=np.int64)
    if shift <= 0:
        return np.clip(acc << (-shift), lo, hi)
    q = acc >> shift                       # floor
    rem = acc - (q << shift)               # in [0, 2^shift)
    half = 1 << (shift - 1)
    q = q + ((rem > half) | ((rem == half) & (q & 1 == 1)))
    return np.clip(q, lo, hi)


class IntegerPolicy(ObservationHost):
    """The ``int`` runtime: serves a bundle's integer function; also the reference executor."""

    backend = "int"
    fallback_reason: str | None = None
    """Set when ``make_policy(..., "auto")`` chose this fallback: why the FPGA is not serving."""

    def __init__(self, bundle: Bundle, compiled: bool = False):
        """``compiled``: serve ``act()`` through the bundle's C library once it reproduced the numpy path
        (:attr:`act_path` says which path serves, and why)."""
        if not bundle.is_integer:
            raise BundleError(f"{bundle.path}: a {bundle.meta['kind']} bundle has no integer function; "
                              "use the float backend")
        super().__init__(bundle)
        self.layers: list[Layer] = bundle.layers
        self._w = [bundle.weights(i).astype(np.int64) for i in range(len(self.layers))]
        self._b = [bundle.bias(i).astype(np.int64) for i in range(len(self.layers))]
        self._t = [bundle.thresholds(i).astype(np.int64) for i in range(len(self.layers))]
        self._table = bundle.action_table.astype(np.float64)
        self._in_bits = bundle.bits["input"]
        self._in_scale = bundle.input_scale
        self._out_lo, self._out_hi = self.layers[-1].out_range
        self._cols = np.arange(bundle.act_dim)
        # the one-observation path (act): the same operations on the same values, fewer numpy calls. The
        # core runs in float64 where every partial sum is an integer below 2^53 (exact, and BLAS-fast).
        self._std = np.sqrt(self._var + self._eps)              # the reference divides by this same value
        self._in_lo, self._in_hi = self.layers[0].in_range
        exact_in_float = all(layer.acc_bits <= 53 for layer in self.layers)
        dtype = np.float64 if exact_in_float else np.int64
        self._fast = [self._fast_layer(layer, w, b, t, dtype)
                      for layer, w, b, t in zip(self.layers, self._w, self._b, self._t, strict=True)]
        self._fast_dtype = dtype
        self._serves_elsewhere = type(self).codes is not IntegerPolicy.codes   # rtl, pynq, remote: their core
        self._compiled = None
        self.act_path = "the backend's core" if self._serves_elsewhere else "numpy"
        if compiled and not self._serves_elsewhere:
            from qpolicy_hw.runtime.compiled import compiled_act

            self._compiled, self.act_path = compiled_act(bundle, self.act)

    @staticmethod
    def _fast_layer(layer: Layer, w: np.ndarray, b: np.ndarray, t: np.ndarray, dtype) -> tuple:
        """One layer for :meth:`act`: weights, bias, and the thresholds as one sorted array. Channel c's
        thresholds are shifted by ``c * 2^(acc_bits + 1)``, so one ``searchsorted`` of ``acc + shift`` counts,
        for every channel at once, the thresholds at or below its accumulator (``acc >= T``), exactly
        while the shifted values stay below 2^53; else the thresholds are compared directly."""
        out, n_thr = t.shape
        span = 2.0 ** (layer.acc_bits + 1)
        if dtype is np.float64 and out * span < 2.0 ** 53:
            shift = np.arange(out, dtype=np.float64) * span
            flat = (t.astype(np.float64) + shift[:, None]).ravel()
            base = np.arange(out, dtype=np.float64) * n_thr - layer.out_range[0]
            return w.astype(dtype), b.astype(dtype) + shift, flat, base
        return w.astype(dtype), b.astype(dtype), t.astype(dtype), dtype(layer.out_range[0])

    # --- host float step ---------------------------------------------------------------------
    def quantize(self, obs) -> np.ndarray:
        """Observation -> validated input codes (the one float-to-int step); the same operations as
        ``quantize_input(normalize(check_observation(obs)))``, in fewer numpy calls."""
        return self._input_codes(obs).astype(np.int64)

    def _input_codes(self, obs) -> np.ndarray:
        """One observation's input codes as floats (exact integers), or :class:`ObservationError`."""
        try:
            x = np.asarray(obs, dtype=np.float64)
            usable = x.shape == (self.obs_dim,) and np.isfinite(x).all()
        except (TypeError, ValueError):
            usable = False
        if not usable:
            x = self.check_observation(obs)       # raises ObservationError, saying why
        z = (x - self._mean) / self._std
        np.minimum(np.maximum(z, -self._clip, out=z), self._clip, out=z)   # clip (z is finite)
        q = np.rint(z.astype(np.float32) / self._in_scale)
        return np.minimum(np.maximum(q, self._in_lo, out=q), self._in_hi, out=q)

    # --- the integer core ------------------------------------------------------------------
    def check_codes(self, q_in: np.ndarray) -> np.ndarray:
        """Input codes as int64, or :class:`ObservationError` for a wrong length or an out-of-range code."""
        q = np.asarray(q_in, dtype=np.int64)
        if q.shape[-1] != self.obs_dim:
            raise ObservationError(f"input codes have {q.shape[-1]} entries, expected {self.obs_dim}")
        lo, hi = self.layers[0].in_range
        if q.size and (q.min() < lo or q.max() > hi):
            raise ObservationError(f"input codes outside the {self._in_bits}-bit range [{lo}, {hi}]")
        return q

    def layer_codes(self, q_in: np.ndarray) -> list[np.ndarray]:
        """Codes after every stage: [q_in, hidden..., q_out] (int64, batch-first)."""
        q = self.check_codes(q_in)
        out = [q]
        for layer, w, b, t in zip(self.layers, self._w, self._b, self._t, strict=False):
            acc = q @ w.T + b
            q = requantize(acc, t, layer.out_range[0])
            out.append(q)
        return out

    def codes(self, q_in: np.ndarray) -> np.ndarray:
        """The integer boundary every hardware backend implements: input codes -> output codes."""
        return self.layer_codes(q_in)[-1]

    # --- host int-to-float step ------------------------------------------------------------
    def decode(self, q_out: np.ndarray) -> np.ndarray:
        """Output codes -> action through the exact tanh table; a code outside the output range (a faulty
        core) raises :class:`CoreFault` instead of indexing the table from its other end."""
        q = np.asarray(q_out, dtype=np.int64)
        if q.size and (q.min() < self._out_lo or q.max() > self._out_hi):
            raise CoreFault(f"output codes {q.tolist()} outside [{self._out_lo}, {self._out_hi}]")
        return self._table[self._cols, q - self._out_lo]

    def act(self, obs) -> np.ndarray:
        """Observation -> action, for one observation: bit-identical to ``decode(codes(quantize(obs)))``
        (``tests/test_integer_contract.py`` checks the numpy path, ``tests/test_compiled_act.py`` the compiled
        one), in a third of its time on numpy, a thirtieth compiled (bench/act_latency.py). A hardware
        backend (a subclass with its own ``codes``) serves through its core instead."""
        if self._compiled is not None:
            action = self._compiled.act(obs)
            if action is not None:
                return action           # else the observation is unusable: the numpy path says why
        if self._serves_elsewhere:
            return self.decode(self.codes(self.quantize(obs)[None])[0])
        q = self._input_codes(obs).astype(self._fast_dtype)
        for w, b, t, base in self._fast:
            if isinstance(base, np.ndarray):
                q = np.searchsorted(t, w @ q + b, side="right") - base
            else:
                q = ((w @ q + b)[:, None] >= t).sum(axis=1) + base
        return self._table[self._cols, q.astype(np.int64) - self._out_lo]

    def act_normalized(self, normalized: np.ndarray) -> np.ndarray:
        """Action for an already normalized observation (the noise-robustness evaluation adds noise there)."""
        q_in = quantize_input(normalized, self._in_scale, self._in_bits)
        return self.decode(self.codes(q_in[None])[0])

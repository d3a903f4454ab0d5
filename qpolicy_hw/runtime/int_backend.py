"""The integer contract, executed in numpy: the reference every other implementation must match.

``act(obs) = table[codes(quantize(obs))]`` where

1. host, float to int: :func:`~qpolicy_hw.host_float.normalize_observation` then
   :func:`~qpolicy_hw.host_float.quantize_input` (round half to even, as torch);
2. core, int to int: per layer ``acc = W q + B`` (int64, proven not to overflow ``acc_bits``)
   and ``q' = lo + #{k : acc >= T[c, k]}`` (ReLU folded into the thresholds);
3. host, int to float: ``action[j] = table[j, q_out[j] - lo_out]``.

numpy only: no torch, no rclpy, so this runs on a PYNQ board as the software fallback.
"""
from __future__ import annotations

import numpy as np

from qpolicy_hw.bundle import Bundle, Layer
from qpolicy_hw.errors import BundleError, CoreFault, ObservationError
from qpolicy_hw.host_float import ObservationHost, quantize_input

_BROADCAST_LIMIT = 1 << 22  # elements of the (batch, out, thresholds) comparison before switching to searchsorted


def requantize(acc: np.ndarray, thresholds: np.ndarray, lo: int) -> np.ndarray:
    """``lo + #{k : acc[..., c] >= thresholds[c, k]}`` for every channel c (thresholds sorted per channel)."""
    acc2 = acc.reshape(-1, acc.shape[-1])
    n, c = acc2.shape
    if n * c * thresholds.shape[1] <= _BROADCAST_LIMIT:
        counts = (acc2[:, :, None] >= thresholds[None, :, :]).sum(axis=2)
    else:
        counts = np.empty((n, c), dtype=np.int64)
        for ch in range(c):
            counts[:, ch] = np.searchsorted(thresholds[ch], acc2[:, ch], side="right")
    return (counts + lo).reshape(acc.shape)


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

    def __init__(self, bundle: Bundle):
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

    # --- host float step ---------------------------------------------------------------------
    def quantize(self, obs) -> np.ndarray:
        """Observation -> validated input codes (the one float-to-int step)."""
        return quantize_input(self.normalize(self.check_observation(obs)), self._in_scale, self._in_bits)

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

    def act_normalized(self, normalized: np.ndarray) -> np.ndarray:
        """Action for an already normalized observation (the noise-robustness evaluation adds noise there)."""
        q_in = quantize_input(normalized, self._in_scale, self._in_bits)
        return self.decode(self.codes(q_in[None])[0])

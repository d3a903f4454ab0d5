"""The integer core as a plain chain of layers: what every hardware generator implements.

A bundle's core (input codes -> output codes) is a list of :class:`IntLayer`; the generators (da4ml's
unrolled trace in ``rtl.py``, the folded units in ``fold.py``) take such a list, so a unit test can hand
them any chain of layers, and a mixed core can give each generator its own part of the chain.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qpolicy_hw.bundle_schema import Bundle
from qpolicy_hw.integer_ranges import channel_acc_range, code_range

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


@dataclass(frozen=True)
class IntLayer:
    """``acc = W q + B``; ``q' = lo + #{k : acc >= T[c, k]}`` with ``q`` in the input code range."""

    weights: np.ndarray      # (out, in) int64
    bias: np.ndarray         # (out,) int64
    thresholds: np.ndarray   # (out, 2^out_bits - 1) int64
    weight_bits: int
    in_bits: int
    in_signed: bool
    out_bits: int
    out_signed: bool

    @property
    def shape(self) -> tuple[int, int]:
        return self.weights.shape

    @property
    def in_range(self) -> tuple[int, int]:
        return code_range(self.in_bits, self.in_signed)

    @property
    def out_range(self) -> tuple[int, int]:
        return code_range(self.out_bits, self.out_signed)

    def product_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, the least and greatest ``W q`` (no bias) over the input code range."""
        return channel_acc_range(self.weights, np.zeros(self.shape[0], np.int64), *self.in_range)

    def __call__(self, q: np.ndarray) -> np.ndarray:
        acc = np.asarray(q, np.int64) @ self.weights.T + self.bias
        return requantize(acc, self.thresholds, self.out_range[0])


def bundle_layers(bundle: Bundle) -> list[IntLayer]:
    """The core of an integer bundle as a chain of :class:`IntLayer`."""
    return [IntLayer(bundle.weights(i).astype(np.int64), bundle.bias(i).astype(np.int64),
                     bundle.thresholds(i).astype(np.int64), layer.weight_bits, layer.in_bits, layer.in_signed,
                     layer.out_bits, layer.out_signed)
            for i, layer in enumerate(bundle.layers)]


def chain_codes(layers: list[IntLayer], q: np.ndarray) -> np.ndarray:
    """Reference output codes of a chain (numpy), for tests of generated hardware."""
    for layer in layers:
        q = layer(q)
    return q

"""Integer code ranges of the contract: signed and unsigned codes, and the accumulator bounds of a layer.

Plain functions of bit widths and integer arrays, shared by the bundle's validation, the integer reference,
the exporter and every hardware generator.
"""
from __future__ import annotations

import numpy as np


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

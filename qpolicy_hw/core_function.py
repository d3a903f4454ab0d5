"""The integer core as a plain chain of layers: what every hardware generator implements.

A bundle's core (input codes -> output codes) is a list of :class:`~qpolicy_hw.bundle_schema.Layer` with
their arrays bound; the generators (da4ml's unrolled trace in ``rtl.py``, the folded units in ``fold.py``)
take such a list, so a unit test can hand them any chain of layers (``int_layer``), and a mixed core can give
each generator its own part of the chain.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from qpolicy_hw.bundle_schema import Bundle, Layer, requantize
from qpolicy_hw.integer_ranges import channel_acc_range, code_range

__all__ = ["Layer", "bundle_layers", "chain_codes", "int_layer", "requantize"]


def bundle_layers(bundle: Bundle) -> list[Layer]:
    """The core of an integer bundle as a chain of callable layers (the bundle's arrays as int64)."""
    return [dataclasses.replace(layer, weights=bundle.weights(i).astype(np.int64),
                                bias=bundle.bias(i).astype(np.int64),
                                thresholds=bundle.thresholds(i).astype(np.int64))
            for i, layer in enumerate(bundle.layers)]


def int_layer(weights: np.ndarray, bias: np.ndarray, thresholds: np.ndarray, weight_bits: int, in_bits: int,
              in_signed: bool, out_bits: int, out_signed: bool, name: str = "layer") -> Layer:
    """A layer made by hand (tests, synthetic chains): the metadata a bundle would carry is derived from the
    arrays, with unit scales."""
    weights, bias = np.asarray(weights, np.int64), np.asarray(bias, np.int64)
    lo, hi = channel_acc_range(weights, bias, *code_range(in_bits, in_signed))
    acc_min, acc_max = int(lo.min()), int(hi.max())
    acc_bits = max(2, max(-acc_min, acc_max + 1).bit_length() + 1)      # signed two's complement
    return Layer(name, weights.shape[1], weights.shape[0], weight_bits, in_bits, in_signed, out_bits, out_signed,
                 acc_bits, acc_min, acc_max, 1.0, 1.0, 1.0, weights=weights, bias=bias,
                 thresholds=np.asarray(thresholds, np.int64))


def chain_codes(layers: list[Layer], q: np.ndarray) -> np.ndarray:
    """Reference output codes of a chain (numpy), for tests of generated hardware."""
    for layer in layers:
        q = layer(q)
    return q

"""Folded cores: layers too big to unroll run on a matrix-vector unit that reuses its lanes over cycles.

da4ml only writes fully unrolled circuits (its README leaves time-multiplexing to the user) and hls4ml's
folding needs Vitis HLS to become RTL, so the folded unit is generated here, as plain Verilog-2001 that
Verilator 5.006, Yosys 0.23 and Vivado all read.

A core is a chain of layers; each runs either unrolled (constant weights as adders: da4ml's adder graphs
when the whole core is unrolled, else this module's constant-weight layer, see :func:`segments_of`) or
folded on a unit with ``PE`` output lanes and ``SIMD`` input lanes (FINN's MVAU shape):

* weights sit in a ROM of ``ceil(MH/PE) * ceil(MW/SIMD)`` words of ``PE * SIMD`` weights (block RAM or
  LUT-ROM, by size); a layer that ``PE``/``SIMD`` do not divide is padded with zero weights;
* each cycle every lane multiplies one weight by one input code (a LUT table, or shift-and-add for wide
  operands: no DSP) and each PE adds its ``SIMD`` products into an accumulator whose width is the
  bound the weights prove (``|W q|`` over the code range), so it can never overflow;
* the bias is folded into the thresholds (``acc + B >= T`` is ``acc >= T - B``), clamped to the channel's
  reachable range; a per-lane binary search over the sorted thresholds gives ``#{k : acc >= T_k}`` in
  ``out_bits`` steps of two cycles (one ROM read, one compare), with one comparator per PE.

``PE = MH`` is the input-folded shape, ``SIMD = MW`` the output-folded one; the planner may pick either or
anything between. Layers run one after another; the core keeps the unrolled core's ports (``rst``,
``in_valid``/``out_valid``, packed codes) and takes a new input once the last one is out.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from qpolicy_hw.core_function import IntLayer
from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.integer_ranges import signed_width

CORE_TOP = "qpolicy_core"


class FoldError(QpolicyError):
    """A folding that cannot be built (a malformed or impossible SPEC, a part nothing fits)."""


@dataclass(frozen=True)
class Fold:
    """How one layer runs: ``pe``/``simd`` lanes, or unrolled when ``pe`` is None."""

    pe: int | None = None
    simd: int | None = None

    @property
    def unrolled(self) -> bool:
        return self.pe is None

    def __str__(self) -> str:
        return "u" if self.unrolled else f"{self.pe}x{self.simd}"


def parse_fold(text: str, shapes: list[tuple[int, int]]) -> list[Fold] | None:
    """``auto`` -> None (the planner decides); ``none`` -> every layer unrolled; else one entry per layer,
    comma-separated: ``u`` (unrolled) or ``PExSIMD`` (e.g. ``16x6,u,u``). Refused in one line otherwise."""
    text = text.strip().lower()
    if text == "auto":
        return None
    if text == "none":
        return [Fold() for _ in shapes]
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != len(shapes):
        raise FoldError(f"--fold {text!r} names {len(parts)} layers; the core has {len(shapes)} "
                        f"(shapes out x in: {', '.join(f'{o}x{i}' for o, i in shapes)})")
    plan = []
    for k, (part, (mh, mw)) in enumerate(zip(parts, shapes, strict=False)):
        if part == "u":
            plan.append(Fold())
            continue
        m = re.fullmatch(r"(\d+)x(\d+)", part)
        if not m:
            raise FoldError(f"--fold layer {k}: {part!r} is neither 'u' nor PExSIMD (e.g. 16x6)")
        pe, simd = int(m.group(1)), int(m.group(2))
        if not (1 <= pe <= mh and 1 <= simd <= mw):
            raise FoldError(f"--fold layer {k}: PE={pe} must be in 1..{mh} (outputs) and SIMD={simd} in 1..{mw} "
                            "(inputs)")
        plan.append(Fold(pe, simd))
    return plan


# --- one folded layer -------------------------------------------------------------------------
def _clog2(n: int) -> int:
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


@dataclass(frozen=True)
class FoldedShape:
    """The sizes a folded layer is built with (also what the cost model and the latency formula use)."""

    mh: int
    mw: int
    pe: int
    simd: int
    nf: int
    sf: int
    in_bits: int
    weight_bits: int
    out_bits: int
    acc_bits: int

    @property
    def cycles(self) -> int:
        """Cycles from ``start`` to ``done``: per group, SF MAC cycles, one to drain the last product, two per
        binary-search step, one to store the codes; plus the cycle that leaves IDLE."""
        return 1 + self.nf * (self.sf + 2 + 2 * self.out_bits)

    @property
    def weight_rom(self) -> tuple[int, int]:
        """(depth, width in bits) of the weight ROM."""
        return self.nf * self.sf, self.pe * self.simd * self.weight_bits

    @property
    def threshold_rom(self) -> tuple[int, int]:
        """(depth, width) of each lane's threshold ROM."""
        return self.nf << self.out_bits, self.acc_bits


def accumulator_bits(layer: IntLayer) -> int:
    """Bits of an accumulator that holds every reachable ``W q`` and every clamped threshold (up to
    ``max + 1``, the never-reached value) of the layer."""
    lo, hi = layer.product_range()
    return signed_width(min(int(lo.min()), 0), max(int(hi.max()), 0) + 1)


def folded_shape(layer: IntLayer, fold: Fold) -> FoldedShape:
    mh, mw = layer.shape
    acc_bits = accumulator_bits(layer)
    return FoldedShape(mh, mw, fold.pe, fold.simd, -(-mh // fold.pe), -(-mw // fold.simd), layer.in_bits,
                       layer.weight_bits, layer.out_bits, acc_bits)


def folded_thresholds(layer: IntLayer) -> np.ndarray:
    """Per channel, the sorted thresholds with the bias folded in (``T - B``), clamped to the reachable
    ``W q`` range: the same ``#{k : W q + B >= T_k}`` for every reachable accumulator."""
    lo, hi = layer.product_range()
    t = np.sort(layer.thresholds - layer.bias[:, None], axis=1)
    return np.clip(t, lo[:, None], (hi + 1)[:, None])



BLOCK_ROM_BITS = 8192
"""ROMs of at least this many bits (and 128 words) are asked to go into block RAM; smaller ones stay LUT-ROM."""


def _wants_block(depth: int, width: int) -> bool:
    return depth >= 128 and depth * width >= BLOCK_ROM_BITS


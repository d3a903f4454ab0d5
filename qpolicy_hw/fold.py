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


DEFAULT_STAGE_LEVELS = 2
"""Adder-tree levels between two pipeline registers; 0 leaves the trees combinational. ``qpolicy hw`` lowers
it until the static timing estimate meets the clock (:mod:`qpolicy_hw.timing`)."""


def tree_registers(n_terms: int, stage_levels: int) -> int:
    """Registers a balanced adder tree of ``n_terms`` gets with a register every ``stage_levels`` levels."""
    depth = math.ceil(math.log2(n_terms)) if n_terms > 1 else 0
    return depth // stage_levels if stage_levels > 0 else 0


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
    stage_levels: int = 0

    @property
    def weight_register(self) -> bool:
        """Whether the weights from a block-RAM ROM are registered once more before the products (a block RAM's
        clock-to-out is 2-3 ns: in front of a product it would take most of a 10 ns cycle)."""
        return self.stage_levels > 0 and _wants_block(*self.weight_rom)

    @property
    def mac_depth(self) -> int:
        """Pipeline registers between the lane inputs and the accumulator: a block-RAM weight register, the
        product register and the adder tree's registers (0 when unpipelined)."""
        if self.stage_levels <= 0:
            return 0
        return 1 + tree_registers(self.simd, self.stage_levels) + int(self.weight_register)

    @property
    def cycles(self) -> int:
        """Cycles from ``start`` to ``done``: per group, SF MAC cycles, one plus the MAC pipeline's depth to
        drain the last product, two per binary-search step, one to store the codes; plus the cycle that
        leaves IDLE."""
        return 1 + self.nf * (self.sf + 2 + self.mac_depth + 2 * self.out_bits)

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


def folded_shape(layer: IntLayer, fold: Fold, stage_levels: int = 0) -> FoldedShape:
    mh, mw = layer.shape
    acc_bits = accumulator_bits(layer)
    return FoldedShape(mh, mw, fold.pe, fold.simd, -(-mh // fold.pe), -(-mw // fold.simd), layer.in_bits,
                       layer.weight_bits, layer.out_bits, acc_bits, stage_levels)


def folded_thresholds(layer: IntLayer) -> np.ndarray:
    """Per channel, the sorted thresholds with the bias folded in (``T - B``), clamped to the reachable
    ``W q`` range: the same ``#{k : W q + B >= T_k}`` for every reachable accumulator."""
    lo, hi = layer.product_range()
    t = np.sort(layer.thresholds - layer.bias[:, None], axis=1)
    return np.clip(t, lo[:, None], (hi + 1)[:, None])


def constant_terms(layer: IntLayer) -> list[tuple[list[tuple[int, int]], list[tuple[int, int]]]]:
    """Per output channel of an unrolled constant-weight layer, its (input, shift) terms with a positive and
    with a negative sign: one per set bit of each weight's magnitude."""
    channels = []
    for c in range(layer.shape[0]):
        pos, neg = [], []
        for j, wv in enumerate(int(v) for v in layer.weights[c]):
            for bit in range(abs(wv).bit_length()):
                if (abs(wv) >> bit) & 1:
                    (neg if wv < 0 else pos).append((j, bit))
        channels.append((pos, neg))
    return channels


def live_thresholds(layer: IntLayer) -> list[list[int]]:
    """Per channel, the folded thresholds inside the reachable ``W q`` range (the others are constants)."""
    lo, hi = layer.product_range()
    t = folded_thresholds(layer)
    return [[int(v) for v in t[c] if lo[c] < v <= hi[c]] for c in range(layer.shape[0])]


def unrolled_stages(layer: IntLayer, stage_levels: int) -> tuple[int, int]:
    """(sum, count) pipeline registers of an unrolled layer: the deepest channel's adder tree, and the
    deepest tree that counts the thresholds an accumulator reaches; every channel is padded to them."""
    terms = constant_terms(layer)
    sums = max(max(tree_registers(len(p), stage_levels), tree_registers(len(n), stage_levels)) for p, n in terms)
    counts = max(tree_registers(len(live), stage_levels) for live in live_thresholds(layer))
    return sums, counts


def unrolled_cycles(layer: IntLayer, stage_levels: int) -> int:
    """Cycles from ``start`` to ``done`` of an unrolled layer: the accumulator and output registers plus its
    pipeline registers."""
    return 2 + sum(unrolled_stages(layer, stage_levels))



BLOCK_ROM_BITS = 8192
"""ROMs of at least this many bits (and 128 words) are asked to go into block RAM; smaller ones stay LUT-ROM."""


def _wants_block(depth: int, width: int) -> bool:
    return depth >= 128 and depth * width >= BLOCK_ROM_BITS


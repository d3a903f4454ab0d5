"""The cost model of folded, mixed and unrolled cores, and the planner that picks a fold per layer.

An estimate, to choose candidates: Yosys counts the core that is built, and the static timing estimate
(:mod:`qpolicy_hw.timing`) checks its clock."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qpolicy_hw.core_function import Layer
from qpolicy_hw.fold import (
    DEFAULT_STAGE_LEVELS,
    Fold,
    FoldError,
    _wants_block,
    accumulator_bits,
    affine_requant,
    dsp_channels,
    folded_shape,
    folded_thresholds,
    unrolled_cycles,
    unrolled_stages,
)


@dataclass(frozen=True)
class Cost:
    """Estimated resources and latency of a core or of one layer (an estimate: Yosys decides)."""

    lut: float
    ff: float
    bram36: float
    cycles: int
    dsp: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.lut + other.lut, self.ff + other.ff, self.bram36 + other.bram36, self.cycles + other.cycles,
                    self.dsp + other.dsp)

    def to_dict(self) -> dict:
        return {"LUT": round(self.lut), "FF": round(self.ff), "BRAM36": round(self.bram36, 1), "DSP": self.dsp,
                "cycles": self.cycles}


LUT_SCALE = 1.0
"""Calibration of the folded-unit model against Yosys counts (see :func:`estimate_folded`)."""
DA4ML_LUT_PER_WEIGHT = 3.5
"""LUT + INV per non-zero weight of a da4ml-unrolled core, from the measured Table-1 cores (1.2-3.7 seen)."""


def _bram36(depth: int, width: int) -> float:
    """Fewest BRAM36 that hold a depth x width ROM (36 Kib blocks as 512x72 ... 32768x1)."""
    return float(min(math.ceil(width / w) * math.ceil(depth / d)
                     for d, w in ((512, 72), (1024, 36), (2048, 18), (4096, 9), (8192, 4), (16384, 2), (32768, 1))))


def _rom_cost(depth: int, width: int) -> tuple[float, float]:
    """(LUT, BRAM36) of one ROM: block RAM when :func:`_wants_block`, else LUT6 of 64 words per bit."""
    if _wants_block(depth, width):
        return 0.0, _bram36(depth, width)
    return width * math.ceil(depth / 64) * (1.0 if depth <= 64 else 1.25), 0.0


def estimate_dsp(layer: Layer, fold: Fold) -> Cost:
    """A layer on DSP48E1 lanes (:mod:`qpolicy_hw.fold_dsp`): the slices multiply and accumulate, the fabric
    keeps the input multiplexer, the ROMs, one comparator and search position per output lane and the
    control (OPMODE per column)."""
    s = folded_shape(layer, fold, 1)
    xmux = s.simd * s.in_bits * (math.ceil((s.sf - 1) / 3) if s.sf > 1 else 0)
    w_lut, w_bram = _rom_cost(*s.weight_rom)
    r_lut, r_ff, r_bram, r_dsp = _requant_cost(layer, s)
    lut = LUT_SCALE * (xmux + 4 * s.simd + 45) + w_lut + r_lut
    ff = s.simd * s.in_bits + s.weight_rom[1] + s.nf * s.pe * s.out_bits + 30 + r_ff
    return Cost(lut, ff, w_bram + r_bram, s.cycles, s.slices + r_dsp)


def _requant_cost(layer: Layer, s) -> tuple[float, float, float, int]:
    """(LUT, FF, BRAM36, DSP) from the lanes' sums to their codes: per lane a comparator, a search position and
    a threshold ROM; or the affine requantizer: a lane multiplexer, its constants, the clamp and one DSP."""
    if s.affine:
        aff = affine_requant(layer)
        const_lut, _ = _rom_cost(s.nf << max(1, math.ceil(math.log2(s.pe))), aff.scale_bits + aff.offset_bits)
        lut = s.acc_bits * math.ceil(s.pe / 4) + const_lut + (48 - aff.shift) // 5 + s.out_bits + 30 + 2 * s.pe
        ff = s.pe * s.out_bits + aff.offset_bits + 12
        return lut, ff, 0.0, 1
    t_lut, t_bram = _rom_cost(*s.threshold_rom)
    return s.pe * (s.acc_bits // 2 + 2 * s.out_bits + t_lut), s.pe * s.out_bits, s.pe * t_bram, 0


def estimate_folded(layer: Layer, fold: Fold, stage_levels: int = DEFAULT_STAGE_LEVELS) -> Cost:
    if fold.dsp:
        return estimate_dsp(layer, fold)
    s = folded_shape(layer, fold, stage_levels)
    lanes = s.pe * s.simd
    pw = s.weight_bits + s.in_bits + (0 if layer.in_signed else 1)
    prod = lanes * (pw if s.weight_bits + s.in_bits <= 6 else s.weight_bits * pw)
    tree = s.pe * (s.simd - 1) * min(s.acc_bits, pw + math.ceil(math.log2(max(s.simd, 2))))
    lane_regs = s.pe * s.acc_bits                          # the accumulator's adder
    xmux = s.simd * s.in_bits * (math.ceil((s.sf - 1) / 3) if s.sf > 1 else 0)
    w_lut, w_bram = _rom_cost(*s.weight_rom)
    r_lut, r_ff, r_bram, r_dsp = _requant_cost(layer, s)
    lut = LUT_SCALE * (prod + tree + lane_regs + xmux + 40) + w_lut + r_lut
    # pipeline registers: the products, then each registered tree level (about half the terms, each a bit wider)
    pipe = 0 if not s.mac_depth else lanes * pw + s.pe * sum(
        max(1, s.simd >> (k + 1)) * min(s.acc_bits, pw + k + 1)
        for k in range(math.ceil(math.log2(max(s.simd, 2)))) if (k + 1) % stage_levels == 0)
    ff = (s.simd * s.in_bits + s.weight_rom[1] + s.pe * s.acc_bits + s.nf * s.pe * s.out_bits + 20 + pipe + r_ff)
    return Cost(lut, ff, w_bram + r_bram, s.cycles, r_dsp)


def estimate_unrolled(layer: Layer, stage_levels: int = DEFAULT_STAGE_LEVELS) -> Cost:
    """The constant-weight layer of a mixed core: one adder bit per term bit, one comparator per live
    threshold; with pipelining, registers at the registered tree levels and on the padding."""
    lo, hi = layer.product_range()
    ab = accumulator_bits(layer)
    terms = int(sum(bin(abs(int(v))).count("1") for v in layer.weights.ravel()))
    t = folded_thresholds(layer)
    live = int(((t > lo[:, None]) & (t <= hi[:, None])).sum())
    mh = layer.shape[0]
    sums, counts = unrolled_stages(layer, stage_levels)
    # pipeline registers: about half the remaining terms per registered level of the sum trees (plus the
    # padding of shallower channels), the same for the count trees
    pipe = mh * (sums * ab * max(1, terms // max(mh, 1)) // 2 + counts * layer.out_bits * max(1, live // max(mh, 1)) // 2)
    return Cost(terms * ab * 0.6 + live * (ab / 2 + layer.out_bits), mh * (ab + layer.out_bits) + pipe, 0.0,
                unrolled_cycles(layer, stage_levels))


def estimate(layers: list[Layer], plan: list[Fold], stage_levels: int = DEFAULT_STAGE_LEVELS) -> Cost:
    """The model's figure for a whole core built with ``plan`` (folded or mixed)."""
    total = Cost(0.0, layers[0].shape[1] * layers[0].in_bits + 4, 0.0, 1)
    for layer, fold in zip(layers, plan, strict=False):
        total = total + (estimate_unrolled(layer, stage_levels) if fold.unrolled
                         else estimate_folded(layer, fold, stage_levels))
    return total


def estimate_da4ml(layers: list[Layer]) -> Cost:
    """A fully unrolled da4ml core: the measured LUT per non-zero weight, about two cycles a layer."""
    nonzero = sum(int(np.count_nonzero(layer.weights)) for layer in layers)
    return Cost(DA4ML_LUT_PER_WEIGHT * nonzero + 400, 0.5 * DA4ML_LUT_PER_WEIGHT * nonzero, 0.0, 2 * len(layers) + 1)


def _lane_counts(n: int) -> list[int]:
    """Candidate lane counts for a dimension of size n: its divisors (no padding) and powers of two."""
    return sorted({d for d in range(1, n + 1) if n % d == 0} | {1 << k for k in range(n.bit_length()) if 1 << k <= n})


def _pareto(options: list[tuple[Fold, Cost]]) -> list[tuple[Fold, Cost]]:
    """Drop options another one beats (or equals) on cycles, LUT, FF, BRAM and DSP at once."""
    options = sorted(options, key=lambda o: (o[1].cycles, o[1].lut, o[1].bram36, o[1].ff, o[1].dsp))
    kept: list[tuple[Fold, Cost]] = []
    for fold, c in options:
        if not any(k.cycles <= c.cycles and k.lut <= c.lut and k.bram36 <= c.bram36 and k.ff <= c.ff
                   and k.dsp <= c.dsp for _, k in kept):
            kept.append((fold, c))
    return kept


@dataclass(frozen=True)
class Budget:
    """What a core may use: the part's capacity times a safety margin."""

    lut: float
    ff: float
    bram36: float
    dsp: int


DSP_AREA_LUT = 40.0
"""LUT equivalents of one DSP48E1 in :func:`area`: a 7-series DSP tile holds two slices in the height of five
CLBs (UG479, UG474), 40 LUT each; the figure also keeps the planner from spending a slice to save a few LUT."""


def area(cost: Cost) -> float:
    """The area the ``area`` objective minimizes, in LUT equivalents: a slice holds 4 LUT and 8 FF, so a
    flip-flop counts half a LUT; a BRAM36 counts as 250 LUT (its share of a column of the part); a DSP48E1
    as :data:`DSP_AREA_LUT`."""
    return cost.lut + 0.5 * cost.ff + 250.0 * cost.bram36 + DSP_AREA_LUT * cost.dsp


OBJECTIVES = ("area", "latency", "finn")
"""``finn``: ``latency`` within the resources of the paper's FINN core (``qpolicy_hw.hw_project.finn_budget``)."""
MAX_DSP_LANES = 64
"""The most DSP48E1 slices one layer's options consider (the largest 7-series parts the project targets have 90)."""


def layer_options(layer: Layer, stage_levels: int = DEFAULT_STAGE_LEVELS) -> list[tuple[Fold, Cost]]:
    """Every way to run one layer (unrolled, or any PE x SIMD from its divisors and powers of two), thinned
    to those no other option beats on cycles, LUT, FF and BRAM at once."""
    mh, mw = layer.shape
    opts = [(Fold(), estimate_unrolled(layer, stage_levels))]
    opts += [(Fold(pe, simd), estimate_folded(layer, Fold(pe, simd), stage_levels))
             for pe in _lane_counts(mh) for simd in _lane_counts(mw)]
    n = dsp_channels(layer)
    if n:
        opts += [(Fold(pe, simd, True), estimate_dsp(layer, Fold(pe, simd, True)))
                 for pe in _lane_counts(mh) for simd in _lane_counts(mw) if -(-pe // n) * simd <= MAX_DSP_LANES]
    return _pareto(opts)


def plan_fold(layers: list[Layer], budget: Budget, objective: str = "latency", max_cycles: int | None = None,
              stage_levels: int = DEFAULT_STAGE_LEVELS) -> tuple[list[Fold], Cost]:
    """The per-layer folding whose estimate fits ``budget`` and is best for ``objective``: ``latency``, the
    fewest cycles (then the fewest LUT); ``area``, the smallest :func:`area` among those within
    ``max_cycles`` (then the fewest cycles). A core has few layers, so every combination of the layers'
    Pareto options is searched, with pruning. Raises :class:`FoldError` when nothing fits."""
    if objective not in ("area", "latency"):
        raise FoldError(f"objective {objective!r}: choose area or latency")
    per_layer = [layer_options(layer, stage_levels) for layer in layers]
    base = Cost(0.0, layers[0].shape[1] * layers[0].in_bits + 4, 0.0, 1)
    best: tuple[list[Fold], Cost] | None = None
    limit = max_cycles if max_cycles is not None else float("inf")
    rank = ((lambda c: (c.cycles, c.lut)) if objective == "latency" else (lambda c: (area(c), c.cycles)))
    # the least each remaining layer can add, for pruning
    least_cycles = [sum(min(c.cycles for _, c in opts) for opts in per_layer[i:]) for i in range(len(layers) + 1)]
    least_area = [sum(min(area(c) for _, c in opts) for opts in per_layer[i:]) for i in range(len(layers) + 1)]

    def search(i: int, acc: Cost, chosen: list[Fold]) -> None:
        nonlocal best
        if acc.lut > budget.lut or acc.ff > budget.ff or acc.bram36 > budget.bram36 or acc.dsp > budget.dsp:
            return
        if acc.cycles + least_cycles[i] > limit:
            return
        if best is not None:
            if objective == "latency" and acc.cycles + least_cycles[i] > best[1].cycles:
                return
            if objective == "area" and area(acc) + least_area[i] > area(best[1]):
                return
        if i == len(layers):
            if best is None or rank(acc) < rank(best[1]):
                best = (list(chosen), acc)
            return
        for fold, cost in per_layer[i]:
            search(i + 1, acc + cost, chosen + [fold])

    search(0, base, [])
    if best is None:
        most = base
        for opts in per_layer:
            most = most + min((c for _, c in opts), key=lambda c: c.lut)
        within = f" within {max_cycles} cycles" if max_cycles is not None else ""
        raise FoldError(f"no folding fits{within}: the smallest core is estimated at {most.lut:.0f} LUT / {most.ff:.0f} "
                        f"FF / {most.bram36:.1f} BRAM36 against a budget of {budget.lut:.0f} / {budget.ff:.0f} / "
                        f"{budget.bram36:.0f}; raise the latency budget, or choose a larger part, fewer bits or a "
                        "smaller width")
    return best


def default_plan(layers: list[Layer], target: str = "xc7a15t") -> list[Fold]:
    """The core that ``qpolicy verify`` and the ``rtl`` backend build, from the model alone (no Yosys run):
    da4ml's unrolled core where the model puts it within the part's margin, else the model's folding for
    that budget (``qpolicy hw --fold auto`` confirms its choice with Yosys and may fold further)."""
    from qpolicy_hw.targets import FIT_MARGIN, TARGETS

    tgt = TARGETS[target]
    budget = Budget(FIT_MARGIN * tgt.luts, FIT_MARGIN * tgt.ffs, tgt.bram36, tgt.dsps)
    if estimate_da4ml(layers).lut <= budget.lut:
        return [Fold() for _ in layers]
    return plan_fold(layers, budget)[0]


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
  ``out_bits`` steps, one cycle each from a LUT-ROM (two from block RAM: a read, then the compare), with one
  comparator per PE. The 8-bit action layer uses an exact affine requantizer on one DSP instead.

``PE = MH`` is the input-folded shape, ``SIMD = MW`` the output-folded one; the planner may pick either or
anything between. Layers run one after another; the core keeps the unrolled core's ports (``rst``,
``in_valid``/``out_valid``, packed codes) and takes a new input once the last one is out.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from qpolicy_hw.core_function import Layer
from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.integer_ranges import signed_width

CORE_TOP = "qpolicy_core"


class FoldError(QpolicyError):
    """A folding that cannot be built (a malformed or impossible SPEC, a part nothing fits)."""


@dataclass(frozen=True)
class Fold:
    """How one layer runs: ``pe``/``simd`` lanes, or unrolled when ``pe`` is None; ``dsp``: the lanes are
    DSP48E1 slices, several output channels each (:mod:`qpolicy_hw.fold_dsp`)."""

    pe: int | None = None
    simd: int | None = None
    dsp: bool = False

    @property
    def unrolled(self) -> bool:
        return self.pe is None

    def __str__(self) -> str:
        return "u" if self.unrolled else f"{self.pe}x{self.simd}{'d' if self.dsp else ''}"


def parse_fold(text: str, shapes: list[tuple[int, int]]) -> list[Fold] | None:
    """``auto`` -> None (the planner decides); ``none`` -> every layer unrolled; else one entry per layer,
    comma-separated: ``u`` (unrolled), ``PExSIMD`` (LUT lanes, e.g. ``16x6,u,u``) or ``PExSIMDd`` (DSP48E1
    lanes, e.g. ``16x5d``). Refused in one line otherwise."""
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
        m = re.fullmatch(r"(\d+)x(\d+)(d?)", part)
        if not m:
            raise FoldError(f"--fold layer {k}: {part!r} is neither 'u' nor PExSIMD (e.g. 16x6, or 16x5d on DSPs)")
        pe, simd = int(m.group(1)), int(m.group(2))
        if not (1 <= pe <= mh and 1 <= simd <= mw):
            raise FoldError(f"--fold layer {k}: PE={pe} must be in 1..{mh} (outputs) and SIMD={simd} in 1..{mw} "
                            "(inputs)")
        plan.append(Fold(pe, simd, bool(m.group(3))))
    return plan


# --- one folded layer -------------------------------------------------------------------------
def _clog2(n: int) -> int:
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


SEARCH_LUT_MAX_WORDS = 128
"""The deepest threshold ROM the one-cycle search step reads combinationally: 512 words (LUT6, MUXF7, a LUT,
MUXF7, MUXF8) in front of the compare estimated 8.2 ns on HalfCheetah's 4x4 layer, past the 8.0 ns rule."""

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
    dsp: bool = False
    affine: bool = False
    """The codes come from the affine requantizer (:func:`affine_requant`) instead of the binary search."""
    per_slice: int = 0
    """DSP lanes: output channels sharing one DSP48E1 (:func:`dsp_channels`); 0 for LUT lanes."""

    @property
    def slices(self) -> int:
        """DSP48E1 slices of the lanes: one per ``per_slice`` output lanes per input lane."""
        return -(-self.pe // self.per_slice) * self.simd if self.dsp else 0

    @property
    def weight_register(self) -> bool:
        """Whether the weights from a block-RAM ROM are registered once more before the products (a block RAM's
        clock-to-out is 2-3 ns: in front of a product it would take most of a 10 ns cycle). DSP lanes register
        their operands inside the slice."""
        return self.stage_levels > 0 and not self.dsp and _wants_block(*self.weight_rom)

    @property
    def mac_depth(self) -> int:
        """Pipeline registers between the lane inputs and the accumulator: a block-RAM weight register, the
        product register and the adder tree's registers (0 when unpipelined); DSP lanes: the slice's operand
        product register (MREG; A and B come from the ROM's and input slice's registers)."""
        if self.dsp:
            return 1
        if self.stage_levels <= 0:
            return 0
        return 1 + tree_registers(self.simd, self.stage_levels) + int(self.weight_register)

    @property
    def reduce_cycles(self) -> int:
        """DSP lanes: cycles to add the SIMD columns' partial sums down the PCIN cascade (0 for LUT lanes)."""
        return self.simd - 1 if self.dsp else 0

    @property
    def cycles(self) -> int:
        """Cycles from ``start`` to ``done``: per group, SF MAC cycles (the first is the one that takes ``start``),
        the weight ROM's read and the MAC pipeline's depth to drain the last product into the accumulator, the
        cascade's reduction (DSP lanes) and the requantization, whose last cycle also stores the codes."""
        return self.nf * (self.sf + 1 + self.mac_depth + self.reduce_cycles + self.requant_cycles)

    @property
    def search_in_lut(self) -> bool:
        """Whether the binary search reads its thresholds in the cycle that compares them (one cycle a step):
        a LUT-ROM of at most :data:`SEARCH_LUT_MAX_WORDS` words (one LUT6 and a MUXF7 deep). A deeper ROM, or
        one in block RAM, is read in a cycle of its own first (two a step)."""
        depth, width = self.threshold_rom
        return depth <= SEARCH_LUT_MAX_WORDS and not _wants_block(depth, width)

    @property
    def requant_cycles(self) -> int:
        """Cycles from the sums to the codes: one or two per binary-search step (:attr:`search_in_lut`), or one
        per lane through the affine requantizer's DSP plus its pipeline registers (:data:`AFFINE_DEPTH`)."""
        if self.affine:
            return self.pe + AFFINE_DEPTH
        return self.out_bits * (1 if self.search_in_lut else 2)

    @property
    def weight_word_bits(self) -> int:
        """Bits one lane's weights take in a ROM word: a weight; for a DSP lane, its channels' weights packed
        for the slice's A port (the first as is, each other one bit wider: less the borrow of the one below)."""
        return self.weight_bits + (self.per_slice - 1) * (self.weight_bits + 1) if self.dsp else self.weight_bits

    @property
    def lanes(self) -> int:
        """Weight slots per ROM word: PE x SIMD products, or the slices."""
        return self.slices if self.dsp else self.pe * self.simd

    @property
    def weight_rom(self) -> tuple[int, int]:
        """(depth, width in bits) of the weight ROM."""
        return self.nf * self.sf, self.lanes * self.weight_word_bits

    @property
    def threshold_rom(self) -> tuple[int, int]:
        """(depth, width) of each lane's threshold ROM."""
        return self.nf << self.out_bits, self.acc_bits


def accumulator_bits(layer: Layer) -> int:
    """Bits of an accumulator that holds every reachable ``W q`` and every clamped threshold (up to
    ``max + 1``, the never-reached value) of the layer."""
    lo, hi = layer.product_range()
    return signed_width(min(int(lo.min()), 0), max(int(hi.max()), 0) + 1)


def folded_shape(layer: Layer, fold: Fold, stage_levels: int = 0) -> FoldedShape:
    mh, mw = layer.shape
    acc_bits = accumulator_bits(layer)
    return FoldedShape(mh, mw, fold.pe, fold.simd, -(-mh // fold.pe), -(-mw // fold.simd), layer.in_bits,
                       layer.weight_bits, layer.out_bits, acc_bits, stage_levels, fold.dsp,
                       uses_affine(layer), dsp_channels(layer) if fold.dsp else 0)


# --- the affine requantizer ----------------------------------------------------------------------
AFFINE_MIN_OUT_BITS = 6
"""Layers with at least this many output bits (the 8-bit action layer: 255 thresholds a channel) use the affine
requantizer when it is exact; below it, the binary search over a few thresholds is smaller."""
AFFINE_DEPTH = 2
"""Pipeline registers of the affine requantizer: the DSP's product (MREG, with the offset in CREG) and P (PREG)
registers; the code is written from P."""
AFFINE_MAX_SHIFT = 24


@dataclass(frozen=True)
class Affine:
    """``code = clamp(floor((acc * M[c] + B[c]) / 2^shift), 0, 2^out_bits - 1)``, equal to the threshold count
    for every reachable ``acc`` of every channel (checked exhaustively when fitted)."""

    shift: int
    scale: tuple[int, ...]
    offset: tuple[int, ...]

    @property
    def scale_bits(self) -> int:
        return signed_width(min(min(self.scale), 0), max(max(self.scale), 0))

    @property
    def offset_bits(self) -> int:
        return signed_width(min(min(self.offset), 0), max(max(self.offset), 0))


def _fit_channel(acc: np.ndarray, code: np.ndarray, top: int, shift: int) -> tuple[int, int] | None:
    """(M, B) with ``clamp(floor((acc M + B) / 2^shift), 0, top) == code`` on every ``acc``, or None."""
    inside = (code > 0) & (code < top)
    unit = 1 << shift
    if not inside.any():
        if np.all(code == code[0]):
            return 0, int(code[0]) * unit
        inside = np.ones_like(code, dtype=bool)
    a, c = acc[inside], code[inside]
    span = int(a[-1] - a[0])
    slope = (int(c[-1]) - int(c[0])) / span if span else 0.0
    window = (unit // max(span, 1)) + 2
    at_zero, at_top = acc[code == 0], acc[code == top]
    for m in range(max(0, round(slope * unit) - window), round(slope * unit) + window + 1):
        lo = int(np.max(c * unit - a * m))
        hi = int(np.min((c + 1) * unit - a * m)) - 1
        if at_zero.size:
            hi = min(hi, int(np.min(unit - 1 - at_zero * m)))
        if at_top.size:
            lo = max(lo, int(np.max(top * unit - at_top * m)))
        if lo <= hi:
            return m, lo
    return None


_AFFINE_CACHE: dict[int, tuple[Layer, Affine | None]] = {}


def affine_requant(layer: Layer) -> Affine | None:
    """The affine form of the layer's requantization when one exists for every channel with one shift (the
    action layer of a uniform output quantizer: its thresholds are ``ceil((k - b) / r)``), verified over every
    reachable accumulator value; None otherwise."""
    cached = _AFFINE_CACHE.get(id(layer))
    if cached is not None and cached[0] is layer:
        return cached[1]
    lo, hi = layer.product_range()
    t = folded_thresholds(layer)
    top = (1 << layer.out_bits) - 1
    result = None
    for shift in range(AFFINE_MAX_SHIFT + 1):
        fits = []
        for c in range(layer.shape[0]):
            acc = np.arange(int(lo[c]), int(hi[c]) + 1, dtype=np.int64)
            code = np.searchsorted(t[c], acc, side="right").astype(np.int64)
            fit = _fit_channel(acc, code, top, shift)
            if fit is None:
                break
            m, b = fit
            got = np.clip((acc * m + b) >> shift, 0, top)
            if not np.array_equal(got, code):
                break
            fits.append(fit)
        else:
            result = Affine(shift, tuple(m for m, _ in fits), tuple(b for _, b in fits))
            break
    _AFFINE_CACHE[id(layer)] = (layer, result)
    return result


def uses_affine(layer: Layer) -> bool:
    """Whether a folded layer requantizes with :func:`affine_requant`: wide outputs, an exact affine form, and
    operands the requantizer's DSP48E1 takes (sums in A, scales in B, offsets in C)."""
    if layer.out_bits < AFFINE_MIN_OUT_BITS:
        return False
    aff = affine_requant(layer)
    return (aff is not None and aff.scale_bits <= DSP_B_BITS and accumulator_bits(layer) <= DSP_A_BITS
            and accumulator_bits(layer) + aff.scale_bits + 1 < DSP_P_BITS and aff.offset_bits < DSP_P_BITS)




def dsp_channels(layer: Layer) -> int:
    """How many output channels of ``layer`` share one DSP48E1: the most ``n`` whose packed weights,
    ``(n - 1) acc_bits + weight_bits + 1`` bits, fit the A port and whose ``n`` sums, ``n acc_bits`` bits, fit
    P (two when :func:`dsp_packing_fits`; 0 when not even two fit)."""
    if dsp_packing_fits(layer) is not None:
        return 0
    ab, n = accumulator_bits(layer), 2
    while n * ab + layer.weight_bits + 1 <= DSP_A_BITS and (n + 1) * ab <= DSP_P_BITS:
        n += 1
    return n


def dsp_packing_fits(layer: Layer) -> str | None:
    """Why two output channels of ``layer`` cannot share one DSP48E1 (None when they can): the packed weight
    pair needs ``acc_bits + weight_bits + 1`` bits of the A port, the two sums ``2 acc_bits`` bits of P, and
    the input code (zero-extended when unsigned) the B port."""
    ab = accumulator_bits(layer)
    if ab < layer.weight_bits:
        return f"its {ab}-bit sums are narrower than its {layer.weight_bits}-bit weights"
    if ab + layer.weight_bits + 1 > DSP_A_BITS:
        return f"the packed weights need {ab + layer.weight_bits + 1} bits, the A port has {DSP_A_BITS}"
    if 2 * ab > DSP_P_BITS:
        return f"two {ab}-bit sums need {2 * ab} bits, P has {DSP_P_BITS}"
    if layer.in_bits + (0 if layer.in_signed else 1) > DSP_B_BITS:
        return f"{layer.in_bits}-bit input codes do not fit the {DSP_B_BITS}-bit B port"
    return None


def folded_thresholds(layer: Layer) -> np.ndarray:
    """Per channel, the sorted thresholds with the bias folded in (``T - B``), clamped to the reachable
    ``W q`` range: the same ``#{k : W q + B >= T_k}`` for every reachable accumulator."""
    lo, hi = layer.product_range()
    t = np.sort(layer.thresholds - layer.bias[:, None], axis=1)
    return np.clip(t, lo[:, None], (hi + 1)[:, None])


def constant_terms(layer: Layer) -> list[tuple[list[tuple[int, int]], list[tuple[int, int]]]]:
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


def live_thresholds(layer: Layer) -> list[list[int]]:
    """Per channel, the folded thresholds inside the reachable ``W q`` range (the others are constants)."""
    lo, hi = layer.product_range()
    t = folded_thresholds(layer)
    return [[int(v) for v in t[c] if lo[c] < v <= hi[c]] for c in range(layer.shape[0])]


def unrolled_stages(layer: Layer, stage_levels: int) -> tuple[int, int]:
    """(sum, count) pipeline registers of an unrolled layer: the deepest channel's adder tree, and the
    deepest tree that counts the thresholds an accumulator reaches; every channel is padded to them."""
    terms = constant_terms(layer)
    sums = max(max(tree_registers(len(p), stage_levels), tree_registers(len(n), stage_levels)) for p, n in terms)
    counts = max(tree_registers(len(live), stage_levels) for live in live_thresholds(layer))
    return sums, counts


def unrolled_cycles(layer: Layer, stage_levels: int) -> int:
    """Cycles from ``start`` to ``done`` of an unrolled layer: the accumulator and output registers plus its
    pipeline registers."""
    return 2 + sum(unrolled_stages(layer, stage_levels))



DSP_A_BITS, DSP_B_BITS, DSP_P_BITS = 25, 18, 48
"""DSP48E1 operand widths (UG479): the multiplier takes 25 x 18 bits signed; P is 48 bits."""

BLOCK_ROM_BITS = 8192
"""ROMs of at least this many bits (and 128 words) are asked to go into block RAM; smaller ones stay LUT-ROM."""


def _wants_block(depth: int, width: int) -> bool:
    return depth >= 128 and depth * width >= BLOCK_ROM_BITS


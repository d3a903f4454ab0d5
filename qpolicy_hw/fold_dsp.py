"""A folded layer on DSP48E1 slices: two output channels per slice, accumulated inside the slice.

FINN's RTL MVU packs several small multiplies into one DSP; the same idea, kept exact and simple here:

* **two channels per slice.** Slice ``(q, s)`` multiplies one input code ``x`` (port B) by the packed weight
  pair ``A = w_even + w_odd * 2^K`` and accumulates in P, so that ``P = sum x w_even + 2^K sum x w_odd``.
  ``K`` is the layer's accumulator width, which bounds every partial sum. The ROM stores ``w_even`` (K bits
  once sign-extended) and ``w_odd`` less the even weight's sign: A is then the plain concatenation of the two
  fields, with no adder in front of the slice.
* **no borrow between the fields.** Column 0 starts its sum from the constant ``2^(K-1)`` (port C), so the low
  field ``2^(K-1) + sum x w_even`` lies in ``[0, 2^K)``: P's bits ``[K-1:0]`` are the even channel's sum in
  offset binary (its MSB inverted gives two's complement) and bits ``[2K-1:K]`` the odd channel's sum
  exactly.
* **SIMD columns, one cascade.** With SIMD > 1, column ``s`` takes input ``f * SIMD + s`` of input fold ``f``;
  after the last fold the columns' sums are added down the PCIN cascade (``P_s += P_{s-1}``, one column per
  cycle, no fabric adders), and the last column holds the totals.
* the binary search over the thresholds and the output register are the LUT-lane layer's
  (:func:`qpolicy_hw.fold_verilog.folded_layer_verilog`).

Pipeline: operands registered in the slice (AREG = BREG = 1), the product (MREG = 1), P (PREG = 1);
OPMODE and CEP come from fabric registers, unregistered in the slice (OPMODEREG = 0). Simulation uses the
DSP48E1 model of Yosys' xc7 cell library (:func:`qpolicy_hw.rtl.simulation_models`); Yosys and Vivado map the
instance to the primitive itself.
"""
from __future__ import annotations

import numpy as np

from qpolicy_hw.core_function import IntLayer
from qpolicy_hw.fold import (
    Fold,
    FoldedShape,
    FoldError,
    _clog2,
    dsp_packing_fits,
    folded_shape,
)

OP_FIRST_C = "7'b0110101"      # P = C + M: column 0's first product, on the offset
OP_FIRST_0 = "7'b0000101"      # P = M: the other columns' first product
OP_ACCUMULATE = "7'b0100101"   # P = P + M
OP_CASCADE = "7'b0010010"      # P = P + PCIN: the reduction down the cascade


def _pair_word(w_even: int, w_odd: int, wb: int) -> int:
    """One slice's ROM field: ``w_even`` (wb bits) then ``w_odd - [w_even < 0]`` (wb + 1 bits): concatenated
    with ``w_even`` sign-extended to K bits, it is ``w_even + w_odd * 2^K`` in two's complement."""
    return (w_even & ((1 << wb) - 1)) | (((w_odd - (1 if w_even < 0 else 0)) & ((1 << (wb + 1)) - 1)) << wb)


def _dsp_instance(name: str, a: str, b: str, c: str, pcin: str, opmode: str, cep: str, p: str, pcout: str,
                  creg: int = 0) -> str:
    return f"""    DSP48E1 #(.AREG(1), .BREG(1), .ACASCREG(1), .BCASCREG(1), .MREG(1), .PREG(1), .CREG({creg}), .DREG(0),
        .ADREG(0), .OPMODEREG(0), .ALUMODEREG(0), .INMODEREG(0), .CARRYINREG(0), .CARRYINSELREG(0),
        .USE_MULT("MULTIPLY"), .USE_DPORT("FALSE"), .USE_SIMD("ONE48"), .A_INPUT("DIRECT"), .B_INPUT("DIRECT"))
    {name} (.CLK(clk), .A({a}), .B({b}), .C({c}), .D(25'd0), .PCIN({pcin}), .ACIN(30'd0), .BCIN(18'd0),
        .CARRYCASCIN(1'b0), .MULTSIGNIN(1'b0), .CARRYIN(1'b0), .CARRYINSEL(3'd0), .ALUMODE(4'd0), .INMODE(5'd0),
        .OPMODE({opmode}), .CEA1(1'b1), .CEA2(1'b1), .CEB1(1'b1), .CEB2(1'b1), .CEM(1'b1), .CEP({cep}), .CEC(1'b{creg}),
        .CED(1'b0), .CEAD(1'b0), .CEALUMODE(1'b0), .CECTRL(1'b0), .CECARRYIN(1'b0), .CEINMODE(1'b0), .RSTA(1'b0),
        .RSTB(1'b0), .RSTC(1'b0), .RSTD(1'b0), .RSTM(1'b0), .RSTP(1'b0), .RSTCTRL(1'b0), .RSTALLCARRYIN(1'b0),
        .RSTALUMODE(1'b0), .RSTINMODE(1'b0), .P({p}), .PCOUT({pcout}), .ACOUT(), .BCOUT(), .CARRYCASCOUT(),
        .CARRYOUT(), .MULTSIGNOUT(), .OVERFLOW(), .UNDERFLOW(), .PATTERNDETECT(), .PATTERNBDETECT());
"""


def dsp_layer_verilog(layer: IntLayer, fold: Fold, name: str) -> tuple[str, FoldedShape]:
    """The Verilog of one layer on ``ceil(PE/2) x SIMD`` DSP48E1 slices (module ``name`` and its ROMs)."""
    from qpolicy_hw.fold_verilog import (
        _pack,
        affine_unit_verilog,
        folded_front,
        folded_fsm,
        folded_module,
        requant_lane,
        requant_roms,
        requant_start,
    )

    why = dsp_packing_fits(layer)
    if why:
        raise FoldError(f"--fold {fold}: this layer cannot use DSP lanes: {why}")
    s = folded_shape(layer, fold, 1)
    pe, simd, nf, sf = s.pe, s.simd, s.nf, s.sf
    xb, k, wb = s.in_bits, s.acc_bits, s.weight_bits
    pairs = -(-pe // 2)
    fw = s.weight_word_bits
    w = np.zeros((nf * pe, sf * simd), np.int64)
    w[:s.mh, :s.mw] = layer.weights
    # output p of group g is row g * PE + p; pairs within a group are (2q, 2q + 1), the last may be half empty
    rows = np.zeros((nf, pairs * 2, sf * simd), np.int64)
    rows[:, :pe] = w.reshape(nf, pe, sf * simd)

    words = [_pack([_pair_word(int(rows[g, 2 * q, f * simd + c]), int(rows[g, 2 * q + 1, f * simd + c]), wb)
                    for c in range(simd) for q in range(pairs)], fw)
             for g in range(nf) for f in range(sf)]
    column = f"    reg [{_clog2(simd) - 1}:0] column;   // the cascade column adding its left neighbour's sum (S_REDUCE)\n"
    front, wrom = folded_front(name, s, words, column)
    parts = [wrom] + requant_roms(layer, s, name)
    body = [front]
    offset = f"48'd{1 << (k - 1)}"
    fill = (lambda j: f"xs[{j * xb + xb - 1}]") if layer.in_signed else (lambda j: "1'b0")
    for c in range(simd):
        first = OP_FIRST_C if c == 0 else OP_FIRST_0
        body.append(f"    wire [6:0] op{c} = mac_v ? (mac_first ? {first} : {OP_ACCUMULATE}) : {OP_CASCADE};\n"
                    f"    wire cep{c} = mac_v" + (f" || (state == S_REDUCE && column == {c})" if c else "") + ";\n"
                    f"    wire [17:0] b{c} = " + (f"{{{{{18 - xb}{{{fill(c)}}}}}, " if xb < 18 else "{")
                    + f"xs[{c * xb + xb - 1}:{c * xb}]}};\n")
        for q in range(pairs):
            lo = (c * pairs + q) * fw
            even, odd = f"w_rom[{lo + wb - 1}:{lo}]", f"w_rom[{lo + fw - 1}:{lo + wb}]"
            even_ext = f"{{{k - wb}{{w_rom[{lo + wb - 1}]}}}}, " if k > wb else ""
            a = f"{{{{{30 - k - wb - 1}{{w_rom[{lo + fw - 1}]}}}}, {odd}, {even_ext}{even}}}"
            body.append(f"    wire [47:0] p{q}_{c}, pc{q}_{c};\n")
            body.append(_dsp_instance(f"dsp{q}_{c}", a, f"b{c}", offset if c == 0 else "48'd0",
                                      f"pc{q}_{c - 1}" if c else "48'd0", f"op{c}", f"cep{c}", f"p{q}_{c}",
                                      f"pc{q}_{c}"))
    last = simd - 1
    for p in range(pe):
        q, half = divmod(p, 2)
        field = (f"{{~p{q}_{last}[{k - 1}], p{q}_{last}[{k - 2}:0]}}" if k > 1 else f"~p{q}_{last}[0]") if half == 0 \
            else f"p{q}_{last}[{2 * k - 1}:{k}]"
        body.append(f"    wire [{k - 1}:0] acc{p} = {field};\n" + requant_lane(name, p, s))
    if s.affine:
        lines, rom = affine_unit_verilog(layer, s, name)
        body.append(lines)
        parts.append(rom)
    search = requant_start(s)
    reduce = f"            S_REDUCE: if (column == {last}) begin {search} end else column <= column + 1'b1;\n"
    body.append(folded_fsm(s, layer.out_range[0], "column <= 1; state <= S_REDUCE;" if simd > 1 else search,
                           reduce if simd > 1 else ""))
    summary = (f"a folded layer on DSP48E1 slices, {s.mh} outputs x {s.mw} inputs, PE={pe} x SIMD={simd} ({pairs} x "
               f"{simd} slices, two channels each; {nf} output groups x {sf} input folds)")
    return folded_module(name, s, summary, body, parts), s

"""A folded layer on DSP48E1 slices: several output channels per slice, accumulated inside the slice.

FINN's RTL MVU packs several small multiplies into one DSP; the same idea, kept exact and simple here:

* **n channels per slice.** Slice ``(q, s)`` multiplies one input code ``x`` (port B) by the packed weights
  ``A = w_0 + w_1 2^K + ... + w_(n-1) 2^((n-1)K)`` and accumulates in P, so that
  ``P = sum_i 2^(iK) sum x w_i``. ``K`` is the layer's accumulator width, which bounds every partial sum; ``n``
  is the most that A (25 bits) and P (48 bits) hold (:func:`~qpolicy_hw.fold.dsp_channels`: 2 for 14-bit sums,
  3 for 10-bit ones). The ROM stores ``w_0`` and, for each ``i > 0``, ``w_i`` less the borrow of the field below
  (one bit wider): A is then the plain concatenation of the fields, with no adder in front of the slice.
* **no borrow between the fields.** Column 0 starts its sum from ``sum_(i<n-1) 2^(iK + K - 1)`` (port C), so
  every field but the top one lies in ``[0, 2^K)``: P's bits ``[iK + K - 1 : iK]`` are channel ``i``'s sum in
  offset binary (its MSB inverted gives two's complement), the top field is the last channel's sum exactly.
* **SIMD columns, one cascade.** With SIMD > 1, column ``s`` takes input ``f * SIMD + s`` of input fold ``f``;
  after the last fold the columns' sums are added down the PCIN cascade (``P_s += P_{s-1}``, one column per
  cycle, no fabric adders), and the last column holds the totals.
* the requantization and the output register are the LUT-lane layer's
  (:func:`qpolicy_hw.fold_verilog.folded_layer_verilog`).

Pipeline: the operands come straight from the weight ROM's and the input slice's registers (AREG = BREG = 0),
then the product (MREG = 1) and P (PREG = 1) are registered; OPMODE and CEP come from fabric registers,
unregistered in the slice (OPMODEREG = 0). Simulation uses the
DSP48E1 model of Yosys' xc7 cell library (:func:`qpolicy_hw.rtl.simulation_models`); Yosys and Vivado map the
instance to the primitive itself.
"""
from __future__ import annotations

import numpy as np

from qpolicy_hw.core_function import Layer
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


def packed_fields(weights: list[int]) -> list[int]:
    """One slice's weight fields: ``w_0``, then each ``w_i`` less the borrow of the field below (``-1`` when
    that field is negative). Each sign-extended to K bits and concatenated (the top one to the port), they are
    ``sum_i w_i 2^(iK)`` in two's complement, for any K wider than the fields."""
    fields, borrow = [], 0
    for w in weights:
        fields.append(w + borrow)
        borrow = -1 if fields[-1] < 0 else 0
    return fields


def _field_widths(n: int, wb: int) -> list[int]:
    """ROM bits of one slice's fields: ``wb`` for field 0, ``wb + 1`` for the others (they carry a borrow)."""
    return [wb] + [wb + 1] * (n - 1)


def _slice_word(weights: list[int], wb: int) -> int:
    """The ROM bits of one slice, its fields at :func:`_field_widths`."""
    word, at = 0, 0
    for f, width in zip(packed_fields(weights), _field_widths(len(weights), wb), strict=True):
        word |= (f & ((1 << width) - 1)) << at
        at += width
    return word


def _dsp_instance(name: str, a: str, b: str, c: str, pcin: str, opmode: str, cep: str, p: str, pcout: str,
                  creg: int = 0) -> str:
    """A DSP48E1 whose A and B come from fabric registers (AREG = BREG = 0: the multiplier's setup from them is
    1.4 ns), with the product and P registered."""
    return f"""    DSP48E1 #(.AREG(0), .BREG(0), .ACASCREG(0), .BCASCREG(0), .MREG(1), .PREG(1), .CREG({creg}), .DREG(0),
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


def _a_port(slot: int, n: int, fw: int, wb: int, k: int) -> str:
    """The A port (30 bits) of the slice in ROM slot ``slot``: its fields, each sign-extended to K bits, the
    top one to the port."""
    base, parts, at = slot * fw, [], 0
    for i, width in enumerate(_field_widths(n, wb)):
        lo, hi = base + at, base + at + width - 1
        at += width
        room = (30 - (n - 1) * k) if i == n - 1 else k
        ext = f"{{{room - width}{{w_rom[{hi}]}}}}, " if room > width else ""
        parts.append(f"{ext}w_rom[{hi}:{lo}]")
    return "{" + ", ".join(reversed(parts)) + "}"


def dsp_layer_verilog(layer: Layer, fold: Fold, name: str) -> tuple[str, FoldedShape]:
    """The Verilog of one layer on ``ceil(PE/n) x SIMD`` DSP48E1 slices (module ``name`` and its ROMs)."""
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
    n = s.per_slice
    per_column = -(-pe // n)
    fw = s.weight_word_bits
    w = np.zeros((nf * pe, sf * simd), np.int64)
    w[:s.mh, :s.mw] = layer.weights
    # output p of group g is row g * PE + p; slice q of a group holds rows n q ... n q + n - 1 (the last may
    # be partly empty)
    rows = np.zeros((nf, per_column * n, sf * simd), np.int64)
    rows[:, :pe] = w.reshape(nf, pe, sf * simd)

    words = [_pack([_slice_word([int(v) for v in rows[g, n * q:n * q + n, f * simd + c]], wb)
                    for c in range(simd) for q in range(per_column)], fw)
             for g in range(nf) for f in range(sf)]
    column = f"    reg [{_clog2(simd) - 1}:0] column;   // the cascade column adding its left neighbour's sum (S_REDUCE)\n"
    front, wrom = folded_front(name, s, words, column)
    parts = [wrom] + requant_roms(layer, s, name)
    body = [front]
    offset = f"48'd{sum(1 << (i * k + k - 1) for i in range(n - 1))}"
    fill = (lambda j: f"xs[{j * xb + xb - 1}]") if layer.in_signed else (lambda j: "1'b0")
    for c in range(simd):
        first = OP_FIRST_C if c == 0 else OP_FIRST_0
        body.append(f"    wire [6:0] op{c} = mac_v ? (mac_first ? {first} : {OP_ACCUMULATE}) : {OP_CASCADE};\n"
                    f"    wire cep{c} = mac_v" + (f" || (state == S_REDUCE && column == {c})" if c else "") + ";\n"
                    f"    wire [17:0] b{c} = " + (f"{{{{{18 - xb}{{{fill(c)}}}}}, " if xb < 18 else "{")
                    + f"xs[{c * xb + xb - 1}:{c * xb}]}};\n")
        for q in range(per_column):
            a = _a_port(c * per_column + q, n, fw, wb, k)
            body.append(f"    wire [47:0] p{q}_{c}, pc{q}_{c};\n")
            body.append(_dsp_instance(f"dsp{q}_{c}", a, f"b{c}", offset if c == 0 else "48'd0",
                                      f"pc{q}_{c - 1}" if c else "48'd0", f"op{c}", f"cep{c}", f"p{q}_{c}",
                                      f"pc{q}_{c}"))
    last = simd - 1
    for p in range(pe):
        q, i = divmod(p, n)
        lo, hi = i * k, i * k + k - 1
        field = (f"p{q}_{last}[{hi}:{lo}]" if i == n - 1      # the top field: two's complement
                 else f"{{~p{q}_{last}[{hi}], p{q}_{last}[{hi - 1}:{lo}]}}" if k > 1 else f"~p{q}_{last}[{lo}]")
        body.append(f"    wire [{k - 1}:0] acc{p} = {field};\n" + requant_lane(name, p, s))
    if s.affine:
        lines, rom = affine_unit_verilog(layer, s, name)
        body.append(lines)
        parts.append(rom)
    search = requant_start(s)
    reduce = f"            S_REDUCE: if (column == {last}) begin {search} end else column <= column + 1'b1;\n"
    body.append(folded_fsm(s, layer.out_range[0], "column <= 1; state <= S_REDUCE;" if simd > 1 else search,
                           reduce if simd > 1 else ""))
    summary = (f"a folded layer on DSP48E1 slices, {s.mh} outputs x {s.mw} inputs, PE={pe} x SIMD={simd} ({per_column} "
               f"x {simd} slices, {n} channels each; {nf} output groups x {sf} input folds)")
    return folded_module(name, s, summary, body, parts), s

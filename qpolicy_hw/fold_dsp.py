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
    _wants_block,
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
        _hex,
        _pack,
        _rom_module,
        affine_unit_verilog,
        requant_lane,
        requant_roms,
        requant_start,
        requant_states,
    )

    why = dsp_packing_fits(layer)
    if why:
        raise FoldError(f"--fold {fold}: this layer cannot use DSP lanes: {why}")
    s = folded_shape(layer, fold, 1)
    pe, simd, nf, sf = s.pe, s.simd, s.nf, s.sf
    xb, ob, k, wb = s.in_bits, s.out_bits, s.acc_bits, s.weight_bits
    pairs = -(-pe // 2)
    fw = s.weight_word_bits
    w = np.zeros((nf * pairs * 2, sf * simd), np.int64)
    w[:s.mh, :s.mw] = layer.weights
    # output p of group g is row g * PE + p; pairs within a group are (2q, 2q + 1), the last may be half empty
    rows = np.zeros((nf, pairs * 2, sf * simd), np.int64)
    for g in range(nf):
        for p in range(pe):
            if g * pe + p < s.mh:
                rows[g, p] = w[g * pe + p]

    words = [_pack([_pair_word(int(rows[g, 2 * q, f * simd + c]), int(rows[g, 2 * q + 1, f * simd + c]), wb)
                    for c in range(simd) for q in range(pairs)], fw)
             for g in range(nf) for f in range(sf)]
    wdepth, wwidth = s.weight_rom
    nfw, sfw, sw, rw = _clog2(nf), _clog2(sf), _clog2(ob), _clog2(simd)
    waw = _clog2(wdepth)
    parts = [_rom_module(f"{name}_wrom", words, wwidth, _wants_block(wdepth, wwidth), waw)]
    parts += requant_roms(layer, s, name)

    pad = (sf * simd - s.mw) * xb
    olo_bits = layer.out_range[0] & ((1 << ob) - 1)
    depth = s.mac_depth
    body = []
    x_slices = "\n".join(f"    assign x_slice[{f}] = xp[{f * simd * xb + simd * xb - 1}:{f * simd * xb}];"
                         for f in range(sf))
    body.append(f"""    localparam S_IDLE = 3'd0, S_MAC = 3'd1, S_DRAIN = 3'd2, S_TADDR = 3'd3, S_TCMP = 3'd4, S_WRITE = 3'd5,
        S_REDUCE = 3'd6, S_AFF = 3'd7;
    reg [2:0] state;
    reg [{nfw - 1}:0] nf;
    reg [{sfw - 1}:0] sf;
    reg [{sw - 1}:0] step;
    reg [{rw - 1}:0] column;   // the cascade column adding its left neighbour's sum (S_REDUCE)
    reg [{ob - 1}:0] probe, below;
    wire [{sf * simd * xb - 1}:0] xp = {(f"{{{{{pad}{{1'b0}}}}, x}}" if pad else "x")};
    wire [{simd * xb - 1}:0] x_slice [0:{sf - 1}];
{x_slices}
    reg [{waw - 1}:0] w_addr;
    wire [{wwidth - 1}:0] w_rom;
    {name}_wrom wrom (.clk(clk), .addr(w_addr), .data(w_rom));
    reg [{simd * xb - 1}:0] xs;
    reg [{depth}:0] mac_v_d, mac_first_d;   // OPMODE and CEP follow the operands through AREG/BREG and MREG
    wire mac_v = mac_v_d[{depth}], mac_first = mac_first_d[{depth}];
    reg [1:0] drain;
    always @(posedge clk) begin
        xs <= x_slice[sf];
        mac_v_d <= {{mac_v_d, state == S_MAC}};
        mac_first_d <= {{mac_first_d, state == S_MAC && sf == 0}};
    end
    reg [{nf * pe * ob - 1}:0] y_all;
    assign y = y_all[{s.mh * ob - 1}:0];
""")
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
    new_codes = ", ".join(f"pos{p} + {_hex(olo_bits, ob)}" for p in reversed(range(pe)))
    shift_in = f"{{{new_codes}, y_all[{nf * pe * ob - 1}:{pe * ob}]}}" if nf > 1 else f"{{{new_codes}}}"
    search = requant_start(s)
    after_drain = "begin column <= 1; state <= S_REDUCE; end" if simd > 1 else f"begin {search} end"
    body.append(f"""    always @(posedge clk) begin
        done <= 1'b0;
        if (rst) begin
            state <= S_IDLE; nf <= 0; sf <= 0; step <= 0;
        end else case (state)
            S_IDLE: if (start) begin nf <= 0; sf <= 0; w_addr <= 0; state <= S_MAC; end
            S_MAC: begin
                w_addr <= w_addr + 1'b1;
                if (sf == {sf - 1}) begin sf <= 0; drain <= {depth}; state <= S_DRAIN; end else sf <= sf + 1'b1;
            end
            S_DRAIN: if (drain == 0) {after_drain}
                     else drain <= drain - 1'b1;
            S_REDUCE: if (column == {last}) begin {search} end else column <= column + 1'b1;
{requant_states(s)}            S_WRITE: begin
                y_all <= {shift_in};
                if (nf == {nf - 1}) begin done <= 1'b1; state <= S_IDLE; end
                else begin nf <= nf + 1'b1; state <= S_MAC; end
            end
            default: state <= S_IDLE;
        endcase
    end
""")
    header = (f"// {name}: a folded layer on DSP48E1 slices, {s.mh} outputs x {s.mw} inputs, PE={pe} x SIMD={simd} "
              f"({pairs} x {simd} slices, two channels each; {nf} output groups x {sf} input folds); {s.cycles} "
              "cycles start -> done.\n// Generated by qpolicy from a bundle; do not edit.\n")
    module = (header + f"module {name} (input clk, input rst, input start, input [{s.mw * xb - 1}:0] x,\n"
              f"    output reg done, output [{s.mh * ob - 1}:0] y);\n" + "".join(body) + "endmodule\n")
    return "`timescale 1 ns / 1 ps\n" + module + "\n" + "\n".join(parts), s

"""The Verilog of folded and mixed cores (plain Verilog-2001 for Verilator 5.006, Yosys 0.23 and Vivado):
ROMs, the lane products, pipelined adder trees, one folded layer, one unrolled constant-weight layer, and
the top that runs the segments one after another. Shapes and plans come from :mod:`qpolicy_hw.fold`."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qpolicy_hw.core_function import Layer
from qpolicy_hw.fold import (
    CORE_TOP,
    DEFAULT_STAGE_LEVELS,
    Fold,
    FoldedShape,
    _clog2,
    _wants_block,
    accumulator_bits,
    constant_terms,
    folded_shape,
    folded_thresholds,
    live_thresholds,
    unrolled_cycles,
    unrolled_stages,
)
from qpolicy_hw.integer_ranges import code_range, signed_range, signed_width


def _hex(value: int, bits: int) -> str:
    return f"{bits}'h{value & ((1 << bits) - 1):x}"


def _rom_module(name: str, words: list[int], width: int, block: bool, aw: int) -> str:
    depth = len(words)
    init = "\n".join(f"        mem[{i}] = {_hex(v, width)};" for i, v in enumerate(words))
    # small ROMs get no attribute: Yosys maps them to logic and Vivado to LUT-ROM by itself
    attr = '(* rom_style = "block", ram_style = "block" *) ' if block else ""
    return f"""module {name} (input clk, input [{aw - 1}:0] addr, output reg [{width - 1}:0] data);
    {attr}reg [{width - 1}:0] mem [0:{depth - 1}];
    initial begin
{init}
    end
    always @(posedge clk) data <= mem[addr];
endmodule
"""


def _pack(values, bits: int) -> int:
    word = 0
    for k, v in enumerate(values):
        word |= (int(v) & ((1 << bits) - 1)) << (k * bits)
    return word



def _async_rom_module(name: str, words: list[int], width: int, aw: int) -> str:
    """A small ROM read without a clock (LUT-ROM): the affine requantizer's per-channel constants, and the
    binary search's thresholds when they fit LUTs (read in the cycle that compares them)."""
    init = "\n".join(f"        mem[{i}] = {_hex(v, width)};" for i, v in enumerate(words))
    return f"""module {name} (input [{aw - 1}:0] addr, output [{width - 1}:0] data);
    reg [{width - 1}:0] mem [0:{len(words) - 1}];
    initial begin
{init}
    end
    assign data = mem[addr];
endmodule
"""


def affine_unit_verilog(layer: Layer, s: FoldedShape, name: str) -> tuple[str, str]:
    """The affine requantizer of a folded layer (:func:`~qpolicy_hw.fold.affine_requant`): (the lines inside
    the layer's module, its constants ROM). One lane a cycle: ``acc`` of lane ``aff_cnt`` (A), the channel's
    scale (B) and offset (C, registered in the slice next to the product) into one DSP48E1; from P,
    ``floor(P / 2^shift)`` clamped to the code range is written into the lane's ``pos``. The FSM runs
    ``aff_cnt`` from 0 to ``PE + AFFINE_DEPTH - 1`` in state ``S_AFF``; the last lane's code is stored into the
    output register straight from P (``code{PE-1}``)."""
    from qpolicy_hw.fold import AFFINE_DEPTH, affine_requant

    aff = affine_requant(layer)
    pe, nf, k, ob = s.pe, s.nf, s.acc_bits, s.out_bits
    mb, bb = aff.scale_bits, aff.offset_bits
    lw, nfw = _clog2(pe), _clog2(nf)
    words = []
    for g in range(nf):
        for p in range(1 << lw):
            c = g * pe + p
            m, b = (aff.scale[c], aff.offset[c]) if p < pe and c < s.mh else (0, 0)
            words.append((m & ((1 << mb) - 1)) | ((b & ((1 << bb) - 1)) << mb))
    rom = _async_rom_module(f"{name}_arom", words, mb + bb, nfw + lw)
    sel = "\n".join(f"            {_hex(p, lw)}: aff_acc = acc{p};" for p in range(pe))
    writes = "\n".join(f"        {_hex(p, lw)}: pos{p} <= aff_code;" for p in range(pe))
    codes = "\n".join(f"    wire [{ob - 1}:0] code{p} = pos{p};" for p in range(pe - 1))
    top = (1 << ob) - 1
    shifted_bits = 48 - aff.shift
    lines = f"""    // the affine requantizer: code = clamp(floor((acc * M + B) / 2^{aff.shift}), 0, {top})
    reg [{lw + 2}:0] aff_cnt;
    wire aff_issue = state == S_AFF && aff_cnt < {pe};
    reg [{AFFINE_DEPTH - 1}:0] aff_v;
    reg [{lw - 1}:0] aff_lane_d0, aff_lane_d1;
    reg [{k - 1}:0] aff_acc;
    always @* begin
        case (aff_cnt[{lw - 1}:0])
{sel}
            default: aff_acc = {k}'d0;
        endcase
    end
    wire [{mb + bb - 1}:0] aff_const;
    {name}_arom arom (.addr({{nf, aff_cnt[{lw - 1}:0]}}), .data(aff_const));
    always @(posedge clk) begin
        aff_v <= {{aff_v[{AFFINE_DEPTH - 2}:0], aff_issue}};
        aff_lane_d0 <= aff_cnt[{lw - 1}:0]; aff_lane_d1 <= aff_lane_d0;
    end
    wire [47:0] aff_p;
{_dsp_requant_instance(k, mb, bb)}
    wire [{shifted_bits - 1}:0] aff_q = aff_p[47:{aff.shift}];
    wire [{ob - 1}:0] aff_code = aff_q[{shifted_bits - 1}] ? {ob}'d0
        : (|aff_q[{shifted_bits - 1}:{ob}] ? {_hex(top, ob)} : aff_q[{ob - 1}:0]);
    wire aff_we = aff_v[{AFFINE_DEPTH - 1}];
    always @(posedge clk) if (aff_we) case (aff_lane_d1)
{writes}
        default: ;
    endcase
    // the codes the last requantization cycle stores: the last lane's leaves P in that cycle
{codes}
    wire [{ob - 1}:0] code{pe - 1} = aff_code;
"""
    return lines, rom


def requant_lane(name: str, p: int, s: FoldedShape) -> str:
    """Lane ``p``'s output code register ``pos{p}`` from ``acc{p}``: the binary search over its threshold ROM,
    or a write from the affine requantizer. Every signal is declared before its first use (Vivado insists)."""
    ob, ab = s.out_bits, s.acc_bits
    if s.affine:   # written by the requantizer (:func:`affine_unit_verilog`), declared before it for Vivado
        return f"    reg [{ob - 1}:0] pos{p};\n"
    clock = "" if s.search_in_lut else ".clk(clk), "
    return f"""    reg [{ob - 1}:0] pos{p};
    wire [{ob - 1}:0] idx{p} = pos{p} | below;
    wire [{ab - 1}:0] t_q{p};
    {name}_trom{p} trom{p} ({clock}.addr({{nf, idx{p}}}), .data(t_q{p}));
    wire hit{p} = $signed(acc{p}) >= $signed(t_q{p});
    wire [{ob - 1}:0] code{p} = hit{p} ? pos{p} | probe : pos{p};   // after this step: stored by the last one
    always @(posedge clk) begin
        if (state == S_DRAIN) pos{p} <= {ob}'d0;
        else if (state == S_TCMP) pos{p} <= code{p};
    end
"""


def requant_roms(layer: Layer, s: FoldedShape, name: str) -> list[str]:
    """The threshold ROMs of the lanes (none with the affine requantizer)."""
    if s.affine:
        return []
    ob = s.out_bits
    t = np.zeros((s.nf * s.pe, 1 << ob), np.int64)
    t[:s.mh, :(1 << ob) - 1] = folded_thresholds(layer)
    aw = _clog2(s.nf) + ob
    roms = []
    for p in range(s.pe):
        words = [int(t[g * s.pe + p, j]) for g in range(s.nf) for j in range(1 << ob)]
        roms.append(_async_rom_module(f"{name}_trom{p}", words, s.acc_bits, aw) if s.search_in_lut
                    else _rom_module(f"{name}_trom{p}", words, s.acc_bits, True, aw))
    return roms


def requant_start(s: FoldedShape) -> str:
    """The FSM statement that starts requantizing once the sums are ready."""
    ob = s.out_bits
    if s.affine:
        return "aff_cnt <= 0; state <= S_AFF;"
    return (f"step <= {ob - 1}; probe <= {_hex(1 << (ob - 1), ob)}; below <= {_hex((1 << (ob - 1)) - 1, ob)}; "
            f"state <= {'S_TCMP' if s.search_in_lut else 'S_TADDR'};")


def requant_states(s: FoldedShape, store: str) -> str:
    """The FSM cases of the requantization: the affine requantizer's lanes and drain, or the search's steps;
    the last cycle runs ``store`` (the codes into the output register)."""
    from qpolicy_hw.fold import AFFINE_DEPTH

    if s.affine:
        return (f"            S_AFF: if (aff_cnt == {s.pe + AFFINE_DEPTH - 1}) begin {store} end "
                "else aff_cnt <= aff_cnt + 1'b1;\n")
    # thresholds in LUT-ROM are read in the step that compares them; a block-RAM ROM takes a cycle first
    after = "S_TCMP" if s.search_in_lut else "S_TADDR"
    return f"""            S_TADDR: state <= S_TCMP;
            S_TCMP: if (step == 0) begin {store} end
                    else begin step <= step - 1'b1; probe <= probe >> 1; below <= below >> 1; state <= {after}; end
"""


def _dsp_requant_instance(k: int, mb: int, bb: int) -> str:
    from qpolicy_hw.fold_dsp import _dsp_instance

    return _dsp_instance("dsp_requant", f"{{{{{30 - k}{{aff_acc[{k - 1}]}}}}, aff_acc}}",
                         f"{{{{{18 - mb}{{aff_const[{mb - 1}]}}}}, aff_const[{mb - 1}:0]}}" if mb < 18
                         else "aff_const[17:0]",
                         f"{{{{{48 - bb}{{aff_const[{mb + bb - 1}]}}}}, aff_const[{mb + bb - 1}:{mb}]}}", "48'd0", "7'b0110101", "1'b1",
                         "aff_p", "", creg=1)


def product_bits(s: FoldedShape, in_signed: bool) -> int:
    """Two's-complement bits of one weight x code product (never more than the accumulator)."""
    w_lo, w_hi = signed_range(s.weight_bits)
    x_lo, x_hi = code_range(s.in_bits, in_signed)
    ends = [a * b for a in (w_lo, w_hi) for b in (x_lo, x_hi)]
    return min(s.acc_bits, signed_width(min(ends), max(ends)))


def _product_function(name: str, s: FoldedShape, in_signed: bool) -> str:
    """``w * x`` as a function of the two codes, at the accumulator width: a truth table when both fit one
    LUT6 (each result bit is then one LUT), else shift-and-add. Never a ``*``, so Yosys puts no DSP here."""
    wb, xb = s.weight_bits, s.in_bits
    ab = product_bits(s, in_signed)
    if wb + xb <= 6:
        rows = []
        for w in range(1 << wb):
            wv = w - (1 << wb) if w >> (wb - 1) else w
            for x in range(1 << xb):
                xv = (x - (1 << xb) if x >> (xb - 1) else x) if in_signed else x
                rows.append(f"        {_hex((w << xb) | x, wb + xb)}: {name} = {_hex(wv * xv, ab)};")
        return f"""    function [{ab - 1}:0] {name};
        input [{wb - 1}:0] w;
        input [{xb - 1}:0] x;
        case ({{w, x}})
{chr(10).join(rows)}
        default: {name} = {ab}'d0;
        endcase
    endfunction
"""
    ext = f"{{{{{ab - xb}{{x[{xb - 1}]}}}}, x}}" if in_signed else f"{{{{{ab - xb}{{1'b0}}}}, x}}"
    terms = [f"(w[{k}] ? (xe << {k}) : {ab}'d0)" for k in range(wb - 1)]
    return f"""    function [{ab - 1}:0] {name};
        input [{wb - 1}:0] w;
        input [{xb - 1}:0] x;
        reg [{ab - 1}:0] xe;
        begin
            xe = {ext};
            {name} = {' + '.join(terms) if terms else f"{ab}'d0"} - (w[{wb - 1}] ? (xe << {wb - 1}) : {ab}'d0);
        end
    endfunction
"""


def _adder_tree(lines: list[str], prefix: str, terms: list[str], width: int, term_width: int | None = None,
                every: int = 0) -> tuple[str, int]:
    """Balanced sum of ``terms`` (log2(n) adder levels); returns the root and how many registers deep it is.

    With ``term_width``, the terms are signed numbers of that many bits and each level is one bit wider
    (sign-extended), up to ``width``: narrow adders where the partial sums are small. The root is then
    sign-extended to ``width``. With ``every`` > 0, every ``every``-th level is a register stage (all of its
    nodes, a carried odd term too, so every path through the tree has the same depth):
    :func:`~qpolicy_hw.fold.tree_registers` registers in all."""
    level, w, regs = 0, term_width or width, 0
    while len(terms) > 1:
        nxt = []
        wn = min(width, w + 1)
        register = every > 0 and (level + 1) % every == 0
        for k in range(0, len(terms), 2):
            node = f"{prefix}_l{level}_{k // 2}"
            if k + 1 < len(terms):
                a, b = (_sext(t, w, wn) for t in terms[k:k + 2])
                expr = f"{a} + {b}"
            elif wn == w and not register:
                nxt.append(terms[k])
                continue
            else:
                expr = _sext(terms[k], w, wn)
            if register:
                lines.append(f"    reg [{wn - 1}:0] {node};\n    always @(posedge clk) {node} <= {expr};")
            else:
                lines.append(f"    wire [{wn - 1}:0] {node} = {expr};")
            nxt.append(node)
        terms, level, w = nxt, level + 1, wn
        regs += register
    return _sext(terms[0], w, width), regs


def _delay(lines: list[str], name: str, expr: str, width: int, cycles: int) -> str:
    """``expr`` delayed by ``cycles`` registers (itself when 0): pads a shallower tree to the deepest."""
    for k in range(cycles):
        lines.append(f"    reg [{width - 1}:0] {name}_d{k};\n    always @(posedge clk) {name}_d{k} <= {expr};")
        expr = f"{name}_d{k}"
    return expr


def _sext(term: str, width: int, to: int) -> str:
    """``term`` (a signed number of ``width`` bits) sign-extended to ``to`` bits."""
    if to == width:
        return term
    if not re.fullmatch(r"\w+", term):
        raise ValueError(f"cannot sign-extend the expression {term!r}")
    return f"{{{{{to - width}{{{term}[{width - 1}]}}}}, {term}}}"


def folded_front(name: str, s: FoldedShape, words: list[int], extra_regs: str = "") -> tuple[str, str]:
    """The declarations every folded layer starts with (LUT or DSP lanes): the FSM's registers, the padded input
    and its fold multiplexer, the weight ROM and its counted address, the registered input slice, the MAC
    enables delayed by the MAC pipeline's depth, the drain counter and the output register. Returns the Verilog
    and the weight ROM module."""
    xb, ob, simd, sf, depth = s.in_bits, s.out_bits, s.simd, s.sf, s.mac_depth
    wdepth, wwidth = s.weight_rom
    waw = _clog2(wdepth)
    pad = (sf * simd - s.mw) * xb
    x_slices = "\n".join(f"    assign x_slice[{k}] = xp[{k * simd * xb + simd * xb - 1}:{k * simd * xb}];"
                         for k in range(sf))
    text = f"""    localparam S_IDLE = 3'd0, S_MAC = 3'd1, S_DRAIN = 3'd2, S_TADDR = 3'd3, S_TCMP = 3'd4, S_REDUCE = 3'd5,
        S_AFF = 3'd6;
    reg [2:0] state;
    reg [{_clog2(s.nf) - 1}:0] nf;
    reg [{_clog2(sf) - 1}:0] sf;
    reg [{_clog2(ob) - 1}:0] step;
{extra_regs}    // the binary search's probe bit (1 << step) and the bits below it: at step k, pos has no bit at or below k set,
    // so pos + below and pos + probe are ORs (no carry chain in front of the threshold ROM)
    reg [{ob - 1}:0] probe, below;
    wire [{sf * simd * xb - 1}:0] xp = {(f"{{{{{pad}{{1'b0}}}}, x}}" if pad else "x")};  // zero codes pad the inputs
    // the input fold sf's SIMD codes, selected by sf (an indexed array: a multiplexer, no sf * width product)
    wire [{simd * xb - 1}:0] x_slice [0:{sf - 1}];
{x_slices}
    reg [{waw - 1}:0] w_addr;   // nf * SF + sf, counted: no multiplier in front of the weight ROM
    wire [{wwidth - 1}:0] w_rom;
    {name}_wrom wrom (.clk(clk), .addr(w_addr), .data(w_rom));
    reg [{simd * xb - 1}:0] xs;
    reg [{depth}:0] mac_v_d, mac_first_d;   // the accumulator's (or the slices' OPMODE and CEP) enables
    wire mac_v = mac_v_d[{depth}], mac_first = mac_first_d[{depth}];
    wire mac_now = state == S_MAC || (state == S_IDLE && start);   // a weight word and an input slice are read
    reg [{_clog2(depth + 1) - 1}:0] drain;
    always @(posedge clk) begin
        xs <= x_slice[sf];
        mac_v_d <= {{mac_v_d, mac_now}};
        mac_first_d <= {{mac_first_d, mac_now && sf == 0}};
    end
    reg [{s.nf * s.pe * ob - 1}:0] y_all;
    assign y = y_all[{s.mh * ob - 1}:0];
"""
    return text, _rom_module(f"{name}_wrom", words, wwidth, _wants_block(wdepth, wwidth), waw)


def folded_fsm(s: FoldedShape, out_lo: int, after_drain: str, extra_states: str = "") -> str:
    """The control of a folded layer: per output group, SF MAC cycles, the drain (then ``after_drain``, e.g. the
    DSP cascade's ``extra_states``), the requantization, whose last cycle shifts the codes into the output
    register. The cycle that takes ``start`` is the first MAC cycle: the weight address rests at 0 while idle."""
    pe, nf, ob = s.pe, s.nf, s.out_bits
    olo_bits = out_lo & ((1 << ob) - 1)
    new_codes = ", ".join(f"code{p} + {_hex(olo_bits, ob)}" for p in reversed(range(pe)))
    shift_in = f"{{{new_codes}, y_all[{nf * pe * ob - 1}:{pe * ob}]}}" if nf > 1 else f"{{{new_codes}}}"
    store = (f"y_all <= {shift_in};\n                if (nf == {nf - 1}) begin done <= 1'b1; w_addr <= 0; state <= S_IDLE; end "
             "else begin nf <= nf + 1'b1; state <= S_MAC; end")
    mac_step = (f"w_addr <= w_addr + 1'b1;\n                if (sf == {s.sf - 1}) begin sf <= 0; drain <= {s.mac_depth}; "
                "state <= S_DRAIN; end else begin sf <= sf + 1'b1; state <= S_MAC; end")
    return f"""    always @(posedge clk) begin
        done <= 1'b0;
        if (rst) begin
            state <= S_IDLE; nf <= 0; sf <= 0; step <= 0; w_addr <= 0;
        end else case (state)
            S_IDLE: if (start) begin
                nf <= 0;
                {mac_step}
            end
            S_MAC: begin
                {mac_step}
            end
            S_DRAIN: if (drain == 0) begin {after_drain} end
                     else drain <= drain - 1'b1;
{extra_states}{requant_states(s, store)}            default: state <= S_IDLE;
        endcase
    end
"""


def folded_module(name: str, s: FoldedShape, summary: str, body: list[str], parts: list[str]) -> str:
    """A folded layer's module (``summary`` in its header comment) followed by its ROM modules."""
    header = (f"// {name}: {summary}; {s.cycles} cycles start -> done.\n"
              "// Generated by qpolicy from a bundle; do not edit.\n")
    module = (header + f"module {name} (input clk, input rst, input start, input [{s.mw * s.in_bits - 1}:0] x,\n"
              f"    output reg done, output [{s.mh * s.out_bits - 1}:0] y);\n" + "".join(body) + "endmodule\n")
    return "`timescale 1 ns / 1 ps\n" + module + "\n" + "\n".join(parts)


def folded_layer_verilog(layer: Layer, fold: Fold, name: str, stage_levels: int = 0) -> tuple[str, FoldedShape]:
    """The Verilog of one folded layer (module ``name`` and its ROMs) and its shape. With ``stage_levels``, the
    products are registered and the lanes' adder trees get a register every ``stage_levels`` levels; the
    accumulator's enables follow them down the pipeline and the drain waits for them."""
    s = folded_shape(layer, fold, stage_levels)
    depth = s.mac_depth
    w = np.zeros((s.nf * s.pe, s.sf * s.simd), np.int64)
    w[:s.mh, :s.mw] = layer.weights
    xb, ab, wb = s.in_bits, s.acc_bits, s.weight_bits
    pe, simd, nf, sf = s.pe, s.simd, s.nf, s.sf

    words = [_pack([w[g * pe + p, k * simd + j] for p in range(pe) for j in range(simd)], wb)
             for g in range(nf) for k in range(sf)]
    front, wrom = folded_front(name, s, words)
    parts = [wrom] + requant_roms(layer, s, name)
    pb = product_bits(s, layer.in_signed)
    wwidth = s.weight_rom[1]
    weight_stage = (f"""    reg [{wwidth - 1}:0] w_q;   // block RAM out, registered: its clock-to-out stays off the products
    reg [{simd * xb - 1}:0] xs_q;
    always @(posedge clk) begin w_q <= w_rom; xs_q <= xs; end
""" if s.weight_register else f"""    wire [{wwidth - 1}:0] w_q = w_rom;
    wire [{simd * xb - 1}:0] xs_q = xs;
""")
    body = [_product_function("mul", s, layer.in_signed), front, weight_stage]
    for p in range(pe):
        prods = [f"mul(w_q[{(p * simd + j) * wb} +: {wb}], xs_q[{j * xb} +: {xb}])" for j in range(simd)]
        for j, expr in enumerate(prods):
            body.append(f"    reg [{pb - 1}:0] p{p}_m{j};\n    always @(posedge clk) p{p}_m{j} <= {expr};" if depth
                        else f"    wire [{pb - 1}:0] p{p}_m{j} = {expr};")
        root, regs = _adder_tree(body, f"p{p}", [f"p{p}_m{j}" for j in range(simd)], ab, pb, stage_levels)
        assert depth == (1 + regs + int(s.weight_register) if depth else 0), (depth, regs)
        body.append(f"""    reg [{ab - 1}:0] acc{p};
    always @(posedge clk) if (mac_v) acc{p} <= (mac_first ? {ab}'d0 : acc{p}) + {root};
""" + requant_lane(name, p, s))
    if s.affine:
        lines, rom = affine_unit_verilog(layer, s, name)
        body.append(lines)
        parts.append(rom)
    body.append(folded_fsm(s, layer.out_range[0], requant_start(s)))
    summary = (f"a folded layer, {s.mh} outputs x {s.mw} inputs on PE={pe} x SIMD={simd} lanes ({nf} output groups "
               f"x {sf} input folds, MAC pipeline {depth} deep)")
    return folded_module(name, s, summary, body, parts), s


# --- the core: a sequence of segments -----------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One step of the core's sequence: the module computing its layers, its widths and its cycles."""

    layers: tuple[int, ...]
    fold: Fold
    module: str
    in_width: int
    out_width: int
    cycles: int


def segments_of(plan: list[Fold]) -> list[tuple[int, ...]]:
    """Layer indices grouped into segments: one layer each in a mixed core.

    A mixed core does not use da4ml: for single layers and for outputs that are unsigned hidden codes,
    da4ml 0.6.0 may leave an output as a scaled view of an internal value (``out_shifts`` != 0), and the
    Verilog of such traces disagreed with its own ``predict`` in our tests; whole cores ending in signed
    output codes (``rtl.build_rtl``) are exact and keep using it."""
    return [(i,) for i in range(len(plan))]


def unrolled_layer_verilog(layer: Layer, name: str, stage_levels: int = 0) -> tuple[str, int]:
    """One layer with its weights as constants (shift-and-add terms, no ROM, no multiplier), registered
    accumulators, then a count of the thresholds each accumulator reaches (only those inside the channel's
    reachable range are compared; the rest are constants). Used for the small layers of a mixed core; a whole
    unrolled core uses da4ml's adder graphs instead. With ``stage_levels``, both trees get a register every
    ``stage_levels`` levels and every channel is padded to the deepest (:func:`~qpolicy_hw.fold.unrolled_stages`).
    Returns the Verilog and the cycles from start to done."""
    mh, mw = layer.shape
    lo, _ = layer.product_range()
    ab = accumulator_bits(layer)
    xb, ob = layer.in_bits, layer.out_bits
    t = folded_thresholds(layer)
    olo = layer.out_range[0]
    sums, counts = unrolled_stages(layer, stage_levels)
    latency = unrolled_cycles(layer, stage_levels)
    lines = []
    for j in range(mw):
        fill = f"x[{j * xb + xb - 1}]" if layer.in_signed else "1'b0"
        lines.append(f"    wire [{ab - 1}:0] xe{j} = {{{{{ab - xb}{{{fill}}}}}, x[{j * xb + xb - 1}:{j * xb}]}};"
                     if ab > xb else f"    wire [{ab - 1}:0] xe{j} = x[{j * xb + ab - 1}:{j * xb}];")
    for c, ((pos_terms, neg_terms), live) in enumerate(zip(constant_terms(layer), live_thresholds(layer),
                                                           strict=True)):
        pos = [f"(xe{j} << {bit})" if bit else f"xe{j}" for j, bit in pos_terms] or [f"{ab}'d0"]
        neg = [f"(xe{j} << {bit})" if bit else f"xe{j}" for j, bit in neg_terms]
        root_p, regs_p = _adder_tree(lines, f"c{c}p", pos, ab, every=stage_levels)
        root_p = _delay(lines, f"c{c}p", root_p, ab, sums - regs_p)
        root = root_p
        if neg:
            root_n, regs_n = _adder_tree(lines, f"c{c}n", neg, ab, every=stage_levels)
            root = f"{root_p} - {_delay(lines, f'c{c}n', root_n, ab, sums - regs_n)}"
        lines.append(f"    reg [{ab - 1}:0] acc{c};\n    always @(posedge clk) acc{c} <= {root};")
        always = int((t[c] <= lo[c]).sum())
        hits = [f"{{{{{ob - 1}{{1'b0}}}}, $signed(acc{c}) >= $signed({_hex(v, ab)})}}" if ob > 1
                else f"($signed(acc{c}) >= $signed({_hex(v, ab)}))" for v in live]
        count, regs_t = _adder_tree(lines, f"c{c}t", hits, ob, every=stage_levels) if hits else (f"{ob}'d0", 0)
        count = _delay(lines, f"c{c}t", count, ob, counts - regs_t)
        lines.append(f"    reg [{ob - 1}:0] y{c};\n    always @(posedge clk) y{c} <= {count} + {_hex(olo + always, ob)};")
    outs = ", ".join(f"y{c}" for c in reversed(range(mh)))
    return f"""`timescale 1 ns / 1 ps
// {name}: an unrolled layer, {mh} outputs x {mw} inputs, constant weights; {latency} cycles start -> done.
// Generated by qpolicy from a bundle; do not edit.
module {name} (input clk, input rst, input start, input [{mw * xb - 1}:0] x, output done,
    output [{mh * ob - 1}:0] y);
    reg [{latency - 1}:0] v;
    always @(posedge clk) v <= rst ? {latency}'d0 : {{v[{latency - 2}:0], start}};
    assign done = v[{latency - 1}];
{chr(10).join(lines)}
    assign y = {{{outs}}};
endmodule
""", latency


def core_verilog(segments: list[Segment]) -> str:
    """The top: latches an input when idle, runs the segments one after another, holds the codes."""
    n_in, n_out = segments[0].in_width, segments[-1].out_width
    insts = []
    for k, seg in enumerate(segments):
        start = "start0" if k == 0 else f"done{k - 1}"
        x = "x0" if k == 0 else f"y{k - 1}"
        insts.append(f"    wire done{k};\n    wire [{seg.out_width - 1}:0] y{k};\n"
                     f"    {seg.module} seg{k} (.clk(clk), .rst(rst), .start({start}), .x({x}), .done(done{k}), "
                     f".y(y{k}));")
    last = len(segments) - 1
    latency = 1 + sum(s.cycles for s in segments)
    plan = ", ".join(f"layer{'s' if len(s.layers) > 1 else ''} {'-'.join(map(str, s.layers))}: "
                     + ("unrolled" if s.fold.unrolled else f"PE {s.fold.pe} x SIMD {s.fold.simd}") for s in segments)
    return f"""`timescale 1 ns / 1 ps
// {CORE_TOP}: a folded policy core ({plan}). Generated by qpolicy from a bundle; do not edit.
// in_data packs the signed input codes (code i in bits [IN_BITS*i +: IN_BITS]), out_data the signed
// output codes. An input is taken when in_valid and in_ready are high (idle, or the cycle the last
// result comes out); out_valid pulses exactly LATENCY = {latency} cycles later, and out_data holds until
// the next result.
module {CORE_TOP} #(parameter LATENCY = {latency}) (
    input clk,
    input rst,
    input in_valid,
    input [{n_in - 1}:0] in_data,
    output in_ready,
    output out_valid,
    output [{n_out - 1}:0] out_data
);
    reg busy, start0;
    reg [{n_in - 1}:0] x0;
{chr(10).join(insts)}
    assign in_ready = !busy || done{last};
    always @(posedge clk) begin
        start0 <= 1'b0;
        if (rst) busy <= 1'b0;
        else if (in_valid && in_ready) begin x0 <= in_data; busy <= 1'b1; start0 <= 1'b1; end
        else if (done{last}) busy <= 1'b0;
    end
    assign out_valid = done{last};
    assign out_data = y{last};
endmodule
"""


def build_folded_rtl(layers: list[Layer], plan: list[Fold], out_dir: str | Path,
                     stage_levels: int = DEFAULT_STAGE_LEVELS) -> dict:
    """Write the Verilog of a folded (or mixed) core into ``out_dir/src``; returns its description.
    ``stage_levels``: adder levels per pipeline register (0: none)."""

    out = Path(out_dir)
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    segments: list[Segment] = []
    shapes = []
    for k, group in enumerate(segments_of(plan)):
        first, last = layers[group[0]], layers[group[-1]]
        in_width, out_width = first.shape[1] * first.in_bits, last.shape[0] * last.out_bits
        fold = plan[group[0]]
        if fold.unrolled:
            name = f"qpolicy_seg{k}"
            text, latency = unrolled_layer_verilog(first, name, stage_levels)
            (src / f"{name}.v").write_text(text)
            shapes.append({"layers": list(group), "fold": "unrolled", "cycles": latency})
        else:
            from qpolicy_hw.fold_dsp import dsp_layer_verilog

            name = f"qpolicy_seg{k}"
            text, shape = (dsp_layer_verilog(first, fold, name) if fold.dsp
                           else folded_layer_verilog(first, fold, name, stage_levels))
            (src / f"{name}.v").write_text(text)
            latency = shape.cycles
            shapes.append({"layers": list(group), "fold": str(fold), "pe": shape.pe, "simd": shape.simd,
                           "dsp48e1": shape.slices,
                           "output_groups": shape.nf, "input_folds": shape.sf, "acc_bits": shape.acc_bits,
                           "weight_rom": {"depth": shape.weight_rom[0], "width": shape.weight_rom[1],
                                          "style": "block" if _wants_block(*shape.weight_rom) else "distributed"},
                           "threshold_roms": {"count": shape.pe, "depth": shape.threshold_rom[0],
                                              "width": shape.threshold_rom[1]},
                           "mac_pipeline": shape.mac_depth, "cycles": latency})
        segments.append(Segment(group, fold, name, in_width, out_width, latency))
    (src / f"{CORE_TOP}.v").write_text(core_verilog(segments))
    return {"n_in": layers[0].shape[1], "in_bits": layers[0].in_bits, "n_out": layers[-1].shape[0],
            "out_bits": layers[-1].out_bits, "latency": 1 + sum(s.cycles for s in segments),
            "streaming": False, "fold": ",".join(map(str, plan)), "segments": shapes, "stage_levels": stage_levels}



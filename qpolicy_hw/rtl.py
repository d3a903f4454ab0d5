"""The vendor-free RTL core: the bundle's integer function traced by da4ml into pipelined Verilog,
wrapped with reset and valid, and simulated with Verilator against the ``int`` reference.

The traced function is exactly the contract: signed input codes, ``acc = W q + B`` (da4ml turns the
constant matrix products into adder trees, no multipliers), then each output code as
``lo + #{k : acc >= T[c, k]}`` (thresholds beyond the channel's reachable accumulator range are
folded into the constant). The RTL always uses the thresholds, also where a power-of-two bundle records
the equivalent shift form (``Layer.shift``): the comparisons against constants cost no more.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qpolicy_hw.bundle import Bundle, channel_acc_range
from qpolicy_hw.core_function import Layer, bundle_layers

if TYPE_CHECKING:
    from qpolicy_hw.fold import Fold
from qpolicy_hw.errors import BackendUnavailable, QpolicyError
from qpolicy_hw.timing import analyze_file

TOP = "qpolicy_core"
CORE = "policy_core"
DEFAULT_LATENCY_CUTOFF = 8.0
"""da4ml's per-stage delay budget (its own delay units); smaller means more pipeline stages."""
CMVM_SOLVE_LIMIT = 128 * 128
"""Largest weight matrix handed to da4ml's constant-matrix solver in one piece. Its search grows much
faster than the matrix: a random 3-bit 128x128 solves in ~5 s here, 256x256 did not finish in 30 min."""
CMVM_BLOCK_ROWS = 64
"""Output rows per solver call for larger layers (256 inputs x 64 outputs: ~6 s). Adders are then shared
only within a block, so the core costs somewhat more LUTs than one global solve would find."""


def _balanced_sum(terms: list):
    """Sum as a balanced tree, so the comparator count adds log2(n) adder levels, not n."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def solver_blocks(shape: tuple[int, int]) -> int:
    """How many da4ml solves a layer of this (out, in) shape is traced in."""
    rows, cols = shape
    return 1 if rows * cols <= CMVM_SOLVE_LIMIT else -(-rows // CMVM_BLOCK_ROWS)


def _constant_matmul(x, w: np.ndarray, b: np.ndarray) -> list:
    """Per output channel, ``(w @ x + b)[c]`` traced by da4ml; in row blocks when the matrix is too large
    for one solve."""
    if solver_blocks(w.shape) == 1:
        acc = x @ w.T + b
        return [acc[c] for c in range(w.shape[0])]
    out = []
    for r in range(0, w.shape[0], CMVM_BLOCK_ROWS):
        part = x @ w[r:r + CMVM_BLOCK_ROWS].T + b[r:r + CMVM_BLOCK_ROWS]
        out.extend(part[c] for c in range(min(CMVM_BLOCK_ROWS, w.shape[0] - r)))
    return out


DA_LIBRARIES = ("da4ml", "alkaid")
"""The distributed-arithmetic tracer and Verilog writer: da4ml (pinned, the default) or its successor alkaid
(``bench/alkaid_vs_da4ml.py`` compares them; docs/hardware.md)."""


def _da(library: str):
    """``(array class, input class, quantize, trace, write)`` of one distributed-arithmetic library."""
    if library == "alkaid":
        from alkaid.codegen import RTLModel
        from alkaid.trace import FVArray, FVArrayInput, trace
        from alkaid.trace.ops import quantize

        def write(comb, out, latency_cutoff):
            RTLModel(comb, out, prj_name=CORE, latency_cutoff=latency_cutoff, print_latency=False).write()
        return FVArray, FVArrayInput, quantize, trace, write
    if library != "da4ml":
        raise QpolicyError(f"library {library!r}: choose {' or '.join(DA_LIBRARIES)}")
    from da4ml.codegen import VerilogModel
    from da4ml.trace import FixedVariableArray, FixedVariableArrayInput, comb_trace
    from da4ml.trace.ops import quantize

    def write(comb, out, latency_cutoff):
        VerilogModel(comb, CORE, out, latency_cutoff=latency_cutoff, print_latency=False).write()
    return FixedVariableArray, FixedVariableArrayInput, quantize, comb_trace, write


def trace_layers(layers: list[Layer], library: str = "da4ml"):
    """A chain of integer layers as one combinational graph of the distributed-arithmetic ``library``
    (input codes -> output codes)."""
    FixedVariableArray, FixedVariableArrayInput, quantize, comb_trace, _ = _da(library)

    first = layers[0]
    inp = FixedVariableArrayInput((first.shape[1],))
    x = quantize(inp, 1 if first.in_signed else 0, first.in_bits - (1 if first.in_signed else 0), 0)
    for layer in layers:
        w, b, t = layer.weights, layer.bias, layer.thresholds
        acc = _constant_matmul(x, w, b)
        lo, _ = layer.out_range
        codes = []
        ch_min, ch_max = channel_acc_range(w, b, *layer.in_range)
        for c in range(w.shape[0]):
            always = int((t[c] <= ch_min[c]).sum())      # thresholds every reachable acc meets
            live = [int(v) for v in t[c] if ch_min[c] < v <= ch_max[c]]
            if live:
                codes.append(_balanced_sum([acc[c] >= v for v in live]) + (lo + always))
            else:
                codes.append(acc[c] * 0 + (lo + always))
        k = 1 if layer.out_signed else 0
        x = quantize(FixedVariableArray(np.array(codes, dtype=object)), k, layer.out_bits - k, 0, "SAT")
    # every input keeps its place in the port, even one no output depends on (an always-zero observation
    # whose weights quantized to 0): dropped, the later inputs would shift and every code after them be wrong
    return comb_trace(inp, x, keep_dead_inputs=True)


def trace_core(bundle: Bundle, library: str = "da4ml"):
    """The bundle's whole integer core as one combinational graph (input codes -> output codes)."""
    return trace_layers(bundle_layers(bundle), library)


def _fix_for_verilator(src: Path) -> None:
    """Verilator 5.006 refuses lint codes it does not know (WIDTHTRUNC from newer generators; alkaid writes
    ``UNUSEDSIGNAL,`` with a comma): drop the generators' lint pragmas (we run with -Wno-lint anyway)."""
    for f in src.rglob("*.v"):
        text = f.read_text()
        fixed = re.sub(r"/\*\s*verilator lint_(off|on) [^*]*\*/", "", text)
        fixed = re.sub(r"//\s*verilator lint_(off|on) [^\n]*", "", fixed)
        if fixed != text:
            f.write_text(fixed)


def _slots(name: str, n: int, bits: int, slot: int, into_core: bool) -> str:
    """Wires between our fixed-width fields (``bits`` each) and the library wrapper's regular slots (``slot``
    each): inputs keep their low bits, outputs are sign-extended."""
    if into_core:
        return "\n".join(f"    assign {name}[{slot * i + slot - 1}:{slot * i}] = in_data[{bits * i + slot - 1}:{bits * i}];"
                         for i in range(n))
    pad = bits - slot
    return "\n".join(f"    assign out_data[{bits * i + bits - 1}:{bits * i}] = "
                     + (f"{{{{{pad}{{{name}[{slot * i + slot - 1}]}}}}, {name}[{slot * i + slot - 1}:{slot * i}]}};"
                        if pad else f"{name}[{slot * i + slot - 1}:{slot * i}];") for i in range(n))


def wrapper_verilog(n_in: int, in_bits: int, n_out: int, out_bits: int, latency: int,
                    core_slots: tuple[int, int] | None = None) -> str:
    """Reset and a valid pipeline around the distributed-arithmetic core (whose ports are only clk, input and
    output). ``core_slots``: the bits per input and per output of the library's own I/O wrapper
    (``{CORE}_wrapper``, a regular layout with one slot per value even where the core packs its port tighter: an
    input no output depends on has no bits there, a narrower output fewer); None: the core's port itself."""
    iw, ow = n_in * in_bits, n_out * out_bits
    if core_slots is None:
        core = f"    {CORE} core (.clk(clk), .model_inp(in_data), .model_out(out_data));"
    else:
        si, so = core_slots
        core = (f"    wire [{n_in * si - 1}:0] core_in;\n    wire [{n_out * so - 1}:0] core_out;\n"
                + _slots("core_in", n_in, in_bits, si, True) + "\n"
                + f"    {CORE}_wrapper core (.clk(clk), .model_inp(core_in), .model_out(core_out));\n"
                + _slots("core_out", n_out, out_bits, so, False))
    return f"""`timescale 1 ns / 1 ps
// {TOP}: the policy core with reset and valid. Generated by qpolicy from a bundle; do not edit.
// in_data packs {n_in} signed {in_bits}-bit input codes (code i in bits [{in_bits}*i +: {in_bits}]);
// out_data packs {n_out} signed {out_bits}-bit output codes the same way. out_valid follows
// in_valid after exactly LATENCY = {latency} clock cycles; a new input may enter every cycle.
module {TOP} #(parameter LATENCY = {latency}) (
    input clk,
    input rst,
    input in_valid,
    input [{iw - 1}:0] in_data,
    output out_valid,
    output [{ow - 1}:0] out_data
);
    reg [LATENCY-1:0] valid_pipe;
    always @(posedge clk) begin
        if (rst) valid_pipe <= {{LATENCY{{1'b0}}}};
        else valid_pipe <= {{valid_pipe[LATENCY-2:0], in_valid}};
    end
    assign out_valid = valid_pipe[LATENCY-1];
{core}
endmodule
"""


TESTBENCH = r"""// Verilator testbench: streams input code vectors (one per cycle) and prints output codes.
#include <cstdio>
#include <cstdint>
#include <string>
#include <vector>
#include "Vqpolicy_core.h"
#include "verilated.h"

static void set_bits(Vqpolicy_core* top, int bit, int width, int64_t v) {
    for (int i = 0; i < width; ++i) {
        int b = bit + i, word = b / 32, off = b % 32;
        uint32_t one = ((uint64_t)v >> i) & 1u;
        IN_WORDS[word] = (IN_WORDS[word] & ~(1u << off)) | (one << off);
    }
}
static int64_t get_bits(Vqpolicy_core* top, int bit, int width) {
    int64_t v = 0;
    for (int i = 0; i < width; ++i) {
        int b = bit + i, word = b / 32, off = b % 32;
        v |= (int64_t)((OUT_WORDS[word] >> off) & 1u) << i;
    }
    if (v & ((int64_t)1 << (width - 1))) v -= ((int64_t)1 << width);  // sign-extend
    return v;
}
int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    auto* top = new Vqpolicy_core;
    top->clk = 0; top->rst = 1; top->in_valid = 0; top->eval();
    if (argc > 1 && std::string(argv[1]) == "serve") {   // one vector per line in, its codes out
        for (int i = 0; i < 4; ++i) { top->clk = 1; top->eval(); top->clk = 0; top->eval(); }
        top->rst = 0;
        std::vector<int64_t> v(N_IN);
        while (true) {
            for (int j = 0; j < N_IN; ++j) if (scanf("%lld", (long long*)&v[j]) != 1) { delete top; return 0; }
            for (int j = 0; j < N_IN; ++j) set_bits(top, j * IN_BITS, IN_BITS, v[j]);
            top->in_valid = 1;
            int cycles = 0;
            do { top->clk = 1; top->eval(); top->clk = 0; top->eval(); top->in_valid = 0; ++cycles; }
            while (!top->out_valid && cycles < 100000);
            for (int j = 0; j < N_OUT; ++j) printf("%lld ", (long long)get_bits(top, j * OUT_BITS, OUT_BITS));
            printf("%d\n", cycles);
            fflush(stdout);
        }
    }
    int n; if (scanf("%d", &n) != 1) return 2;
    std::vector<int64_t> q((size_t)n * N_IN);
    for (auto& v : q) if (scanf("%lld", (long long*)&v) != 1) return 2;
    top->clk = 0; top->rst = 1; top->in_valid = 0; top->eval();
    for (int i = 0; i < 4; ++i) { top->clk = 1; top->eval(); top->clk = 0; top->eval(); }
    top->rst = 0;
#ifdef BLOCKING
    // a folded core takes one input at a time: the next one enters when the last result is out
    long long lat_min = -1, lat_max = 0;
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < N_IN; ++j) set_bits(top, j * IN_BITS, IN_BITS, q[(size_t)i * N_IN + j]);
        top->in_valid = 1;
        long long cycles = 0;
        do { top->clk = 1; top->eval(); top->clk = 0; top->eval(); top->in_valid = 0; ++cycles; }
        while (!top->out_valid && cycles < 10000000);
        if (!top->out_valid) { fprintf(stderr, "no out_valid after %lld cycles\n", cycles); return 1; }
        for (int j = 0; j < N_OUT; ++j) printf("%lld ", (long long)get_bits(top, j * OUT_BITS, OUT_BITS));
        printf("\n");
        if (lat_min < 0 || cycles < lat_min) lat_min = cycles;
        if (cycles > lat_max) lat_max = cycles;
    }
    fprintf(stderr, "latency_cycles %lld\nlatency_max %lld\n", lat_min, lat_max);
    delete top;
    return 0;
#endif
    long long cycle = 0, first_in = -1, first_out = -1; int got = 0;
    for (int c = 0; got < n && c < n + 4096; ++c, ++cycle) {
        bool feed = c < n;
        top->in_valid = feed;
        if (feed) { for (int j = 0; j < N_IN; ++j) set_bits(top, j * IN_BITS, IN_BITS, q[(size_t)c * N_IN + j]);
                    if (first_in < 0) first_in = cycle; }
        top->clk = 1; top->eval();           // rising edge: the pipeline advances
        top->clk = 0; top->eval();
        if (top->out_valid) {
            if (first_out < 0) first_out = cycle + 1;
            for (int j = 0; j < N_OUT; ++j) printf("%lld ", (long long)get_bits(top, j * OUT_BITS, OUT_BITS));
            printf("\n"); ++got;
        }
    }
    fprintf(stderr, "latency_cycles %lld\n", first_out - first_in);
    delete top;
    return got == n ? 0 : 1;
}
"""


def build_rtl(bundle: Bundle, out_dir: str | Path, latency_cutoff: float = DEFAULT_LATENCY_CUTOFF,
              library: str = "da4ml") -> dict:
    """Write the Verilog project (the distributed-arithmetic core + valid wrapper) and return its description."""
    if not (isinstance(latency_cutoff, (int, float)) and math.isfinite(latency_cutoff) and latency_cutoff > 0):
        raise QpolicyError(f"latency cutoff {latency_cutoff!r}: the delay budget per pipeline stage must be positive")
    out = Path(out_dir)
    _da(library)[4](trace_core(bundle, library), out, latency_cutoff)
    _fix_for_verilator(out / "src")
    # Register layers on the data path: the stage inputs plus the output register. The valid pipeline
    # gets the same depth; the streaming simulation then proves it (an off-by-one shows as mismatches).
    core_text = (out / "src" / f"{CORE}.v").read_text()
    # one non-blocking assignment per register layer: ``x <= ...`` (da4ml), ``x[n:0] <= ...`` (alkaid)
    registers = len(re.findall(r"^\s*\w+(\[[^\]]*\])?\s*<=", core_text, flags=re.MULTILINE))
    info = {"n_in": bundle.obs_dim, "in_bits": bundle.bits["input"], "n_out": bundle.act_dim,
            "out_bits": bundle.bits["output"], "latency": registers, "latency_cutoff": latency_cutoff,
            "streaming": True, "fold": ",".join("u" * len(bundle.layers)), "library": library,
            "da4ml_stages": json.loads((out / "metadata.json").read_text())["latency"],
            "cmvm_blocks": [solver_blocks(bundle.weights(i).shape) for i in range(len(bundle.layers))]}
    (out / "src" / f"{TOP}.v").write_text(wrapper_verilog(info["n_in"], info["in_bits"], info["n_out"],
                                                         info["out_bits"], info["latency"],
                                                         _io_slots(out, info)))
    (out / "qpolicy_rtl.json").write_text(json.dumps(info, indent=2))
    for leftover in DA4ML_LEFTOVERS:   # da4ml's own project files target another part and clock: not ours
        path = out / leftover
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return info


def _io_slots(out: Path, info: dict) -> tuple[int, int]:
    """Bits per input and per output slot of the library's I/O wrapper, checked against the bundle's widths."""
    text = (out / "src" / f"{CORE}_wrapper.v").read_text()
    widths = [int(re.search(rf"(?:input|output)\s*(?:wire\s*)?\[(\d+):0\]\s*{port}\b", text).group(1)) + 1
              for port in ("model_inp", "model_out")]
    (w_in, w_out), (n_in, n_out) = widths, (info["n_in"], info["n_out"])
    if w_in % n_in or w_out % n_out or w_in // n_in > info["in_bits"] or w_out // n_out > info["out_bits"]:
        raise QpolicyError(f"the generated core's I/O ({w_in} input, {w_out} output bits) does not fit {n_in} "
                           f"{info['in_bits']}-bit inputs and {n_out} {info['out_bits']}-bit outputs")
    return w_in // n_in, w_out // n_out


DA4ML_LEFTOVERS = ("build_vivado_prj.tcl", "build_quartus_prj.tcl", f"src/{CORE}.xdc", f"src/{CORE}.sdc", "sim")
"""What da4ml's writer adds beside the Verilog for its own flow (an xcvu13p at 5 ns, a Quartus project, a
Python binder); ``qpolicy hw`` writes the target's own TCL and constraints instead."""


def build_core(bundle: Bundle, out_dir: str | Path, plan: list[Fold] | None = None,
               latency_cutoff: float = DEFAULT_LATENCY_CUTOFF, stage_levels: int | None = None) -> dict:
    """The bundle's core in ``out_dir``: da4ml's unrolled core when every layer is unrolled (``plan`` None or
    all ``u``), else the folded or mixed core of ``plan`` (``fold_verilog.py``) with a register every
    ``stage_levels`` adder levels (None: the default)."""
    from qpolicy_hw.fold import DEFAULT_STAGE_LEVELS
    from qpolicy_hw.fold_verilog import build_folded_rtl

    if plan is None or all(f.unrolled for f in plan):
        return build_rtl(bundle, out_dir, latency_cutoff)
    info = build_folded_rtl(bundle_layers(bundle), plan, out_dir,
                            DEFAULT_STAGE_LEVELS if stage_levels is None else stage_levels)
    (Path(out_dir) / "qpolicy_rtl.json").write_text(json.dumps(info, indent=2))
    return info


def verilog_sources(rtl_dir: Path) -> list[Path]:
    """The project's Verilog files; da4ml's table module only when the design has tables (Yosys
    otherwise fails on its placeholder memory file)."""
    src = rtl_dir / "src"
    has_tables = any((src / "memfiles").glob("*"))
    static = [p for p in sorted((src / "static").glob("*.v")) if has_tables or p.name != "lookup_table.v"]
    return sorted(src.glob("*.v")) + static


SIM_MODELS = ("DSP48E1",)
"""Vendor primitives a generated core may instantiate; simulations take their behavioural models from Yosys'
xc7 cell library (``share/yosys/xilinx/cells_sim.v``), synthesis keeps them as primitives."""


def _yosys_cell_library() -> Path | None:
    yosys = shutil.which("yosys")
    candidates = ([Path(yosys).resolve().parents[1] / "share" / "yosys"] if yosys else []) + [Path("/usr/share/yosys"),
                                                                                            Path("/usr/local/share/yosys")]
    return next((c / "xilinx" / "cells_sim.v" for c in candidates if (c / "xilinx" / "cells_sim.v").exists()), None)


def simulation_models(rtl_dir: Path) -> list[Path]:
    """The behavioural models of the primitives the core instantiates, written to ``rtl_dir/sim_models``
    (simulation only: never handed to synthesis). Raises :class:`BackendUnavailable` without Yosys' library."""
    text = "".join(p.read_text() for p in sorted((rtl_dir / "src").glob("*.v")))
    used = [m for m in SIM_MODELS if re.search(rf"\b{m}\s+#\(", text)]
    if not used:
        return []
    library = _yosys_cell_library()
    if library is None:
        raise BackendUnavailable("the core uses DSP48E1 slices and simulating them needs Yosys' xc7 cell library "
                                 "(share/yosys/xilinx/cells_sim.v): apt-get install -y yosys")
    lib = library.read_text()
    out = rtl_dir / "sim_models"
    out.mkdir(exist_ok=True)
    paths = []
    for m in used:
        found = re.search(rf"^module {m} \(.*?^endmodule", lib, re.M | re.S)
        if found is None:
            raise BackendUnavailable(f"{library} has no {m} model")
        path = out / f"{m}.v"
        text = "`timescale 1 ns / 1 ps\n" + found.group(0) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        paths.append(path)
    return paths


def compile_simulator(rtl_dir: str | Path) -> Path:
    """Verilate the wrapped core with the streaming testbench (cached next to the sources)."""
    rtl_dir = Path(rtl_dir)
    if shutil.which("verilator") is None:
        raise BackendUnavailable("verilator is not installed: apt-get install -y verilator")
    info = json.loads((rtl_dir / "qpolicy_rtl.json").read_text())
    words_in = "top->in_data" if info["n_in"] * info["in_bits"] > 64 else "((uint32_t*)&top->in_data)"
    words_out = "top->out_data" if info["n_out"] * info["out_bits"] > 64 else "((uint32_t*)&top->out_data)"
    tb = (f"#define N_IN {info['n_in']}\n#define IN_BITS {info['in_bits']}\n#define N_OUT {info['n_out']}\n"
          f"#define OUT_BITS {info['out_bits']}\n#define IN_WORDS {words_in}\n#define OUT_WORDS {words_out}\n"
          + ("" if info.get("streaming", True) else "#define BLOCKING 1\n") + TESTBENCH)
    return verilate(rtl_dir, TOP, tb, "verilator")


def verilate(rtl_dir: str | Path, top: str, testbench: str, sim_name: str, flags: list[str] | None = None) -> Path:
    """Build ``top`` of the project in ``rtl_dir`` with a C++ ``testbench`` into ``rtl_dir/sim_name``; the
    binary is reused while the testbench and the Verilog are unchanged (a hash of both)."""
    rtl_dir = Path(rtl_dir).resolve()   # make runs inside the object folder: relative paths would break
    if shutil.which("verilator") is None:
        raise BackendUnavailable("verilator is not installed: apt-get install -y verilator")
    sim_dir = rtl_dir / sim_name
    sim_dir.mkdir(exist_ok=True)
    (sim_dir / "tb.cpp").write_text(testbench)
    sources = verilog_sources(rtl_dir) + simulation_models(rtl_dir)
    digest = hashlib.sha256(testbench.encode() + b"".join(p.read_bytes() for p in sources)).hexdigest()
    binary, stamp = sim_dir / "obj" / "sim", sim_dir / "build.sha256"
    if binary.exists() and stamp.exists() and stamp.read_text() == digest:
        return binary
    cmd = ["verilator", "--cc", "--exe", "--build", "-O2", "-Wno-fatal", "-Wno-lint", "-Wno-style", *(flags or []),
           "--top-module", top, "-Mdir", str(sim_dir / "obj"), "-o", "sim", str(sim_dir / "tb.cpp"),
           *map(str, sources)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise QpolicyError("verilator failed: " + (proc.stderr or proc.stdout).strip().splitlines()[-1][:300])
    stamp.write_text(digest)
    return binary


def simulate(rtl_dir: str | Path, q_in: np.ndarray) -> tuple[np.ndarray, int]:
    """Output codes of the Verilated core for ``q_in`` (streamed one per cycle) and the measured latency."""
    binary = compile_simulator(rtl_dir)
    q = np.asarray(q_in, dtype=np.int64)
    text = f"{len(q)}\n" + "\n".join(" ".join(map(str, row)) for row in q) + "\n"
    proc = subprocess.run([str(binary)], input=text, capture_output=True, text=True)
    if proc.returncode != 0:
        raise QpolicyError(f"simulation failed: {proc.stderr.strip()[-300:]}")
    out = np.array([[int(v) for v in line.split()] for line in proc.stdout.strip().splitlines()], dtype=np.int64)
    latency = int(re.search(r"latency_cycles (\d+)", proc.stderr).group(1))
    worst = re.search(r"latency_max (\d+)", proc.stderr)
    if worst and int(worst.group(1)) != latency:
        raise QpolicyError(f"the core's latency varies between inputs ({latency} to {worst.group(1)} cycles)")
    return out.reshape(len(q), -1), latency


TOGGLE_CYCLES = 20_000
"""Clock cycles the toggle simulation records at most (a VCD of every signal grows with cycles x signals)."""


def toggle_rate(rtl_dir: str | Path, q_in: np.ndarray) -> dict:
    """The core's switching activity over ``q_in``: per signal bit, toggles per clock cycle, averaged over every
    bit of the design but the clock and the reset (XPE's "toggle rate"). Icarus Verilog simulates the RTL with
    a VCD of every signal (Verilator's toggle coverage instruments every instance of da4ml's thousands of
    adders and took minutes to compile); the inputs follow the testbench's timing, at most
    :data:`TOGGLE_CYCLES` cycles."""
    rtl_dir = Path(rtl_dir).resolve()   # vvp runs inside the work folder: relative paths would break
    if shutil.which("iverilog") is None or shutil.which("vvp") is None:
        raise BackendUnavailable("iverilog is not installed: apt-get install -y iverilog")
    info = json.loads((rtl_dir / "qpolicy_rtl.json").read_text())
    n_in, ib, n_out, ob = info["n_in"], info["in_bits"], info["n_out"], info["out_bits"]
    streaming = info.get("streaming", True)
    per_vector = 1 if streaming else info["latency"] + 2
    q = np.asarray(q_in, dtype=np.int64)[:max(1, TOGGLE_CYCLES // per_vector)]
    work = rtl_dir / "toggles"
    work.mkdir(exist_ok=True)
    mask = (1 << ib) - 1
    (work / "q.hex").write_text("".join(f"{sum((int(c) & mask) << (ib * i) for i, c in enumerate(row)):x}\n"
                                        for row in q))
    feed = ("for (i = 0; i < N; i = i + 1) begin in_valid = 1; in_data = mem[i]; #10; end in_valid = 0;"
            if streaming else
            "for (i = 0; i < N; i = i + 1) begin in_valid = 1; in_data = mem[i]; #10; in_valid = 0; "
            "wait (out_valid); #10; end")
    (work / "tb.v").write_text(f"""`timescale 1ns/1ps
module toggles_tb;
  localparam N = {len(q)};
  reg clk = 0, rst = 1, in_valid = 0;
  reg [{n_in * ib - 1}:0] in_data = 0;
  wire out_valid; wire [{n_out * ob - 1}:0] out_data;
  reg [{n_in * ib - 1}:0] mem [0:N-1];
  integer i;
  {TOP} dut (.clk(clk), .rst(rst), .in_valid(in_valid), .in_data(in_data), .out_valid(out_valid), .out_data(out_data){'' if streaming else ', .in_ready()'});
  always #5 clk = ~clk;
  initial begin
    $readmemh("q.hex", mem);
    #40 rst = 0;
    $dumpfile("toggles.vcd"); $dumpvars(0, dut);
    {feed}
    #{10 * (info["latency"] + 4)} $finish;
  end
endmodule
""")
    sources = [str(p) for p in verilog_sources(rtl_dir) + simulation_models(rtl_dir)]
    proc = subprocess.run(["iverilog", "-g2005", "-o", str(work / "sim"), str(work / "tb.v"), *sources],
                          capture_output=True, text=True)
    if proc.returncode == 0:
        proc = subprocess.run(["vvp", "-n", str(work / "sim")], capture_output=True, text=True, cwd=work)
    if proc.returncode != 0 or not (work / "toggles.vcd").exists():
        raise QpolicyError(f"the toggle simulation failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    result = vcd_toggles(work / "toggles.vcd")
    (work / "toggles.vcd").unlink()
    return {**result, "vectors": int(len(q)), "source": "Icarus Verilog VCD of every signal over the golden vectors"}


PRIMITIVE_SCOPE = re.compile(r"dsp(\d+_\d+|_requant)")
"""Instances of vendor primitives (:mod:`qpolicy_hw.fold_dsp` names its slices ``dspQ_C``, the affine requantizer's ``dsp_requant``): their simulation
models' internals are not fabric signals, so the fabric toggle rate leaves them out (their ports count)."""


def vcd_toggles(path: Path, period_ns: float = 10.0) -> dict:
    """Toggle rate from a VCD: bit changes per clock cycle per fabric signal bit (clock, reset and the insides
    of primitive models excluded)."""
    widths: dict[str, int] = {}
    names: dict[str, str] = {}
    last: dict[str, int] = {}
    toggles = 0
    t_end = 0
    in_header = True
    scopes: list[str] = []
    with open(path) as f:
        for line in f:
            if in_header:
                if line.startswith("$scope"):
                    scopes.append(line.split()[2])
                elif line.startswith("$upscope"):
                    scopes.pop()
                elif line.startswith("$var") and not any(PRIMITIVE_SCOPE.fullmatch(sc) for sc in scopes):
                    parts = line.split()
                    widths[parts[3]], names[parts[3]] = int(parts[2]), parts[4]
                elif line.startswith("$enddefinitions"):
                    in_header = False
                continue
            c = line[:1]
            if c == "#":
                t_end = int(line[1:])
                continue
            if c == "b":
                value, ident = line[1:].split()
                v = int(value.replace("x", "0").replace("z", "0"), 2)
            elif c in "01xz":
                v, ident = (1 if c == "1" else 0), line[1:].strip()
            else:
                continue
            if ident not in names:
                continue
            if ident in last and names.get(ident) not in ("clk", "rst"):
                toggles += bin(v ^ last[ident]).count("1")
            last[ident] = v
    bits = sum(w for i, w in widths.items() if names[i] not in ("clk", "rst"))
    cycles = max(int(t_end / (period_ns * 1000)), 1)   # the VCD's time unit is ps under `timescale 1ns/1ps
    return {"toggle_rate": toggles / max(bits, 1) / cycles, "cycles": cycles, "bits": bits}


def parse_ltp(text: str) -> int | None:
    """The length of Yosys' ``ltp`` report (``Longest topological path in M (length=N):``)."""
    m = re.search(r"Longest topological path in \S+ \(length=(\d+)\)", text)
    return int(m.group(1)) if m else None


def cells_from_stat_json(text: str) -> dict[str, int]:
    """Cell counts by type from Yosys ``stat -json`` (the whole design)."""
    return {k: int(v) for k, v in json.loads(text)["design"]["num_cells_by_type"].items()}


def cells_from_stat_text(text: str) -> dict[str, int]:
    """Cell counts by type from Yosys' text ``stat`` (for a Yosys without ``-json``): the indented
    ``NAME  COUNT`` lines under "Number of cells"."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s+(\w+)\s+(\d+)\s*$", text, re.M)}


def synthesize(rtl_dir: str | Path, family: str = "xc7", clock_mhz: float = 100.0) -> dict:
    """Yosys ``synth_xilinx`` of the wrapped core (a folded core module by module, then flattened; da4ml's
    flattened first): LUT/FF/CARRY4/DSP/BRAM cell counts, and a static
    timing estimate of the netlist (:mod:`qpolicy_hw.timing`: an estimate, not sign-off).

    Cell counts of a generic Yosys mapping, not a Vivado implementation.
    """
    rtl_dir = Path(rtl_dir)
    if shutil.which("yosys") is None:
        raise BackendUnavailable("yosys is not installed: apt-get install -y yosys")
    stat = rtl_dir / "yosys_stat.txt"
    stat_json = rtl_dir / "yosys_stat.json"
    files = " ".join(str(p) for p in verilog_sources(rtl_dir))
    ltp = rtl_dir / "yosys_ltp.txt"
    # the timing proxy: with the registers (flip-flops, block RAM, DSP) removed after the count, the longest
    # path left runs from one register to the next; ltp gives its length in cells (LUT, CARRY4, MUXF7/8)
    netlist = rtl_dir / "yosys_netlist.json"
    # a folded core is synthesized module by module, then flattened for the count and the timing estimate:
    # Yosys 0.23's flat synthesis maps its small ROMs up to 3x larger (HalfCheetah's 8x1d,16x2,6x2d core:
    # 4,387 LUT flat, 2,638 by module, the same function); da4ml's unrolled core is the other way round (its
    # adder graph spans many small modules: Hopper's 2,212 LUT flat, 8,036 by module), so it is flattened first
    folded = "segments" in json.loads((rtl_dir / "qpolicy_rtl.json").read_text()) \
        if (rtl_dir / "qpolicy_rtl.json").exists() else False
    synth = f"synth_xilinx -family {family} -top {TOP}" + ("; flatten" if folded else " -flatten")
    script = (f"read_verilog {files}; {synth}; tee -o {stat} stat; "
              f"tee -q -o {stat_json} stat -json; write_json {netlist}; delete t:FD* t:RAMB* t:DSP48*; "
              f"tee -q -o {ltp} ltp")
    proc = subprocess.run(["yosys", "-q", "-p", script], capture_output=True, text=True)
    if proc.returncode != 0 and "stat -json" in (proc.stderr or ""):   # a Yosys without stat -json
        script = script.replace(f"tee -q -o {stat_json} stat -json; ", "")
        proc = subprocess.run(["yosys", "-q", "-p", script], capture_output=True, text=True)
    if proc.returncode != 0 or not stat.exists():
        raise QpolicyError("yosys failed: " + (proc.stderr or proc.stdout).strip()[-300:])
    cells = (cells_from_stat_json(stat_json.read_text()) if stat_json.exists()
             else cells_from_stat_text(stat.read_text()))
    lut = sum(v for k, v in cells.items() if re.fullmatch(r"LUT\d", k))
    ff = sum(v for k, v in cells.items() if re.fullmatch(r"FD[A-Z]*", k))
    bram = sum(v for k, v in cells.items() if k.startswith("RAMB36")) + 0.5 * sum(
        v for k, v in cells.items() if k.startswith("RAMB18"))
    return {"LUT": lut, "FF": ff, "CARRY4": cells.get("CARRY4", 0),
            "DSP": sum(v for k, v in cells.items() if k.startswith("DSP48")), "BRAM": bram,
            "MUXF7": cells.get("MUXF7", 0), "MUXF8": cells.get("MUXF8", 0),
            # Yosys leaves inverters as INV cells; Vivado absorbs most into LUTs, at worst one LUT1 each,
            # so LUT + INV bounds the LUT count from above
            "INV": cells.get("INV", 0), "LUT_upper_bound": lut + cells.get("INV", 0),
            "ltp_logic_levels": parse_ltp(ltp.read_text()) if ltp.exists() else None,
            "resource_source": f"yosys {synth}",
            "timing": analyze_file(netlist, TOP, clock_mhz).to_dict()}

"""A static timing estimate of a synthesized xc7 netlist: an estimate, not sign-off (Vivado's
``report_timing_summary`` decides).

Input: the flattened Yosys JSON netlist of ``synth_xilinx -family xc7`` (cells LUT1-6, INV, MUXF7/8, CARRY4,
FD*, SRL*, RAM*, RAMB*, DSP48E1). Every register-to-register path gets an arrival time: the launching cell's
clock-to-out, then for each cell on the way its pin-to-pin delay and for each net a routing allowance, plus
the capturing pin's setup. The longest such path is the estimated critical path; separately, the most
combinational cells on any register-to-register path are its logic levels (each LUT, CARRY4, MUXF and INV is
one level, as in Vivado's count and Yosys' ``ltp``).

**Cell delays** (:data:`CELL_ARCS`, picoseconds): the ``specify`` blocks of Yosys' xc7 cell library
(``techlibs/xilinx/cells_sim.v``), which cite Project X-Ray's Artix-7 timing database (prjxray-db
``artix7/timings/CLBLL_L.sdf`` and ``slicel.sdf``): LUT pin delays, CARRY4 arcs, MUXF7/MUXF8, FDRE
clock-to-Q (303) and setup (CE 109, R/S 404; D 0, where the database has -46). They are copied here so that
every machine computes the same figure; ``tests/test_timing.py`` checks them against the installed library.
DSP48E1 slices take the figures of the same model's ``required``/``arrival`` functions for their registered
configuration (:func:`dsp_setup_ps`: A 254 ps with AREG, B 324 with BREG, C 168 with CREG, PCIN 1025 with PREG;
clock-to-out P 329, PCOUT 435), their control pins (OPMODE, CEP, ...), which the model gives no figure, 1.5 ns.
Cells without arcs there get allowances (:data:`ALLOWANCES`): block RAM clock-to-out 3.0 ns and setup
0.6 ns (above DS181's -1 figures for a block RAM read without output register), SRL clock-to-out 1.5 ns,
a DSP48E1 without registers 5.0 ns combinational, 1.0 ns for any other cell.

**Routing** (:func:`net_delay`): the database gives no per-net figure before placement, so each net gets an
allowance: 0 for the dedicated wires inside a slice (CARRY4 CO[3] -> next CI, a LUT into its F7 mux or its
CARRY4 S input, F7 -> F8), else 0.45 ns + 0.10 ns per doubling of fanout, at most 2.0 ns. This is chosen
conservative against Vivado's own post-synthesis estimates for 7-series -1 nets of low fanout (about
0.3-0.6 ns); the 2 ns the sign-off rule keeps (critical path <= 8.0 ns at 100 MHz) covers clock skew,
jitter and what placement adds.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

MODEL = ("static timing over the Yosys xc7 netlist: Project X-Ray cell delays (-1 Artix-7) from Yosys' "
         "cells_sim.v specify blocks; block RAM, SRL and DSP allowances; routing 0.45 ns + 0.10 ns per doubling "
         "of fanout per net (0 on dedicated slice wires); clock-to-out + cells + nets + setup")
SOURCE = ("Yosys techlibs/xilinx/cells_sim.v specify blocks, citing prjxray-db artix7/timings/CLBLL_L.sdf and "
          "slicel.sdf; routing and block-RAM/DSP allowances are qpolicy's (qpolicy_hw/timing.py)")
SIGN_OFF_NOTE = "estimate, not sign-off: Vivado's report_timing_summary decides"

_LUT_PINS = (642, 631, 472, 407, 238, 127)   # LUT6 I0..I5; smaller LUTs use the tail (their own specify)
_LUTN = {1: (127,), 2: (238, 127), 3: (407, 238, 127), 4: (472, 407, 238, 127), 5: (631, 472, 407, 238, 127),
         6: _LUT_PINS}
_CARRY4 = {  # (input pin, bit) -> {(output pin, bit): ps}
    ("CYINIT", 0): {("O", 0): 482, ("O", 1): 598, ("O", 2): 584, ("O", 3): 642,
                    ("CO", 0): 536, ("CO", 1): 494, ("CO", 2): 592, ("CO", 3): 580},
    ("CI", 0): {("O", 0): 222, ("O", 1): 334, ("O", 2): 239, ("O", 3): 313,
                ("CO", 0): 271, ("CO", 1): 157, ("CO", 2): 228, ("CO", 3): 114},
    ("S", 0): {("O", 0): 223, ("O", 1): 400, ("O", 2): 523, ("O", 3): 582,
               ("CO", 0): 340, ("CO", 1): 433, ("CO", 2): 512, ("CO", 3): 508},
    ("S", 1): {("O", 1): 205, ("O", 2): 558, ("O", 3): 618, ("CO", 1): 469, ("CO", 2): 548, ("CO", 3): 528},
    ("S", 2): {("O", 2): 226, ("O", 3): 330, ("CO", 2): 292, ("CO", 3): 378},
    ("S", 3): {("O", 3): 227, ("CO", 3): 380},
    ("DI", 0): {("O", 1): 407, ("O", 2): 556, ("O", 3): 615, ("CO", 0): 379, ("CO", 1): 465, ("CO", 2): 540,
                ("CO", 3): 526},
    ("DI", 1): {("O", 2): 537, ("O", 3): 596, ("CO", 1): 445, ("CO", 2): 520, ("CO", 3): 507},
    ("DI", 2): {("O", 3): 438, ("CO", 2): 356, ("CO", 3): 398},
    ("DI", 3): {("CO", 3): 385},
}
CELL_ARCS: dict[str, dict[tuple[str, int], dict[tuple[str, int], int]]] = {
    **{f"LUT{n}": {(f"I{i}", 0): {("O", 0): d} for i, d in enumerate(_LUTN[n])} for n in _LUTN},
    "INV": {("I", 0): {("O", 0): 127}},
    "MUXF7": {("I0", 0): {("O", 0): 217}, ("I1", 0): {("O", 0): 223}, ("S", 0): {("O", 0): 296}},
    "MUXF8": {("I0", 0): {("O", 0): 104}, ("I1", 0): {("O", 0): 94}, ("S", 0): {("O", 0): 273}},
    "CARRY4": _CARRY4,
}
"""Combinational arcs in ps, from Yosys' xc7 ``cells_sim.v`` (Project X-Ray)."""
FF_CLOCK_TO_Q = 303
FF_SETUP = {"D": 0, "CE": 109, "R": 404, "S": 404, "CLR": 404, "PRE": 404}
FLIP_FLOPS = ("FDRE", "FDSE", "FDCE", "FDPE", "FDRE_1", "FDSE_1", "FDCE_1", "FDPE_1")
ALLOWANCES = {"bram_clock_to_out": 3000, "bram_setup": 600, "srl_clock_to_out": 1500, "srl_address": 642,
              "dsp_combinational": 5000, "dsp_clock_to_out": 1000, "dsp_setup": 4000,
              "dsp_control_setup": 1500, "lutram_read": 1000,
              "unknown": 1000}
"""ps; qpolicy's conservative allowances for cells the cell library gives no arcs (module docstring)."""
CLOCK_PINS = {"C", "CLK", "CLKARDCLK", "CLKBWRCLK", "CLKA", "CLKB", "WCLK"}
LEVEL_CELLS = ("LUT", "INV", "MUXF", "CARRY4")


def _param(params: dict, name: str, default: int = 1) -> int:
    """An integer cell parameter of the Yosys JSON (binary strings there), ``default`` when absent."""
    value = str(params.get(name, default))
    return int(value, 2) if value and set(value) <= {"0", "1"} else default


def dsp_setup_ps(port: str, params: dict) -> float:
    """Setup (ps) of a DSP48E1 input pin, from the ``required`` functions of the DSP48E1 model in Yosys'
    cells_sim.v (USE_DPORT FALSE, no pattern detect) for the data pins given the cell's AREG/BREG/CREG/MREG/PREG;
    control pins (OPMODE, ALUMODE, INMODE, CARRYIN*, CE*, RST*), which it gives no figure, get
    ``ALLOWANCES["dsp_control_setup"]``."""
    areg, breg, creg, mreg, preg = (_param(params, k) for k in ("AREG", "BREG", "CREG", "MREG", "PREG"))
    if port == "A":
        return 254 if areg else 1416 if mreg else 2739
    if port == "B":
        return 324 if breg else 1285 if mreg else 2608
    if port == "C":
        return 168 if creg else 1244
    if port == "PCIN":
        return 1025 if preg else ALLOWANCES["dsp_setup"]
    if port == "D":
        return 248
    return ALLOWANCES["dsp_control_setup"]


def dsp_clock_to_out_ps(port: str) -> float:
    """Clock-to-out (ps) of a registered DSP48E1 output: P 329, PCOUT 435 (cells_sim.v, PREG = 1); any other
    output gets the conservative allowance."""
    return {"P": 329, "PCOUT": 435}.get(port, ALLOWANCES["dsp_clock_to_out"])


def net_delay(driver: tuple[str, str, int] | None, sink: tuple[str, str, int], fanout: int) -> int:
    """Routing allowance (ps) of one net from ``driver`` to ``sink`` (cell type, port, bit)."""
    if driver is not None:
        dtype, dport, dbit = driver
        stype, sport, _ = sink
        if dtype == "CARRY4" and dport == "CO" and dbit == 3 and stype == "CARRY4" and sport == "CI":
            return 0
        if dtype.startswith("LUT") and stype == "MUXF7" and sport in ("I0", "I1"):
            return 0
        if dtype == "MUXF7" and stype == "MUXF8" and sport in ("I0", "I1"):
            return 0
        if dtype.startswith("LUT") and stype == "CARRY4" and sport == "S":
            return 0
        if dtype == "DSP48E1" and dport == "PCOUT" and stype == "DSP48E1" and sport == "PCIN":
            return 0   # the cascade's dedicated wire to the slice above
    return min(2000, 450 + 100 * math.ceil(math.log2(max(fanout, 1))))


@dataclass
class TimingReport:
    """The estimate of one netlist at one clock."""

    critical_path_ns: float
    logic_levels: int
    clock_mhz: float
    path: list[str] = field(default_factory=list)
    unmodelled: dict[str, int] = field(default_factory=dict)

    @property
    def fmax_mhz(self) -> float:
        return 1000.0 / self.critical_path_ns if self.critical_path_ns > 0 else float("inf")

    def to_dict(self) -> dict:
        return {"estimated_critical_path_ns": round(self.critical_path_ns, 3),
                "estimated_fmax_mhz": round(self.fmax_mhz, 1), "logic_levels": self.logic_levels,
                "clock_mhz": self.clock_mhz, "critical_path": self.path[:40], "unmodelled_cells": self.unmodelled,
                "model": MODEL, "source": SOURCE, "note": SIGN_OFF_NOTE}


def _cell_kind(ctype: str, params: dict) -> str:
    if ctype in FLIP_FLOPS:
        return "ff"
    if ctype.startswith("RAMB"):
        return "bram"
    if ctype.startswith(("SRL16", "SRLC16", "SRLC32")):
        return "srl"
    if ctype == "DSP48E1":
        regs = [int(str(params.get(p, "1")), 2) if set(str(params.get(p, "1"))) <= {"0", "1"} else 1
                for p in ("AREG", "BREG", "MREG", "PREG")]
        return "dsp_seq" if any(regs) else "dsp_comb"
    if ctype.startswith("RAM") and "X" in ctype:
        return "lutram"
    if ctype in CELL_ARCS:
        return "comb"
    if ctype in ("BUFG", "IBUF", "OBUF", "GND", "VCC"):
        return "ignore"
    return "unknown"


def analyze(netlist: dict, top: str | None = None, clock_mhz: float = 100.0) -> TimingReport:
    """The estimate for module ``top`` (the only module when None) of a Yosys JSON netlist."""
    modules = netlist["modules"]
    top = top or next(iter(modules))
    mod = modules[top]
    cells = mod.get("cells", {})
    drivers: dict[int, tuple[str, str, str, int]] = {}   # bit -> (cell name, type, port, index)
    sinks: dict[int, list[tuple[str, str, str, int]]] = defaultdict(list)
    kinds: dict[str, str] = {}
    unmodelled: dict[str, int] = defaultdict(int)
    for name, cell in cells.items():
        kind = _cell_kind(cell["type"], cell.get("parameters", {}))
        kinds[name] = kind
        if kind == "unknown":
            unmodelled[cell["type"]] += 1
        for port, bits in cell.get("connections", {}).items():
            direction = cell.get("port_directions", {}).get(port, "input")
            for i, b in enumerate(bits):
                if not isinstance(b, int):
                    continue
                if direction == "output":
                    drivers[b] = (name, cell["type"], port, i)
                else:
                    sinks[b].append((name, cell["type"], port, i))
    port_in: set[int] = set()
    port_out: set[int] = set()
    for port in mod.get("ports", {}).values():
        for b in port["bits"]:
            if isinstance(b, int):
                (port_in if port["direction"] == "input" else port_out).add(b)

    # arrival (ps), levels and a back pointer per bit, computed on demand in topological order
    arrival: dict[int, float] = {}
    levels: dict[int, int] = {}
    back: dict[int, tuple[int | None, str]] = {}

    def source_bit(b: int) -> tuple[float, int]:
        """Arrival and levels of a bit launched by a register, a port or a constant."""
        if b in port_in:
            return FF_CLOCK_TO_Q, 0    # ports: driven by a register of the enclosing design
        d = drivers.get(b)
        if d is None:
            return 0.0, 0
        kind = kinds[d[0]]
        if kind == "ff":
            return FF_CLOCK_TO_Q, 0
        if kind == "bram":
            return ALLOWANCES["bram_clock_to_out"], 0
        if kind == "dsp_seq" and d[1] == "DSP48E1" and _param(cells[d[0]].get("parameters", {}), "PREG"):
            return dsp_clock_to_out_ps(d[2]), 0
        if kind == "dsp_seq":
            return ALLOWANCES["dsp_clock_to_out"], 0
        return 0.0, 0

    def in_arrival(b: int, sink: tuple[str, str, str, int]) -> tuple[float, int]:
        """Arrival and levels at a sink pin through net ``b``."""
        at, lv = visit(b)
        d = drivers.get(b)
        wire = net_delay((d[1], d[2], d[3]) if d else None, (sink[1], sink[2], sink[3]), len(sinks[b]))
        return at + wire, lv

    order_stack: list = []

    def visit(b: int) -> tuple[float, int]:
        if b in arrival:
            return arrival[b], levels[b]
        # iterative depth-first evaluation (netlists are deep: recursion would overflow)
        order_stack.append(b)
        while order_stack:
            cur = order_stack[-1]
            if cur in arrival:
                order_stack.pop()
                continue
            d = drivers.get(cur)
            kind = kinds.get(d[0]) if d else None
            if d is None or kind in ("ff", "bram", "dsp_seq", "ignore") or cur in port_in:
                arrival[cur], levels[cur] = source_bit(cur)
                back[cur] = (None, d[0] if d else "port")
                order_stack.pop()
                continue
            name, ctype, port, idx = d
            cell = cells[name]
            inputs = []
            for iport, ibits in cell.get("connections", {}).items():
                if cell.get("port_directions", {}).get(iport) != "input":
                    continue
                for ii, ib in enumerate(ibits):
                    if isinstance(ib, int) and iport not in CLOCK_PINS:
                        inputs.append((iport, ii, ib))
            pending = [ib for _, _, ib in inputs if ib not in arrival]
            if pending:
                order_stack.extend(pending)
                if len(order_stack) > 10 * (len(drivers) + 10):
                    raise ValueError("combinational loop in the netlist")
                continue
            best, best_from = (ALLOWANCES["srl_clock_to_out"] if kind == "srl" else 0.0), None
            lvl_max = 0
            for iport, ii, ib in inputs:
                delay = _arc(kind, ctype, (iport, ii), (port, idx))
                if delay is None:
                    continue
                sink = (name, ctype, iport, ii)
                at, lv = in_arrival(ib, sink)
                if at + delay > best:
                    best, best_from = at + delay, ib
                lvl_max = max(lvl_max, lv)
            arrival[cur] = best
            levels[cur] = lvl_max + (1 if ctype.startswith(LEVEL_CELLS) else 0)
            back[cur] = (best_from, f"{ctype}:{name}")
            order_stack.pop()
        return arrival[b], levels[b]

    worst, worst_lv, worst_end, worst_bit = 0.0, 0, "", None
    for name, cell in cells.items():
        kind = kinds[name]
        if kind not in ("ff", "bram", "dsp_seq", "srl", "lutram"):
            continue
        for port, bits in cell.get("connections", {}).items():
            if cell.get("port_directions", {}).get(port) != "input" or port in CLOCK_PINS:
                continue
            setup = (dsp_setup_ps(port, cell.get("parameters", {})) if kind == "dsp_seq" and cell["type"] == "DSP48E1"
                     else _setup(kind, port))
            if setup is None:
                continue
            for i, b in enumerate(bits):
                if not isinstance(b, int):
                    continue
                at, lv = in_arrival(b, (name, cell["type"], port, i))
                worst_lv = max(worst_lv, lv)
                if at + setup > worst:
                    worst, worst_end, worst_bit = at + setup, f"{cell['type']}:{name}.{port}[{i}]", b
    for b in port_out:
        if b in drivers or b in port_in:
            at, lv = visit(b)
            worst_lv = max(worst_lv, lv)
            if at > worst:
                worst, worst_end, worst_bit = at, "output port", b
    path = [worst_end]
    cur = worst_bit
    while cur is not None and cur in back:
        prev, label = back[cur]
        path.append(label)
        cur = prev
    return TimingReport(worst / 1000.0, worst_lv, clock_mhz, list(reversed(path)), dict(unmodelled))


def _arc(kind: str, ctype: str, pin: tuple[str, int], out: tuple[str, int]) -> float | None:
    if kind == "comb":
        return CELL_ARCS[ctype].get(pin, {}).get(out)
    if kind == "srl":
        return ALLOWANCES["srl_address"] if pin[0].startswith("A") else None
    if kind == "lutram":
        return ALLOWANCES["lutram_read"] if pin[0].startswith(("A", "DPRA", "RADR")) else None
    if kind == "dsp_comb":
        return ALLOWANCES["dsp_combinational"]
    return ALLOWANCES["unknown"]


def _setup(kind: str, port: str) -> float | None:
    if kind == "ff":
        return FF_SETUP.get(port, 0)
    if kind == "bram":
        return ALLOWANCES["bram_setup"]
    if kind == "dsp_seq":
        return ALLOWANCES["dsp_setup"]
    if kind in ("srl", "lutram"):
        return FF_SETUP["D"] if not port.startswith(("A", "DPRA")) else None
    return None


def analyze_file(path: str | Path, top: str | None = None, clock_mhz: float = 100.0) -> TimingReport:
    return analyze(json.loads(Path(path).read_text()), top, clock_mhz)

"""The static timing estimate against netlists small enough to compute by hand, and its delay table against
the cell library it was copied from."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from qpolicy_hw.timing import CELL_ARCS, FF_CLOCK_TO_Q, analyze, net_delay

ROUTE = 450          # the routing allowance of a fanout-1 net (ps)


class Netlist:
    """A Yosys-JSON netlist written by hand: cells with named pins and integer bits."""

    def __init__(self):
        self.cells, self.ports, self.next_bit = {}, {}, 10

    def bit(self) -> int:
        self.next_bit += 1
        return self.next_bit

    def cell(self, name, ctype, inputs: dict, outputs: dict):
        self.cells[name] = {"type": ctype, "parameters": {},
                            "port_directions": {**{p: "input" for p in inputs}, **{p: "output" for p in outputs}},
                            "connections": {**inputs, **outputs}}

    def ff(self, name, d, q, clk=2):
        self.cell(name, "FDRE", {"C": [clk], "CE": ["1"], "D": [d], "R": ["0"]}, {"Q": [q]})

    def json(self):
        return {"modules": {"top": {"ports": self.ports, "cells": self.cells, "netnames": {}}}}


def test_a_lut_chain_between_two_registers():
    n = Netlist()
    q, a, b, d = n.bit(), n.bit(), n.bit(), n.bit()
    n.ff("src", n.bit(), q)
    n.cell("l1", "LUT1", {"I0": [q]}, {"O": [a]})
    n.cell("l2", "LUT2", {"I0": [a], "I1": [q]}, {"O": [b]})     # I0 of LUT2: 238 ps; q has fanout 2 here
    n.cell("l3", "LUT1", {"I0": [b]}, {"O": [d]})
    n.ff("dst", d, n.bit())
    r = analyze(n.json())
    fanout2 = ROUTE + 100
    want = FF_CLOCK_TO_Q + fanout2 + 127 + ROUTE + 238 + ROUTE + 127 + ROUTE + 0   # setup of D is 0
    assert r.critical_path_ns == pytest.approx(want / 1000)
    assert r.logic_levels == 3


def test_a_carry_chain_uses_the_dedicated_cascade_and_counts_each_carry4():
    n = Netlist()
    q, co, o = n.bit(), [n.bit() for _ in range(4)], [n.bit() for _ in range(4)]
    n.ff("src", n.bit(), q)
    n.cell("c0", "CARRY4", {"CI": ["0"], "CYINIT": ["0"], "DI": ["0"] * 4, "S": [q, "0", "0", "0"]},
           {"CO": co, "O": [n.bit() for _ in range(4)]})
    n.cell("c1", "CARRY4", {"CI": [co[3]], "CYINIT": ["0"], "DI": ["0"] * 4, "S": ["0"] * 4},
           {"CO": [n.bit() for _ in range(4)], "O": o})
    n.ff("dst", o[3], n.bit())
    r = analyze(n.json())
    # S[0] -> CO[3] 508, the cascade CO[3] -> CI is a dedicated wire (0), CI -> O[3] 313
    want = FF_CLOCK_TO_Q + ROUTE + 508 + 0 + 313 + ROUTE
    assert r.critical_path_ns == pytest.approx(want / 1000)
    assert r.logic_levels == 2


def test_a_register_boundary_splits_the_path():
    n = Netlist()
    q0, a, q1, b = n.bit(), n.bit(), n.bit(), n.bit()
    n.ff("r0", n.bit(), q0)
    n.cell("l1", "LUT6", {f"I{i}": [q0] if i == 0 else ["0"] for i in range(6)}, {"O": [a]})
    n.ff("r1", a, q1)
    n.cell("l2", "LUT6", {f"I{i}": [q1] if i == 0 else ["0"] for i in range(6)}, {"O": [b]})
    n.ff("r2", b, n.bit())
    r = analyze(n.json())
    one_stage = FF_CLOCK_TO_Q + ROUTE + 642 + ROUTE
    assert r.critical_path_ns == pytest.approx(one_stage / 1000)     # the stages are not added
    assert r.logic_levels == 1


def test_input_ports_launch_like_registers_and_output_ports_capture():
    n = Netlist()
    a, y = n.bit(), n.bit()
    n.ports = {"a": {"direction": "input", "bits": [a]}, "y": {"direction": "output", "bits": [y]}}
    n.cell("l", "LUT1", {"I0": [a]}, {"O": [y]})
    r = analyze(n.json())
    assert r.critical_path_ns == pytest.approx((FF_CLOCK_TO_Q + ROUTE + 127) / 1000) and r.logic_levels == 1


def test_routing_grows_with_fanout_and_is_zero_on_dedicated_wires():
    assert net_delay(("LUT6", "O", 0), ("LUT6", "I0", 0), 1) == 450
    assert net_delay(("LUT6", "O", 0), ("LUT6", "I0", 0), 16) == 850
    assert net_delay(("LUT6", "O", 0), ("LUT6", "I0", 0), 1 << 20) == 2000
    assert net_delay(("CARRY4", "CO", 3), ("CARRY4", "CI", 0), 1) == 0
    assert net_delay(("LUT6", "O", 0), ("MUXF7", "I1", 0), 1) == 0


CELLS_SIM = Path("/usr/share/yosys/xilinx/cells_sim.v")


@pytest.mark.skipif(not CELLS_SIM.exists(), reason="Yosys' xc7 cell library is not installed (apt-get install yosys)")
def test_the_delay_table_matches_yosys_cell_library():
    text = CELLS_SIM.read_text()
    for ctype in ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6", "MUXF7", "MUXF8", "INV", "CARRY4"):
        body = re.search(rf"module {ctype}\s*\(.*?specify(.*?)endspecify", text, re.S).group(1)
        arcs = {}
        for src, sbit, dst, dbit, ps in re.findall(r"\((\w+)(?:\[(\d)\])?\s*=>\s*(\w+)(?:\[(\d)\])?\)\s*=\s*(\d+);", body):
            arcs[(src, int(sbit or 0), dst, int(dbit or 0))] = int(ps)
        ours = {(p, i, o, j): d for (p, i), outs in CELL_ARCS[ctype].items() for (o, j), d in outs.items()}
        assert ours == arcs, ctype


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")
def test_a_synthesized_adder_estimate_agrees_with_yosys_ltp(tmp_path):
    (tmp_path / "t.v").write_text("module top(input clk, input [15:0] a, b, output reg [16:0] y);\n"
                                  "  reg [15:0] ra, rb;\n  always @(posedge clk) begin ra <= a; rb <= b; "
                                  "y <= ra + rb; end\nendmodule\n")
    subprocess.run(["yosys", "-q", "-p", "read_verilog t.v; synth_xilinx -family xc7 -top top -flatten; "
                    "write_json n.json; delete t:FD*; tee -q -o ltp.txt ltp"], cwd=tmp_path, check=True)
    import json

    r = analyze(json.loads((tmp_path / "n.json").read_text()), "top")
    ltp = int(re.search(r"length=(\d+)", (tmp_path / "ltp.txt").read_text()).group(1))
    assert r.logic_levels == ltp == 6                     # one LUT, five CARRY4 for 17 bits
    assert 2.0 < r.critical_path_ns < 3.5


def test_dsp_pin_figures_come_from_the_cell_library():
    from qpolicy_hw.timing import dsp_clock_to_out_ps, dsp_setup_ps, net_delay

    registered = {"AREG": "1", "BREG": "1", "CREG": "1", "MREG": "1", "PREG": "1"}
    assert (dsp_setup_ps("A", registered), dsp_setup_ps("B", registered), dsp_setup_ps("C", registered)) == (254, 324, 168)
    assert dsp_setup_ps("C", {**registered, "CREG": "0"}) == 1244 and dsp_setup_ps("PCIN", registered) == 1025
    assert dsp_setup_ps("OPMODE", registered) == 1500                      # no figure: the allowance
    assert (dsp_clock_to_out_ps("P"), dsp_clock_to_out_ps("PCOUT")) == (329, 435)
    assert net_delay(("DSP48E1", "PCOUT", 0), ("DSP48E1", "PCIN", 0), 1) == 0   # the cascade's own wire
    library = next((p for p in (Path("/usr/share/yosys/xilinx/cells_sim.v"),) if p.exists()), None)
    if library is not None:
        text = library.read_text()
        for figure in ("\\A.required =  254", "\\B.required =  324", "\\C.required =  168", "\\P.arrival =  329",
                       "\\PCOUT.arrival =  435"):
            assert figure in text, figure

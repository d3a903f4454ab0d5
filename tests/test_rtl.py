"""Rung 4: the da4ml RTL core under Verilator vs the int reference (zero mismatches, measured latency)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_hw.rtl import build_rtl, simulate, trace_core
from qpolicy_hw.runtime.int_backend import IntegerPolicy
from qpolicy_train.quant_actor import QuantSpec

needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")


@pytest.mark.parametrize("spec", [QuantSpec(6, 2, 8, 16, 2, "float"), QuantSpec(4, 3, 4, 16, 2, "po2")])
def test_traced_core_is_the_integer_function(bundle_factory, spec):
    bundle = load_bundle(bundle_factory(spec))
    comb = trace_core(bundle)
    lo, hi = -(1 << (spec.input_bits - 1)), (1 << (spec.input_bits - 1)) - 1
    q = np.random.default_rng(0).integers(lo, hi + 1, size=(300, bundle.obs_dim))
    traced = np.array([comb(row.astype(float)) for row in q])
    assert np.array_equal(traced, IntegerPolicy(bundle).codes(q))


@needs_verilator
@pytest.mark.parametrize("spec", [QuantSpec(6, 2, 8, 16, 2, "float"), QuantSpec(4, 3, 4, 16, 2, "po2")])
def test_verilated_core_matches_int_on_every_code(bundle_factory, tmp_path, spec):
    bundle = load_bundle(bundle_factory(spec))
    info = build_rtl(bundle, tmp_path / "rtl")
    lo, hi = -(1 << (spec.input_bits - 1)), (1 << (spec.input_bits - 1)) - 1
    rng = np.random.default_rng(1)
    extremes = np.array([np.full(bundle.obs_dim, lo), np.full(bundle.obs_dim, hi),
                         np.where(np.arange(bundle.obs_dim) % 2, lo, hi)])
    golden = np.load(bundle.path / "golden" / "q_in.npy").astype(np.int64)
    q = np.vstack([extremes, golden, rng.integers(lo, hi + 1, size=(10_000, bundle.obs_dim))])
    out, latency = simulate(tmp_path / "rtl", q)   # one vector per clock, streamed
    assert np.array_equal(out, IntegerPolicy(bundle).codes(q))
    assert latency == info["latency"]               # measured in simulation: in_valid -> out_valid


@needs_verilator
def test_large_layers_solved_in_row_blocks_stay_exact(bundle_factory, tmp_path, monkeypatch):
    """Layers above the solver limit are traced in row blocks (how wide cores become buildable):
    force that path on a small bundle, with a block size that does not divide the width."""
    from qpolicy_hw import rtl

    monkeypatch.setattr(rtl, "CMVM_SOLVE_LIMIT", 8)
    monkeypatch.setattr(rtl, "CMVM_BLOCK_ROWS", 5)
    spec = QuantSpec(6, 2, 8, 16, 2, "float")
    bundle = load_bundle(bundle_factory(spec))
    assert any(bundle.weights(i).size > 8 for i in range(len(bundle.layers)))
    info = build_rtl(bundle, tmp_path / "rtl")
    q = np.random.default_rng(2).integers(-32, 32, size=(3000, bundle.obs_dim))
    out, latency = simulate(tmp_path / "rtl", q)
    assert np.array_equal(out, IntegerPolicy(bundle).codes(q))
    assert latency == info["latency"]


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")
def test_yosys_counts_the_wrapped_core(bundle_factory, tmp_path):
    from qpolicy_hw.rtl import synthesize

    bundle = load_bundle(bundle_factory(QuantSpec(6, 2, 8, 16, 2, "float")))
    info = build_rtl(bundle, tmp_path / "rtl", latency_cutoff=8.0)
    res = synthesize(tmp_path / "rtl")
    assert res["DSP"] == 0                     # da4ml adder trees: no multipliers
    assert res["LUT"] > 0 and res["FF"] >= info["latency"]
    assert res["LUT_upper_bound"] == res["LUT"] + res["INV"]   # inverters Vivado may need as LUT1s
    assert res["resource_source"].startswith("yosys synth_xilinx")
    from qpolicy_hw.rtl import cells_from_stat_json, cells_from_stat_text

    rtl = tmp_path / "rtl"   # the JSON this Yosys wrote and its text report agree cell for cell
    assert cells_from_stat_json((rtl / "yosys_stat.json").read_text()) == cells_from_stat_text(
        (rtl / "yosys_stat.txt").read_text())


@needs_verilator
@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")
def test_hw_project_report_says_what_was_measured(bundle_factory, tmp_path):
    import json

    from qpolicy_hw.hw_project import build_hw

    # latency_cutoff 2: start where this core meets the timing rule (the deeper search is test_signoff's)
    report = build_hw(bundle_factory(QuantSpec(6, 2, 8, 16, 2, "float")), "xc7a15t", tmp_path / "hw", n_random=2000,
                      latency_cutoff=2.0)
    assert report["exact"]["rtl_vs_int"]["mismatches"] == 0
    assert report["latency_cycles"] == report["rtl"]["latency"]
    assert report["resources"]["DSP"] == 0
    timing, power = report["timing"], report["power"]   # estimates, labelled as such, never a measurement
    assert timing["estimated_critical_path_ns"] <= timing["rule"]["max_critical_path_ns"] == 8.0
    assert timing["logic_levels"] <= 12 and "not sign-off" in timing["note"] and "X-Ray" in timing["model"]
    assert 0 < power["energy_per_action_nj"]["low"] < power["energy_per_action_nj"]["high"]
    assert "estimate" in power["note"] and report["latency_us"] == report["latency_cycles"] / 100.0
    assert json.loads((tmp_path / "hw" / "report.json").read_text()) == report
    tcl = (tmp_path / "hw" / "build_ooc.tcl").read_text()
    assert "xc7a15tfgg484-1" in tcl and "report_timing_summary" in tcl and "out_of_context" in tcl
    hw = tmp_path / "hw"       # only this target's files: none of da4ml's own project files (xcvu13p, Quartus)
    assert not any((hw / f).exists() for f in ("build_vivado_prj.tcl", "build_quartus_prj.tcl", "sim",
                                                "src/policy_core.xdc", "src/policy_core.sdc"))
    readme = (hw / "README.md").read_text()    # the hand-off: what to run next, for this target
    assert "vivado -mode batch -source build_ooc.tcl" in readme and "qpolicy_host.c" in readme
    assert "Not run here" in readme and load_bundle(hw.parent / "bundle").digest in readme
    assert (hw / "host" / "qpolicy_host.c").exists() and (hw / "host" / "qpolicy_core_regs.h").exists()


@needs_verilator
@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")
def test_hw_refuses_what_it_cannot_build(bundle_factory, tmp_path, monkeypatch):
    from qpolicy_hw import hw_project
    from qpolicy_hw.errors import QpolicyError
    from qpolicy_hw.targets import Target

    path = bundle_factory(QuantSpec(6, 2, 8, 16, 2, "float"))
    with pytest.raises(QpolicyError, match="unknown target 'xc9'"):
        hw_project.build_hw(path, "xc9", tmp_path / "a")
    tiny = Target("tiny", "xc7a15tfgg484-1", 100.0, 50, 50, 0, 0, "a part too small")
    monkeypatch.setitem(hw_project.TARGETS, "xc7a15t", tiny)
    with pytest.raises(QpolicyError, match="no folding fits: the smallest core is estimated at"):
        hw_project.build_hw(path, "xc7a15t", tmp_path / "b")        # --fold auto: refused before any build
    with pytest.raises(QpolicyError, match=r"the core \(u,u,u\) does not fit xc7a15t: LUT \+ INV \d+ > 50"):
        hw_project.build_hw(path, "xc7a15t", tmp_path / "c", fold="none")   # after the Yosys count


@needs_verilator
def test_rtl_backend_serves_the_same_actions_as_int(bundle_factory, tmp_path, monkeypatch):
    from qpolicy_hw.runtime import make_policy

    monkeypatch.setenv("QPOLICY_CACHE", str(tmp_path))
    path = bundle_factory(QuantSpec(6, 2, 8, 16, 2, "float"))
    rtl, ref = make_policy(path, "rtl"), make_policy(path, "int")
    rng = np.random.default_rng(3)
    for obs in rng.normal(size=(100, 11)) * 2:
        assert np.array_equal(rtl.act(obs), ref.act(obs))
    assert rtl.last_cycles == json_latency(tmp_path / "rtl")
    rtl.close()
    again = make_policy(path, "rtl")               # cached build: same directory, no rebuild
    assert len(list((tmp_path / "rtl").iterdir())) == 1
    again.close()


def json_latency(cache):
    import json
    (rtl_dir,) = list(cache.iterdir())
    return json.loads((rtl_dir / "qpolicy_rtl.json").read_text())["latency"]


@needs_verilator
@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")
def test_pynq_z2_project_has_overlay_tcl_header_and_a_verified_driver(bundle_factory, tmp_path):
    from qpolicy_hw.hw_project import build_hw

    report = build_hw(bundle_factory(QuantSpec(6, 2, 8, 16, 2, "float")), "pynq-z2", tmp_path / "hw", n_random=1000,
                      energy=False, latency_cutoff=2.0)
    assert report["exact"]["axi_driver_vs_int"]["mismatches"] == 0
    tcl = (tmp_path / "hw" / "build_overlay.tcl").read_text()
    for step in ("processing_system7", "qpolicy_axi_0", "write_bitstream", "qpolicy.hwh", "xc7z020clg400-1"):
        assert step in tcl
    assert "QPOLICY_CTRL_OFFSET" in (tmp_path / "hw" / "qpolicy_core_regs.h").read_text()


@pytest.mark.vivado
def test_vivado_builds_the_overlay(bundle_factory, tmp_path):  # pragma: no cover - needs Vivado
    import subprocess

    if shutil.which("vivado") is None:
        pytest.skip("Vivado is not installed here")
    from qpolicy_hw.hw_project import build_hw

    build_hw(bundle_factory(), "pynq-z2", tmp_path / "hw", n_random=100, energy=False)
    subprocess.run(["vivado", "-mode", "batch", "-source", "build_overlay.tcl"], cwd=tmp_path / "hw", check=True)
    assert (tmp_path / "hw" / "overlay" / "qpolicy.bit").exists()
    assert (tmp_path / "hw" / "overlay" / "qpolicy.hwh").exists()


def test_yosys_stat_parsers_agree():
    """The text parser (for a Yosys without `stat -json`) and the JSON reader give the same cells."""
    from qpolicy_hw.rtl import cells_from_stat_json, cells_from_stat_text

    text = """
3. Printing statistics.

=== top ===

   Number of wires:                 16
   Number of wire bits:             60
   Number of cells:                 26
     BUFG                            1
     CARRY4                          2
     FDRE                            5
     LUT2                            4
"""
    js = ('{"creator": "Yosys 0.23", "modules": {}, "design": {"num_cells": 12, "num_cells_by_type": '
          '{"BUFG": 1, "CARRY4": 2, "FDRE": 5, "LUT2": 4}}}')
    assert cells_from_stat_text(text) == cells_from_stat_json(js) == {"BUFG": 1, "CARRY4": 2, "FDRE": 5, "LUT2": 4}


@needs_verilator
def test_alkaid_writes_the_same_integer_function(bundle_factory, tmp_path):
    """da4ml's successor (optional: bench/alkaid_vs_da4ml.py decides whether to move) traces and writes a core
    that Verilator runs exactly, with its pipeline's latency counted from its registers."""
    pytest.importorskip("alkaid")
    bundle = load_bundle(bundle_factory(QuantSpec(6, 2, 8, 16, 2, "float")))
    q = np.random.default_rng(1).integers(-32, 32, size=(300, bundle.obs_dim))
    comb = trace_core(bundle, library="alkaid")
    assert np.array_equal(np.array([comb(row.astype(float)) for row in q]), IntegerPolicy(bundle).codes(q))
    info = build_rtl(bundle, tmp_path, library="alkaid")
    got, latency = simulate(tmp_path, q)
    assert info["library"] == "alkaid" and latency == info["latency"] > 0
    assert np.array_equal(got, IntegerPolicy(bundle).codes(q))


@pytest.mark.parametrize("library", ["da4ml", "alkaid"])
def test_an_input_no_output_depends_on_keeps_its_place_in_the_port(library):
    """An always-zero observation whose weights quantized to 0 is a dead input to the graph; dropping it
    shifted every later input in the packed port (Humanoid's unrolled core: 16,881 of 18,326 codes wrong
    before the fix). The traced core keeps one input per observation."""
    if library == "alkaid":
        pytest.importorskip("alkaid")
    from qpolicy_hw.core_function import chain_codes, int_layer
    from qpolicy_hw.rtl import trace_layers

    rng = np.random.default_rng(4)
    w = rng.integers(-3, 4, (4, 6))
    w[:, 0] = w[:, 3] = 0                        # inputs 0 and 3 reach no output
    layer = int_layer(w, rng.integers(-5, 6, 4), np.sort(rng.integers(-20, 20, (4, 3)), axis=1), 3, 4, True, 2, False)
    comb = trace_layers([layer], library)
    assert comb.shape[0] == 6
    q = rng.integers(-8, 8, (50, 6))
    assert np.array_equal(np.array([comb(row.astype(float)) for row in q]), chain_codes([layer], q))


@needs_verilator
def test_an_unrolled_core_with_dead_inputs_is_exact_in_verilog(bundle_factory, tmp_path):
    """The library packs its own port tighter where an input reaches no output (Ant's always-zero contact
    forces: 243 of 315 bits); the core goes through the library's regular-layout wrapper, so every field of
    ``in_data`` and ``out_data`` stays where the contract puts it (Ant's unrolled core: 23,190 codes wrong
    before, 0 after)."""
    bundle = load_bundle(bundle_factory(QuantSpec(6, 2, 8, 16, 2, "float")))
    first = bundle.layers[0].name
    bundle.arrays[f"{first}.weight"] = bundle.arrays[f"{first}.weight"].copy()
    bundle.arrays[f"{first}.weight"][:, [0, 4, 10]] = 0          # three observations no output depends on
    info = build_rtl(bundle, tmp_path)
    q = np.random.default_rng(5).integers(-32, 32, size=(400, bundle.obs_dim))
    got, latency = simulate(tmp_path, q)
    assert latency == info["latency"]
    assert np.array_equal(got, IntegerPolicy(bundle).codes(q))

"""Cores an FPGA engineer can sign off: pipelining that keeps every core exact, a deep core pipelined until
the timing estimate meets the rule, the planner's objectives within their budgets, and the energy band."""
from __future__ import annotations

import json
import shutil
import zlib

import numpy as np
import pytest

from qpolicy_hw.core_function import chain_codes
from qpolicy_hw.energy import STATIC_W, energy_band
from qpolicy_hw.fold import FoldError, parse_fold
from qpolicy_hw.fold_cost import Budget, area, estimate, plan_fold
from qpolicy_hw.fold_verilog import build_folded_rtl
from tests.test_fold import CASES, chain, random_layer

needs_tools = pytest.mark.skipif(shutil.which("yosys") is None or shutil.which("verilator") is None,
                                 reason="yosys and verilator are needed")


@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")
@pytest.mark.parametrize("stage_levels", [0, 1])
@pytest.mark.parametrize("name", ["mixed: folded, unrolled, folded", "three layers, wide codes (shift-and-add products)",
                                  "mixed: unrolled first and last"])
def test_every_pipelining_is_exact_with_the_modelled_latency(tmp_path, name, stage_levels):
    from qpolicy_hw.rtl import simulate

    dims, bits, spec = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    layers = chain(rng, dims, bits)
    plan = parse_fold(spec, [layer.shape for layer in layers])
    info = build_folded_rtl(layers, plan, tmp_path, stage_levels)
    (tmp_path / "qpolicy_rtl.json").write_text(json.dumps(info))
    lo, hi = -(1 << (bits[0] - 1)), (1 << (bits[0] - 1)) - 1
    q = np.vstack([np.full(dims[0], lo), np.full(dims[0], hi), rng.integers(lo, hi + 1, size=(300, dims[0]))])
    got, latency = simulate(tmp_path, q)
    assert np.array_equal(got, chain_codes(layers, q))
    assert latency == info["latency"] == estimate(layers, plan, stage_levels).cycles


@needs_tools
def test_a_deliberately_deep_core_misses_the_rule_and_pipelining_meets_it(tmp_path):
    from qpolicy_hw.hw_project import TimingRule
    from qpolicy_hw.rtl import simulate, synthesize

    rng = np.random.default_rng(7)
    layers = [random_layer(rng, 4, 64, 3, 4, True, 8, True)]      # one lane summing 64 products: a deep tree
    plan = parse_fold("1x64", [layers[0].shape])
    rule, found = TimingRule(), {}
    for levels in (0, 1):
        out = tmp_path / f"s{levels}"
        info = build_folded_rtl(layers, plan, out, levels)
        (out / "qpolicy_rtl.json").write_text(json.dumps(info))
        timing = synthesize(out)["timing"]
        q = rng.integers(-8, 8, size=(200, 64))
        got, latency = simulate(out, q)
        assert np.array_equal(got, chain_codes(layers, q)) and latency == info["latency"]
        found[levels] = (timing, latency)
    unpipelined, pipelined = found[0][0], found[1][0]
    assert not rule.holds(unpipelined), unpipelined
    assert rule.holds(pipelined), pipelined
    assert pipelined["estimated_critical_path_ns"] < unpipelined["estimated_critical_path_ns"]
    assert found[1][1] > found[0][1]                                # the registers cost cycles, said so


def test_the_planner_honours_the_latency_budget_and_the_part():
    rng = np.random.default_rng(3)
    layers = chain(rng, [40, 32, 32, 6], [4, 3, 3, 8])
    part = Budget(9360, 18720, 25, 45)
    fastest, fast = plan_fold(layers, part, "latency")
    for max_cycles in (fast.cycles * 2, fast.cycles * 8, fast.cycles * 30):
        plan, cost = plan_fold(layers, part, "area", max_cycles)
        assert cost.cycles <= max_cycles and cost.lut <= part.lut and cost.ff <= part.ff
        assert area(cost) <= area(fast)
    smallest = plan_fold(layers, part, "area", 10**9)[1]
    assert area(smallest) <= area(plan_fold(layers, part, "area", fast.cycles * 2)[1])
    with pytest.raises(FoldError, match="within 3 cycles"):
        plan_fold(layers, part, "area", 3)
    with pytest.raises(FoldError, match="no folding fits"):
        plan_fold(layers, Budget(50, 50, 0, 0), "latency")


def test_the_energy_band_brackets_static_and_says_it_is_an_estimate():
    res = {"LUT_upper_bound": 2000, "FF": 1500, "DSP": 0, "BRAM": 1}
    quiet = energy_band(res, 100, 100.0, 0.01)
    busy = energy_band(res, 100, 100.0, 0.5)
    assert quiet["power_w"]["low"] == STATIC_W and quiet["energy_per_action_nj"]["low"] == pytest.approx(70.0)
    assert quiet["power_w"]["high"] > STATIC_W                     # never below XPE's default activity
    assert busy["power_w"]["high"] > quiet["power_w"]["high"]      # more toggling, more dynamic power
    assert "estimate" in quiet["note"] and "Table 3" in quiet["source"]


def test_vcd_toggles_counts_bit_changes_per_cycle(tmp_path):
    from qpolicy_hw.rtl import vcd_toggles

    (tmp_path / "t.vcd").write_text("$timescale 1ps $end\n$var wire 1 ! clk $end\n$var wire 4 \" bus $end\n"
                                    "$var reg 1 # q $end\n$enddefinitions $end\n#0\n0!\nb0000 \"\n0#\n"
                                    "#5000\n1!\n#10000\n0!\nb0011 \"\n1#\n#20000\nb0110 \"\n#40000\n")
    result = vcd_toggles(tmp_path / "t.vcd")
    # 4 cycles of 10 ns; bus: 2 + 2 bit changes, q: 1; the clock is not counted; 5 bits
    assert result["cycles"] == 4 and result["bits"] == 5
    assert result["toggle_rate"] == pytest.approx(5 / 5 / 4)


@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")
def test_weights_in_block_ram_are_registered_before_the_products_and_stay_exact(tmp_path):
    from qpolicy_hw.fold import folded_shape
    from qpolicy_hw.rtl import simulate

    rng = np.random.default_rng(11)
    layers = [random_layer(rng, 32, 96, 3, 4, True, 3, True)]
    plan = parse_fold("1x2", [layers[0].shape])
    shape = folded_shape(layers[0], plan[0], 1)
    assert shape.weight_register                     # 1,536 words of 6 bits: a block-RAM ROM
    info = build_folded_rtl(layers, plan, tmp_path, 1)
    (tmp_path / "qpolicy_rtl.json").write_text(json.dumps(info))
    q = rng.integers(-8, 8, size=(40, 96))
    got, latency = simulate(tmp_path, q)
    assert np.array_equal(got, chain_codes(layers, q))
    assert latency == info["latency"] == estimate(layers, plan, 1).cycles


def test_dsp_lanes_count_their_slices_and_the_planner_keeps_to_the_dsp_budget():
    from qpolicy_hw.fold import Fold, accumulator_bits, dsp_channels, folded_shape

    rng = np.random.default_rng(5)
    layers = chain(rng, [40, 32, 32, 6], [4, 3, 3, 8])
    n = dsp_channels(layers[0])
    k = accumulator_bits(layers[0])
    assert (n - 1) * k + 3 <= 25 < n * k + 3           # as many 2-bit weights as the 25-bit A port holds
    assert folded_shape(layers[0], Fold(5, 3, True)).slices == -(-5 // n) * 3
    assert folded_shape(layers[0], Fold(5, 3)).slices == 0
    plan = parse_fold("16x4d,8x2,u", [layer.shape for layer in layers])
    assert estimate(layers, plan).dsp == -(-16 // n) * 4
    for lut in (1500, 2500):                         # few LUT: the slices buy speed, within their budget
        no_dsp, without = plan_fold(layers, Budget(lut, 18720, 25, 0), "latency")
        assert without.dsp == 0 and not any(f.dsp for f in no_dsp)
        _, some = plan_fold(layers, Budget(lut, 18720, 25, 12), "latency")
        _, many = plan_fold(layers, Budget(lut, 18720, 25, 45), "latency")
        assert 0 < some.dsp <= 12 and 12 < many.dsp <= 45
        assert many.cycles < some.cycles < without.cycles


def test_the_affine_requantizer_exists_only_where_it_is_exact():
    from qpolicy_hw.fold import affine_requant, folded_thresholds
    from tests.test_fold import uniform_output

    rng = np.random.default_rng(8)
    uniform = uniform_output(random_layer(rng, 5, 12, 3, 3, False, 8, True), rng)
    aff = affine_requant(uniform)
    assert aff is not None
    lo, hi = uniform.product_range()
    t = folded_thresholds(uniform)
    for c in range(5):                                  # every reachable sum: the threshold count, exactly
        acc = np.arange(lo[c], hi[c] + 1)
        count = np.searchsorted(t[c], acc, side="right")
        assert np.array_equal(np.clip((acc * aff.scale[c] + aff.offset[c]) >> aff.shift, 0, 255), count)
    assert affine_requant(random_layer(rng, 5, 12, 3, 3, False, 8, True)) is None   # scattered thresholds


def test_the_default_objective_is_finn_for_the_papers_tasks_and_area_elsewhere():
    from types import SimpleNamespace

    from qpolicy_hw.hw_project import finn_budget, resolve_objective

    assert resolve_objective("auto", SimpleNamespace(env_id="Walker2d-v5")) == "finn"
    assert resolve_objective("auto", SimpleNamespace(env_id="my_robot/Arm-v0")) == "area"
    assert resolve_objective("latency", SimpleNamespace(env_id="Walker2d-v5")) == "latency"
    assert finn_budget(SimpleNamespace(env_id="Walker2d-v5")) == Budget(1900, 1600, 2, 4)
    with pytest.raises(Exception, match="no FINN core"):
        finn_budget(SimpleNamespace(env_id="my_robot/Arm-v0"))


def test_room_to_spare_under_the_limits_grows_the_model_budget_and_a_near_miss_does_not():
    from qpolicy_hw.hw_project import _grown_budget
    from qpolicy_hw.targets import TARGETS

    cap = Budget(2300, 3100, 1.5, 45)                     # Humanoid's FINN core
    grown = _grown_budget(cap, {"LUT_upper_bound": 1800, "FF": 2000}, TARGETS["xc7a15t"], cap)
    assert grown.lut == pytest.approx(2300 * 2300 / 1800) and grown.bram36 == 1.5 and grown.dsp == 45
    assert _grown_budget(cap, {"LUT_upper_bound": 2250, "FF": 2000}, TARGETS["xc7a15t"], cap) is None
    assert _grown_budget(cap, {"LUT_upper_bound": 500, "FF": 500}, TARGETS["xc7a15t"], cap).lut == 2300 * 1.5


def test_packed_weight_fields_are_the_weighted_sum_and_the_offset_fields_never_borrow():
    """The DSP lanes' arithmetic, without a simulator: the ROM fields concatenated (each sign-extended to K
    bits, the top one to A) equal ``sum_i w_i 2^(iK)``; and P = offset + sum_x x * A splits into the exact
    per-channel sums (offset binary below the top field, two's complement at the top)."""
    from qpolicy_hw.fold_dsp import packed_fields

    rng = np.random.default_rng(12)
    for _ in range(2000):
        n, k, wb = int(rng.integers(2, 5)), int(rng.integers(4, 11)), int(rng.integers(2, 4))
        w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), size=(n, 6))
        x = rng.integers(0, 4, size=6)
        sums = w @ x
        if np.any(np.abs(sums) >= (1 << (k - 1)) - 1):      # K bits hold every sum, as accumulator_bits ensures
            continue
        a_values = []
        for col in range(6):
            fields = packed_fields([int(v) for v in w[:, col]])
            bits = 0
            for i, f in enumerate(fields[:-1]):
                bits |= (f & ((1 << k) - 1)) << (i * k)
            a = bits + fields[-1] * (1 << ((n - 1) * k))   # the top field, sign-extended
            assert a == sum(int(w[i, col]) << (i * k) for i in range(n))
            a_values.append(a)
        p = sum(1 << (i * k + k - 1) for i in range(n - 1)) + sum(int(x[c]) * a_values[c] for c in range(6))
        for i in range(n - 1):
            field = (p >> (i * k)) & ((1 << k) - 1)
            assert field - (1 << (k - 1)) == sums[i]          # offset binary: MSB inverted is the sum
        assert p >> ((n - 1) * k) == sums[n - 1]              # the top field, exact


def test_a_faster_core_that_misses_timing_falls_back_to_the_fastest_that_met_it(monkeypatch, tmp_path):
    """When the room Yosys leaves buys a faster plan and that plan misses the timing rule however deeply it is
    pipelined, ``qpolicy hw`` keeps the fastest core that met it instead of failing (the builds are faked)."""
    from qpolicy_hw import hw_project
    from qpolicy_hw.bundle import load_bundle
    from qpolicy_hw.core_function import bundle_layers
    bundle = load_bundle("policies/walker2d/selected")
    built = []

    def fake_build(bundle, target, out, plan, cutoff, rule, stage, attempts, figures, fits):
        spec = ",".join(map(str, plan))
        built.append(spec)
        if len(built) == 2:                                  # the faster plan: no pipelining makes it
            raise hw_project.TimingMiss(f"the core {spec} misses the timing rule even fully pipelined")
        small = {"LUT_upper_bound": 1000, "FF": 800, "BRAM": 0.0, "DSP": 0, "LUT": 950, "INV": 50}
        return {"latency": 1000 - 10 * len(built)}, small   # lots of room: the planner grows

    monkeypatch.setattr(hw_project, "_timed_build", fake_build)
    stages = []
    info, res, _ = hw_project._fit(bundle, bundle_layers(bundle), "xc7a15t", tmp_path, None, 8.0, stages.append,
                                   hw_project.TimingRule(100.0), objective="latency")
    assert len(built) == 3 and built[2] == built[0] and built[1] != built[0]
    assert any("misses the timing rule" in s and f"rebuilding {built[0]}, the fastest that fit" in s for s in stages)

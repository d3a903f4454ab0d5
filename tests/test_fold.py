"""Folded cores: the PE x SIMD unit, mixed cores, the planner and ``qpolicy hw --fold``, each checked code
for code against the integer reference, with the latency counted in Verilator."""
from __future__ import annotations

import json
import shutil
import zlib

import numpy as np
import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_hw.core_function import Layer, bundle_layers, chain_codes, int_layer
from qpolicy_hw.fold import FoldError, folded_thresholds, parse_fold, uses_affine
from qpolicy_hw.fold_cost import Budget, estimate, plan_fold
from qpolicy_hw.fold_verilog import build_folded_rtl
from qpolicy_train.quant_actor import QuantSpec

needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")
needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None or shutil.which("verilator") is None,
                                 reason="yosys and verilator are needed")


def random_layer(rng, out_features, in_features, weight_bits, in_bits, in_signed, out_bits, out_signed):
    """A layer with every weight value, thresholds in and beyond the reachable range, unsorted rows."""
    w = rng.integers(-(1 << (weight_bits - 1)), 1 << (weight_bits - 1), size=(out_features, in_features))
    b = rng.integers(-30, 30, size=out_features)
    t = rng.integers(-60, 60, size=(out_features, (1 << out_bits) - 1))
    t[0, :2] = [-10**6, 10**6]                      # thresholds no accumulator can miss / reach
    return int_layer(w, b, t, weight_bits, in_bits, in_signed, out_bits, out_signed)


def uniform_output(layer: Layer, rng) -> Layer:
    """``layer`` with the thresholds of a uniform output quantizer (per channel ``ceil((k + 1/2 - b) / r)``,
    r > 1 as in an action layer), the form the affine requantizer takes."""
    n = (1 << layer.out_bits) - 1
    r = rng.uniform(1.5, 9.0, size=layer.shape[0])
    b = rng.uniform(-40, 40, size=layer.shape[0]) + n / 2
    t = np.ceil((np.arange(n)[None, :] + 0.5 - b[:, None]) / r[:, None]).astype(np.int64)
    return int_layer(layer.weights, layer.bias, t, layer.weight_bits, layer.in_bits, layer.in_signed, layer.out_bits,
                    layer.out_signed)


def chain(rng, dims, bits, uniform_last=False):
    """Layers dims[0] -> dims[1] -> ...; bits[k] are the codes between them (first signed, last signed)."""
    layers = []
    for k in range(len(dims) - 1):
        layers.append(random_layer(rng, dims[k + 1], dims[k], 2 + k % 2, bits[k], k == 0, bits[k + 1],
                                   k == len(dims) - 2))
    if uniform_last:
        layers[-1] = uniform_output(layers[-1], rng)
    return layers


def test_folded_thresholds_keep_every_reachable_code():
    rng = np.random.default_rng(0)
    layer = random_layer(rng, 6, 5, 3, 3, True, 3, False)
    lo, hi = layer.product_range()
    t = folded_thresholds(layer)
    assert np.all(np.diff(t, axis=1) >= 0)          # sorted: the binary search needs it
    for c in range(6):
        for acc in range(lo[c], hi[c] + 1):
            assert (acc + layer.bias[c] >= layer.thresholds[c]).sum() == (acc >= t[c]).sum()


CASES = {  # name: (dims, bits between layers, plan)
    "one layer, output-folded, divides": ([8, 6], [4, 8], "3x8"),
    "one layer, input-folded, padded": ([7, 5], [3, 6], "5x3"),
    "two layers, 2-bit codes, padded both ways": ([9, 10, 3], [2, 2, 8], "4x4,3x3"),
    "three layers, 1x1 lanes": ([5, 6, 4, 2], [3, 2, 3, 8], "1x1,1x1,1x1"),
    "three layers, wide codes (shift-and-add products)": ([6, 8, 8, 3], [8, 3, 3, 8], "8x2,2x8,3x8"),
    "mixed: folded, unrolled, folded": ([12, 10, 10, 3], [3, 3, 2, 8], "5x4,u,3x10"),
    "mixed: unrolled first and last": ([7, 12, 10, 3], [3, 2, 3, 8], "u,2x4,u"),
    "thresholds in block RAM (two cycles a search step)": ([12, 6], [4, 8], "1x12"),
    "DSP lanes: odd PE, SIMD columns, padded": ([7, 5], [3, 6], "5x3d"),
    "DSP lanes: both layers, cascades of 4 and 3": ([9, 10, 3], [2, 2, 8], "4x4d,3x3d"),
    "DSP and LUT lanes, 8-bit signed inputs": ([6, 8, 8, 3], [8, 3, 3, 8], "8x2d,2x8,3x1d"),
    "affine requantizer after LUT lanes": ([9, 10, 5], [2, 2, 8], "4x4,3x5", True),
    "affine requantizer after DSP lanes, one lane": ([6, 8, 3], [8, 3, 8], "8x2d,1x4d", True),
    "affine requantizer, mixed": ([7, 12, 10, 6], [3, 2, 3, 8], "u,2x4d,4x2", True),
}


@needs_verilator
@pytest.mark.parametrize("name", sorted(CASES))
def test_folded_core_matches_the_reference_with_the_modelled_latency(tmp_path, name):
    from qpolicy_hw.rtl import simulate

    dims, bits, spec, *uniform = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))   # a stable seed per case (hash() is salted)
    layers = chain(rng, dims, bits, bool(uniform))
    plan = parse_fold(spec, [layer.shape for layer in layers])
    assert uses_affine(layers[-1]) == bool(uniform)
    info = build_folded_rtl(layers, plan, tmp_path)
    (tmp_path / "qpolicy_rtl.json").write_text(json.dumps(info))
    lo, hi = -(1 << (bits[0] - 1)), (1 << (bits[0] - 1)) - 1
    q = np.vstack([np.full(dims[0], lo), np.full(dims[0], hi), np.where(np.arange(dims[0]) % 2, lo, hi),
                   rng.integers(lo, hi + 1, size=(600, dims[0]))])
    got, latency = simulate(tmp_path, q)            # one input at a time; every latency must be the same
    assert np.array_equal(got, chain_codes(layers, q))
    assert latency == info["latency"] == estimate(layers, plan).cycles


@pytest.mark.parametrize("text, message", [
    ("4x4", "names 1 layers; the core has 2"),
    ("4x4,banana", "neither 'u' nor PExSIMD"),
    ("4x4,9x1", "PE=9 must be in 1..3"),
    ("0x4,u", "PE=0 must be in 1..10"),
])
def test_impossible_fold_specs_are_refused_in_one_line(text, message):
    with pytest.raises(FoldError, match=message) as info:
        parse_fold(text, [(10, 9), (3, 10)])
    assert "\n" not in str(info.value)


def test_planner_fits_the_budget_and_folds_harder_for_less():
    rng = np.random.default_rng(3)
    layers = chain(rng, [40, 32, 32, 4], [4, 2, 2, 8])
    roomy_plan, roomy = plan_fold(layers, Budget(50_000, 100_000, 25, 45))
    tight_plan, tight = plan_fold(layers, Budget(2_500, 100_000, 25, 45))
    assert tight.lut <= 2_500 and roomy.lut <= 50_000
    assert roomy.cycles < tight.cycles                  # less area costs latency, never the reverse
    assert estimate(layers, tight_plan) == tight
    with pytest.raises(FoldError, match="no folding fits"):
        plan_fold(layers, Budget(100, 100, 0, 0))


@needs_yosys
def test_qpolicy_hw_folded_behind_axi_matches_int_and_reports_the_fold(bundle_factory, tmp_path):
    """The whole path of a folded core on the PYNQ target: Yosys count, Verilator latency, the driver
    over the AXI-Lite slave (LATENCY register = measured cycles), report.json with fold and logic depth."""
    from qpolicy_hw.axi import VerilatedMMIO
    from qpolicy_hw.hw_project import build_hw
    from qpolicy_hw.runtime.pynq_backend import PynqPolicy

    path = bundle_factory(QuantSpec(6, 2, 8, 16, 2, "float"))
    report = build_hw(path, "pynq-z2", tmp_path / "hw", n_random=500, fold="4x11,8x8,u", energy=False)
    assert report["fold"]["spec"] == "4x11,8x8,u"
    assert report["exact"]["rtl_vs_int"]["mismatches"] == 0
    assert report["exact"]["axi_driver_vs_int"]["mismatches"] == 0
    assert report["resources"]["DSP"] == 0 and report["logic_levels"] > 0
    assert report["fold"]["attempts"][0]["yosys"]["LUT"] == report["resources"]["LUT"]
    overlay_tcl = (tmp_path / "hw" / "build_overlay.tcl").read_text()
    assert "set board_part tul.com.tw:pynq-z2:part0:1.0" in overlay_tcl and "overlay/qpolicy.bit" in overlay_tcl
    readme = (tmp_path / "hw" / "README.md").read_text()
    assert "vivado -mode batch -source build_overlay.tcl" in readme and "qpolicy agent" in readme
    assert "--backend remote --remote" in readme and "overlay/qpolicy.hwh" in readme
    bundle = load_bundle(path)
    mmio = VerilatedMMIO(tmp_path / "hw")
    try:
        policy = PynqPolicy(bundle, mmio=mmio)
        q = np.random.default_rng(5).integers(-32, 32, size=(20, bundle.obs_dim))
        assert np.array_equal(policy.codes(q), chain_codes(bundle_layers(bundle), q))
        assert policy.driver.latency == report["latency_cycles"]
        # CYCLES counts from the START write; the slave registers the start pulse one cycle before the core
        assert policy.driver.last_cycles == report["latency_cycles"] + 1
    finally:
        mmio.close()


def test_qpolicy_hw_refuses_a_bad_fold_before_any_long_step(bundle_factory, tmp_path, capsys):
    import time

    from qpolicy_cli.main import main

    t0 = time.perf_counter()
    code = main(["hw", str(bundle_factory()), "--target", "xc7a15t", "--out", str(tmp_path / "hw"), "--fold", "3x3"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and time.perf_counter() - t0 < 10
    assert "names 1 layers; the core has 3" in err and len(err.splitlines()) == 1


@needs_yosys
def test_qpolicy_hw_with_a_relative_out_directory(bundle_factory, tmp_path, monkeypatch):
    """The README's `--out hw/hopper` form: Verilator's make runs in its object folder, so every path
    handed to it must be absolute."""
    from qpolicy_hw.hw_project import build_hw

    path = bundle_factory(QuantSpec(6, 2, 8, 16, 2, "float"))
    monkeypatch.chdir(tmp_path)
    report = build_hw(path, "xc7a15t", "hw/relative", n_random=100, fold="11x11,u,u")
    assert report["exact"]["rtl_vs_int"]["mismatches"] == 0


def test_only_shallow_threshold_roms_are_read_in_the_compare_cycle():
    """One-cycle search steps read a LUT-ROM combinationally; a deep one (512 words: two mux levels more)
    would put the ROM and the compare past the 8 ns rule, so it gets a read cycle of its own."""
    from qpolicy_hw.fold import SEARCH_LUT_MAX_WORDS, FoldedShape

    def shape(nf):
        return FoldedShape(256, 256, 4, 4, nf, 64, 3, 3, 3, 13, 2)

    assert shape(16).threshold_rom[0] == SEARCH_LUT_MAX_WORDS and shape(16).search_in_lut
    assert shape(16).requant_cycles == 3
    assert not shape(64).search_in_lut and shape(64).requant_cycles == 6    # 512 words: read, then compare

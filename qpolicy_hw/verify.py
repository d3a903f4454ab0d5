"""The verification ladder: each rung checks one implementation of the policy against a reference.

Rungs available here:

``golden_vs_int``   the bundle's golden vectors through the ``int`` reference: 0 mismatches.
``float_vs_int``    the Brevitas float forward (float32, as trained) vs the integer contract, stage by
                    stage. Mismatches are allowed only at float ties; each one is classified.
``qonnx_vs_float``  qonnx ``execute_onnx`` of model.onnx vs the Brevitas forward: bit-identical floats.
``hls4ml_vs_int``   hls4ml's g++ C simulation vs int (po2 bundles; float scales are refused by design).
``rtl_vs_int``      the da4ml RTL core in Verilator, one vector per clock, vs int; plus the measured latency.
``axi_driver_vs_int`` the Python driver over the Verilated AXI-Lite slave vs int.

The hardware rungs run on the golden vectors plus 10,000 random input codes and report
``skipped`` (not failed) where their tool is missing.

How a mismatch is known to be a float tie: for the first stage where the two disagree, the exact
pre-activation ``y`` (rational arithmetic on the float32 scales) is compared with the rounding point
``(m - 1/2) * s_out`` between the two codes. The float32 forward computes ``y`` with a sum of
``n`` products, whose error is bounded by ``gamma_{n+4} * (sum |x_j w_j| + |b|)`` with
``gamma_k = k u / (1 - k u)``, ``u = 2^-24`` (Higham, Accuracy and Stability, Sec. 3.1). A mismatch
whose distance to the rounding point is within that bound is a float tie; anything else is a bug.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from qpolicy_hw.bundle import Bundle, load_bundle
from qpolicy_hw.integer_reference import IntegerPolicy

U32 = 2.0 ** -24
TIE_RATE_BOUND = 1e-4
"""Allowed share of mismatching codes between the float forward and the integer contract (DESIGN.md)."""


def _gamma(k: int) -> float:
    return k * U32 / (1 - k * U32)


def verification_inputs(bundle: Bundle, n_random: int, seed: int) -> np.ndarray:
    """Normalized observations: Gaussian, uniform over the clip range, and tie-grid points.

    Tie-grid points sit exactly on the input quantizer's rounding points ``(k + 1/2) * s_in`` (and
    on the grid itself), where round-half-to-even decides.
    """
    rng = np.random.default_rng(seed)
    d, clip = bundle.obs_dim, float(bundle.normalization["clip"])
    s_in = np.float32(bundle.meta["quant"]["input_scale"]) if bundle.is_integer else np.float32(0.05)
    bits = bundle.bits["input"] if bundle.is_integer else 8
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    gauss = rng.standard_normal((n_random, d))
    uniform = rng.uniform(-clip, clip, (n_random, d))
    k = rng.integers(lo - 1, hi + 1, (n_random, d)).astype(np.float32)
    half = (k + np.float32(0.5)) * s_in
    grid = rng.integers(lo, hi + 1, (n_random, d)).astype(np.float32) * s_in
    x = np.vstack([gauss, uniform, half, grid]).astype(np.float32)
    return np.clip(x, -clip, clip)


def check_golden(bundle: Bundle) -> dict[str, Any]:
    from qpolicy_hw.bundle import GOLDEN_IN, GOLDEN_OUT

    q_in = np.load(bundle.path / GOLDEN_IN, allow_pickle=False)
    q_out = np.load(bundle.path / GOLDEN_OUT, allow_pickle=False)
    got = IntegerPolicy(bundle).codes(q_in)
    return {"vectors": int(len(q_in)), "codes": int(q_out.size), "mismatches": int((got != q_out).sum())}


def _float_bias(body, bundle: Bundle, layer_index: int) -> list[Fraction]:
    """The bias the float forward adds, exactly (float bias, or the Int32 bias at accumulator scale)."""
    layer = bundle.layers[layer_index]
    if bundle.meta["quant"]["scale_mode"] == "po2":
        s_acc = Fraction(layer.in_scale) * Fraction(layer.weight_scale)
        return [s_acc * int(v) for v in bundle.bias(layer_index)]
    linears = [m for m in list(body.hidden) + [body.out_linear] if hasattr(m, "quant_weight")]
    return [Fraction(float(v)) for v in linears[layer_index].bias.detach().numpy().astype(np.float32)]


def classify_mismatch(bundle: Bundle, stage: int, q_prev: np.ndarray, channel: int, code_float: int,
                      code_int: int, bias: list[Fraction]) -> tuple[bool, float, float]:
    """Is this first-stage mismatch a float tie? Returns (is_tie, distance, float32 error bound)."""
    layer = bundle.layers[stage]
    if abs(code_float - code_int) != 1:
        return False, float("inf"), 0.0
    w = bundle.weights(stage)[channel].astype(np.int64)
    q = q_prev.astype(np.int64)
    s_in, s_w, s_out = Fraction(layer.in_scale), Fraction(layer.weight_scale), Fraction(layer.out_scale)
    y = s_in * s_w * int(q @ w) + bias[channel]
    m = max(code_float, code_int)
    distance = abs(y - Fraction(2 * m - 1, 2) * s_out)
    magnitude = float(s_in * s_w) * float(np.abs(q * w).sum()) + abs(float(bias[channel]))
    bound = _gamma(layer.in_features + 4) * magnitude + U32 * abs(float(y))
    return float(distance) <= bound, float(distance), bound


def float_vs_int(bundle: Bundle, n_random: int = 2500, seed: int = 0) -> dict[str, Any]:
    """Brevitas float32 forward vs the integer reference, every stage, every code."""
    import torch

    from qpolicy_hw.float_model import rebuild_actor
    from qpolicy_hw.host_float import quantize_input

    body, _ = rebuild_actor(bundle)
    ref = IntegerPolicy(bundle)
    x = verification_inputs(bundle, n_random, seed)
    fcodes = [c.numpy() for c in body.forward_codes(torch.from_numpy(x))]
    host = quantize_input(x, bundle.input_scale, bundle.bits["input"])
    icodes = ref.layer_codes(fcodes[0])
    per_stage = [int((f != i).sum()) for f, i in zip(fcodes[1:], icodes[1:])]
    biases = [_float_bias(body, bundle, i) for i in range(len(bundle.layers))]
    ties = not_ties = 0
    worst = []
    bad = np.zeros(len(x), dtype=bool)
    for stage in range(len(bundle.layers)):
        diff = fcodes[stage + 1] != icodes[stage + 1]
        first = diff.any(axis=1) & ~bad       # samples whose first disagreement is at this stage
        for n in np.flatnonzero(first):
            for c in np.flatnonzero(diff[n]):
                tie, dist, bound = classify_mismatch(bundle, stage, icodes[stage][n], int(c),
                                                     int(fcodes[stage + 1][n, c]), int(icodes[stage + 1][n, c]),
                                                     biases[stage])
                ties += tie
                not_ties += not tie
                if not tie and len(worst) < 5:
                    worst.append({"stage": stage, "sample": int(n), "channel": int(c), "distance": dist,
                                  "bound": bound})
        bad |= first
    total_codes = int(sum(f.size for f in fcodes[1:]))
    all_mismatch = int(sum(per_stage))
    return {
        "vectors": int(len(x)),
        "codes": int(fcodes[-1].size),
        "mismatches": per_stage[-1],
        "all_stage_codes": total_codes,
        "all_stage_mismatches": all_mismatch,
        "rate": all_mismatch / total_codes,
        "per_stage_mismatches": per_stage,
        "first_disagreements_at_float_ties": ties,
        "first_disagreements_not_at_ties": not_ties,
        "host_quantization_mismatches": int((host != fcodes[0]).sum()),
        "not_tie_examples": worst,
        "pass": not_ties == 0 and all_mismatch / total_codes <= TIE_RATE_BOUND
        and int((host != fcodes[0]).sum()) == 0,
    }


def qonnx_vs_float(bundle: Bundle, n: int = 300, seed: int = 1) -> dict[str, Any]:
    """qonnx ``execute_onnx`` of the bundle's QONNX model vs the Brevitas forward (batch-1 graph)."""
    import torch
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from qpolicy_hw.bundle import ONNX_FILE
    from qpolicy_hw.float_model import rebuild_actor

    body, _ = rebuild_actor(bundle)
    model = ModelWrapper(str(bundle.path / ONNX_FILE))
    in_name, out_name = model.graph.input[0].name, model.graph.output[0].name
    x = verification_inputs(bundle, max(1, n // 4), seed)[:n]
    with torch.no_grad():
        expected = body(torch.from_numpy(x)).numpy()
    got = np.vstack([execute_onnx(model, {in_name: row[None]})[out_name] for row in x])
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    mism = int((got != expected).sum())
    return {"vectors": int(len(x)), "values": int(expected.size), "mismatches": mism,
            "max_abs_diff": float(diff.max()) if diff.size else 0.0, "pass": mism == 0}


def hardware_test_codes(bundle: Bundle, n_random: int, seed: int) -> np.ndarray:
    """The bundle's golden vectors (all-min, all-max, alternating extremes and random codes) plus
    ``n_random`` more random input codes: what every hardware rung is checked on."""
    from qpolicy_hw.bundle import GOLDEN_IN, signed_range

    lo, hi = signed_range(bundle.bits["input"])
    golden = np.load(bundle.path / GOLDEN_IN, allow_pickle=False).astype(np.int64)
    return np.vstack([golden, np.random.default_rng(seed).integers(lo, hi + 1, size=(n_random, bundle.obs_dim))])


def built_core_vs_int(bundle: Bundle, rtl_dir, q: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Stream ``q`` through the core already built in ``rtl_dir``: the int reference's codes, the number
    of codes the core gets wrong, and the latency measured in simulation."""
    from qpolicy_hw.rtl import simulate

    got, latency = simulate(rtl_dir, q)
    ref = IntegerPolicy(bundle).codes(q)
    return ref, int((got != ref).sum()), latency


def rtl_vs_int(bundle: Bundle, n_random: int = 10_000, seed: int = 2) -> dict[str, Any]:
    """The da4ml core in Verilator vs the int reference: random codes, extremes and the golden vectors."""
    import shutil
    import tempfile

    from qpolicy_hw.core_function import bundle_layers
    from qpolicy_hw.fold import default_plan
    from qpolicy_hw.rtl import build_core

    if shutil.which("verilator") is None:
        return {"skipped": "verilator is not installed (apt-get install -y verilator)", "pass": True}
    q = hardware_test_codes(bundle, n_random, seed)
    with tempfile.TemporaryDirectory() as tmp:
        info = build_core(bundle, tmp, default_plan(bundle_layers(bundle)))
        ref, mism, latency = built_core_vs_int(bundle, tmp, q)
    return {"vectors": int(len(q)), "codes": int(ref.size), "mismatches": mism, "latency_cycles": latency,
            "fold": info["fold"], "pass": mism == 0 and latency == info["latency"]}


def axi_driver_vs_int(bundle: Bundle, n_random: int = 10_000, seed: int = 3) -> dict[str, Any]:
    """The Python driver over the Verilated AXI-Lite wrapper (register reads and writes) vs the int reference."""
    import shutil
    import tempfile

    from qpolicy_hw.axi import VerilatedMMIO, build_axi
    from qpolicy_hw.core_function import bundle_layers
    from qpolicy_hw.fold import default_plan
    from qpolicy_hw.runtime.pynq_backend import PynqPolicy

    if shutil.which("verilator") is None:
        return {"skipped": "verilator is not installed (apt-get install -y verilator)", "pass": True}
    q = hardware_test_codes(bundle, n_random, seed)
    with tempfile.TemporaryDirectory() as tmp:
        info = build_axi(bundle, tmp, plan=default_plan(bundle_layers(bundle)))
        mmio = VerilatedMMIO(tmp)
        try:
            policy = PynqPolicy(bundle, mmio=mmio)
            got = policy.codes(q)
            cycles = policy.driver.last_cycles
        finally:
            mmio.close()
    mism = int((got != IntegerPolicy(bundle).codes(q)).sum())
    return {"vectors": int(len(q)), "codes": int(got.size), "mismatches": mism, "cycles_start_to_done": cycles,
            "register_transactions": mmio.transactions, "fold": info["fold"], "pass": mism == 0}


def hls4ml_vs_int(bundle: Bundle, n_random: int = 10_000, seed: int = 4) -> dict[str, Any]:
    """hls4ml's g++ C simulation vs the int reference (po2 bundles; others are refused by design)."""
    import tempfile

    from qpolicy_hw.errors import QpolicyError
    from qpolicy_hw.hls import build_hls, check_exact, hls_codes

    try:
        check_exact(bundle)
    except QpolicyError as exc:
        return {"skipped": str(exc), "pass": True}
    q = hardware_test_codes(bundle, n_random, seed)
    with tempfile.TemporaryDirectory() as tmp:
        got = hls_codes(bundle, build_hls(bundle, tmp), q)
    mism = int((got != IntegerPolicy(bundle).codes(q)).sum())
    return {"vectors": int(len(q)), "codes": int(got.size), "mismatches": mism, "pass": mism == 0}


RUNGS = {  # the ladder, in order: each rung checks one implementation against its reference
    "golden_vs_int": check_golden,
    "float_vs_int": float_vs_int,
    "qonnx_vs_float": qonnx_vs_float,
    "hls4ml_vs_int": hls4ml_vs_int,
    "rtl_vs_int": rtl_vs_int,
    "axi_driver_vs_int": axi_driver_vs_int,
}


def verify(path, rungs: list[str] | None = None) -> dict[str, Any]:
    """Run the rungs available for this bundle; ``checks[name]['pass']`` tells each verdict."""
    bundle = load_bundle(path)
    checks: dict[str, Any] = {}
    if not bundle.is_integer:
        return {"bundle": str(bundle.path), "kind": "float", "checks": {}, "pass": True,
                "note": "float bundle: no integer function to verify"}
    for name in rungs or list(RUNGS):
        result = RUNGS[name](bundle)
        if "pass" not in result:
            result["pass"] = result["mismatches"] == 0
        checks[name] = result
    return {"bundle": str(bundle.path), "kind": "integer", "checks": checks,
            "pass": all(c["pass"] for c in checks.values())}

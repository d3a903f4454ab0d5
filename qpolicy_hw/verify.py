"""The verification ladder: each rung checks one implementation of the policy against a reference.

Rungs available here:

``actions_vs_golden`` raw observations through the whole host path of the ``int`` runtime (check,
                    normalize, quantize, core, action table) vs the bundle's golden actions: bit-identical.
                    This is what a robot gets, so a changed normalization or action table fails here.
``golden_vs_int``   the bundle's golden code vectors through the ``int`` reference: 0 mismatches.
``float_vs_int``    the Brevitas float forward (float32, as trained) vs the integer contract, stage by
                    stage. Mismatches are allowed only at float ties; each one is classified.
``qonnx_vs_float``  qonnx ``execute_onnx`` of model.onnx vs the Brevitas forward: bit-identical floats.
                    (These two need torch and Brevitas: they live with training, which registers them
                    (``runtime.float_reference``, an entry point); where training is not installed, on a
                    board, they are skipped with that reason.)
``hls4ml_vs_int``   hls4ml's g++ C simulation vs int (po2 bundles; float scales are refused by design).
``rtl_vs_int``      the da4ml RTL core in Verilator, one vector per clock, vs int; plus the measured latency.
``axi_driver_vs_int`` the Python driver over the Verilated AXI-Lite slave vs int.
``pynq_vs_int``     on a board: the overlay in BUNDLE/overlay (or ``$QPOLICY_OVERLAY``) through pynq vs int;
                    skipped with the reason where there is no overlay or no pynq.

The hardware rungs run on the golden vectors plus 10,000 random input codes and report
``skipped`` (not failed) where their tool is missing.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qpolicy_hw.bundle import Bundle, load_bundle, signed_range
from qpolicy_hw.runtime.int_backend import IntegerPolicy


def verification_inputs(bundle: Bundle, n_random: int, seed: int) -> np.ndarray:
    """Normalized observations: Gaussian, uniform over the clip range, and tie-grid points.

    Tie-grid points sit exactly on the input quantizer's rounding points ``(k + 1/2) * s_in`` (and
    on the grid itself), where round-half-to-even decides.
    """
    rng = np.random.default_rng(seed)
    d, clip = bundle.obs_dim, float(bundle.normalization["clip"])
    s_in = np.float32(bundle.meta["quant"]["input_scale"]) if bundle.is_integer else np.float32(0.05)
    bits = bundle.bits["input"] if bundle.is_integer else 8
    lo, hi = signed_range(bits)
    gauss = rng.standard_normal((n_random, d))
    uniform = rng.uniform(-clip, clip, (n_random, d))
    k = rng.integers(lo - 1, hi + 1, (n_random, d)).astype(np.float32)
    half = (k + np.float32(0.5)) * s_in
    grid = rng.integers(lo, hi + 1, (n_random, d)).astype(np.float32) * s_in
    x = np.vstack([gauss, uniform, half, grid]).astype(np.float32)
    return np.clip(x, -clip, clip)


def actions_vs_golden(bundle: Bundle) -> dict[str, Any]:
    from qpolicy_hw.bundle import GOLDEN_ACTIONS, GOLDEN_OBS

    if GOLDEN_OBS not in bundle.meta["files"]:
        return {"skipped": "the bundle has no raw golden observations (re-export it from its training run)"}
    obs = np.load(bundle.path / GOLDEN_OBS, allow_pickle=False)
    want = np.load(bundle.path / GOLDEN_ACTIONS, allow_pickle=False)
    policy = IntegerPolicy(bundle)
    got = np.array([policy.act(o) for o in obs])
    wrong = int((got != want).any(axis=1).sum())
    return {"observations": int(len(obs)), "mismatches": wrong,
            "max_abs_error": float(np.abs(got - want).max()) if got.size else 0.0}


def check_golden(bundle: Bundle) -> dict[str, Any]:
    from qpolicy_hw.bundle import GOLDEN_IN, GOLDEN_OUT

    q_in = np.load(bundle.path / GOLDEN_IN, allow_pickle=False)
    q_out = np.load(bundle.path / GOLDEN_OUT, allow_pickle=False)
    got = IntegerPolicy(bundle).codes(q_in)
    return {"vectors": int(len(q_in)), "codes": int(q_out.size), "mismatches": int((got != q_out).sum())}


def hardware_test_codes(bundle: Bundle, n_random: int, seed: int) -> np.ndarray:
    """The bundle's golden vectors (all-min, all-max, alternating extremes and random codes) plus
    ``n_random`` more random input codes: what every hardware rung is checked on."""
    from qpolicy_hw.bundle import GOLDEN_IN

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


@contextlib.contextmanager
def _default_or_built(bundle: Bundle, wrapper: str, built: str | Path | None):
    """The directory of the core to check and its build info: ``built`` (a core ``qpolicy hw`` just made) as
    it is, else the bundle's default core built in a temporary directory."""
    from qpolicy_hw.default_core import build_default

    if built is not None:
        yield Path(built), json.loads((Path(built) / "qpolicy_rtl.json").read_text())
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp), build_default(bundle, tmp, wrapper)


def rtl_vs_int(bundle: Bundle, n_random: int = 10_000, seed: int = 2, built: str | Path | None = None) -> dict[str, Any]:
    """The RTL core in Verilator vs the int reference: random codes, extremes and the golden vectors; passes
    when every code agrees and the simulated latency is the core's stated one."""
    if shutil.which("verilator") is None:
        return {"skipped": "verilator is not installed (apt-get install -y verilator)"}
    q = hardware_test_codes(bundle, n_random, seed)
    with _default_or_built(bundle, "core", built) as (rtl_dir, info):
        ref, mism, latency = built_core_vs_int(bundle, rtl_dir, q)
    return {"vectors": int(len(q)), "codes": int(ref.size), "mismatches": mism, "latency_cycles": latency,
            "stated_latency_cycles": info["latency"], "fold": info["fold"],
            "pass": mism == 0 and latency == info["latency"]}


def axi_driver_vs_int(bundle: Bundle, n_random: int = 10_000, seed: int = 3,
                      built: str | Path | None = None) -> dict[str, Any]:
    """The Python driver over the Verilated AXI-Lite wrapper (register reads and writes) vs the int reference."""
    from qpolicy_hw.axi import VerilatedMMIO
    from qpolicy_hw.runtime.pynq_backend import PynqPolicy

    if shutil.which("verilator") is None:
        return {"skipped": "verilator is not installed (apt-get install -y verilator)"}
    q = hardware_test_codes(bundle, n_random, seed)
    with _default_or_built(bundle, "axi", built) as (axi_dir, info):
        mmio = VerilatedMMIO(axi_dir)
        try:
            policy = PynqPolicy(bundle, mmio=mmio)
            got = policy.codes(q)
            cycles = policy.driver.last_cycles
        finally:
            mmio.close()
    mism = int((got != IntegerPolicy(bundle).codes(q)).sum())
    return {"vectors": int(len(q)), "codes": int(got.size), "mismatches": mism, "cycles_start_to_done": cycles,
            "register_transactions": mmio.transactions, "fold": info["fold"], "pass": mism == 0}


def pynq_vs_int(bundle: Bundle, n_random: int = 10_000, seed: int = 5) -> dict[str, Any]:
    """The FPGA itself (on the board) vs the int reference, through the same driver the server uses."""
    from qpolicy_hw.errors import BackendUnavailable
    from qpolicy_hw.runtime.pynq_backend import PynqPolicy

    try:
        policy = PynqPolicy(bundle)
    except BackendUnavailable as exc:
        return {"skipped": f"no FPGA here: {exc}"}
    q = hardware_test_codes(bundle, n_random, seed)
    got = policy.codes(q)
    mism = int((got != IntegerPolicy(bundle).codes(q)).sum())
    return {"vectors": int(len(q)), "codes": int(got.size), "mismatches": mism,
            "cycles_start_to_done": policy.driver.last_cycles, "pass": mism == 0}


def hls4ml_vs_int(bundle: Bundle, n_random: int = 10_000, seed: int = 4, out_dir: str | Path | None = None,
                  **hls_options) -> dict[str, Any]:
    """hls4ml's g++ C simulation vs the int reference (po2 bundles; others are refused by design). The project
    goes to ``out_dir`` (kept, with ``hls_options`` such as the part and clock) or to a temporary directory."""
    from qpolicy_hw.errors import QpolicyError
    from qpolicy_hw.hls import build_hls, check_exact, hls_codes

    try:
        check_exact(bundle)
    except QpolicyError as exc:
        return {"skipped": str(exc)}
    q = hardware_test_codes(bundle, n_random, seed)
    with contextlib.ExitStack() as stack:
        where = out_dir if out_dir is not None else stack.enter_context(tempfile.TemporaryDirectory())
        got = hls_codes(bundle, build_hls(bundle, where, **hls_options), q)
    mism = int((got != IntegerPolicy(bundle).codes(q)).sum())
    return {"vectors": int(len(q)), "codes": int(got.size), "mismatches": mism, "pass": mism == 0}


def _float_rung(name: str):
    """A rung of the training side's float reference, loaded when it runs (see the module docstring)."""
    def rung(bundle: Bundle) -> dict[str, Any]:
        from qpolicy_hw.errors import BackendUnavailable
        from qpolicy_hw.runtime import float_reference

        try:
            return getattr(float_reference(), name)(bundle)
        except BackendUnavailable as exc:
            return {"skipped": str(exc)}
    rung.__name__ = name
    return rung


RUNGS = {  # the ladder, in order: each rung checks one implementation against its reference
    "actions_vs_golden": actions_vs_golden,
    "golden_vs_int": check_golden,
    "float_vs_int": _float_rung("float_vs_int"),
    "qonnx_vs_float": _float_rung("qonnx_vs_float"),
    "hls4ml_vs_int": hls4ml_vs_int,
    "rtl_vs_int": rtl_vs_int,
    "axi_driver_vs_int": axi_driver_vs_int,
    "pynq_vs_int": pynq_vs_int,
}


def verify(path, rungs: list[str] | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the rungs of the ladder on a bundle.

    Each check gets ``status``: ``pass``, ``fail`` or ``skip`` (with ``reason``: a missing tool, a rung that
    does not apply). The bundle passes when every rung that ran passed and at least one ran; ``verdict``
    says how many ran. ``progress`` is told when each rung starts (the hardware rungs take minutes)."""
    progress = progress or (lambda _msg: None)
    bundle = load_bundle(path)
    if not bundle.is_integer:
        return {"bundle": str(bundle.path), "digest": bundle.digest, "kind": "float", "checks": {}, "ran": 0,
                "skipped": 0, "pass": True,
                "verdict": "nothing to verify: a float bundle has no integer function"}
    checks: dict[str, Any] = {}
    names = rungs or list(RUNGS)
    for k, name in enumerate(names, 1):
        progress(f"rung {k}/{len(names)}: {name}")
        result = RUNGS[name](bundle)
        if "skipped" in result:
            result = {"status": "skip", "reason": result.pop("skipped"), **result}
        else:
            passed = result.pop("pass", result.get("mismatches") == 0)
            result = {"status": "pass" if passed else "fail", **result}
        checks[name] = result
    ran = [c for c in checks.values() if c["status"] != "skip"]
    failed = [n for n, c in checks.items() if c["status"] == "fail"]
    passed = bool(ran) and not failed
    verdict = (f"{'PASS' if passed else 'FAIL'}: {len(ran)} of {len(checks)} rungs ran"
               + (f", {len(checks) - len(ran)} skipped" if len(ran) < len(checks) else "")
               + (f"; failed: {', '.join(failed)}" if failed else ""))
    return {"bundle": str(bundle.path), "digest": bundle.digest, "kind": "integer", "checks": checks, "ran": len(ran),
            "skipped": len(checks) - len(ran), "pass": passed, "verdict": verdict}

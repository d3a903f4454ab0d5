"""Hardware report of a bundle's RTL core: latency (measured in Verilator), Yosys xc7 cell counts, and
zero-mismatch check against the int reference. Timing and power need Vivado and are not claimed.

    .venv/bin/python bench/hw_report.py policies/hopper/selected [--latency-cutoff 8]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qpolicy_hw.bundle import load_bundle  # noqa: E402
from qpolicy_hw.integer_reference import IntegerPolicy  # noqa: E402
from qpolicy_hw.rtl import build_rtl, simulate, synthesize  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--latency-cutoff", type=float, default=8.0)
    p.add_argument("--vectors", type=int, default=10_000)
    a = p.parse_args()
    bundle = load_bundle(a.bundle)
    with tempfile.TemporaryDirectory() as tmp:
        info = build_rtl(bundle, tmp, a.latency_cutoff)
        lo, hi = -(1 << (bundle.bits["input"] - 1)), (1 << (bundle.bits["input"] - 1)) - 1
        q = np.vstack([np.load(Path(a.bundle) / "golden" / "q_in.npy").astype(np.int64),
                       np.random.default_rng(0).integers(lo, hi + 1, size=(a.vectors, bundle.obs_dim))])
        out, latency = simulate(tmp, q)
        mism = int((out != IntegerPolicy(bundle).codes(q)).sum())
        res = synthesize(tmp)
    report = {"bundle": a.bundle, "steps": bundle.meta.get("provenance", {}).get("steps"),
              "bits": bundle.bits, "width": bundle.meta["spec"]["width"], "latency_cycles": latency,
              "latency_as_built": info["latency"], "latency_cutoff": a.latency_cutoff, "clock_mhz": None, "resources": res, "exact": {"rtl_vs_int": {"n": int(q.size // bundle.obs_dim),
                                                                             "mismatches": mism}},
              "power": None, "timing": "not run (needs Vivado)"}
    print(f"{a.bundle}: latency {latency} cycles (simulated), LUT {res['LUT']}, FF {res['FF']}, "
          f"CARRY4 {res['CARRY4']}, DSP {res['DSP']}, BRAM {res['BRAM']} ({res['resource_source']}); "
          f"rtl_vs_int mismatches {mism} of {q.size // bundle.obs_dim} vectors")
    print(json.dumps(report))


if __name__ == "__main__":
    main()

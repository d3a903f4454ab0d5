#!/usr/bin/env python3
"""alkaid (da4ml's successor, the library hls4ml now uses for its distributed arithmetic) against the pinned
da4ml 0.6.0, on the unrolled core of each shipped selection: the same integer function traced by each, each
written as Verilog at the same latency cutoff, then checked and counted the same way (Verilator against the
int reference on the golden and random input codes, the pipeline's cycles, Yosys synth_xilinx cells and the
static timing estimate). Prints a table and ratios alkaid/da4ml (``--json``: the rows).

    .venv/bin/pip install alkaid==0.8.2      # not pinned: this bench decides whether it should be
    .venv/bin/python bench/alkaid_vs_da4ml.py --tasks hopper humanoid ant [--random 2000] [--json]

The unrolled core is what either library builds; the default cores of the other four tasks are folded
(``fold_verilog.py``), where neither library is used.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qpolicy_hw.bundle import load_bundle  # noqa: E402
from qpolicy_hw.rtl import DA_LIBRARIES, DEFAULT_LATENCY_CUTOFF, build_rtl, synthesize  # noqa: E402
from qpolicy_hw.verify import built_core_vs_int, hardware_test_codes  # noqa: E402

TASKS = ("hopper", "humanoid", "walker2d", "ant", "halfcheetah")


def measure(bundle_dir: Path, library: str, n_random: int) -> dict:
    bundle = load_bundle(bundle_dir)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        info = build_rtl(bundle, tmp, DEFAULT_LATENCY_CUTOFF, library=library)
        trace_s = time.perf_counter() - t0
        q = hardware_test_codes(bundle, n_random, seed=2)
        ref, mismatches, latency = built_core_vs_int(bundle, tmp, q)
        res = synthesize(tmp)
    timing = res["timing"]
    return {"task": bundle_dir.parent.name, "library": library, "trace_and_write_s": round(trace_s, 1),
            "latency_cycles": latency, "stated_latency": info["latency"], "vectors": int(len(q)),
            "mismatches": mismatches, "LUT": res["LUT"], "INV": res["INV"], "FF": res["FF"], "CARRY4": res["CARRY4"],
            "critical_path_ns": timing["estimated_critical_path_ns"], "logic_levels": timing["logic_levels"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--random", type=int, default=10_000, help="random input vectors beside the golden ones")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rows = []
    for task in a.tasks:
        for library in DA_LIBRARIES:
            row = measure(ROOT / "policies" / task / "selected", library, a.random)
            rows.append(row)
            print(f"{task:12s} {library:7s} {row['latency_cycles']:3d} cycles, {row['mismatches']}/{row['vectors']} "
                  f"mismatching vectors' codes, LUT {row['LUT']} (+{row['INV']} INV), FF {row['FF']}, "
                  f"CARRY4 {row['CARRY4']}, {row['critical_path_ns']:.2f} ns / {row['logic_levels']} levels "
                  f"({row['trace_and_write_s']} s)", file=sys.stderr, flush=True)
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| task | library | cycles | mismatches | LUT+INV | FF | CARRY4 | path ns | levels | trace s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['library']} | {r['latency_cycles']} | {r['mismatches']}/{r['vectors']} | "
              f"{r['LUT'] + r['INV']:,} | {r['FF']:,} | {r['CARRY4']:,} | {r['critical_path_ns']:.2f} | "
              f"{r['logic_levels']} | {r['trace_and_write_s']} |")
    for task in a.tasks:
        d, k = (next(r for r in rows if r["task"] == task and r["library"] == lib) for lib in DA_LIBRARIES)
        print(f"{task}: alkaid/da4ml LUT+INV {(k['LUT'] + k['INV']) / (d['LUT'] + d['INV']):.2f}x, "
              f"FF {k['FF'] / d['FF']:.2f}x, cycles {k['latency_cycles']}/{d['latency_cycles']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

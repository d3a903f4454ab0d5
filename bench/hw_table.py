"""Hardware of the paper's five selected configurations (Table 1): latency and cells of each core.

For every bundle: the da4ml core with its valid pipeline (`qpolicy_hw.rtl.build_rtl`), its latency
measured in Verilator and checked code-for-code against the `int` reference on 10k random codes +
golden + extremes, and Yosys `synth_xilinx -family xc7 -flatten` cell counts. The peer is the paper's
FINN core for the same task (published figures from PAPER.md, not measured here; FINN reports Vivado
numbers, these are Yosys counts, so compare orders of magnitude, not single LUTs).

    .venv/bin/python bench/hw_table.py [BUNDLE ...] [--out bench_out/hw_table] [--json]

Without arguments it measures `policies/hopper/selected` and the bundles under `policies/hwref/`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The paper's FINN cores (Table "Hardware", XC7A15T at 100 MHz, Vivado): LUT, FF, DSP, latency.
FINN = {"Humanoid": (2300, 3100, 45, "15.4 us"), "Walker2d": (1900, 1600, 4, "162.2 us"),
        "Ant": (2700, 4500, 45, "2.3 us"), "HalfCheetah": (4300, 4600, 11, "243.2 us"),
        "Hopper": (2400, 2000, 45, "21 cycles (0.2 us)")}


def measure(bundle_path: Path, out: Path) -> dict:
    from qpolicy_hw.bundle import load_bundle
    from qpolicy_hw.rtl import build_rtl, synthesize
    from qpolicy_hw.targets import TARGETS
    from qpolicy_hw.verify import built_core_vs_int, hardware_test_codes

    bundle = load_bundle(bundle_path)
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    build_rtl(bundle, out)
    res = synthesize(out)
    q = hardware_test_codes(bundle, 10_000, seed=0)
    _, mismatches, latency = built_core_vs_int(bundle, out, q)
    meta = json.loads((bundle_path / "bundle.json").read_text())
    spec = meta["spec"]
    part = TARGETS["xc7a15t"]
    return {"task": meta["task"]["env_id"].split("-")[0], "bundle": str(bundle_path), "steps": meta["provenance"].get("steps"),
            "width": spec["width"], "core_bits": spec["core_bits"], "input_bits": spec["input_bits"],
            "output_bits": spec["output_bits"], "latency_cycles": latency, **res,
            "fits_xc7a15t": res["LUT_upper_bound"] <= part.luts and res["FF"] <= part.ffs,
            "rtl_vs_int": {"n": int(len(q)), "mismatches": mismatches},
            "cmvm_blocks": json.loads((out / "qpolicy_rtl.json").read_text())["cmvm_blocks"],
            "seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="*", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "hw_table")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    bundles = a.bundles or [ROOT / "policies/hopper/selected",
                            *sorted(d for d in (ROOT / "policies/hwref").glob("*") if (d / "bundle.json").exists())]
    rows = []
    for b in bundles:
        out = a.out / (b.parent.name if b.name == "bundle" else b.name)
        row = measure(b, out)
        (out / "hw_row.json").write_text(json.dumps(row, indent=2) + "\n")  # kept if a later bundle fails
        rows.append(row)
        print(f"measured {row['task']} ({b}) in {row['seconds']:.0f} s", file=sys.stderr, flush=True)
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print("| task | width | core/in/out bits | bundle (steps) | latency | LUT | INV | FF | CARRY4 | DSP | BRAM | rtl_vs_int "
          "| FINN (paper): LUT / FF / DSP / latency | LUT ratio FINN/ours |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = FINN.get(r["task"])
        finn = f"{f[0]} / {f[1]} / {f[2]} / {f[3]}" if f else "-"
        ratio = f"{f[0] / max(r['LUT'], 1):.2f}" if f else "-"
        print(f"| {r['task']} | {r['width']} | {r['core_bits']}/{r['input_bits']}/{r['output_bits']} | "
              f"{r['bundle']} ({r['steps']}) | {r['latency_cycles']} cycles | {r['LUT']} | {r['INV']} | {r['FF']} | {r['CARRY4']} | "
              f"{r['DSP']} | {r['BRAM']} | {r['rtl_vs_int']['mismatches']}/{r['rtl_vs_int']['n']} | {finn} | {ratio} |")


if __name__ == "__main__":
    main()

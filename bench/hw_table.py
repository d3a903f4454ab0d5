"""Hardware of the paper's five selected configurations (Table 1): latency and cells of each core.

For every bundle: the da4ml core with its valid pipeline (`qpolicy_hw.rtl.build_rtl`), its latency
measured in Verilator and checked code-for-code against the `int` reference on 10k random codes +
golden + extremes, and Yosys `synth_xilinx -family xc7 -flatten` cell counts. The peer is the paper's
FINN core for the same task (published figures from PAPER.md, not measured here; FINN reports Vivado
numbers, these are Yosys counts, so compare orders of magnitude, not single LUTs).

    .venv/bin/python bench/hw_table.py [BUNDLE ...] [--out bench_out/hw_table] [--json] [--plot PNG]
    .venv/bin/python bench/hw_table.py --rows DIR/hw_row.json ... [--plot PNG]   # no re-measuring

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

    def stage(msg: str) -> None:
        print(f"[{bundle_path.name} {time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    stage("tracing the core with da4ml")
    build_rtl(bundle, out)
    stage("Yosys synth_xilinx")
    res = synthesize(out)
    q = hardware_test_codes(bundle, 10_000, seed=0)
    stage(f"Verilator build + {len(q)} vectors")
    _, mismatches, latency = built_core_vs_int(bundle, out, q)
    meta = json.loads((bundle_path / "bundle.json").read_text())
    spec = meta["spec"]
    return {"task": meta["task"]["env_id"].split("-")[0], "bundle": str(bundle_path), "steps": meta["provenance"].get("steps"),
            "width": spec["width"], "core_bits": spec["core_bits"], "input_bits": spec["input_bits"],
            "output_bits": spec["output_bits"], "latency_cycles": latency, **res,
            "fits_xc7a15t": TARGETS["xc7a15t"].holds(res),
            "rtl_vs_int": {"n": int(len(q)), "mismatches": mismatches},
            "cmvm_blocks": json.loads((out / "qpolicy_rtl.json").read_text())["cmvm_blocks"],
            "seconds": time.perf_counter() - t0}


def plot(rows: list[dict], path: Path) -> None:
    """Cells and latency of each core next to the paper's FINN core, on log scales."""
    import re

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from qpolicy_hw.targets import TARGETS

    # the paper has a FINN core only for each task's selected configuration (Hopper's has a 2-bit core)
    paper_config = [r["task"] != "Hopper" or r["core_bits"] == 2 for r in rows]
    tasks = [r["task"] + ("" if same else f" (core {r['core_bits']})") for r, same in zip(rows, paper_config)]
    x = np.arange(len(rows))
    finn = [FINN.get(r["task"]) if same else None for r, same in zip(rows, paper_config)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.bar(x - 0.2, [r["LUT"] for r in rows], 0.4, label="qpolicy core, Yosys LUT")
    ax1.bar(x + 0.2, [f[0] if f else 0 for f in finn], 0.4, label="paper's FINN core, Vivado LUT")
    ax1.axhline(TARGETS["xc7a15t"].luts, color="k", ls="--", lw=1, label="XC7A15T capacity")
    ax1.set_yscale("log")
    ax1.set_ylabel("LUT")
    ax2.bar(x - 0.2, [10.0 * r["latency_cycles"] for r in rows], 0.4, label="qpolicy core (cycles x 10 ns)")
    ax2.bar(x + 0.2, [1000 * float(re.search(r"([\d.]+) us", f[3]).group(1)) if f else 0 for f in finn], 0.4,
            label="paper's FINN core")
    ax2.set_yscale("log")
    ax2.set_ylabel("latency (ns, at 100 MHz)")
    for ax in (ax1, ax2):
        ax.set_xticks(x, tasks, rotation=20)
        ax.legend(fontsize=8)
    fig.suptitle("Fully unrolled integer cores vs the paper's FINN cores (Yosys counts; timing not run)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="*", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "hw_table")
    p.add_argument("--json", action="store_true")
    p.add_argument("--rows", nargs="+", type=Path, default=None,
                   help="hw_row.json files of earlier measurements: print/plot them instead of measuring")
    p.add_argument("--plot", type=Path, default=None, help="also draw the table as a figure (PNG)")
    a = p.parse_args()
    bundles = [] if a.rows else a.bundles or [
        ROOT / "policies/hopper/selected",
        *sorted(d for d in (ROOT / "policies/hwref").glob("*") if (d / "bundle.json").exists())]
    rows = [json.loads(f.read_text()) for f in a.rows or []]
    for b in bundles:
        out = a.out / (b.parent.name if b.name == "bundle" else b.name)
        row = measure(b, out)
        (out / "hw_row.json").write_text(json.dumps(row, indent=2) + "\n")  # kept if a later bundle fails
        rows.append(row)
        print(f"measured {row['task']} ({b}) in {row['seconds']:.0f} s", file=sys.stderr, flush=True)
    if a.plot:
        plot(rows, a.plot)
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
              f"{r['bundle']} ({r['steps']}) | {r['latency_cycles']} cycles | {r['LUT']} | {r.get('INV', '-')} | {r['FF']} | {r['CARRY4']} | "
              f"{r['DSP']} | {r['BRAM']} | {r['rtl_vs_int']['mismatches']}/{r['rtl_vs_int']['n']} | {finn} | {ratio} |")


if __name__ == "__main__":
    main()

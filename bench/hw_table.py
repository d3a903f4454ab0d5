"""Hardware of the paper's five selected configurations (Table 1): latency and cells of each core.

For every bundle: `qpolicy hw BUNDLE --target xc7a15t --fold auto` (or `--fold none`), i.e. the core the
planner picks, its Yosys `synth_xilinx -family xc7 -flatten` cell counts, its latency counted in Verilator
and its codes checked against the `int` reference on 10k random codes + golden + extremes. The peer is the
paper's FINN core for the same task (published figures from PAPER.md, not measured here; FINN reports
Vivado numbers, these are Yosys counts, so compare orders of magnitude, not single LUTs).

    .venv/bin/python bench/hw_table.py [BUNDLE ...] [--fold auto|none] [--out bench_out/hw_table] [--json] [--plot PNG]
    .venv/bin/python bench/hw_table.py --rows DIR/hw_row.json ... [--plot PNG]   # no re-measuring

Without arguments it measures every shipped selection (`policies/*/selected`) and `policies/hopper/core3`.
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


def measure(bundle_path: Path, out: Path, fold: str = "auto") -> dict:
    """One row: ``qpolicy hw BUNDLE --target xc7a15t --fold FOLD`` (the same code path), summarised."""
    from qpolicy_hw.hw_project import build_hw
    from qpolicy_hw.targets import TARGETS

    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()

    def stage(msg: str) -> None:
        print(f"[{bundle_path.name} {time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    report = build_hw(bundle_path, "xc7a15t", out, fold=fold, stage=stage)
    res = report["resources"]
    meta = json.loads((bundle_path / "bundle.json").read_text())
    spec = meta["spec"]
    return {"task": meta["task"]["env_id"].split("-")[0], "bundle": str(bundle_path.relative_to(ROOT))
            if bundle_path.is_relative_to(ROOT) else str(bundle_path), "steps": meta["provenance"].get("steps"),
            "width": spec["width"], "core_bits": spec["core_bits"], "input_bits": spec["input_bits"],
            "output_bits": spec["output_bits"], "latency_cycles": report["latency_cycles"], **res,
            "fold": report["fold"]["spec"], "fold_mode": fold, "fold_attempts": report["fold"]["attempts"],
            "logic_levels": report["logic_levels"],
            "resource_source": report["resource_source"],
            "fits_xc7a15t": TARGETS["xc7a15t"].holds(res),
            "rtl_vs_int": report["exact"]["rtl_vs_int"],
            "seconds": time.perf_counter() - t0}


def _finn_cycles(f: tuple) -> float:
    """FINN's latency in cycles at 100 MHz (the paper gives microseconds, or cycles for Hopper)."""
    import re

    m = re.search(r"(\d+) cycles", f[3])
    return float(m.group(1)) if m else 100.0 * float(re.search(r"([\d.]+) us", f[3]).group(1))


def plot(rows: list[dict], path: Path) -> None:
    """Latency (log) against LUT for our cores and the paper's FINN cores, one marker per task."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qpolicy_hw.targets import TARGETS

    fig, ax = plt.subplots(figsize=(10, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, r in enumerate(rows):
        c = colors[k % len(colors)]
        paper_config = r["task"] != "Hopper" or r["core_bits"] == 2  # FINN has Hopper's 2-bit core only
        label = r["task"] + ("" if paper_config else f" (core {r['core_bits']})")
        ax.scatter(r["LUT_upper_bound"], r["latency_cycles"], color=c, marker="o", s=50,
                   label=f"{label}: qpolicy ({r.get('fold', 'u')})")
        f = FINN.get(r["task"]) if paper_config else None
        if f:
            ax.scatter(f[0], _finn_cycles(f), color=c, marker="x", s=60, label=f"{label}: FINN (paper)")
            ax.plot([r["LUT_upper_bound"], f[0]], [r["latency_cycles"], _finn_cycles(f)], color=c, lw=0.6, ls=":")
    ax.axvline(TARGETS["xc7a15t"].luts, color="k", ls="--", lw=1, label="XC7A15T LUTs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("LUT (qpolicy: Yosys LUT + INV upper bound; FINN: Vivado)")
    ax.set_ylabel("latency, cycles at 100 MHz")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Policy cores vs the paper's FINN cores (timing not run; Yosys counts)", fontsize=10)
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
    p.add_argument("--fold", default="auto", help="qpolicy hw --fold for every bundle: auto (default) or none")
    a = p.parse_args()
    bundles = [] if a.rows else a.bundles or [
        *sorted(d for d in (ROOT / "policies").glob("*/selected") if (d / "bundle.json").exists()),
        ROOT / "policies/hopper/core3"]
    rows = [json.loads(f.read_text()) for f in a.rows or []]
    for b in bundles:
        # runs/X/bundle -> X; policies/walker2d/selected -> walker2d_selected (one folder per bundle)
        out = a.out / (b.resolve().parent.name if b.name == "bundle" else "_".join(b.resolve().parts[-2:]))
        row = measure(b.resolve(), out, a.fold)
        (out / "hw_row.json").write_text(json.dumps(row, indent=2) + "\n")  # kept if a later bundle fails
        rows.append(row)
        print(f"measured {row['task']} ({b}) in {row['seconds']:.0f} s", file=sys.stderr, flush=True)
    if a.plot:
        plot(rows, a.plot)
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print("| task | width | core/in/out bits | bundle (steps) | fold | latency | LUT + INV | FF | BRAM36 | DSP | logic levels "
          "| fits XC7A15T | rtl_vs_int | FINN (paper): LUT / FF / DSP / latency | latency FINN / ours |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        paper_config = r["task"] != "Hopper" or r["core_bits"] == 2
        f = FINN.get(r["task"]) if paper_config else None
        finn = f"{f[0]} / {f[1]} / {f[2]} / {f[3]}" if f else "-"
        speedup = f"{_finn_cycles(f) / r['latency_cycles']:.1f}x" if f else "-"
        print(f"| {r['task']} | {r['width']} | {r['core_bits']}/{r['input_bits']}/{r['output_bits']} | "
              f"{r['bundle']} ({r['steps']}) | {r.get('fold', 'u')} | {r['latency_cycles']} cycles | "
              f"{r['LUT_upper_bound']:,} | {r['FF']:,} | {r['BRAM']:g} | {r['DSP']} | {r.get('logic_levels', '-')} | "
              f"{'yes' if r['fits_xc7a15t'] else 'no'} | {r['rtl_vs_int']['mismatches']}/{r['rtl_vs_int']['n']} | "
              f"{finn} | {speedup} |")


if __name__ == "__main__":
    main()

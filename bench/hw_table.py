"""Hardware of the paper's five selected configurations (Table 1): latency and cells of each core.

For every bundle: `qpolicy hw BUNDLE --target xc7a15t --fold auto` (or `--fold none`), i.e. the core the
planner picks, its Yosys `synth_xilinx -family xc7` cell counts (module by module, flattened), its latency counted in Verilator
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
sys.path.insert(0, str(ROOT / "bench"))

from hw_reference import FINN, dominates, save_figure  # noqa: E402  (bench/ is on the path when run as a script)


def measure(bundle_path: Path, out: Path, fold: str = "auto", objective: str = "auto") -> dict:
    """One row: ``qpolicy hw BUNDLE --target xc7a15t --fold FOLD --objective OBJECTIVE`` (the same code
    path), summarised with the keys the README's table and ``bench/results/hw_rows`` use."""
    from qpolicy_hw.hw_project import build_hw
    from qpolicy_hw.targets import TARGETS

    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()

    def stage(msg: str) -> None:
        print(f"[{bundle_path.name} {time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    report = build_hw(bundle_path, "xc7a15t", out, fold=fold, stage=stage, objective=objective)
    res = report["resources"]
    meta = json.loads((bundle_path / "bundle.json").read_text())
    spec = meta["spec"]
    row = {"task": meta["task"]["env_id"].split("-")[0], "bundle": str(bundle_path.relative_to(ROOT))
           if bundle_path.is_relative_to(ROOT) else str(bundle_path), "steps": meta["provenance"].get("steps"),
           "width": spec["width"], "core_bits": spec["core_bits"], "input_bits": spec["input_bits"],
           "output_bits": spec["output_bits"], "objective": report["objective"],
           "max_latency_us": report["max_latency_us"],
           "LUT_upper_bound": res["LUT_upper_bound"], "FF": res["FF"], "BRAM": res["BRAM"], "DSP": res["DSP"],
           "LUT": res["LUT"], "INV": res["INV"], "CARRY4": res["CARRY4"],
           "latency_cycles": report["latency_cycles"], "clock_mhz": report["clock_mhz"],
           "latency_us": report["latency_us"],
           "est_critical_path_ns": report["timing"]["estimated_critical_path_ns"],
           "est_fmax_mhz": report["timing"]["estimated_fmax_mhz"], "logic_levels": report["timing"]["logic_levels"],
           "energy_per_action_nj": report["power"]["energy_per_action_nj"], "power_w": report["power"]["power_w"],
           "toggle_rate": report["power"]["toggle_rate"],
           "rtl_vs_int": report["exact"]["rtl_vs_int"], "fold": report["fold"]["spec"], "fold_mode": fold,
           "fold_attempts": report["fold"]["attempts"], "resource_source": report["resource_source"],
           "timing_model": report["timing"]["model"], "energy_model": report["power"]["model"],
           "estimates": "timing and energy are estimates, not sign-off: Vivado decides",
           "fits_xc7a15t": TARGETS["xc7a15t"].holds(res), "seconds": time.perf_counter() - t0}
    finn = FINN.get(row["task"]) if row["task"] != "Hopper" or row["core_bits"] == 2 else None
    row["dominates_finn"] = dominates(row, finn) if finn else None
    row["latency_ratio_finn"] = finn["latency_us"] / row["latency_us"] if finn else None
    return row


def _finn_cycles(f: dict) -> float:
    """FINN's latency in cycles at 100 MHz."""
    return 100.0 * f["latency_us"]


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
            ax.scatter(f["LUT"], _finn_cycles(f), color=c, marker="x", s=60, label=f"{label}: FINN (paper)")
            ax.plot([r["LUT_upper_bound"], f["LUT"]], [r["latency_cycles"], _finn_cycles(f)], color=c, lw=0.6, ls=":")
    ax.axvline(TARGETS["xc7a15t"].luts, color="k", ls="--", lw=1, label="XC7A15T LUTs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("LUT (qpolicy: Yosys LUT + INV upper bound; FINN: Vivado)")
    ax.set_ylabel("latency, cycles at 100 MHz")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Default cores (--objective finn: within FINN's resources) vs the paper's FINN cores: Yosys "
                 "counts, every core at an estimated <= 8 ns", fontsize=10)
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="*", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "hw_table")
    p.add_argument("--json", action="store_true")
    p.add_argument("--rows", nargs="+", type=Path, default=None,
                   help="hw_row.json files of earlier measurements: print/plot them instead of measuring")
    p.add_argument("--plot", type=Path, default=None, help="also draw the table as a figure (PNG)")
    p.add_argument("--fold", default="auto", help="qpolicy hw --fold for every bundle: auto (default) or none")
    p.add_argument("--objective", default="auto", choices=["auto", "finn", "area", "latency"],
                   help="qpolicy hw --objective (default: its default, auto)")
    p.add_argument("--rows-dir", type=Path, default=None, help="also write each row to DIR/<Task>.json")
    a = p.parse_args()
    bundles = [] if a.rows else a.bundles or [
        *sorted(d for d in (ROOT / "policies").glob("*/selected") if (d / "bundle.json").exists()),
        ROOT / "policies/hopper/core3"]
    rows = [json.loads(f.read_text()) for f in a.rows or []]
    for b in bundles:
        # runs/X/bundle -> X; policies/walker2d/selected -> walker2d_selected (one folder per bundle)
        out = a.out / (b.resolve().parent.name if b.name == "bundle" else "_".join(b.resolve().parts[-2:]))
        try:
            row = measure(b.resolve(), out, a.fold, a.objective)
        except Exception as exc:  # noqa: BLE001  one bundle's failure is reported; the others still run
            print(f"FAILED {b}: {exc}", file=sys.stderr, flush=True)
            continue
        (out / "hw_row.json").write_text(json.dumps(row, indent=2) + "\n")  # kept if a later bundle fails
        if a.rows_dir:
            a.rows_dir.mkdir(parents=True, exist_ok=True)
            name = row["task"] + ("" if b.name == "selected" else f"-{b.name}") + (
                "" if a.objective == "auto" else f"-{a.objective}")
            (a.rows_dir / f"{name}.json").write_text(json.dumps(row, indent=2) + "\n")
        rows.append(row)
        print(f"measured {row['task']} ({b}) in {row['seconds']:.0f} s", file=sys.stderr, flush=True)
    if a.plot:
        plot(rows, a.plot)
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print("| task | objective | fold | latency | LUT + INV | FF | BRAM36 | DSP | est. critical path (Fmax) | levels "
          "| energy / action (estimate) | rtl_vs_int | FINN (paper): LUT / FF / BRAM / DSP / latency / energy | "
          "latency FINN / ours | dominates FINN |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = FINN.get(r["task"]) if r["task"] != "Hopper" or r["core_bits"] == 2 else None
        finn = (f"{f['LUT']:,} / {f['FF']:,} / {f['BRAM']:g} / {f['DSP']} / {f['latency_us']:g} us / "
                f"{f['energy_nj']:,} nJ" if f else "-")
        e = r["energy_per_action_nj"]
        print(f"| {r['task']} | {r['objective']} | {r['fold']} | {r['latency_cycles']} cycles ({r['latency_us']:.2f} us) | "
              f"{r['LUT_upper_bound']:,} | {r['FF']:,} | {r['BRAM']:g} | {r['DSP']} | {r['est_critical_path_ns']:.2f} ns "
              f"({r['est_fmax_mhz']:.0f} MHz) | {r['logic_levels']} | {e['low']:g}-{e['high']:g} nJ | "
              f"{r['rtl_vs_int']['mismatches']}/{r['rtl_vs_int'].get('vectors', r['rtl_vs_int'].get('n'))} | {finn} | "
              + (f"{(r['latency_ratio_finn'] or 0):.1f}x | {'yes' if r['dominates_finn'] else 'no'} |" if f
                 else "- | - (no FINN core for this task) |"))


if __name__ == "__main__":
    main()

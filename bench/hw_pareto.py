"""The area-latency Pareto front of each shipped selection: several fold plans, each built by ``qpolicy hw``.

For every task, the planner's ``area`` choice at several latency budgets (multiples of the ``area`` objective's
default budget, 50 multiply-accumulates per cycle), its ``latency`` choice and its ``finn`` choice (the default:
the fastest core within the FINN core's resources) are built through the same code path as
``qpolicy hw`` (pipelined until the timing estimate meets 100 MHz, Yosys cells, latency counted in Verilator,
codes checked against ``int``). Writes ``bench/results/hw_pareto/<Task>.json`` and draws ``docs/hw_pareto.png``:
one panel per task, LUT (+ INV) against latency in us (log x), with the paper's FINN point and the DWC band
(a different model class: logic circuits, 0.8-3.2k LUT, 2-3 cycles).

    .venv/bin/python bench/hw_pareto.py [--tasks Hopper Walker2d ...] [--budgets 0.5 1 4] [--json]
    .venv/bin/python bench/hw_pareto.py --plot-only          # redraw from bench/results/hw_pareto/
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

from hw_reference import DWC, FINN, save_figure  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "hw_pareto"
TASKS = {"Hopper": "hopper", "Humanoid": "humanoid", "Walker2d": "walker2d", "Ant": "ant", "HalfCheetah": "halfcheetah"}


def pareto_points(task: str, budgets: list[float], work: Path, n_random: int) -> list[dict]:
    """Build the task's core for each budget (``area``) and for ``latency``; one point per distinct fold."""
    from qpolicy_hw.bundle import load_bundle
    from qpolicy_hw.hw_project import build_hw, default_latency_budget_us

    bundle_path = ROOT / "policies" / TASKS[task] / "selected"
    default_us = default_latency_budget_us(load_bundle(bundle_path))
    runs = [("latency", None), ("finn", None)] + [("area", round(default_us * k, 3)) for k in budgets]
    points, seen = [], set()
    for objective, budget in runs:
        out = work / f"{task}-{objective}-{budget}"
        if out.exists():
            shutil.rmtree(out)
        t0 = time.perf_counter()

        def stage(msg: str, t0=t0, objective=objective, budget=budget) -> None:
            print(f"[{task} {objective} {budget} {time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

        try:
            report = build_hw(bundle_path, "xc7a15t", out, n_random=n_random, stage=stage, objective=objective,
                              max_latency_us=budget, energy=False)
        except Exception as exc:  # noqa: BLE001  a point that cannot be built is recorded, not fatal
            points.append({"objective": objective, "max_latency_us": budget, "error": str(exc)[:300]})
            continue
        res, timing = report["resources"], report["timing"]
        if report["fold"]["spec"] in seen:
            continue
        seen.add(report["fold"]["spec"])
        points.append({"objective": objective, "max_latency_us": budget, "fold": report["fold"]["spec"],
                       "latency_cycles": report["latency_cycles"], "latency_us": report["latency_us"],
                       "LUT_upper_bound": res["LUT_upper_bound"], "FF": res["FF"], "BRAM": res["BRAM"],
                       "DSP": res["DSP"], "est_critical_path_ns": timing["estimated_critical_path_ns"],
                       "logic_levels": timing["logic_levels"], "rtl_vs_int": report["exact"]["rtl_vs_int"],
                       "seconds": round(time.perf_counter() - t0, 1)})
    return points


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if t in results]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        pts = sorted((p for p in results[task] if "error" not in p), key=lambda p: p["latency_us"])
        ax.plot([p["latency_us"] for p in pts], [p["LUT_upper_bound"] for p in pts], "o-", label="qpolicy (Yosys)")
        for p in pts:
            ax.annotate(p["fold"], (p["latency_us"], p["LUT_upper_bound"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        row_file = ROOT / "bench" / "results" / "hw_rows" / f"{task}.json"
        if row_file.exists():   # the default core (bench/hw_table.py): qpolicy hw's default objective
            row = json.loads(row_file.read_text())
            ax.plot([row["latency_us"]], [row["LUT_upper_bound"]], "*", ms=12, color="C1", label="qpolicy default")
        f = FINN[task]
        ax.plot([f["latency_us"]], [f["LUT"]], "x", ms=9, color="k", label="FINN (paper, Vivado)")
        lo_us, hi_us = DWC["cycles"][0] / 100.0, DWC["cycles"][1] / 100.0
        ax.fill_between([lo_us, hi_us], DWC["LUT"][0], DWC["LUT"][1], color="0.8", alpha=0.6,
                        label="DWC band (logic circuits)")
        ax.set_xscale("log")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("latency, us at 100 MHz")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("LUT (+ INV)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Area-latency fronts; every core pipelined to an estimated <= 8 ns and <= 12 levels "
                 "(estimates, not sign-off)", fontsize=9)
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--budgets", nargs="+", type=float, default=[1.0, 4.0, 16.0],
                   help="area budgets as multiples of the default (50 MACs per cycle)")
    p.add_argument("--n-random", type=int, default=1000, help="random code vectors per exactness check")
    p.add_argument("--work", type=Path, default=ROOT / "bench_out" / "hw_pareto")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "hw_pareto.png")
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if not a.plot_only:
        RESULTS.mkdir(parents=True, exist_ok=True)
        for task in a.tasks:
            points = pareto_points(task, a.budgets, a.work, a.n_random)
            (RESULTS / f"{task}.json").write_text(json.dumps({"task": task, "finn": FINN[task], "points": points},
                                                             indent=2) + "\n")
            for pt in points:
                print(f"{task} {pt.get('objective')} {pt.get('max_latency_us')}: " + (
                    pt["error"] if "error" in pt else f"{pt['fold']} {pt['latency_us']:.2f} us, "
                    f"{pt['LUT_upper_bound']} LUT, {pt['FF']} FF, {pt['BRAM']} BRAM, {pt['est_critical_path_ns']} ns"),
                    flush=True)
    results = {json.loads(f.read_text())["task"]: json.loads(f.read_text())["points"]
               for f in sorted(RESULTS.glob("*.json"))}
    plot(results, a.plot)
    if a.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()

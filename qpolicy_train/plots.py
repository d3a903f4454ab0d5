"""Figures people would rather see than read: reward vs bit width (the paper's Fig. 1 layout) and
return vs input noise."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from qpolicy_train.selection import config_of, read_results, select, summarize

SCOPES = {
    "all": lambda c, b: c.input_bits == c.core_bits == c.output_bits == b,
    "input": lambda c, b: (c.input_bits, c.core_bits, c.output_bits) == (b, 8, 8),
    "core": lambda c, b: (c.input_bits, c.core_bits, c.output_bits) == (8, b, 8),
    "output": lambda c, b: (c.input_bits, c.core_bits, c.output_bits) == (8, 8, b),
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, out_png: str | Path) -> Path:
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_bit_sweep(results_csv: str | Path, out_png: str | Path, width: int = 256) -> Path:
    """One panel per task: mean return (+- std over seeds) vs bit width for each scope, FP32 as a band."""
    plt = _plt()
    rows = read_results(results_csv)
    tasks = sorted({r["env_id"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        task_rows = [r for r in rows if r["env_id"] == task]
        fp = [r["mean_return"] for r in task_rows if not r["quantized"]]
        if fp:
            m, s = np.mean(fp), np.std(fp)
            ax.axhspan(m - s, m + s, color="0.85", label="FP32 ± std")
            ax.axhline(m, color="0.4", lw=1)
        for scope, member in SCOPES.items():
            xs, ms, ss = [], [], []
            for b in range(2, 9):
                vals = [r["mean_return"] for r in task_rows if r["quantized"] and r["width"] == width
                        and member(config_of(r), b)]
                if vals:
                    xs.append(b), ms.append(np.mean(vals)), ss.append(np.std(vals))
            if xs:
                ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=scope)
        ax.set_title(task)
        ax.set_xlabel("bit width")
        ax.set_ylabel("return")
        ax.invert_xaxis()
        ax.legend(fontsize=7)
    return _save(plt, fig, out_png)


def plot_selection(results_csv: str | Path, out_png: str | Path) -> Path:
    """The staged selection's evidence, one panel per stage: mean return (+- std over seeds) of each candidate,
    the FP32 band, the parity threshold (FP32 mean - std) and the value the stage chose."""
    plt = _plt()
    rows = read_results(results_csv)
    decision = select(rows)
    fp32_mean, fp32_std = decision["fp32"]["mean"], decision["fp32"]["std"]
    steps = sorted({int(r["steps"]) for r in rows if str(r.get("steps", "")).isdigit()})
    seeds = sorted({n for _mean, _std, n in summarize(rows).values()})   # seeds per configuration
    sel = decision["selected"]
    labels = {"core_bits": "core bits (width 256, I/O 8 bits)",
              "width": f"hidden width (core {sel['core_bits']} bits, I/O 8 bits)",
              "input_bits": f"input bits (width {sel['width']}, core {sel['core_bits']} bits)"}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), squeeze=False)
    for ax, stage in zip(axes[0], decision["stages"], strict=True):
        field = stage["field"]
        points = sorted(((e["config"][field], e["mean"], e["std"], e["matches_fp32"]) for e in stage["evidence"]),
                        reverse=True)
        ax.axhspan(fp32_mean - fp32_std, fp32_mean + fp32_std, color="0.88", label="FP32 ± std")
        ax.axhline(fp32_mean - fp32_std, color="0.4", ls="--", lw=1, label="parity threshold")
        if points:
            xs = [str(p[0]) for p in points]
            ax.errorbar(xs, [p[1] for p in points], yerr=[p[2] for p in points], marker="o", capsize=3,
                        color="C0", label="quantized")
            for x, p in zip(xs, points, strict=True):
                if p[0] == stage["chosen"] and p[3]:
                    verb = "chosen" if stage["complete"] else "so far"
                    ax.plot([x], [p[1]], marker="*", ms=14, color="C3", ls="", label=f"{verb}: {p[0]}")
        if stage["missing"]:
            ax.set_title(f"stage {stage['stage']}: {len(stage['missing'])} candidates not run yet", fontsize=9)
        elif not stage["complete"]:
            ax.set_title(f"stage {stage['stage']}: {field} -> {stage['chosen']} (after an open stage)", fontsize=9)
        else:
            ax.set_title(f"stage {stage['stage']}: {field} -> {stage['chosen']}", fontsize=9)
        ax.set_xlabel(labels[field])
        ax.set_ylabel("return")
        ax.legend(fontsize=7)
    tasks = ", ".join(sorted({r["env_id"] for r in rows}))
    budget = f"{steps[0]:,} steps" if len(steps) == 1 else "steps " + "/".join(f"{s:,}" for s in steps)
    n_seeds = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    fig.suptitle(f"staged selection, {tasks}: {budget} per run, {n_seeds} seeds per configuration", fontsize=10)
    return _save(plt, fig, out_png)



def plot_noise(noise_csv: str | Path, out_png: str | Path) -> Path:
    """Return vs noise sigma for each model label: mean +- std over its models/seeds, or over the
    episodes when a label has a single model."""
    plt = _plt()
    with open(noise_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for model in sorted({r["model"] for r in rows}):
        sig = sorted({float(r["sigma"]) for r in rows if r["model"] == model})
        ms, ss = [], []
        for s in sig:
            at = [r for r in rows if r["model"] == model and float(r["sigma"]) == s]
            ms.append(np.mean([float(r["mean_return"]) for r in at]))
            ss.append(np.std([float(r["mean_return"]) for r in at]) if len(at) > 1 else float(at[0]["std_return"]))
        ax.errorbar(sig, ms, yerr=ss, marker="o", capsize=3, label=model)
    ax.set_xlabel("noise sigma (normalized observation)")
    ax.set_ylabel("return")
    ax.legend(fontsize=8)
    return _save(plt, fig, out_png)


def plot_curves(logs: dict[str, str | Path], out_png: str | Path, reference: float | None = None) -> Path:
    """Periodic deterministic evaluation (mean +- std) over training steps, one line per run's progress.csv."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, path in logs.items():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("eval_mean")]
        if not rows:
            raise ValueError(f"{path}: no evaluation rows (eval_mean) in this training log")
        step = np.array([int(r["global_step"]) for r in rows])
        mean = np.array([float(r["eval_mean"]) for r in rows])
        std = np.array([float(r["eval_std"]) for r in rows])
        (line,) = ax.plot(step, mean, marker=".", label=label)
        ax.fill_between(step, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=f"reference ({reference:g})")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.legend(fontsize=8)
    return _save(plt, fig, out_png)

"""Run the staged selection's training sweep as parallel local processes (or on Ray), resumably.

Every (configuration, seed) is one ``train`` run in its own directory; a finished run is recorded
as one row of ``OUT/results.csv`` and never run again, an interrupted one resumes from its
checkpoint. After each stage the table decides what the next stage trains. The table names each run
by its directory relative to OUT, so a table copied or committed elsewhere resumes there too (the
run directories themselves stay out of git).
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

from qpolicy_hw.errors import QpolicyError
from qpolicy_train.selection import FP32, Config, append_result, read_results, select, stage_candidates


def run_dir_name(config: Config, seed: int) -> str:
    if not config.quantized:
        return f"fp32-w{config.width}-s{seed}"
    return f"w{config.width}-i{config.input_bits}-c{config.core_bits}-o{config.output_bits}-s{seed}"


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train, export and evaluate one configuration; returns its results row. Runs in a worker."""
    import torch

    from qpolicy_sim.evaluation import evaluate_bundle
    from qpolicy_train.args import Args
    from qpolicy_train.export import export_checkpoint
    from qpolicy_train.training import train

    torch.set_num_threads(1)
    args = Args.from_dict(job["args"])
    train(args)
    bundle = export_checkpoint(Path(args.out_dir) / "actor.pt", Path(args.out_dir) / "bundle", env_module=args.env_module)
    ev = evaluate_bundle(str(bundle), episodes=job["eval_episodes"], backend="int" if args.quant.quantized else "float",
                         seed=job["eval_seed"])
    return {"env_id": args.env_id, "algo": args.algo, "quantized": args.quant.quantized, "width": args.quant.width,
            "input_bits": args.quant.input_bits, "core_bits": args.quant.core_bits,
            "output_bits": args.quant.output_bits,
            "seed": args.seed, "steps": args.total_timesteps, "mean_return": ev["mean_return"],
            "std_return": ev["std_return"], "episodes": ev["episodes"], "run_dir": job["run_dir"]}


def _idle_worker_ignores_ctrl_c() -> None:
    # Ctrl-C goes to the whole process group. An idle worker that died of it would break the pool, and
    # the pool would then kill the busy workers before they save their checkpoints.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_job_in_worker(job: dict[str, Any]) -> dict[str, Any]:
    """``run_job`` with Ctrl-C armed while it trains (the run saves a checkpoint), ignored again after."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run_job(job)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _execute(jobs: list[dict], n_jobs: int, engine: str, results: Path, progress: bool) -> None:
    if not jobs:
        return
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise QpolicyError("--engine ray needs Ray: pip install -r requirements/ray.txt "
                               "(or use --engine local)") from None
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), unit="run", desc=f"sweep ({engine})")
    try:
        if engine == "ray":
            _execute_on_ray(jobs, n_jobs, results, bar)
        else:
            _execute_locally(jobs, n_jobs, results, bar)
    finally:
        if bar:
            bar.close()   # before any error line, not after it


def _execute_locally(jobs: list[dict], n_jobs: int, results: Path, bar) -> None:
    """At most ``n_jobs`` runs in worker processes at a time; the parent alone writes the table.

    Runs are handed out one at a time rather than queued up front, so that Ctrl-C or a failed run
    stops the sweep: nothing new starts, the runs in flight end (Ctrl-C reaches the workers too and
    each saves a checkpoint; after a failed run the others finish and are recorded), and the error
    goes up. A queued pool would go on with every remaining run, unrecorded.
    """
    todo = list(reversed(jobs))
    running: dict[cf.Future, dict] = {}
    failure: BaseException | None = None

    def collect(done) -> list[dict]:
        """Record the finished runs; returns the jobs that ended without a result."""
        nonlocal failure
        unfinished = []
        for fut in done:
            job = running.pop(fut)
            try:
                row = fut.result()
            except Exception as exc:
                failure = failure or exc
                unfinished.append(job)
                continue
            _record(results, row, bar)
        return unfinished

    with cf.ProcessPoolExecutor(max_workers=n_jobs, initializer=_idle_worker_ignores_ctrl_c) as pool:
        try:
            while running or (todo and failure is None):
                while todo and failure is None and len(running) < n_jobs:
                    job = todo.pop()
                    running[pool.submit(_run_job_in_worker, job)] = job
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                collect(done)
        except KeyboardInterrupt:
            done, _ = cf.wait(running)
            where = "; ".join(_resume_point(job) for job in collect(done))   # a run that ended just then counts
            raise QpolicyError(f"interrupted ({where or 'no run in flight'}); the same command resumes the "
                               "sweep") from None
    if failure is not None:
        raise failure


def _resume_point(job: dict) -> str:
    from qpolicy_train.checkpoint import CheckpointError, load_checkpoint

    run = Path(job["args"]["out_dir"])
    try:
        return f"{run.name} resumes at step {load_checkpoint(run / 'checkpoint.pt')['global_step']:,}"
    except (CheckpointError, KeyError):
        return f"{run.name} starts over"


def _record(results: Path, row: dict, bar) -> None:
    """One finished run: its row in the table, and a line saying what it scored (runs take many minutes)."""
    append_result(results, row)
    if bar:
        bar.write(f"{Path(row['run_dir']).name}: {row['mean_return']:.1f} +- {row['std_return']:.1f} "
                  f"({row['episodes']} episodes, {row['steps']:,} steps)")
        bar.update(1)


def _execute_on_ray(jobs: list[dict], n_jobs: int, results: Path, bar) -> None:
    """The same jobs as Ray tasks (one CPU each); the driver alone writes the results table.

    With ``RAY_ADDRESS`` set, the sweep joins that cluster (its workers need qpolicy installed);
    otherwise it starts a private single-machine Ray bound to 127.0.0.1, without a dashboard.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if os.environ.get("RAY_ADDRESS"):
            ray.init()
        else:
            ray.init(num_cpus=n_jobs, include_dashboard=False, _node_ip_address="127.0.0.1",
                     configure_logging=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(run_job)
        pending = [remote.remote(j) for j in jobs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            _record(results, ray.get(done[0]), bar)
    finally:
        if started_here:
            ray.shutdown()


def run_selection(base_args: dict, seeds: list[int], out_dir: str | Path, n_jobs: int = 2, engine: str = "local",
                  eval_episodes: int = 10, progress: bool = True) -> dict:
    """The three stages, training what each needs that the table does not have yet."""
    from qpolicy_train.args import Args

    out = Path(out_dir).resolve()  # workers (Ray's included) may run in another directory
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.csv"
    template = Args.from_dict({**base_args, "progress": False, "export_bundle": False}).validate()
    if results.exists():
        _check_table_fits(read_results(results), template, results)
    chosen = {"core_bits": 8, "width": 256, "input_bits": 8}
    decision: dict = {}
    for stage in (1, 2, 3):
        configs = ([FP32] if stage == 1 else []) + stage_candidates(stage, chosen)   # the reference first
        # by directory name: rows written with an absolute path count as well
        done = {Path(r["run_dir"]).name for r in read_results(results)} if results.exists() else set()
        jobs = []
        for c in configs:
            for seed in seeds:
                name = run_dir_name(c, seed)
                if name in done:
                    continue
                quant = replace(template.quant, width=c.width, input_bits=c.input_bits, core_bits=c.core_bits,
                                output_bits=c.output_bits, quantized=c.quantized)
                args = replace(template, seed=seed, quant=quant, out_dir=str(out / "runs" / name))
                jobs.append({"args": args.to_dict(), "eval_episodes": eval_episodes, "eval_seed": 10_000,
                             "run_dir": f"runs/{name}"})
        _execute(jobs, n_jobs, engine, results, progress)
        decision = select(read_results(results))
        chosen = {k: decision["selected"][k] for k in ("core_bits", "width", "input_bits")}
        _write_decision(decision, out)   # after every stage: an interrupted sweep leaves its current figures
    return decision


def _check_table_fits(rows: list[dict], template, results: Path) -> None:
    """A table of another task, algorithm or budget would count its runs as done here (same names): refuse."""
    want = {"env_id": template.env_id, "algo": template.algo, "steps": str(template.total_timesteps)}
    for i, row in enumerate(rows, start=2):
        for key, value in want.items():
            if str(row.get(key)) != value:
                raise QpolicyError(f"{results}:{i}: a run with {key} {row.get(key)}, this sweep's is {value}; "
                                   "use another --out for another sweep")


def _write_decision(decision: dict, out: Path) -> None:
    """``selection.json`` and the figures beside the results table (paths in the JSON relative to it, so
    the folder can be committed or moved)."""
    import json

    from qpolicy_train.plots import plot_bit_sweep, plot_selection

    results = out / "results.csv"
    figures = [plot_selection(results, out / "staged_selection.png"),
               plot_bit_sweep(results, out / "reward_vs_bits.png")]
    decision["results"] = results.name
    decision["figures"] = [f.name for f in figures]
    (out / "selection.json").write_text(json.dumps(decision, indent=2) + "\n")


def default_jobs() -> int:
    return max(1, (os.cpu_count() or 2))

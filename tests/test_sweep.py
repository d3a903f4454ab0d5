"""The selection sweep for real: every stage trains, exports and evaluates its runs, and a second
call finds them all in the results table and trains nothing (tiny budgets; the decision itself is
tested on a synthetic table in test_selection_and_eval)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from qpolicy_train.selection import BITS, WIDTHS, read_results
from qpolicy_train.sweep import _execute, run_job, run_selection

TINY = dict(env_id="Hopper-v5", total_timesteps=510, learning_starts=200, batch_size=16, buffer_size=1000,
            eval_every=10**9, eval_episodes=1, checkpoint_every=10**9)


@pytest.mark.slow
def test_selection_sweep_runs_every_stage_and_resumes(tmp_path):
    decision = run_selection(TINY, seeds=[3], out_dir=tmp_path, n_jobs=2, eval_episodes=1, progress=False)
    rows = read_results(tmp_path / "results.csv")
    # stage 1: 7 core widths + FP32; stage 2: 4 new widths; stage 3: 6 new input widths
    assert len(rows) == len(BITS) + 1 + (len(WIDTHS) - 1) + (len(BITS) - 1)
    assert len({r["run_dir"] for r in rows}) == len(rows)
    assert all(int(r["steps"]) == 510 and int(r["episodes"]) == 1 for r in rows)
    assert [s["stage"] for s in decision["stages"]] == [1, 2, 3]
    selected = decision["selected"]
    assert selected["core_bits"] in BITS and selected["width"] in WIDTHS and selected["input_bits"] in BITS
    for r in rows:  # each row's run left its bundle under the sweep's directory
        bundle = Path(r["run_dir"]) / "bundle"
        assert bundle.parent.parent == tmp_path.resolve() / "runs"
        assert json.loads((bundle / "bundle.json").read_text())["schema"].startswith("qpolicy.bundle/")
    table = (tmp_path / "results.csv").read_text()
    assert json.loads((tmp_path / "selection.json").read_text())["selected"] == selected
    assert all((tmp_path / f).stat().st_size > 10_000 for f in ("staged_selection.png", "reward_vs_bits.png"))

    again = run_selection(TINY, seeds=[3], out_dir=tmp_path, n_jobs=2, eval_episodes=1, progress=False)
    assert (tmp_path / "results.csv").read_text() == table  # nothing retrained
    assert again["selected"] == selected


def test_ray_engine_runs_the_same_jobs(tmp_path):
    pytest.importorskip("ray", reason="Ray is the optional extra: pip install -r requirements/ray.txt")
    from qpolicy_train.args import Args

    jobs = [{"args": Args.from_dict(dict(**TINY, seed=s, width=16, core_bits=2, input_bits=6, out_dir=str(tmp_path / f"r{s}"),
                                           progress=False, export_bundle=False)).to_dict(),
             "eval_episodes": 1, "eval_seed": 10_000}
            for s in (1, 2)]
    _execute(jobs, 2, "ray", tmp_path / "results.csv", progress=False)
    rows = sorted(read_results(tmp_path / "results.csv"), key=lambda r: r["seed"])
    assert [r["seed"] for r in rows] == [1, 2]
    # a Ray task computes exactly what a local worker does (same seed, same returns)
    local = run_job({**jobs[0], "args": {**jobs[0]["args"], "out_dir": str(tmp_path / "local")}})
    assert local["mean_return"] == rows[0]["mean_return"]

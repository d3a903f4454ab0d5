"""The selection sweep for real: every stage trains, exports and evaluates its runs, and a second
call finds them all in the results table and trains nothing (tiny budgets; the decision itself is
tested on a synthetic table in test_selection_and_eval)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qpolicy_hw.errors import QpolicyError
from qpolicy_train.args import Args, TrainError
from qpolicy_train.checkpoint import load_checkpoint
from qpolicy_train.selection import BITS, WIDTHS, read_results
from qpolicy_train.sweep import _execute, run_job, run_selection

ROOT = Path(__file__).resolve().parent.parent

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
    for r in rows:  # each row's run left its bundle under the sweep's directory, named relative to it
        assert r["run_dir"].startswith("runs/")
        bundle = tmp_path / r["run_dir"] / "bundle"
        assert json.loads((bundle / "bundle.json").read_text())["schema"].startswith("qpolicy.bundle/")
    table = (tmp_path / "results.csv").read_text()
    written = json.loads((tmp_path / "selection.json").read_text())
    assert written["selected"] == selected and written["complete"]
    # names relative to the folder, which can be committed or moved
    assert written["results"] == "results.csv" and written["figures"] == ["staged_selection.png", "reward_vs_bits.png"]
    assert all((tmp_path / f).stat().st_size > 10_000 for f in ("staged_selection.png", "reward_vs_bits.png"))

    again = run_selection(TINY, seeds=[3], out_dir=tmp_path, n_jobs=2, eval_episodes=1, progress=False)
    assert (tmp_path / "results.csv").read_text() == table  # nothing retrained
    assert again["selected"] == selected

    # the table alone (committed, or copied to another checkout) resumes elsewhere: nothing is retrained
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "results.csv").write_text(table)
    assert run_selection(TINY, seeds=[3], out_dir=moved, n_jobs=2, eval_episodes=1,
                         progress=False)["selected"] == selected
    assert (moved / "results.csv").read_text() == table and not (moved / "runs").exists()


def test_ray_engine_runs_the_same_jobs(tmp_path):
    pytest.importorskip("ray", reason="Ray is the optional extra: pip install -r requirements/ray.txt")
    jobs = [_tiny_job(tmp_path / f"r{s}", s) for s in (1, 2)]
    _execute(jobs, 2, "ray", tmp_path / "results.csv", progress=False)
    rows = sorted(read_results(tmp_path / "results.csv"), key=lambda r: r["seed"])
    assert [r["seed"] for r in rows] == [1, 2]
    # a Ray task computes exactly what a local worker does (same seed, same returns)
    local = run_job({**jobs[0], "args": {**jobs[0]["args"], "out_dir": str(tmp_path / "local")}})
    assert local["mean_return"] == rows[0]["mean_return"]


def _tiny_job(out_dir: Path, seed: int) -> dict:
    args = Args.from_dict(dict(**TINY, seed=seed, width=16, core_bits=2, input_bits=6, out_dir=str(out_dir),
                               progress=False, export_bundle=False))
    return {"args": args.to_dict(), "eval_episodes": 1, "eval_seed": 10_000, "run_dir": out_dir.name}


def _ctrl_c(proc: subprocess.Popen) -> str:
    """SIGINT to the process group, as a terminal's Ctrl-C; returns stderr once it has exited."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def test_a_failed_run_stops_the_sweep_and_the_run_in_flight_still_counts(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")   # refused before it trains
    jobs = [_tiny_job(bad, 1), _tiny_job(tmp_path / "ok", 2), _tiny_job(tmp_path / "never", 3)]
    with pytest.raises(TrainError, match="move it away"):
        _execute(jobs, 2, "local", tmp_path / "results.csv", progress=False)
    assert [r["run_dir"] for r in read_results(tmp_path / "results.csv")] == ["ok"]
    assert not (tmp_path / "never").exists()          # nothing new starts after a failure
    assert (bad / "checkpoint.pt").read_bytes() == b"not a checkpoint"   # and nothing is lost


def test_ctrl_c_stops_the_sweep_with_checkpoints_and_one_line(tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) ends the sweep: the runs in flight save their
    checkpoints, no queued run starts, and the same command resumes."""
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "qpolicy_cli.main", "select", "--env-id", "Hopper-v5", "--seeds", "5",
           "--steps", "100000", "--jobs", "2", "--eval-episodes", "1", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    runs = out / "runs"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and \
            len([d for d in runs.glob("*") if (d / "progress.csv").exists()]) < 2:
        time.sleep(0.1)
    time.sleep(2.0)   # both runs are stepping
    err = _ctrl_c(proc)
    assert proc.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("qpolicy select: error: interrupted (") and "Traceback" not in err, err
    assert last.endswith("); the same command resumes the sweep")
    started = sorted(d.name for d in runs.iterdir())
    assert started == ["fp32-w256-s5", "w256-i8-c8-o8-s5"]   # the first two of stage 1, no third
    for name in started:   # each says where it resumes, and that is where its checkpoint is (if any)
        ckpt = runs / name / "checkpoint.pt"
        said = f"{name} resumes at step {load_checkpoint(ckpt)['global_step']:,}" if ckpt.exists() else \
            f"{name} starts over"
        assert said in last
    # the FP32 run has no activation-scale warm-up, so Ctrl-C always leaves its checkpoint
    assert (runs / "fp32-w256-s5" / "checkpoint.pt").exists()
    assert not (out / "results.csv").exists()


IDLE_WORKER_SWEEP = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_sweep import TINY, _tiny_job
from qpolicy_hw.errors import QpolicyError
from qpolicy_train.args import Args
from qpolicy_train.sweep import _execute
out = Path(sys.argv[2])
long = _tiny_job(out / "long", 2)
long["args"] = Args.from_dict({**long["args"], "total_timesteps": 100_000, "checkpoint_every": 10**9}).to_dict()
try:
    _execute([_tiny_job(out / "short", 1), long], 2, "local", out / "results.csv", progress=False)
except QpolicyError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
"""


def test_ctrl_c_with_an_idle_worker_still_saves_the_busy_ones(tmp_path):
    """After the short run ends its worker idles; Ctrl-C then must not kill that worker (which would break
    the pool and take the long run down before it saves its checkpoint)."""
    proc = subprocess.Popen([sys.executable, "-c", IDLE_WORKER_SWEEP, str(ROOT / "tests"), str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (tmp_path / "results.csv").exists():
        time.sleep(0.1)
    time.sleep(1.0)
    err = _ctrl_c(proc)
    assert proc.returncode == 2 and "Traceback" not in err, err
    ckpt = tmp_path / "long" / "checkpoint.pt"
    assert f"long resumes at step {load_checkpoint(ckpt)['global_step']:,}" in err.strip().splitlines()[-1]
    assert [r["run_dir"] for r in read_results(tmp_path / "results.csv")] == ["short"]


def test_a_table_of_another_sweep_is_refused_before_anything_runs(tmp_path):
    """Run names carry no task or budget: a Hopper table must not count as done for Walker2d or 100k steps."""
    row = ("env_id,algo,quantized,width,input_bits,core_bits,output_bits,seed,steps,mean_return,std_return,"
           "episodes,run_dir\nHopper-v5,sac,False,256,8,8,8,3,510,100.0,0.0,1,runs/fp32-w256-s3\n")
    (tmp_path / "results.csv").write_text(row)
    for other, message in (({"env_id": "Walker2d-v5"}, "env_id Hopper-v5, this sweep's is Walker2d-v5"),
                           ({"total_timesteps": 1000}, "steps 510, this sweep's is 1000")):
        with pytest.raises(QpolicyError, match=message):
            run_selection({**TINY, **other}, seeds=[3], out_dir=tmp_path, n_jobs=1, progress=False)
    assert (tmp_path / "results.csv").read_text() == row and not (tmp_path / "runs").exists()

"""Training: resume after an interrupt equals the uninterrupted run; bad arguments fail before training."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from qpolicy_train.args import Args, TrainError
from qpolicy_train.checkpoint import load_checkpoint
from qpolicy_train.training import train

ROOT = Path(__file__).resolve().parent.parent


def args_for(out_dir) -> Args:
    return Args.from_dict(dict(env_id="Hopper-v5", seed=7, total_timesteps=1400, learning_starts=100, batch_size=64,
                input_bits=6, core_bits=2, output_bits=8, width=16, critic_width=64, eval_every=700,
                eval_episodes=2, checkpoint_every=150, out_dir=str(out_dir), progress=False, export_bundle=False))


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    reference = train(args_for(tmp_path / "straight"))

    # The same run in another process, killed (SIGKILL) right after its first checkpoint lands...
    run_dir = tmp_path / "interrupted"
    code = ("import sys; from qpolicy_train.args import Args; from qpolicy_train.training import train; "
            f"train(Args.from_dict({args_for(run_dir).to_dict()!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = run_dir / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    interrupted_at = load_checkpoint(ckpt)["global_step"]
    assert interrupted_at < 1400

    # ...and resumed here: the same evaluations and the same final actor, bit for bit.
    resumed = train(args_for(run_dir))
    assert [h["eval_mean"] for h in resumed["history"]] == [h["eval_mean"] for h in reference["history"]]
    a = load_checkpoint(tmp_path / "straight" / "actor.pt")["actor"]
    b = load_checkpoint(run_dir / "actor.pt")["actor"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("change, message", [
    ({"env_id": "Pong-v5"}, "Gymnasium has no environment 'Pong-v5'"),
    ({"env_id": "Hopper-v9"}, "Gymnasium has no environment 'Hopper-v9'"),
    ({"env_id": "CartPole-v1"}, "the action space is Discrete"),
    ({"env_id": "pkg.mod:Env-v0"}, "not a Gymnasium id"),
    ({"safe_action": (0.0, 0.0)}, "safe_action=.*3 values inside the action box"),
    ({"core_bits": 0}, "core_bits=0"),
    ({"output_bits": 17}, "output_bits=17"),
    ({"width": -3}, "width=-3"),
    ({"total_timesteps": 0}, "total_timesteps=0"),
])
def test_bad_arguments_fail_before_anything_is_written(tmp_path, change, message):
    with pytest.raises(Exception, match=message):
        train(Args.from_dict({**args_for(tmp_path / "run").to_dict(), **change}))
    assert not (tmp_path / "run").exists()


def test_checkpoint_of_another_run_is_refused(tmp_path):
    args = args_for(tmp_path / "run")
    args.total_timesteps = 300
    train(args)
    other = args_for(tmp_path / "run")
    other.quant = replace(other.quant, core_bits=3)
    with pytest.raises(TrainError, match="belongs to a run with other arguments"):
        train(other)


def test_replay_buffer_survives_a_longer_or_shorter_budget():
    """The buffer's capacity follows total_timesteps: resuming a run whose buffer had filled with a
    larger budget must not leave empty rows in the sampled range (it once sampled zeros there)."""
    import numpy as np

    from qpolicy_train.replay import ReplayBuffer

    def filled(capacity, n):
        rb = ReplayBuffer(capacity, 2, 1)
        for t in range(n):
            rb.add(np.full(2, t), np.full(2, t + 1), np.full(1, t), float(t), False)
        return rb

    state = filled(10, 13).state()            # wrapped: holds transitions 3..12, next write at 3
    same = ReplayBuffer(10, 2, 1)
    same.load(state)                          # same capacity: restored exactly
    assert (same.pos, same.full) == (3, True) and np.array_equal(same.rew, filled(10, 13).rew)
    longer = ReplayBuffer(20, 2, 1)
    longer.load(state)                        # as an uninterrupted 20-capacity run would hold them
    assert (len(longer), longer.pos, longer.full) == (10, 10, False)
    assert longer.rew[:10].tolist() == list(range(3, 13))
    assert np.array_equal(longer.obs[:10, 0], np.arange(3, 13)) and longer.act[:10, 0].tolist() == list(range(3, 13))
    shorter = ReplayBuffer(4, 2, 1)
    shorter.load(state)                       # only the newest fit
    assert (len(shorter), shorter.pos, shorter.full) == (4, 0, True) and shorter.rew.tolist() == [9, 10, 11, 12]
    exact = ReplayBuffer(5, 2, 1)
    exact.load(filled(8, 5).state())          # not full before, exactly full now
    assert (exact.pos, exact.full) == (0, True) and exact.rew.tolist() == [0, 1, 2, 3, 4]
    rng = np.random.default_rng(0)
    assert (longer.sample(rng, 1000)[3] >= 3).all()   # nothing sampled outside the saved transitions


def test_a_run_shorter_than_learning_starts_is_refused_before_anything_is_written(tmp_path):
    args = args_for(tmp_path / "run")
    args.total_timesteps, args.learning_starts = 100, 100
    with pytest.raises(TrainError, match="would never be trained"):
        train(args)
    assert not (tmp_path / "run").exists()


def test_resuming_a_run_that_never_finished_an_episode(tmp_path):
    """A 5-step run's checkpoint has no before-reset generator state (no episode ended): resuming it to 10
    steps must work, not fail on a missing key."""
    args = args_for(tmp_path / "run")
    args.total_timesteps, args.learning_starts, args.eval_every = 5, 2, 5
    train(args)
    args.total_timesteps = 10
    summary = train(args)
    assert summary["total_timesteps"] == 10


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    run_dir = tmp_path / "run"
    args = args_for(run_dir)
    args.total_timesteps, args.learning_starts = 10**6, 10**5   # stays in the random phase: no warm-up
    code = ("import sys; from qpolicy_train.args import Args, TrainError\nfrom qpolicy_train.training import train\n"
            f"try:\n    train(Args.from_dict({args.to_dict()!r}))\nexcept TrainError as e:\n    print(e); sys.exit(3)\n")
    # SIG_DFL first: a shell that runs the suite in the background starts it with SIGINT ignored
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    progress = run_dir / "progress.csv"
    deadline = time.time() + 120
    while (not progress.exists() or progress.stat().st_size < 2000) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3
    assert "checkpoint saved to" in out and "run the same command again to resume" in out
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["global_step"] > 0


class _RunsCode:
    """Unpickling this would run a shell command: what a crafted checkpoint does with a plain torch.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "code_ran"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"args": args_for(run_dir).to_dict(), "payload": _RunsCode(marker)}, run_dir / "checkpoint.pt")
    with pytest.raises(TrainError, match="refused .*posix.system"):
        train(args_for(run_dir))                      # resume
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "export", str(run_dir / "checkpoint.pt"),
                          "--out", str(tmp_path / "b")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "refused" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "b").exists()


def test_the_observation_normalizer_can_stay_at_the_identity():
    import numpy as np

    from qpolicy_train.replay import ObservationNormalizer

    learning, fixed = ObservationNormalizer(3, 10.0), ObservationNormalizer(3, 10.0, adapt=False)
    for obs in ([1.0, -50.0, 3.0], [2.0, 40.0, 3.5]):
        learning.update(np.array(obs))
        fixed.update(np.array(obs))
    assert np.array_equal(fixed.state()["mean"], np.zeros(3)) and np.array_equal(fixed.state()["var"], np.ones(3))
    assert not np.array_equal(learning.state()["mean"], np.zeros(3))
    np.testing.assert_allclose(fixed(np.array([0.5, -50.0, 20.0])), [0.5, -10.0, 10.0], rtol=1e-6)   # only the clip


def test_raw_observation_dims_stay_out_of_the_statistics():
    """Listed dimensions keep mean 0 and variance 1 (a sparse input in [-1, 1] is not blown up to the clip);
    the others learn their statistics as before, bit for bit."""
    import numpy as np

    from qpolicy_train.replay import ObservationNormalizer

    rng = np.random.default_rng(0)
    dense = rng.normal(2.0, 0.5, (500, 2))
    sparse = np.where(rng.random((500, 1)) < 0.05, 1.0, 0.0)     # a contact force: zero 95 % of the time
    obs = np.hstack([dense, sparse])
    partial, full = ObservationNormalizer(3, 10.0, raw_dims=np.array([2])), ObservationNormalizer(3, 10.0)
    for o in obs:
        partial.update(o)
        full.update(o)
    spike = np.array([2.0, 2.0, 1.0])
    assert full(spike)[2] > 3.5                  # normalized, the rare unit spike is ~4 standard deviations
    assert partial(spike)[2] == 1.0              # raw, it stays the 1 the environment bounds it to
    assert partial.state()["mean"][2] == 0.0 and partial.state()["var"][2] == 1.0
    assert np.array_equal(partial.state()["mean"][:2], full.state()["mean"][:2])
    assert np.array_equal(partial.state()["var"][:2], full.state()["var"][:2])


@pytest.mark.parametrize("text, reason", [("a:", "not an index or a slice"), ("1:2:3", "not an index or a slice"),
                                          ("-3:", "not an index or a slice"), ("12:", "selects none of the 11")])
def test_malformed_raw_observation_dims_are_refused_in_one_line(tmp_path, text, reason):
    from qpolicy_train.args import dim_indices

    with pytest.raises(TrainError, match=reason):
        Args.from_dict({**args_for(tmp_path).to_dict(), "raw_observation_dims": text}).validate()
        dim_indices(text, 11, "raw_observation_dims")    # Hopper-v5: 11 observation dimensions


@pytest.mark.parametrize("text", ["27:105", "0,3:5", "1", "0:3,5,7:9"])
def test_dims_text_reads_back_as_the_same_indices(text):
    from qpolicy_train.args import dim_indices, dims_text

    assert dims_text(dim_indices(text, 200, "raw_observation_dims")) == text


def test_raw_dims_beyond_the_observation_are_refused_before_anything_is_written(tmp_path):
    out_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "train", "--raw-observation-dims", "12:",
                          "--out-dir", str(out_dir), "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "selects none of the 11 observation dimensions" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not out_dir.exists()


def test_a_run_keeps_its_raw_dims_raw_in_the_statistics_it_saves(tmp_path):
    args = replace(args_for(tmp_path / "run"), total_timesteps=300, eval_every=300, checkpoint_every=300,
                   raw_observation_dims="5:")
    train(args)
    norm = load_checkpoint(Path(args.out_dir) / "checkpoint.pt")["normalizer"]
    assert (norm["mean"][5:] == 0).all() and (norm["var"][5:] == 1).all()
    assert (norm["var"][:5] != 1).all()         # the first five learned theirs


def test_sparse_input_share_sees_a_mostly_zero_block_outweigh_the_state():
    import numpy as np

    from qpolicy_train.replay import SPARSE_SHARE_LIMIT, ObservationNormalizer, sparse_input_share

    rng = np.random.default_rng(1)
    state = rng.normal(0.0, 2.0, (2000, 4))
    contacts = np.where(rng.random((2000, 8)) < 0.1, rng.uniform(-1, 1, (2000, 8)), 0.0)   # Ant's, in miniature
    obs = np.hstack([state, contacts])
    full, raw = ObservationNormalizer(12, 10.0), ObservationNormalizer(12, 10.0, raw_dims=np.arange(4, 12))
    for o in obs:
        full.update(o)
        raw.update(o)
    share, sparse = sparse_input_share(obs, full)
    assert list(sparse) == list(range(4, 12)) and share == pytest.approx(8 / 12, abs=0.02)
    assert share > SPARSE_SHARE_LIMIT
    share, _ = sparse_input_share(obs, raw)
    assert share < 0.1             # raw, the block keeps its own small size (8 x 0.1 x 1/3 against 4)
    assert sparse_input_share(state, ObservationNormalizer(4, 10.0))[0] == 0.0


PRESETS_OF_PAPER_TASKS = sorted(p.stem for p in (ROOT / "config" / "train").glob("*.yaml")
                                if p.stem.split("_")[0] in ("hopper", "walker2d", "halfcheetah", "ant", "humanoid"))


@pytest.mark.parametrize("preset", [p for p in PRESETS_OF_PAPER_TASKS if p.endswith("_fp32")])
def test_no_fp32_preset_lets_mostly_zero_inputs_dominate_the_normalized_input(preset):
    """The check that would have caught the slow Ant FP32 baseline: over 3,000 random-action steps (the warm-up's
    kind of data), mostly-zero observation dimensions take at most half of the normalized input."""
    import numpy as np

    from qpolicy_train.args import dim_indices, make_env
    from qpolicy_train.presets import load_preset
    from qpolicy_train.replay import SPARSE_SHARE_LIMIT, ObservationNormalizer, sparse_input_share

    args = load_preset(preset)
    env = make_env(args.env_id, 0)
    obs, _ = env.reset(seed=0)
    rows = [obs]
    for _ in range(3000):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
        rows.append(obs)
    env.close()
    rows = np.array(rows)
    norm = ObservationNormalizer(rows.shape[1], args.obs_clip, args.normalize_observations,
                                 raw_dims=dim_indices(args.raw_observation_dims, rows.shape[1], "raw_observation_dims"))
    for o in rows:
        norm.update(o)
    share, sparse = sparse_input_share(rows, norm)
    assert share <= SPARSE_SHARE_LIMIT, f"{preset}: {len(sparse)} mostly-zero dimensions take {share:.0%}"


def test_a_run_warns_once_its_warm_up_shows_mostly_zero_inputs_dominating(tmp_path):
    """Ant-v5's 78 contact forces: the warning after the random warm-up names the slice to keep raw; with it,
    no warning."""
    def run(*extra):
        out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "train", "--env-id", "Ant-v5",
                              "--learning-starts", "1000", "--total-timesteps", "1001", "--eval-episodes", "1",
                              "--out-dir", str(tmp_path / f"run{len(extra)}"), "--no-export-bundle", "--no-progress",
                              *extra], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if line.startswith("warning:")]

    (warning,) = run()
    assert "78 observation dimensions are zero in most steps" in warning and "--raw-observation-dims 27:105" in warning
    assert run("--raw-observation-dims", "27:") == []


def test_frozen_normalization_stops_counting_at_its_step(tmp_path):
    """``--freeze-normalization-at N``: the statistics stop at step N (the count says so in the checkpoint)."""
    args = replace(args_for(tmp_path / "run"), total_timesteps=400, freeze_normalization_at=250, eval_every=400,
                   checkpoint_every=400)
    train(args)
    state = load_checkpoint(Path(args.out_dir) / "checkpoint.pt")
    count = state["normalizer"]["count"]
    assert 250 <= count <= 252      # the reset observation and the steps before 250, not the 150 after

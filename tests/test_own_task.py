"""Any Gymnasium environment with Box spaces, and a robot of the user's own: through training, export,
verify and the ROS 2 loop; what can't work is refused in one line before anything is written; the user's
module is imported on their word only."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.runtime import make_policy
from qpolicy_hw.verify import verify
from qpolicy_sim.evaluation import rollout
from qpolicy_train.args import Args
from qpolicy_train.export import export_checkpoint
from qpolicy_train.training import train

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "custom_robot"
ARM = "custom_robot/TwoLinkReach-v0"


def tiny(env_id: str, out_dir: Path, **extra) -> Args:
    return Args.from_dict(dict(env_id=env_id, seed=5, total_timesteps=700, learning_starts=100, batch_size=64,
                               input_bits=6, core_bits=3, output_bits=8, width=16, critic_width=64, eval_every=350,
                               eval_episodes=2, checkpoint_every=200, out_dir=str(out_dir), progress=False,
                               export_bundle=False, **extra))


@pytest.fixture
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")]))


def _loop_equals_offline(bundle: Path, env_id: str, tmp_path: Path, env_module: str = "") -> dict:
    pytest.importorskip("rclpy")
    from qpolicy_ros.demo import run_loop

    report = run_loop(bundle, backend="int", mode="lockstep", episodes=1, seed=3, out_dir=tmp_path / "loop",
                      timeout_s=300, domain_id=1 + (os.getpid() + int(time.time()) + 20) % 100, env_module=env_module)
    offline = rollout(make_policy(bundle, "int"), env_id, 1, seed=3, env_module=env_module or None)
    assert report["missing_commands"] == 0 and report["steps"] > 0
    assert report["returns"] == offline
    return report


def test_a_gymnasium_task_beyond_the_paper_trains_exports_verifies_and_serves(tmp_path):
    """InvertedPendulum-v5: no preset, the Args defaults; its rate (1 / env.dt = 25 Hz) goes into the bundle."""
    train(tiny("InvertedPendulum-v5", tmp_path / "run"))
    bundle = export_checkpoint(tmp_path / "run" / "actor.pt", tmp_path / "bundle")
    loaded = load_bundle(bundle)
    assert loaded.env_id == "InvertedPendulum-v5" and (loaded.obs_dim, loaded.act_dim) == (4, 1)
    assert loaded.control_rate_hz == pytest.approx(25.0)
    result = verify(bundle, ["golden_vs_int", "actions_vs_golden", "float_vs_int"])
    assert result["pass"], result
    report = _loop_equals_offline(bundle, "InvertedPendulum-v5", tmp_path)
    assert report["rate_hz"] == pytest.approx(25.0)
    # an environment without dt, and a bundle that records no rate: realtime needs --rate-hz, said in one line
    from qpolicy_ros.task import resolve_task

    if "qpolicy_test/NoDt-v0" not in gym.registry:
        gym.register(id="qpolicy_test/NoDt-v0", entry_point=NoDt, max_episode_steps=10)
    loaded.meta["task"].pop("control_rate_hz")
    with pytest.raises(QpolicyError, match="has no dt and .* records no control rate: give rate_hz"):
        resolve_task(loaded, "qpolicy_test/NoDt-v0")
    assert resolve_task(loaded, "qpolicy_test/NoDt-v0", rate_hz=30.0) == ("qpolicy_test/NoDt-v0", 30.0)


def test_the_example_robot_goes_the_whole_way(tmp_path, example_on_path):
    """The two-link arm of examples/custom_robot, named by --env-module only: train, export (the module named
    again), verify, and the closed loop in lockstep equal to the offline rollout; the bundle records the module
    for provenance and a safe action of the user's."""
    train(tiny(ARM, tmp_path / "run", env_module="custom_robot", safe_action=(0.0, 0.5)))
    with pytest.raises(QpolicyError, match="export it with --env-module custom_robot"):
        export_checkpoint(tmp_path / "run" / "actor.pt", tmp_path / "refused")   # the checkpoint imports nothing
    assert not (tmp_path / "refused").exists()
    bundle = export_checkpoint(tmp_path / "run" / "actor.pt", tmp_path / "bundle", env_module="custom_robot")
    loaded = load_bundle(bundle)
    assert loaded.meta["provenance"]["env_module"]["name"] == "custom_robot"
    assert loaded.control_rate_hz == pytest.approx(50.0)
    assert loaded.safe_action.tolist() == [0.0, 0.5]
    assert verify(bundle, ["golden_vs_int", "actions_vs_golden"])["pass"]
    # the bundle names the module, and a process that loads, serves and resolves it still imports nothing
    probe = ("import sys; from qpolicy_hw.runtime import make_policy; from qpolicy_ros.task import resolve_task; "
             f"p = make_policy({str(bundle)!r}, 'int'); p.act([0.0] * p.bundle.obs_dim)\n"
             "try:\n    resolve_task(p.bundle)\nexcept Exception as exc:\n    print(exc)\n"
             "print(sorted(m for m in sys.modules if m.startswith('custom_robot')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Gymnasium has no environment 'custom_robot/TwoLinkReach-v0'" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"
    flat = _loop_equals_offline(bundle, ARM, tmp_path, env_module="custom_robot")
    # and from /joint_states through the example's observation map, bit for bit
    from qpolicy_ros.demo import run_loop

    standard = run_loop(bundle, backend="int", mode="lockstep", episodes=1, seed=3, out_dir=tmp_path / "std",
                        timeout_s=300, domain_id=1 + (os.getpid() + int(time.time()) + 40) % 100,
                        env_module="custom_robot",
                        extra_server={"observation_interface": "standard",
                                      "observation_map": str(EXAMPLE / "custom_robot" / "observation_map.yaml")},
                        extra_bridge={"observation_interface": "standard"})
    assert standard["actions_sha256"] == flat["actions_sha256"] and standard["returns"] == flat["returns"]


class StillEnv(gym.Env):
    """An environment that stands still: subclasses give only its spaces."""
    observation_space: gym.spaces.Box

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape), 0.0, False, False, {}


class NoDt(StillEnv):
    """InvertedPendulum's spaces, without a dt."""
    observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float64)
    action_space = gym.spaces.Box(-3.0, 3.0, (1,), np.float32)


class UnboundedActions(StillEnv):
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float64)
    action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


@pytest.mark.parametrize("env_id, message", [
    ("CartPole-v1", "CartPole-v1: the action space is Discrete; qpolicy learns continuous controllers"),
    ("qpolicy_test/Unbounded-v0", "the action space is unbounded"),
    ("Reacher-v5", "safe_action=(0.0,): 2 values inside the action box"),
])
def test_what_cannot_work_is_refused_before_anything_is_written(tmp_path, env_id, message):
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=UnboundedActions, max_episode_steps=10)
    extra = {"safe_action": (0.0,)} if env_id == "Reacher-v5" else {}
    with pytest.raises(QpolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(tiny(env_id, tmp_path / "run", **extra))
    assert not (tmp_path / "run").exists()


def test_cli_refuses_a_discrete_task_in_one_line_and_writes_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "train", "--env-id", "CartPole-v1",
                          "--out-dir", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "the action space is Discrete" in out.stderr
    assert not (tmp_path / "run").exists()


def test_env_module_imports_what_the_user_named_and_nothing_else(tmp_path, example_on_path):
    code = ("import sys, json; from qpolicy_sim.envs import make_env; {call}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('custom_robot'))))")
    named = subprocess.run([sys.executable, "-c", code.format(call=f"make_env({ARM!r}, 'custom_robot').close()")],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert named.returncode == 0, named.stderr
    assert "custom_robot" in named.stdout and "custom_robot.arm" in named.stdout
    # without the user's word the id is unknown: nothing is imported to find it
    unnamed = subprocess.run([sys.executable, "-c", code.format(call=f"make_env({ARM!r})")],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "Gymnasium has no environment 'custom_robot/TwoLinkReach-v0'" in unnamed.stderr

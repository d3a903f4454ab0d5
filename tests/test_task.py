"""The task of a closed loop comes from the bundle: environment id, control rate (1 / env.dt), and a
refusal in one line when a bundle does not fit the environment. No DDS here."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qpolicy_hw.errors import QpolicyError
from qpolicy_ros.task import find_policy, resolve_task

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("bundle, env_id, rate", [
    ("policies/hopper/selected", "Hopper-v5", 125.0),
    ("policies/walker2d/selected", "Walker2d-v5", 125.0),
    ("policies/halfcheetah/selected", "HalfCheetah-v5", 20.0),
    ("policies/ant/selected", "Ant-v5", 20.0),
    ("policies/humanoid/selected", "Humanoid-v5", 1 / 0.015),
])
def test_the_bundle_sets_the_task_and_its_control_rate(bundle, env_id, rate):
    got_env, got_rate = resolve_task(ROOT / bundle)
    assert got_env == env_id and got_rate == pytest.approx(rate)
    assert resolve_task(ROOT / bundle, rate_hz=50.0)[1] == 50.0       # the user's override wins


def test_a_bundle_for_another_task_is_refused_in_one_line():
    with pytest.raises(QpolicyError, match="is a Walker2d-v5 policy .* Hopper-v5 has 11 and 3") as info:
        resolve_task(ROOT / "policies/walker2d/selected", env_id="Hopper-v5")
    assert "\n" not in str(info.value)


def test_the_default_policy_resolves_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_policy("policies/hopper/selected") == ROOT / "policies/hopper/selected"


def test_demo_refuses_a_mismatched_bundle_before_any_node_starts(tmp_path):
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "demo", "--policy",
                          str(ROOT / "policies/walker2d/selected"), "--env-id", "Hopper-v5", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and time.perf_counter() - t0 < 30
    assert "is a Walker2d-v5 policy" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "policy_server.log").exists()


def _launch_values(**changes):
    from qpolicy_ros.loop_arguments import ARGUMENTS
    from qpolicy_ros.param_file import node_parameters

    defaults = {**node_parameters("policy_server"), **node_parameters("mujoco_bridge")}
    raw = {k: str(d if d is not None else defaults[k]) for k, (d, _) in ARGUMENTS.items()}
    return {**raw, **changes}


@pytest.mark.parametrize("changes, message", [
    ({"episodes": "2.5"}, "episodes:='2.5': expected an integer"),
    ({"episodes": "0"}, "episodes:=0: must be >= 1"),
    ({"seed": "x"}, "seed:='x'"),
    ({"rate_hz": "fast"}, "rate_hz:='fast'"),
    ({"rate_hz": "-5"}, "rate_hz:=-5"),
    ({"mode": "turbo"}, "mode:='turbo'"),
    ({"backend": "gpu"}, "backend:='gpu'"),
    ({"record": "yes"}, "record:='yes'"),
    ({"policy": "/nonexistent"}, "no policy bundle at /nonexistent"),
    ({"policy": "walkr"}, "no policy bundle at 'walkr'; the shipped ones: ant (policies/ant/selected)"),
    ({"rate_hz": "0.001"}, "rate_hz:=0.001: must be 0 (the task's rate) or from 1 to 1000 Hz"),
    ({"rate_hz": "100000"}, "from 1 to 1000 Hz"),
    ({"backend": "pynq"}, "no FPGA overlay"),
    ({"backend": "remote", "remote_address": "127.0.0.1:9"}, "no qpolicy agent at 127.0.0.1:9"),
    ({"observation_interface": "robot"}, "observation_interface:='robot': choose flat or standard"),
    ({"observation_interface": "standard", "policy": "policies/ant/selected"}, "contact forces"),
    ({"env_id": "Walker2d-v5"}, "is a Hopper-v5 policy"),
    ({"expected_digest": "0" * 64}, "is not the expected 0000000000000000"),
    ({"expected_digest": "abc"}, "give the 64 hex digits"),
    ({"trusted_key": "/nonexistent/key.pem"}, "trusted key /nonexistent/key.pem"),
    ({"auth_key": "/nonexistent/board.key"}, "auth key /nonexistent/board.key"),
    ({"env_module": "no_such_pkg_qpolicy"}, "--env-module no_such_pkg_qpolicy: cannot import it"),
])
def test_launch_arguments_are_checked_before_any_node_starts(changes, message):
    """What the launch file's OpaqueFunction runs first: a bad argument is one line, and no node starts."""
    from qpolicy_hw.errors import QpolicyError
    from qpolicy_ros.loop_arguments import check_arguments

    with pytest.raises(QpolicyError, match=re.escape(message)):
        check_arguments(_launch_values(**changes))


def test_valid_launch_arguments_are_typed():
    from qpolicy_ros.loop_arguments import check_arguments

    a = check_arguments(_launch_values(episodes="2", record="True", rate_hz="0"))
    assert a["episodes"] == 2 and a["record"] is True and a["rate_hz"] == 0.0 and a["mode"] == "lockstep"
    assert Path(a["policy"]).is_absolute() and (Path(a["policy"]) / "bundle.json").exists()


def test_a_short_policy_name_is_the_shipped_selection():
    from qpolicy_ros.loop_arguments import check_arguments

    a = check_arguments(_launch_values(policy="walker2d", observation_interface="standard"))
    assert a["policy"] == str(ROOT / "policies/walker2d/selected") and a["observation_interface"] == "standard"


@pytest.mark.parametrize("code, shutting_down, expected", [
    (0, False, (True, "mujoco_bridge finished: the run is over")),
    (0, True, None),                                        # the normal end of the other nodes: nothing to say
    (2, False, (False, "mujoco_bridge failed with exit code 2: see its log above")),
    (-9, False, (False, "mujoco_bridge was killed by signal 9: see its log above")),
    (1, True, (False, "mujoco_bridge failed with exit code 1: see its log above")),
])
def test_a_node_that_fails_fails_the_launch_and_a_normal_end_is_a_success(code, shutting_down, expected):
    """What the launch's exit handler decides (a failure is raised inside launch: ERROR and exit code 1)."""
    from qpolicy_ros.loop_arguments import exit_verdict

    assert exit_verdict("mujoco_bridge", code, "the run is over", shutting_down) == expected


def test_a_bad_params_file_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    from qpolicy_ros.demo import ros_env

    (tmp_path / "bad.yaml").write_text("policy_server:\n  ros__parameters:\n    backend: [unclosed\n")
    out = subprocess.run([sys.executable, "-m", "qpolicy_ros.policy_server", "--ros-args", "--params-file",
                          str(tmp_path / "bad.yaml")], env=ros_env(61), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Couldn't parse params file" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def test_the_shipped_policies_are_installed_with_the_package():
    """setup.py's data_files put every file of every shipped policy under share/qpolicy/policies/."""
    code = ("import json, runpy, setuptools; setuptools.setup = lambda **kw: print(json.dumps(kw['data_files'])); "
            "runpy.run_path('setup.py')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    installed = {f for _, files in json.loads(out.stdout) for f in files}
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "policies").rglob("*") if p.is_file()}
    assert shipped and shipped <= installed
    assert {"policies/hopper/selected/bundle.json", "policies/walker2d/selected/arrays.npz"} <= installed
    for dest, files in json.loads(out.stdout):
        for f in files:
            if f.startswith("policies/"):
                assert dest == f"share/qpolicy/{Path(f).parent}"    # the same layout under share/


def test_launch_hands_parameters_as_ros_args_that_rcl_reads_back_unchanged(tmp_path):
    """The launch file passes every parameter as ``-p name:=value`` (no temporary parameter file): values read
    back as YAML are the same, and a node started that way uses them."""
    import yaml

    from qpolicy_ros.demo import ros_env
    from qpolicy_ros.param_file import ros_arguments

    values = {"a": "", "b": "x,y", "c": "1.0", "d": True, "e": 0.5, "f": 3, "g": "/p with space/x", "h": "true"}
    args = ros_arguments(values)
    assert args[0::2] == ["-p"] * len(values)
    assert {k: yaml.safe_load(v) for k, v in (arg.split(":=", 1) for arg in args[1::2])} == values
    with pytest.raises(ValueError, match="only scalars"):
        ros_arguments({"x": [1, 2]})
    missing = str(tmp_path / "no such bundle")
    out = subprocess.run([sys.executable, "-m", "qpolicy_ros.policy_server", "--ros-args",
                          *ros_arguments({"policy": missing, "backend": "int"})],
                         env=ros_env(62), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and f"no policy bundle at {missing}" in out.stdout

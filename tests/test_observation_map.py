"""The standard observation interface: the shipped maps rebuild each task's observation from joint states
bit for bit, bad messages get the safe action with a counted reason, and the standard loop over DDS equals
the flat loop and the offline rollout."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from qpolicy_hw.errors import ObservationError, QpolicyError
from qpolicy_hw.runtime import make_policy
from qpolicy_ros.loop_core import Counters, serve
from qpolicy_ros.observation_map import MAPS_DIR, generate, load, map_for, parse

TASKS = {"Hopper-v5": "policies/hopper/selected", "Walker2d-v5": "policies/walker2d/selected",
         "HalfCheetah-v5": "policies/halfcheetah/selected"}


@pytest.mark.parametrize("env_id", sorted(TASKS))
def test_the_shipped_map_rebuilds_the_observation_from_joint_states(env_id):
    import gymnasium as gym

    m = map_for(env_id)
    assert load(MAPS_DIR / f"{env_id}.yaml") == generate(env_id) == m     # the shipped file is the generated one
    env = gym.make(env_id)
    model = env.unwrapped.model
    names = [model.joint(j).name for j in range(model.njnt)]
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=3)
    checked = 0
    for _ in range(300):
        data = env.unwrapped.data
        order = rng.permutation(len(names))      # a robot may list its joints in any order
        got = m.build([names[i] for i in order], data.qpos[order], data.qvel[order])
        assert np.array_equal(got, obs)          # bit for bit, velocity clipping included
        checked += 1
        obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape) * 3)
        if terminated or truncated:
            obs, _ = env.reset(seed=int(rng.integers(1000)))
    env.close()
    assert checked == 300


def test_tasks_that_need_simulator_only_quantities_stay_flat():
    for env_id, what in (("Ant-v5", "contact forces"), ("Humanoid-v5", "com inertia")):
        with pytest.raises(QpolicyError, match=what):
            map_for(env_id)
    with pytest.raises(QpolicyError, match="no observation map for my_robot/Arm-v0"):
        map_for("my_robot/Arm-v0")


@pytest.mark.parametrize("data, message", [
    ({"env_id": "Hopper-v5"}, "exactly the keys"),
    ({"env_id": "Hopper-v5", "entries": []}, "non-empty"),
    ({"env_id": "Hopper-v5", "entries": [{"joint": "a", "field": "torque"}]}, "field one of"),
    ({"env_id": "Hopper-v5", "entries": [{"joint": "a", "field": "position", "clip": -1}]}, "positive"),
    ({"env_id": "Hopper-v5", "entries": [{"joint": "a", "field": "position", "eval": "x"}]}, "nothing else"),
])
def test_malformed_maps_are_refused_in_one_line(data, message):
    with pytest.raises(QpolicyError, match=message):
        parse(data, "map.yaml")


def test_a_map_file_that_is_not_yaml_or_missing_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("entries: [unclosed\n")
    with pytest.raises(QpolicyError, match="not YAML"):
        load(tmp_path / "bad.yaml")
    with pytest.raises(QpolicyError, match="observation map"):
        load(tmp_path / "missing.yaml")
    (tmp_path / "walker.yaml").write_text((MAPS_DIR / "Walker2d-v5.yaml").read_text())
    with pytest.raises(QpolicyError, match="is for Walker2d-v5, the bundle for Hopper-v5"):
        map_for("Hopper-v5", str(tmp_path / "walker.yaml"))


def test_bad_joint_states_get_the_safe_action_and_a_counted_reason():
    policy = make_policy(TASKS["Hopper-v5"], "int")
    m = map_for("Hopper-v5")
    names = [e.joint for e in m.entries if e.field == "velocity"]   # every joint once
    ok = m.build(names, np.zeros(6), np.zeros(6))
    cases = {"missing joint": (names[:-1], np.zeros(5), np.zeros(5)),
             "lengths": (names, np.zeros(6), np.zeros(4)),
             "nan": (names, np.r_[np.zeros(5), np.nan], np.zeros(6))}
    rejected = Counters()
    for what, (n, pos, vel) in cases.items():
        with pytest.raises(ObservationError):
            m.build(n, pos, vel)
        action, reason = serve(policy, lambda n=n, pos=pos, vel=vel: m.build(n, pos, vel), None, 0.5, rejected)
        assert reason is not None, what
        assert np.array_equal(action, policy.bundle.safe_action), what
    assert rejected.counts == {"malformed": 1, "wrong_length": 1, "non_finite": 1}
    action, reason = serve(policy, ok, None, 0.5, rejected)
    assert reason is None and np.array_equal(action, policy.act(ok))


@pytest.mark.parametrize("env_id", sorted(TASKS))
def test_standard_lockstep_equals_flat_and_offline(env_id, tmp_path):
    pytest.importorskip("rclpy")
    from qpolicy_ros.demo import run_loop
    from qpolicy_sim.evaluation import rollout

    bundle = TASKS[env_id]
    domain = 1 + (os.getpid() + int(time.time())) % 100
    reports = {}
    for interface in ("flat", "standard"):
        reports[interface] = run_loop(bundle, backend="int", mode="lockstep", episodes=1, seed=5,
                                      out_dir=tmp_path / interface, timeout_s=300, domain_id=domain,
                                      extra_server={"observation_interface": interface},
                                      extra_bridge={"observation_interface": interface})
    offline = rollout(make_policy(bundle, "int"), env_id, 1, seed=5)
    std, flat = reports["standard"], reports["flat"]
    assert std["missing_commands"] == 0 and std["steps"] > 0
    assert std["actions_sha256"] == flat["actions_sha256"]          # every action, bit for bit
    assert std["returns"] == flat["returns"] == offline


@pytest.mark.parametrize("env_id, body", [("Ant-v5", "torso"), ("Hopper-v5", "torso")])
def test_the_odometry_of_the_base_matches_mujocos_own_body_velocity(env_id, body):
    """/odom's twist is in the base frame (REP 105): for a free joint it equals MuJoCo's local velocity of the
    body it moves; for a planar root the orientation is a pitch about y."""
    import gymnasium as gym
    import mujoco

    from qpolicy_ros.observation_map import FloatingBase

    env = gym.make(env_id)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(20):
        env.step(rng.uniform(-1, 1, env.action_space.shape))
    m, d = env.unwrapped.model, env.unwrapped.data
    mujoco.mj_forward(m, d)                  # body velocities of the state after the last step
    pos, quat, lin, ang = FloatingBase(m)(d.qpos, d.qvel)
    assert abs(np.linalg.norm(quat) - 1.0) < 1e-12
    if env_id == "Ant-v5":
        vel = np.zeros(6)
        mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_BODY, m.body(body).id, vel, 1)   # local frame
        np.testing.assert_allclose(np.r_[ang, lin], vel, atol=1e-9)
        np.testing.assert_allclose(pos, d.qpos[:3])
    else:
        pitch = d.qpos[2]
        np.testing.assert_allclose(quat, [0.0, np.sin(pitch / 2), 0.0, np.cos(pitch / 2)])
        assert ang[1] == d.qvel[2] and pos[0] == d.qpos[0] and pos[2] == d.qpos[1]
    env.close()


def _reading(base_state, stamp_s: float = 1.0):
    from qpolicy_ros.observation_map import BaseReading

    pos, quat, lin, ang = (tuple(float(v) for v in part) for part in base_state)
    return BaseReading(pos, quat, lin, ang, stamp_s)


HOPPER_FROM_ODOM = {"env_id": "Hopper-v5", "entries": [
    {"base": "position_z"}, {"base": "pitch"},
    *({"joint": j, "field": "position"} for j in ("thigh_joint", "leg_joint", "foot_joint")),
    {"base": "linear_world_x", "clip": 10.0}, {"base": "linear_world_z", "clip": 10.0},
    {"base": "angular_y", "clip": 10.0},
    *({"joint": j, "field": "velocity", "clip": 10.0} for j in ("thigh_joint", "leg_joint", "foot_joint"))]}


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Ant-v5"])
def test_a_map_that_reads_the_base_from_odometry_rebuilds_the_observation(env_id):
    """A robot that has no root joints publishes its base on /odom: the base entries recover the task's own
    observation (height, orientation, world-frame linear and body-frame angular velocity) to round-off."""
    import gymnasium as gym

    from qpolicy_ros.observation_map import FloatingBase

    env = gym.make(env_id)
    model = env.unwrapped.model
    joints = [model.joint(j).name for j in range(model.njnt)]
    if env_id == "Hopper-v5":
        m, width = parse(HOPPER_FROM_ODOM, "hopper-odom.yaml"), 11
    else:   # the free joint is the first; its 7 positions and 6 velocities come from /odom
        hinge = joints[1:]
        m = parse({"env_id": env_id, "entries": [
            {"base": "position_z"}, *({"base": f"orientation_{a}"} for a in "wxyz"),
            *({"joint": j, "field": "position"} for j in hinge),
            *({"base": f"linear_world_{a}"} for a in "xyz"), *({"base": f"angular_{a}"} for a in "xyz"),
            *({"joint": j, "field": "velocity"} for j in hinge)]}, "ant-odom.yaml")
        width = 27
    assert m.sources == {"joint", "base"}
    base = FloatingBase(model)
    rng = np.random.default_rng(2)
    obs, _ = env.reset(seed=4)
    worst = 0.0
    for _ in range(200):
        d = env.unwrapped.data
        # a robot's joint_states lists its actuated joints only: each joint's first qpos/qvel entry
        pos = [d.qpos[model.jnt_qposadr[j]] for j in range(model.njnt)]
        vel = [d.qvel[model.jnt_dofadr[j]] for j in range(model.njnt)]
        got = m.build(joints, pos, vel, base=_reading(base(d.qpos, d.qvel)))
        worst = max(worst, float(np.max(np.abs(got - obs[:width]))))
        obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        if terminated or truncated:
            obs, _ = env.reset(seed=int(rng.integers(1000)))
    env.close()
    assert worst < 1e-9, worst      # the quaternion and frame rotations round; values are otherwise the task's


def test_odometry_and_imu_out_of_sync_or_missing_get_the_safe_action_and_a_counted_reason():
    from qpolicy_ros.observation_map import ImuReading, StandardInputs

    policy = make_policy(TASKS["Hopper-v5"], "int")
    entries = list(HOPPER_FROM_ODOM["entries"])
    entries[2] = {"imu": "angular_velocity_y"}         # an IMU-read value in the place of one joint position
    m = parse({"env_id": "Hopper-v5", "entries": entries}, "hopper-imu.yaml")
    assert m.sources == {"joint", "base", "imu"}
    inputs = StandardInputs(m, tolerance_s=0.004)
    names = ["thigh_joint", "leg_joint", "foot_joint"]
    zeros = np.zeros(3)
    rejected = Counters()

    def answer(stamp_s):
        return serve(policy, lambda: inputs.observation(names, zeros, zeros, stamp_s), None, 0.5, rejected)

    assert inputs.waiting_for(10.0)                  # the server holds a joint state whose readings may come
    action, reason = answer(10.0)
    assert "no odom message yet" in reason and np.array_equal(action, policy.bundle.safe_action)
    inputs.update("base", _reading(((0, 0, 1.25), (0, 0, 0, 1), (0, 0, 0), (0, 0, 0)), stamp_s=10.0))
    assert "no imu message yet" in answer(10.0)[1]
    inputs.update("imu", ImuReading((0, 0, 0, 1), (0, 0.5, 0), (0, 0, 9.81), stamp_s=10.0 - 0.010))
    assert inputs.waiting_for(10.0) and not inputs.waiting_for(10.0 - 0.008)   # older: its successor may come
    action, reason = answer(10.0)
    assert reason == "out of sync: imu is 10.0 ms from joint_states (tolerance 4.0 ms)"
    assert np.array_equal(action, policy.bundle.safe_action)
    inputs.update("imu", ImuReading((0, 0, 0, 1), (0, 0.5, 0), (0, 0, 9.81), stamp_s=10.0 - 0.003))
    assert not inputs.waiting_for(10.0)
    action, reason = answer(10.0)
    assert reason is None
    expected = np.array([1.25, 0.0, 0.5, 0, 0, 0, 0, 0, 0, 0, 0])
    assert np.array_equal(inputs.observation(names, zeros, zeros, 10.0), expected)
    assert np.array_equal(action, policy.act(expected))
    assert "must both be stamped" in answer(0.0)[1]                 # an unstamped joint state can't be matched
    assert rejected.counts == {"missing_message": 2, "out_of_sync": 2}
    with pytest.raises(QpolicyError, match="sync_tolerance_s"):
        StandardInputs(m, tolerance_s=float("nan"))


@pytest.mark.parametrize("entry, message", [
    ({"base": "height"}, "base one of position_x"),
    ({"imu": "temperature"}, "imu one of orientation_w"),
    ({"base": "position_z", "joint": "rootz", "field": "position"}, "exactly one of joint, base or imu"),
    ({"base": "position_z", "field": "position"}, "nothing else"),
])
def test_malformed_base_and_imu_entries_are_refused_in_one_line(entry, message):
    with pytest.raises(QpolicyError, match=message):
        parse({"env_id": "Hopper-v5", "entries": [entry]}, "map.yaml")
    round_trip = parse(HOPPER_FROM_ODOM, "m.yaml")
    import yaml

    assert parse(yaml.safe_load(round_trip.to_yaml()), "again.yaml") == round_trip


def test_the_server_reads_the_base_from_odometry_over_dds(tmp_path):
    """The bridge's /odom and /joint_states carry one stamp; a map that takes Hopper's base from /odom serves
    every step in lockstep with no out-of-sync refusal. (Its return is not the flat path's: the pitch and
    world-frame velocities come back from a quaternion and a rotation, equal to round-off, and a value on a
    quantization step's edge can round the other way; the joint-only maps above are the bit-exact ones.)"""
    pytest.importorskip("rclpy")
    import yaml

    from qpolicy_ros.demo import run_loop

    (tmp_path / "hopper-odom.yaml").write_text(yaml.safe_dump(HOPPER_FROM_ODOM))
    bundle = TASKS["Hopper-v5"]
    report = run_loop(bundle, backend="int", mode="lockstep", episodes=1, seed=5, out_dir=tmp_path / "run",
                      timeout_s=300, domain_id=1 + (os.getpid() + int(time.time()) + 50) % 100,
                      extra_server={"observation_interface": "standard",
                                    "observation_map": str(tmp_path / "hopper-odom.yaml")},
                      extra_bridge={"observation_interface": "standard"})
    assert report["missing_commands"] == 0 and report["steps"] > 0
    assert report["server_diagnostics"]["rejected_total"] == "0"
    assert report["server_diagnostics"]["served"] == str(report["steps"])


def test_a_reading_that_never_comes_gets_the_safe_action_not_a_stall(tmp_path):
    """A map that reads /imu, and nothing publishes it: every joint state waits at most the sync tolerance,
    then gets the safe action, counted as missing_message; the lockstep loop runs on instead of stalling."""
    pytest.importorskip("rclpy")
    import yaml

    from qpolicy_ros.demo import run_loop

    entries = list(HOPPER_FROM_ODOM["entries"])
    entries[2] = {"imu": "angular_velocity_y"}
    (tmp_path / "hopper-imu.yaml").write_text(yaml.safe_dump({"env_id": "Hopper-v5", "entries": entries}))
    report = run_loop(TASKS["Hopper-v5"], backend="int", mode="lockstep", episodes=1, seed=5,
                      out_dir=tmp_path / "run", timeout_s=300,
                      domain_id=1 + (os.getpid() + int(time.time()) + 70) % 100,
                      extra_server={"observation_interface": "standard",
                                    "observation_map": str(tmp_path / "hopper-imu.yaml")},
                      extra_bridge={"observation_interface": "standard"})
    diagnostics = report["server_diagnostics"]
    assert report["steps"] > 0 and report["missing_commands"] == 0
    assert diagnostics["rejected_missing_message"] == diagnostics["served"] == str(report["steps"])

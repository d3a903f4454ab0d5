"""The closed loop over real DDS (rclpy, Fast DDS), every process on localhost with a private domain."""
from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.runtime import make_policy
from qpolicy_ros.demo import ROOT, node_command, ros_env, run_loop
from qpolicy_sim.evaluation import rollout

pytest.importorskip("rclpy")


def _stop(*procs) -> None:
    """Ctrl-C every process still running and wait for it (the nodes shut down cleanly on SIGINT)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            p.wait(timeout=20)


def _domain() -> int:
    return 1 + (os.getpid() + int(time.time())) % 100


@pytest.mark.parametrize("backend", ["int", "rtl"])
def test_lockstep_over_dds_equals_the_offline_rollout(bundle_factory, tmp_path, monkeypatch, backend):
    """Served by the int runtime, or by the Verilated RTL core: the same actions as the offline rollout."""
    if backend == "rtl" and shutil.which("verilator") is None:
        pytest.skip("verilator is not installed")
    monkeypatch.setenv("QPOLICY_CACHE", str(tmp_path / "cache"))  # the server builds its core here
    bundle = bundle_factory()
    report = run_loop(bundle, backend=backend, mode="lockstep", episodes=3, seed=11, out_dir=tmp_path,
                      timeout_s=300, domain_id=_domain())
    offline_actions = []
    returns = rollout(make_policy(bundle, "int"), "Hopper-v5", 3, seed=11,
                      on_step=lambda obs, x, a: offline_actions.append(a.tolist()))
    assert report["missing_commands"] == 0 and report["backend"] == backend
    assert report["actions"] == offline_actions          # every action, bit for bit
    assert report["returns"] == returns                  # and every return
    # the report's server figures cover the whole run, however short (not a diagnostics message from its start)
    assert int(report["server_diagnostics"]["served"]) == report["steps"]


def _run_fuzzer(domain: int, n: int, out: Path) -> dict:
    """A separate process publishes fuzzed observations one at a time and counts the answers."""
    code = f"""
import json, math, time, numpy as np, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from diagnostic_msgs.msg import DiagnosticArray
rclpy.init()
node = rclpy.create_node('fuzzer')
qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
pub = node.create_publisher(JointState, '/qpolicy/observation', qos)
answers, diags = [], []
node.create_subscription(Float64MultiArray, '/qpolicy/command', lambda m: answers.append(list(m.data)), qos)
node.create_subscription(DiagnosticArray, '/diagnostics', lambda m: diags.append(m), 10)
deadline = time.time() + 20
while (pub.get_subscription_count() == 0 or node.count_publishers('/qpolicy/command') == 0) and time.time() < deadline:
    rclpy.spin_once(node, timeout_sec=0.05)
rng = np.random.default_rng(0)
kinds = ['nan', 'inf', 'huge', 'short', 'long', 'empty', 'ok']
sent = {{k: 0 for k in kinds}}
lost = 0
for i in range({n}):
    kind = kinds[i % len(kinds)]
    x = rng.normal(size=11)
    if kind == 'nan': x[rng.integers(11)] = math.nan
    if kind == 'inf': x[rng.integers(11)] = -math.inf if i % 2 else math.inf
    if kind == 'huge': x = x * 1e300
    if kind == 'short': x = x[:rng.integers(1, 11)]
    if kind == 'long': x = np.concatenate([x, x])
    if kind == 'empty': x = x[:0]
    msg = JointState(); msg.header.frame_id = f'step:0:{{i}}'
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.position = x.tolist()
    before = len(answers)
    pub.publish(msg); sent[kind] += 1
    t = time.time()
    while len(answers) == before and time.time() - t < 2.0:
        rclpy.spin_once(node, timeout_sec=0.01)
    lost += len(answers) == before
t = time.time()
while time.time() - t < 2.5:
    rclpy.spin_once(node, timeout_sec=0.05)
values = {{kv.key: kv.value for kv in diags[-1].status[0].values}} if diags else {{}}
zero = sum(1 for a in answers if a == [0.0, 0.0, 0.0])
assert all(len(a) == 3 and all(math.isfinite(v) and -1 <= v <= 1 for v in a) for a in answers)
json.dump({{'sent': sent, 'answers': len(answers), 'lost': lost, 'safe_answers': zero, 'diag': values}},
          open('{out}', 'w'))
node.destroy_node(); rclpy.shutdown()
"""
    env = ros_env(domain)
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, timeout=600, check=True)
    import json
    return json.loads(out.read_text())


def test_fuzzed_observations_get_the_safe_action_and_never_crash(bundle_factory, tmp_path):
    bundle = bundle_factory()
    domain = _domain()
    server = subprocess.Popen(node_command("qpolicy_ros.policy_server", "policy_server",
                                           {"policy": str(bundle), "backend": "int", "stale_after_s": 0.0},
                                           tmp_path),
                              env=ros_env(domain), cwd=ROOT, stdout=open(tmp_path / "server.log", "w"),
                              stderr=subprocess.STDOUT)
    try:
        n = 10_500
        result = _run_fuzzer(domain, n, tmp_path / "fuzz.json")
        assert server.poll() is None, "the policy server died"
    finally:
        _stop(server)
    assert server.returncode == 0
    # huge but finite values are valid input (normalization clips them); the rest must be refused
    bad = n - result["sent"]["ok"] - result["sent"]["huge"]
    assert result["lost"] == 0 and result["answers"] == n          # every message answered
    assert result["safe_answers"] >= bad                           # each rejected one with the safe action
    diag = result["diag"]
    assert int(diag["rejected_total"]) == bad
    assert int(diag["rejected_non_finite"]) == result["sent"]["nan"] + result["sent"]["inf"]
    assert int(diag["rejected_wrong_length"]) == sum(result["sent"][k] for k in ("short", "long", "empty"))
    assert "Traceback" not in (tmp_path / "server.log").read_text()


SERVER_WITH_FAULTY_FPGA = """
import json, os, sys
sys.path.insert(0, os.environ['QPOLICY_TEST_ROOT'])
import qpolicy_hw.runtime.pynq_backend as pynq_backend
from tests.fault_mmio import FaultyMMIO
faults = json.loads(os.environ['QPOLICY_TEST_FAULTS'])
pynq_backend.open_overlay_mmio = lambda bundle: FaultyMMIO(bundle, faults)   # the board's MMIO, with faults
from qpolicy_ros.policy_server import main
sys.exit(main(sys.argv))
"""


def test_fpga_faults_mid_run_are_answered_from_int_in_the_same_period(bundle_factory, tmp_path):
    """A hung core, an out-of-range code, an OSError and a core wrong on one code (only the shadow check
    sees that), each mid-run: every observation is answered, and every action equals the int rollout's."""
    bundle = bundle_factory()
    env = {**ros_env(_domain()), "QPOLICY_TEST_ROOT": str(ROOT),
           "QPOLICY_TEST_FAULTS": json.dumps({"5": "hang", "15": "garbage", "25": "oserror", "35": "wrong"})}
    server_params = {"policy": str(bundle), "backend": "pynq", "fpga_retry_after_s": 0.0, "fpga_max_retries": 3,
                     "fpga_timeout_s": 0.002, "mismatch_log": str(tmp_path / "mismatches.jsonl")}
    params_file = node_command("qpolicy_ros.policy_server", "policy_server", server_params, tmp_path)[-1]
    server = subprocess.Popen([sys.executable, "-c", SERVER_WITH_FAULTY_FPGA, "--ros-args", "--params-file",
                               params_file], env=env, cwd=ROOT, stdout=open(tmp_path / "server.log", "w"),
                              stderr=subprocess.STDOUT)
    report_path = tmp_path / "bridge.json"
    bridge = subprocess.Popen(node_command("qpolicy_ros.mujoco_bridge", "mujoco_bridge",
                                           {"policy": str(bundle), "mode": "lockstep", "episodes": 3, "seed": 11,
                                            "report_path": str(report_path)}, tmp_path),
                              env=env, cwd=ROOT, stdout=open(tmp_path / "bridge.log", "w"), stderr=subprocess.STDOUT)
    try:
        bridge.wait(timeout=300)
        time.sleep(1.5)                      # one more diagnostics period from the server
        assert server.poll() is None, "the policy server died"
    finally:
        _stop(server, bridge)
    report = json.loads(report_path.read_text())
    offline = []
    returns = rollout(make_policy(bundle, "int"), "Hopper-v5", 3, seed=11,
                      on_step=lambda obs, x, a: offline.append(a.tolist()))
    assert report["steps"] > 40 and report["missing_commands"] == 0
    assert report["actions"] == offline and report["returns"] == returns     # the faults changed no action
    assert report["server_max_level"] == 2                                   # diagnostics went to ERROR
    diag = report["server_diagnostics"]
    assert diag["faults"] == "4" and diag["fpga_retries"] == "3" and diag["degraded"] == "True"
    assert diag["shadow_mismatches"] == "1" and diag["backend"] == "int"
    assert float(diag["compute_latency_us_p99"]) < 1e6 / 125      # the hung core's answer fit in a period
    assert len((tmp_path / "mismatches.jsonl").read_text().splitlines()) == 1
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and log.count("served by int") == 4


FOREIGN_VALUE = 0.123456789
FOREIGN_PUBLISHER = f"""
import itertools, time, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
rclpy.init()
node = rclpy.create_node('foreign_commander')
pub = node.create_publisher(Float64MultiArray, '/qpolicy/command', QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
labels = itertools.cycle(['', 'teleop', 'step:0:3', 'step:99:0'])
while rclpy.ok():
    msg = Float64MultiArray(data=[{FOREIGN_VALUE}] * 3)
    msg.layout.dim = [MultiArrayDimension(label=next(labels), size=3, stride=3)]
    pub.publish(msg)
    time.sleep(0.003)
"""


def test_killed_server_means_safe_action_and_a_restart_resumes(bundle_factory, tmp_path):
    """Realtime at 125 Hz: the server dies and comes back, and another node publishes commands all along;
    the bridge holds, then applies the safe action, resumes, and never applies a command it did not ask for."""
    bundle = bundle_factory()
    domain = _domain()
    env = ros_env(domain)

    def start_server(tag):
        return subprocess.Popen(node_command("qpolicy_ros.policy_server", "policy_server",
                                             {"policy": str(bundle), "backend": "int"}, tmp_path),
                                env=env, cwd=ROOT, stdout=open(tmp_path / f"server{tag}.log", "w"),
                                stderr=subprocess.STDOUT)

    report_path = tmp_path / "bridge.json"
    server = start_server(1)
    bridge = subprocess.Popen(node_command("qpolicy_ros.mujoco_bridge", "mujoco_bridge",
                                           {"mode": "realtime", "episodes": 1000, "seed": 0,
                                            "report_path": str(report_path), "max_steps": 1500}, tmp_path),
                              env=env, cwd=ROOT, stdout=open(tmp_path / "bridge.log", "w"),
                              stderr=subprocess.STDOUT)
    foreign = None
    try:
        deadline = time.time() + 60     # discovery: wait for the bridge to find the server, no fixed sleep
        while "policy server found" not in (tmp_path / "bridge.log").read_text() and time.time() < deadline:
            time.sleep(0.05)
        foreign = subprocess.Popen([sys.executable, "-c", FOREIGN_PUBLISHER], env=env, cwd=ROOT,
                                   stdout=open(tmp_path / "foreign.log", "w"), stderr=subprocess.STDOUT)
        time.sleep(2.0)   # the loop runs for ~250 steps (scenario timing, not a discovery wait)...
        server.kill()     # ...the server dies mid-episode...
        server.wait()
        time.sleep(2.0)   # ...the bridge holds the safe action...
        server = start_server(2)  # ...and a new server takes over
        bridge.wait(timeout=120)
    finally:
        _stop(server, bridge, *([foreign] if foreign else []))
    import json
    report = json.loads(report_path.read_text())
    safe = report["safe_action_steps"]
    assert report["steps"] == 1500
    assert report["missing_commands"] >= 100            # about 2 s at 125 Hz without a server
    assert report["safe_action_count"] == len(safe) >= 100   # held for command_timeout_s, then the safe action
    assert report["safe_action_count"] + report["held_steps"] == report["missing_commands"]
    # ~300 foreign commands/s for most of the run ('step:0:3' is "late" once step 3 has passed): dropped...
    assert report["foreign_commands"] + report["late_commands"] > 1000
    assert all(FOREIGN_VALUE not in a for a in report["actions"])   # ...never applied
    assert max(safe) < report["steps"] - 100            # commands flowed again after the restart
    # and before the kill: realtime does not wait for the first answer, so a loaded machine may apply the
    # safe action for the first periods (right: there is nothing to hold yet); apart from that startup
    # prefix and a stalled period or two, the outage is the one long stretch of safe actions
    runs = _contiguous_runs(safe)
    startup = runs.pop(0) if runs and runs[0][0] == 0 else []
    assert len(startup) <= 125, f"no answer for the first {len(startup)} periods (over 1 s)"
    outage = max(runs, key=len)
    assert len(outage) >= 100 and outage[0] > len(startup), runs
    assert sum(len(r) for r in runs if r is not outage) <= 25, runs


def _contiguous_runs(steps: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for s in sorted(steps):
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs


def test_launch_file_names_real_executables_and_parameters():
    for name in ("hopper_fpga.launch.py", "policy_fpga.launch.py"):
        assert "generate_launch_description" in (ROOT / "launch" / name).read_text()
    tree = ast.parse((ROOT / "qpolicy_ros" / "loop_launch.py").read_text())
    imports = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               for alias in node.names if node.module in ("launch", "launch_ros.actions")}
    assert {"LaunchDescription", "Node"} <= imports
    executables = {kw.value.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                   for kw in node.keywords if kw.arg == "executable"}
    setup = (ROOT / "setup.py").read_text()
    assert executables == {"policy_server", "mujoco_bridge", "bag_recorder"}
    for exe in executables:
        assert f"{exe} = qpolicy_ros.{exe}:main" in setup
    from qpolicy_ros.loop_arguments import ARGUMENTS
    assert set(ARGUMENTS) >= {"backend", "policy", "env_id", "mode", "rate_hz", "episodes"}
    assert {"OpaqueFunction", "Shutdown", "OnProcessExit"} <= {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    from qpolicy_ros.param_file import node_parameters
    assert node_parameters("mujoco_bridge")["rate_hz"] == 0.0      # the task's rate, from the bundle
    assert node_parameters("policy_server")["command_topic"] == "/qpolicy/command"


SET_BACKEND = """
import json, sys, rclpy
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
rclpy.init()
node = rclpy.create_node('backend_switcher')
client = node.create_client(SetParameters, '/policy_server/set_parameters')
assert client.wait_for_service(timeout_sec=20)
results = []
for backend in sys.argv[1:]:
    req = SetParameters.Request(parameters=[Parameter(name='backend', value=ParameterValue(
        type=ParameterType.PARAMETER_STRING, string_value=backend))])
    future = client.call_async(req)
    rclpy.spin_until_future_complete(node, future, timeout_sec=60)
    r = future.result().results[0]
    results.append({'backend': backend, 'successful': r.successful, 'reason': r.reason})
print(json.dumps(results))
node.destroy_node(); rclpy.shutdown()
"""


def test_backend_switch_at_runtime_keeps_the_loop_running(bundle_factory, tmp_path):
    import json

    bundle = bundle_factory()
    env = ros_env(_domain())
    server = subprocess.Popen(node_command("qpolicy_ros.policy_server", "policy_server",
                                           {"policy": str(bundle), "backend": "int"}, tmp_path),
                              env=env, cwd=ROOT, stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT)
    report_path = tmp_path / "bridge.json"
    bridge = subprocess.Popen(node_command("qpolicy_ros.mujoco_bridge", "mujoco_bridge",
                                           {"mode": "lockstep", "episodes": 1000, "max_steps": 4000,
                                            "report_path": str(report_path)}, tmp_path),
                              env=env, cwd=ROOT, stdout=open(tmp_path / "bridge.log", "w"), stderr=subprocess.STDOUT)
    try:
        out = subprocess.run([sys.executable, "-c", SET_BACKEND, "pynq", "float"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        pynq, flt = json.loads(out.stdout.strip().splitlines()[-1])
        bridge.wait(timeout=300)
    finally:
        _stop(server, bridge)
    # no overlay here: refused with its reason while int keeps serving
    assert not pynq["successful"] and "no FPGA overlay" in pynq["reason"]
    assert flt["successful"]
    report = json.loads(report_path.read_text())
    assert report["steps"] == 4000 and report["missing_commands"] == 0   # no step went unanswered
    assert report["backend"] == "float"
    assert "backend switched to float" in (tmp_path / "server.log").read_text()


def test_recording_writes_a_readable_mcap_bag(bundle_factory, tmp_path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    report = run_loop(bundle_factory(), backend="int", mode="lockstep", episodes=1, seed=2, out_dir=tmp_path,
                      timeout_s=300, domain_id=_domain(), record=str(tmp_path / "bag"))
    typestore = get_typestore(Stores.ROS2_KILTED)
    with Reader(tmp_path / "bag") as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        commands = [typestore.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages()
                    if c.topic == "/qpolicy/command"]
        types = {c.topic: c.msgtype for c in reader.connections}
    assert types["/qpolicy/command"] == "std_msgs/msg/Float64MultiArray"  # typed: ros2 bag / Foxglove read it
    assert counts["/qpolicy/command"] >= report["steps"] and counts["/qpolicy/observation"] >= report["steps"]
    assert [list(c.data) for c in commands[:report["steps"]]] == report["actions"]


def test_command_line_parameters_win_over_the_params_file(tmp_path):
    """`ros2 run qpolicy policy_server --ros-args --params-file <yaml> -p backend:=int` serves with int."""
    from qpolicy_ros.param_file import installed_params_file

    log = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "qpolicy_ros.policy_server", "--ros-args", "--params-file",
                             str(installed_params_file()), "-p", "backend:=int"], env=ros_env(_domain()), cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while "serving" not in log.read_text() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
    finally:
        _stop(proc)
    text = log.read_text()
    assert "with backend int" in text and "no FPGA backend" not in text, text


def test_demo_ends_at_once_with_the_reason_when_the_server_cannot_start(tmp_path):
    """`qpolicy demo --backend pynq` off the board: the server's one-line reason, in seconds, not a timeout."""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "qpolicy_cli.main", "demo", "--backend", "pynq", "--episodes", "1",
                          "--out", "demo", "--domain-id", str(_domain())], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "policy_server exited (code 2)" in out.stderr and "no FPGA overlay" in out.stderr
    assert time.monotonic() - t0 < 30                    # was: a 60 s discovery timeout, then a TypeError
    assert (tmp_path / "demo" / "policy_server.log").exists()   # --out is relative to the user's directory


def test_demo_takes_the_users_domain_id(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    assert ros_env()["ROS_DOMAIN_ID"] == "42" and ros_env(7)["ROS_DOMAIN_ID"] == "7"
    monkeypatch.delenv("ROS_DOMAIN_ID")
    assert 1 <= int(ros_env()["ROS_DOMAIN_ID"]) <= 100
    with pytest.raises(QpolicyError, match="domain id 300"):
        ros_env(300)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "Humanoid-v5"])
def test_a_tiny_training_run_of_every_task_serves_over_dds_as_offline(tmp_path, env_id):
    """Train (a few hundred steps), export, and close the loop over DDS at the task's own rate and sizes:
    one lockstep episode whose every action equals the offline rollout of the exported bundle."""
    from qpolicy_train.args import Args
    from qpolicy_train.export import export_checkpoint
    from qpolicy_train.training import train

    run = tmp_path / "run"
    train(Args.from_dict(dict(env_id=env_id, seed=5, total_timesteps=400, learning_starts=50, batch_size=32,
                              input_bits=4, core_bits=2, output_bits=8, width=16, critic_width=32,
                              log_std_width=16, eval_every=10**9, eval_episodes=1, checkpoint_every=10**9,
                              out_dir=str(run), progress=False, export_bundle=False)))
    bundle = export_checkpoint(run / "actor.pt", tmp_path / "bundle")
    report = run_loop(bundle, backend="int", mode="lockstep", episodes=1, seed=3, out_dir=tmp_path / "loop",
                      timeout_s=300, domain_id=_domain())
    offline = []
    returns = rollout(make_policy(bundle, "int"), env_id, 1, seed=3,
                      on_step=lambda obs, x, a: offline.append(a.tolist()))
    from qpolicy_ros.task import resolve_task

    assert report["env_id"] == env_id and report["missing_commands"] == 0
    assert report["rate_hz"] == resolve_task(bundle)[1]          # 1 / env.dt of that task
    assert report["actions"] == offline and report["returns"] == returns


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")
def test_board_agent_over_loopback_serves_the_offline_rollout_and_a_killed_agent_falls_back(bundle_factory,
                                                                                           tmp_path):
    """`qpolicy agent --mmio sim` (the Verilated AXI slave) + the remote backend in lockstep: the offline
    returns exactly; then the agent is killed mid-run and every later observation is answered from int."""
    import threading

    bundle = bundle_factory()
    env = {**ros_env(_domain()), "QPOLICY_CACHE": str(tmp_path / "cache")}
    address = f"127.0.0.1:{_free_port()}"
    agent_log = tmp_path / "agent.log"
    agent = subprocess.Popen([sys.executable, "-m", "qpolicy_cli.main", "agent", str(bundle), "--listen", address,
                              "--mmio", "sim"], env=env, cwd=ROOT, stdout=open(agent_log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180                       # the first start Verilates the core
        while "serving bundle" not in agent_log.read_text() and time.time() < deadline and agent.poll() is None:
            time.sleep(0.2)
        assert "serving bundle" in agent_log.read_text(), agent_log.read_text()
        offline = []
        returns = rollout(make_policy(bundle, "int"), "Hopper-v5", 3, seed=11,
                          on_step=lambda obs, x, a: offline.append(a.tolist()))
        # lockstep: no deadline matters, so a loaded machine's slow simulator must not count as a fault
        report = run_loop(bundle, backend="remote", mode="lockstep", episodes=3, seed=11, out_dir=tmp_path / "a",
                          timeout_s=300, domain_id=int(env["ROS_DOMAIN_ID"]), remote=address,
                          extra_server={"remote_timeout_s": 2.0})
        assert report["backend"] == "remote" and report["missing_commands"] == 0
        assert report["server_diagnostics"]["faults"] == "0"
        assert report["actions"] == offline and report["returns"] == returns

        def kill_after_first_episode():
            log = tmp_path / "b" / "mujoco_bridge.log"
            end = time.time() + 120
            while time.time() < end and not (log.exists() and "episode 0:" in log.read_text()):
                time.sleep(0.01)
            agent.kill()
        killer = threading.Thread(target=kill_after_first_episode, daemon=True)
        killer.start()
        report = run_loop(bundle, backend="remote", mode="lockstep", episodes=3, seed=11, out_dir=tmp_path / "b",
                          timeout_s=300, domain_id=int(env["ROS_DOMAIN_ID"]), remote=address)
        killer.join(timeout=5)
    finally:
        _stop(agent)
    assert agent.returncode is not None
    assert report["missing_commands"] == 0 and report["actions"] == offline and report["returns"] == returns
    assert int(report["server_diagnostics"]["faults"]) >= 1


def test_demo_video_is_the_rendered_episode(bundle_factory, tmp_path):
    """`qpolicy demo --video` records the lockstep run; it is byte for byte `qpolicy render`'s GIF of that episode."""
    from tests.test_render import _egl_renders

    if not _egl_renders():
        pytest.skip("no off-screen OpenGL (apt-get install -y libegl1 libegl-mesa0 libgl1-mesa-dri)")
    from qpolicy_sim.render import render_episode

    bundle = bundle_factory()
    rendered = render_episode(bundle, tmp_path / "render.gif", seed=6, width=240, height=180, every=4)
    run_loop(bundle, backend="int", mode="lockstep", episodes=1, seed=6, out_dir=tmp_path / "loop", timeout_s=300,
             domain_id=_domain(), video=str(tmp_path / "loop.gif"))
    assert rendered["frames"] > 3
    assert (tmp_path / "loop.gif").read_bytes() == (tmp_path / "render.gif").read_bytes()

"""Realtime closed loop over ROS 2: late commands and obs->action latency by backend, next to the
rclpy ping-pong floor measured in the same run, and per backend where the time goes (the server's phases,
its total, the inbound transport, the round trip, the loop's jitter), and the first backend once more with the
standard observation interface (joint_states by joint name) beside its flat row.

The floor is the same bridge (realtime, at the task's control rate) answered by a trivial echo node that returns a
fixed action for every observation: the cost of two rclpy processes exchanging these messages,
with no policy at all. Every process runs with DDS on localhost and a private domain id.

    .venv/bin/python bench/ros_loop.py [--policy policies/hopper/selected] [--steps 10000] [--backends int float]
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qpolicy_ros.demo import DEFAULT_POLICY, ROOT, node_command, ros_env, run_loop  # noqa: E402
from qpolicy_ros.loop_core import format_split, latency_split  # noqa: E402

ECHO = """
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from qpolicy_ros.param_file import node_parameters
p = node_parameters('policy_server')
rclpy.init()
node = rclpy.create_node('echo_server')
qos = QoSProfile(depth=p['qos_depth'], reliability=ReliabilityPolicy.RELIABLE)
pub = node.create_publisher(Float64MultiArray, p['command_topic'], qos)
def echo(msg):
    out = Float64MultiArray()
    out.layout.dim = [MultiArrayDimension(label=msg.header.frame_id, size=3, stride=3)]
    out.data = [0.0, 0.0, 0.0]
    pub.publish(out)
node.create_subscription(JointState, p['observation_topic'], echo, qos)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
    pass
finally:
    node.destroy_node()
    if rclpy.ok():
        rclpy.shutdown()
"""


def floor(steps: int, out: Path, domain: int, policy: str, rate_hz: float) -> dict:
    env = ros_env(domain)
    echo = subprocess.Popen([sys.executable, "-c", ECHO], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    report_path = out / "floor.json"
    try:
        subprocess.run(node_command("qpolicy_ros.mujoco_bridge", "mujoco_bridge",
                                    {"policy": policy, "mode": "realtime", "episodes": 100000, "max_steps": steps,
                                     "report_path": str(report_path)}, out),
                       env=env, cwd=ROOT, timeout=steps / rate_hz * 3 + 120, stdout=subprocess.DEVNULL,
                       stderr=subprocess.STDOUT, check=True)
    finally:
        echo.send_signal(signal.SIGINT)
        echo.wait(timeout=20)
    return json.loads(report_path.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=str(DEFAULT_POLICY))
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--backends", nargs="+", default=["int", "float"])
    a = p.parse_args()
    from qpolicy_ros.task import resolve_task

    _, rate_hz = resolve_task(a.policy)   # the task's control rate, 1 / env.dt
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows["rclpy ping-pong floor"] = floor(a.steps, out, 77, a.policy, rate_hz)
        for backend in a.backends:
            rows[f"policy_server ({backend})"] = run_loop(
                a.policy, backend, "realtime", episodes=100000, seed=0, out_dir=out / backend, domain_id=78,
                timeout_s=a.steps / rate_hz * 3 + 120, extra_bridge={"max_steps": a.steps})
        # the standard interface (joint_states by joint name) with the first backend, beside its flat row
        rows[f"policy_server ({a.backends[0]}, standard)"] = run_loop(
            a.policy, a.backends[0], "realtime", episodes=100000, seed=0, out_dir=out / "standard", domain_id=79,
            timeout_s=a.steps / rate_hz * 3 + 120, extra_server={"observation_interface": "standard"},
            extra_bridge={"max_steps": a.steps, "observation_interface": "standard"})
    base = rows["rclpy ping-pong floor"]["latency_us"]["p50"]
    print(f"{f'loop (realtime, {rate_hz:g} Hz)':28s} {'steps':>6} {'late':>6} {'late %':>7} {'missing':>7} "
          f"{'p50 us':>8} {'p99 us':>8} {'p50/floor':>9}")
    summary = {}
    for name, r in rows.items():
        lat = r["latency_us"]
        late_pct = 100.0 * r["late_commands"] / max(r["steps"], 1)
        print(f"{name:28s} {r['steps']:>6} {r['late_commands']:>6} {late_pct:>6.2f}% {r['missing_commands']:>7} "
              f"{lat['p50']:>8.0f} {lat['p99']:>8.0f} {lat['p50'] / base:>9.2f}")
        summary[name] = {"steps": r["steps"], "late_commands": r["late_commands"], "late_pct": late_pct,
                         "missing_commands": r["missing_commands"], "latency_us": lat,
                         "p50_over_floor": lat["p50"] / base, "latency_split": latency_split(r)}
    flat_p50 = summary[f"policy_server ({a.backends[0]})"]["latency_us"]["p50"]
    std_p50 = summary[f"policy_server ({a.backends[0]}, standard)"]["latency_us"]["p50"]
    summary["standard_over_flat_p50"] = std_p50 / flat_p50
    print(f"standard / flat p50 ({a.backends[0]}): {std_p50 / flat_p50:.2f}")
    for name, r in summary.items():
        if not isinstance(r, dict):
            continue
        print(f"\n{name}, where the time goes:\n{format_split(r['latency_split'])}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

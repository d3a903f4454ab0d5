"""The policy server as a managed node: driven through the standard lifecycle services over real DDS, it
answers observations only while active, sends one safe command when deactivated and ends when shut down."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_ros.demo import ROOT, node_command, ros_env

pytest.importorskip("rclpy")

DRIVER = """
import json, sys, time, rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

n_obs = int(sys.argv[1])
rclpy.init()
node = rclpy.create_node('lifecycle_driver')
qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
commands = []
node.create_subscription(Float64MultiArray, '/qpolicy/command',
                         lambda m: commands.append([m.layout.dim[0].label, list(m.data)]), qos)
obs_pub = node.create_publisher(JointState, '/qpolicy/observation', qos)
get_state = node.create_client(GetState, '/policy_server/get_state')
change = node.create_client(ChangeState, '/policy_server/change_state')
assert get_state.wait_for_service(timeout_sec=30) and change.wait_for_service(timeout_sec=30)

def call(client, request):
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=60)
    return future.result()

def spin(seconds):
    end = time.time() + seconds
    while time.time() < end:
        rclpy.spin_once(node, timeout_sec=0.05)

while obs_pub.get_subscription_count() == 0:
    spin(0.1)

def probe(label):
    before = len(commands)
    msg = JointState()
    msg.header.frame_id = label
    msg.position = [0.0] * n_obs
    obs_pub.publish(msg)
    spin(1.0)
    return commands[before:]

log = []
def record(step):
    state = call(get_state, GetState.Request()).current_state.label
    log.append({'step': step, 'state': state, 'answers': probe('probe:' + step)})

record('start')
for name, tid in (('configure', Transition.TRANSITION_CONFIGURE), ('activate', Transition.TRANSITION_ACTIVATE),
                  ('deactivate', Transition.TRANSITION_DEACTIVATE), ('cleanup', Transition.TRANSITION_CLEANUP)):
    before = len(commands)
    ok = call(change, ChangeState.Request(transition=Transition(id=tid))).success
    spin(0.5)
    log.append({'transition': name, 'success': ok, 'sent': commands[before:]})
    record(name)
ok = call(change, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_UNCONFIGURED_SHUTDOWN))).success
log.append({'transition': 'shutdown', 'success': ok})
print(json.dumps(log))
node.destroy_node(); rclpy.shutdown()
"""


def test_lifecycle_transitions_decide_what_is_served(bundle_factory, tmp_path):
    bundle_path = bundle_factory()
    bundle = load_bundle(bundle_path)
    env = ros_env(1 + (os.getpid() + int(time.time())) % 100)
    server = subprocess.Popen(node_command("qpolicy_ros.policy_server", "policy_server",
                                           {"policy": str(bundle_path), "backend": "int", "autostart": False},
                                           tmp_path),
                              env=env, cwd=ROOT, stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT)
    try:
        out = subprocess.run([sys.executable, "-c", DRIVER, str(bundle.obs_dim)], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-2000:]
        code = server.wait(timeout=30)             # finalized: the process ends by itself
    finally:
        if server.poll() is None:
            server.kill()
    log = {e.get("step") or e["transition"] + "!": e for e in json.loads(out.stdout.strip().splitlines()[-1])}
    assert code == 0
    assert log["start"]["state"] == "unconfigured" and log["start"]["answers"] == []
    assert log["configure!"]["success"] and log["configure"]["state"] == "inactive"
    assert log["configure"]["answers"] == []                      # configured, not serving
    assert log["activate!"]["success"] and log["activate"]["state"] == "active"
    assert [label for label, _ in log["activate"]["answers"]] == ["probe:activate"]
    assert log["deactivate!"]["success"] and log["deactivate"]["state"] == "inactive"
    assert log["deactivate!"]["sent"] == [["deactivated", list(map(float, bundle.safe_action))]]
    assert log["deactivate"]["answers"] == []                     # the robot holds the safe action
    assert log["cleanup!"]["success"] and log["cleanup"]["state"] == "unconfigured"
    assert log["shutdown!"]["success"]
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_autostart_with_a_bundle_that_fails_exits_2_in_one_line(tmp_path):
    env = ros_env(1 + (os.getpid() + int(time.time()) + 7) % 100)
    out = subprocess.run(node_command("qpolicy_ros.policy_server", "policy_server",
                                      {"policy": str(tmp_path / "missing"), "backend": "int"}, tmp_path),
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "policy_server: error:" in out.stdout and "Traceback" not in out.stdout + out.stderr

"""A stalled policy server over real DDS: the bridge says so, in its log and in /diagnostics (the report)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from qpolicy_ros.demo import ROOT, node_command, ros_env

pytest.importorskip("rclpy")


def test_a_frozen_server_makes_the_bridge_warn_with_the_counts(tmp_path):
    env = ros_env(1 + (os.getpid() + int(time.time()) + 13) % 100)
    server = subprocess.Popen(node_command("qpolicy_ros.policy_server", "policy_server",
                                           {"policy": "policies/hopper/selected", "backend": "int"}, tmp_path),
                              env=env, cwd=ROOT, stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT)
    report_path = tmp_path / "bridge.json"
    bridge = subprocess.Popen(node_command("qpolicy_ros.mujoco_bridge", "mujoco_bridge",
                                           {"policy": "policies/hopper/selected", "mode": "realtime",
                                            "episodes": 1000, "max_steps": 1500, "report_path": str(report_path)},
                                           tmp_path),
                              env=env, cwd=ROOT, stdout=open(tmp_path / "bridge.log", "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60                       # wait until the loop runs, then freeze the server
        while "policy server found" not in (tmp_path / "bridge.log").read_text() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        server.send_signal(signal.SIGSTOP)
        time.sleep(3.0)                                   # 375 periods at 125 Hz without an answer
        server.send_signal(signal.SIGCONT)
        assert bridge.wait(timeout=120) == 0
    finally:
        for p in (server, bridge):
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGINT)
                p.wait(timeout=20)
    log = (tmp_path / "bridge.log").read_text()
    report = json.loads(report_path.read_text())
    assert "degraded over the last 250 steps" in log and "had no command in time" in log
    assert report["degraded_windows"] >= 1 and "had no command in time" in report["last_degradation"]
    assert report["missing_commands"] >= 250

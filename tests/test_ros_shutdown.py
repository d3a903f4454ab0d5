"""Ctrl-C in a terminal reaches every process of the group, often twice: a node says nothing and exits 0."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from qpolicy_ros.demo import ROOT, node_command, ros_env

pytest.importorskip("rclpy")


def test_a_double_ctrl_c_ends_the_server_quietly_with_code_0(bundle_factory, tmp_path):
    bundle = bundle_factory()
    log = tmp_path / "server.log"
    server = subprocess.Popen(node_command("qpolicy_ros.policy_server", "policy_server",
                                           {"policy": str(bundle), "backend": "int"}, tmp_path),
                              env=ros_env(1 + (os.getpid() + int(time.time())) % 100), cwd=ROOT,
                              stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while "serving" not in log.read_text() and time.time() < deadline and server.poll() is None:
            time.sleep(0.05)
        assert "serving" in log.read_text(), log.read_text()
        os.killpg(server.pid, signal.SIGINT)      # the terminal's Ctrl-C, to the whole group...
        time.sleep(0.02)
        os.killpg(server.pid, signal.SIGINT)      # ...and the second one launch or an impatient user sends
        code = server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert code == 0

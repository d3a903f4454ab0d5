"""Lockstep soak over ROS 2: resident memory of both nodes over a long run, next to an rclpy echo peer.

The bridge runs ``--steps`` lockstep steps (default 100,000) against the real ``policy_server`` (``int``
backend), then against the echo node of ``bench/ros_loop.py`` (a fixed action per observation: rclpy and
Fast DDS with no policy), measured in the same run. Each node's RSS is read from ``/proc`` every
half second; growth is the last sample against the sample taken once 10 % of the run's wall time has
passed (start-up allocations and DDS discovery settled). Target: under 5 % for both nodes.

    .venv/bin/python bench/ros_soak.py [--steps 100000] [--policy policies/hopper/selected] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ros_loop import ECHO  # noqa: E402
from qpolicy_ros.demo import DEFAULT_POLICY, ROOT, node_command, ros_env  # noqa: E402


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def soak(server_cmd: list[str], steps: int, policy: str, out: Path, domain: int) -> dict:
    env = ros_env(domain)
    server = subprocess.Popen(server_cmd, env=env, cwd=ROOT, stdout=open(out / "server.log", "w"),
                              stderr=subprocess.STDOUT)
    report_path = out / "bridge.json"
    bridge = subprocess.Popen(node_command("qpolicy_ros.mujoco_bridge", "mujoco_bridge",
                                           {"policy": policy, "mode": "lockstep", "episodes": 10**9, "seed": 0,
                                            "max_steps": steps, "report_path": str(report_path)}, out),
                              env=env, cwd=ROOT, stdout=open(out / "bridge.log", "w"), stderr=subprocess.STDOUT)
    samples: list[tuple[float, int | None, int | None]] = []
    t0 = time.monotonic()
    try:
        while bridge.poll() is None:
            samples.append((time.monotonic() - t0, rss_kib(server.pid), rss_kib(bridge.pid)))
            time.sleep(0.5)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=20)
    wall = time.monotonic() - t0
    report = json.loads(report_path.read_text())
    usable = [s for s in samples if s[1] and s[2]]
    base = next(s for s in usable if s[0] >= 0.1 * wall)
    last = usable[-1]
    return {"steps": report["steps"], "missing_commands": report["missing_commands"], "wall_s": wall,
            "steps_per_s": report["steps"] / wall, "report_bytes": report_path.stat().st_size,
            "server_rss_kib": [base[1], last[1]], "bridge_rss_kib": [base[2], last[2]],
            "server_growth_pct": 100.0 * (last[1] - base[1]) / base[1],
            "bridge_growth_pct": 100.0 * (last[2] - base[2]) / base[2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--policy", default=str(DEFAULT_POLICY))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in (("policy_server", None), ("echo_peer", [sys.executable, "-c", ECHO])):
            out = Path(tmp) / name
            out.mkdir()
            cmd = cmd or node_command("qpolicy_ros.policy_server", "policy_server",
                                      {"policy": a.policy, "backend": "int"}, out)
            results[name] = soak(cmd, a.steps, a.policy, out, domain=1 + (os.getpid() + len(results)) % 100)
            r = results[name]
            print(f"{name:14s} {r['steps']} steps in {r['wall_s']:.0f} s ({r['steps_per_s']:.0f}/s), missing "
                  f"{r['missing_commands']}; RSS server {r['server_rss_kib'][0] / 1024:.1f} -> "
                  f"{r['server_rss_kib'][1] / 1024:.1f} MiB ({r['server_growth_pct']:+.2f} %), bridge "
                  f"{r['bridge_rss_kib'][0] / 1024:.1f} -> {r['bridge_rss_kib'][1] / 1024:.1f} MiB "
                  f"({r['bridge_growth_pct']:+.2f} %); report {r['report_bytes'] / 1e6:.2f} MB", flush=True)
    ok = all(abs(results["policy_server"][k]) < 5.0 for k in ("server_growth_pct", "bridge_growth_pct"))
    print(f"target (both nodes under 5 % growth with the policy server): {'met' if ok else 'NOT met'}")
    if a.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()

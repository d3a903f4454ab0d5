"""``qpolicy demo``: the closed loop of any shipped task without a ROS 2 install (Hopper by default).

Starts ``policy_server`` and ``mujoco_bridge`` as two separate processes with the same parameter file
as the launch file (config/hopper_fpga.yaml), DDS confined to this machine on a private domain id,
waits for the bridge to finish its episodes, then prints and writes the report and a plot.
This module does not import rclpy itself: it only starts the nodes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from qpolicy_hw.errors import QpolicyError
from qpolicy_ros.param_file import write_node_params

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICY = ROOT / "policies" / "hopper" / "selected"


def ros_env(domain_id: int | None = None) -> dict[str, str]:
    """The environment of every process that touches DDS: localhost discovery, and ``domain_id``, else the
    user's ``ROS_DOMAIN_ID``, else a private one from the pid."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if domain_id is None and os.environ.get("ROS_DOMAIN_ID", "").strip():
        domain_id = int(os.environ["ROS_DOMAIN_ID"])
    domain_id = domain_id if domain_id is not None else 1 + os.getpid() % 100
    if not 0 <= domain_id <= 232:
        raise QpolicyError(f"domain id {domain_id}: ROS 2 domain ids are 0-232 (0-101 are safe on every OS)")
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def node_command(module: str, node_name: str, params: dict[str, Any], out_dir: Path) -> list[str]:
    """The node's command line, with its parameters merged from the shared file and this run's overrides."""
    params_file = write_node_params(node_name, out_dir / f"{node_name}.params.yaml", params)
    return [sys.executable, "-m", module, "--ros-args", "--params-file", str(params_file)]


def run_loop(policy, backend: str = "auto", mode: str = "lockstep", episodes: int = 3, seed: int = 0,
             rate_hz: float = 0.0, out_dir: str | Path = "demo_out", timeout_s: float = 900.0,
             domain_id: int | None = None, extra_bridge: dict | None = None, record: str | None = None,
             env_id: str = "", remote: str = "", video: str | None = None,
             extra_server: dict | None = None, env_module: str = "") -> dict:
    """Run both nodes to completion; returns the bridge's report plus the server's log lines.

    ``policy``: a bundle path or a loaded ``Bundle`` (not loaded again here). ``env_id`` and ``rate_hz``
    default to the bundle's task and its control rate (``task.resolve_task``, checked here before any node
    starts). ``env_module``: the user's package that registers their environment (imported by the bridge)."""
    from qpolicy_hw.bundle import Bundle
    from qpolicy_ros.task import resolve_task

    env_id, rate_hz = resolve_task(policy, env_id, rate_hz, env_module=env_module or None)
    policy = policy.path if isinstance(policy, Bundle) else policy
    out = Path(out_dir).resolve()   # the nodes run in the package directory: give them absolute paths
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "bridge_report.json"
    report_path.unlink(missing_ok=True)
    env = ros_env(domain_id)
    server_log = open(out / "policy_server.log", "w")
    bridge_log = open(out / "mujoco_bridge.log", "w")
    server = subprocess.Popen(node_command("qpolicy_ros.policy_server", "policy_server",
                                           {"policy": str(Path(policy).resolve()), "backend": backend,
                                            "remote_address": remote, **(extra_server or {})}, out),
                              env=env, cwd=ROOT, stdout=server_log, stderr=subprocess.STDOUT)
    recorder = None
    if record:
        recorder = subprocess.Popen(node_command("qpolicy_ros.bag_recorder", "bag_recorder",
                                                 {"bag_path": str(Path(record).resolve())}, out),
                                    env=env, cwd=ROOT, stdout=open(out / "bag_recorder.log", "w"),
                                    stderr=subprocess.STDOUT)
    bridge_params = {"policy": str(Path(policy).resolve()), "env_id": env_id, "mode": mode, "episodes": episodes,
                     "seed": seed, "rate_hz": float(rate_hz), "env_module": env_module,
                     "report_path": str(report_path.resolve())}
    if record:
        bridge_params["min_observation_subscribers"] = 2
    if video:
        bridge_params["video_path"] = str(Path(video).resolve())
    bridge_params.update(extra_bridge or {})
    bridge = subprocess.Popen(node_command("qpolicy_ros.mujoco_bridge", "mujoco_bridge", bridge_params, out),
                              env=env, cwd=ROOT, stdout=bridge_log, stderr=subprocess.STDOUT)
    try:
        # poll all nodes: when the server or the recorder exits first, the run ends now, with its reason
        deadline = time.monotonic() + timeout_s
        while bridge.poll() is None:
            for name, proc, log in (("policy_server", server, out / "policy_server.log"),
                                    ("bag_recorder", recorder, out / "bag_recorder.log")):
                if proc is not None and proc.poll() is not None:
                    bridge.send_signal(signal.SIGINT)
                    bridge.wait(timeout=10)
                    raise QpolicyError(f"{name} exited (code {proc.returncode}) before the run ended: "
                                       f"{_last_line(log)} (logs in {out})")
            if time.monotonic() > deadline:
                bridge.send_signal(signal.SIGINT)
                bridge.wait(timeout=10)
                raise QpolicyError(f"the closed loop did not finish in {timeout_s:.0f} s (logs in {out})")
            time.sleep(0.1)
    finally:
        for proc in (server, recorder):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        server_log.close()
        bridge_log.close()
    if not report_path.exists():
        tail = (out / "mujoco_bridge.log").read_text()[-600:] + (out / "policy_server.log").read_text()[-600:]
        raise QpolicyError(f"the bridge wrote no report (exit {bridge.returncode}); last log lines: "
                           + " | ".join(line for line in tail.splitlines() if line.strip())[-400:])
    report = json.loads(report_path.read_text())
    report.update(server_exit=server.returncode, env_id=env_id, rate_hz=rate_hz)
    return report


def _last_line(log: Path) -> str:
    """The last meaningful line of a node's log (its error, when it failed)."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[-1][:300]


def plot_report(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    lat = np.asarray(report["latency_samples_s"]) * 1e6
    if lat.size:
        a.hist(lat, bins=60, color="tab:blue")
        for q, style in ((50, "-"), (99, "--")):
            a.axvline(np.percentile(lat, q), color="k", ls=style, lw=1, label=f"p{q} {np.percentile(lat, q):.0f} us")
        a.legend(fontsize=8)
    a.set_xlabel("observation -> action round trip (us)")
    a.set_ylabel("count")
    b.bar(range(len(report["returns"])), report["returns"], color="tab:green")
    b.set_xticks(range(len(report["returns"])))
    b.set_xlabel("episode")
    b.set_ylabel("return")
    fig.suptitle(f"{report['env_id']} {report['mode']} loop, backend {report['backend']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def demo(policy: str | None = None, backend: str = "auto", mode: str = "lockstep", episodes: int = 3,
         seed: int = 0, out_dir: str = "demo_out", as_json: bool = False, record: str | None = None,
         env_id: str = "", rate_hz: float = 0.0, domain_id: int | None = None, remote: str = "",
         video: str | None = None, trust=None, server_params: dict | None = None, interface: str = "flat",
         env_module: str = "", observation_map: str = "") -> int:
    from qpolicy_hw.bundle import load_bundle
    from qpolicy_ros.loop_core import format_split, latency_split

    policy_path = Path(policy) if policy else DEFAULT_POLICY
    # a bad, missing or untrusted bundle fails here, in one line, before any node starts
    bundle = load_bundle(policy_path, trust=trust)
    t0 = time.perf_counter()
    if episodes <= 0:
        raise QpolicyError(f"--episodes {episodes}: must be positive")
    ros_env(domain_id)   # a bad domain id fails here, before any node starts
    if video and Path(video).suffix.lower() not in (".mp4", ".gif"):
        raise QpolicyError(f"--video {video}: choose a .mp4 or a .gif file")
    if backend == "remote" and not remote:
        raise QpolicyError("--backend remote needs --remote HOST:PORT (the board agent)")
    from qpolicy_ros.observation_map import map_for

    map_path = str(Path(observation_map).resolve()) if observation_map else ""
    if interface == "standard":   # a task no robot topic describes is refused here, before any node starts
        map_for(bundle.env_id, map_path)
    report = run_loop(bundle, backend, mode, episodes, seed, rate_hz, out_dir, record=record, env_id=env_id,
                      domain_id=domain_id, remote=remote, video=video, env_module=env_module,
                      extra_server={**(server_params or {}), "observation_interface": interface,
                                    "observation_map": map_path},
                      extra_bridge={"observation_interface": interface})
    env_id, rate_hz = report["env_id"], report["rate_hz"]   # resolved (and checked) by run_loop, before any node
    summary = {"returns": report["returns"], "mean_return": report["mean_return"],
               "latency_us": {k: report["latency_us"][k] for k in ("p50", "p99")},
               "late_commands": report["late_commands"], "missing_commands": report["missing_commands"],
               "backend": report["backend"], "mode": mode, "interface": interface, "policy": str(policy_path),
               "env_id": env_id,
               "rate_hz": rate_hz,
               "steps": report["steps"], "wall_s": time.perf_counter() - t0, "bag": record, "video": video,
               "latency_split": latency_split(report)}
    out = Path(out_dir)
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    plot = plot_report(report, out / "report.png")
    if not as_json:
        print(f"{env_id} closed loop over ROS 2 ({mode} at {rate_hz:g} Hz, backend {summary['backend']}), "
              f"{episodes} episodes of {bundle.path}")
        print("returns: " + ", ".join(f"{r:.1f}" for r in summary["returns"]) + f"  (mean {summary['mean_return']:.1f})")
        lat = summary["latency_us"]
        print(f"obs->action latency: p50 {lat['p50']:.0f} us, p99 {lat['p99']:.0f} us; "
              f"late commands {summary['late_commands']}, missing {summary['missing_commands']}")
        print("where the time goes:\n" + format_split(summary["latency_split"]))
        print(f"wrote {out / 'report.json'} and {plot}")
    if as_json:
        print(json.dumps(summary))
    return 0

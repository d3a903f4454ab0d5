"""The closed-loop commands: demo (the ROS 2 loop) and render (argument parsing and output only)."""
from __future__ import annotations

import argparse
from pathlib import Path

from qpolicy_cli.options import add_env_module_option, add_trust_options, print_json, trust_from

EXIT_FAILED_CHECK = 1


def cmd_demo(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy demo", description=(
        "The closed loop over ROS 2 (Hopper by default; any bundle's task with --policy): policy_server and "
        "mujoco_bridge as two processes, "
        "DDS on localhost with a private domain id (the same nodes and parameters as "
        "`ros2 launch qpolicy hopper_fpga.launch.py`)."))
    p.add_argument("--policy", help="bundle directory (default: policies/hopper/selected)")
    p.add_argument("--backend", default="auto", choices=["auto", "pynq", "rtl", "int", "float", "remote"])
    p.add_argument("--remote", default="", metavar="HOST:PORT", help="backend remote: the board agent's address")
    p.add_argument("--video", metavar="FILE", help="also record the run as .mp4 or .gif (every 4th step, off-screen)")
    p.add_argument("--mode", default="lockstep", choices=["lockstep", "realtime"])
    p.add_argument("--interface", default="flat", choices=["flat", "standard"],
                   help="standard: the server reads /joint_states by joint name, as from a robot (docs/ros.md)")
    p.add_argument("--observation-map", default="", metavar="YAML",
                   help="standard: the observation map (default: the shipped one for the bundle's task)")
    add_env_module_option(p)
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="demo_out", help="directory for report.json, report.png and node logs")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (last line)")
    p.add_argument("--record", metavar="BAG", help="also record the loop to a rosbag2 (MCAP) bag at BAG")
    p.add_argument("--env-id", default="", help="environment (default: the bundle's task)")
    p.add_argument("--rate-hz", type=float, default=0.0, help="realtime control rate (default: the task's, 1/env.dt)")
    p.add_argument("--auth-key", metavar="FILE", help="backend remote: the agent's shared key file")
    add_trust_options(p)
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS_DOMAIN_ID of the run (default: $ROS_DOMAIN_ID if set, else a private one from the pid)")
    a = p.parse_args(argv)
    if a.episodes <= 0:
        p.error("--episodes must be positive")
    if a.rate_hz < 0:
        p.error("--rate-hz must be positive (or 0 for the task's rate)")
    from qpolicy_ros.demo import demo

    trust = trust_from(a)
    server_params = {"trusted_key": ",".join(str(Path(k).resolve()) for k in trust.trusted_keys),
                     "expected_digest": trust.expected_digest or "",
                     "auth_key": str(Path(a.auth_key).resolve()) if a.auth_key else ""}
    return demo(policy=a.policy, backend=a.backend, mode=a.mode, episodes=a.episodes, seed=a.seed, out_dir=a.out,
                as_json=a.json, record=a.record, env_id=a.env_id, rate_hz=a.rate_hz, domain_id=a.domain_id,
                remote=a.remote, video=a.video, trust=trust, server_params=server_params, interface=a.interface,
                env_module=a.env_module or "", observation_map=a.observation_map)


def cmd_render(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy render", description=(
        "Render one deterministic episode of a bundle off-screen (MuJoCo over EGL) to .mp4 or .gif."))
    p.add_argument("bundle")
    p.add_argument("--out", required=True, help="episode.mp4 or episode.gif")
    p.add_argument("--backend", default="int", choices=["int", "float", "rtl"])
    p.add_argument("--seed", type=int, default=0, help="the episode: the same as qpolicy eval --seed S --episodes 1")
    p.add_argument("--width", type=int, default=480)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--every", type=int, default=1, help="keep every Nth frame (smaller GIFs)")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    add_env_module_option(p)
    a = p.parse_args(argv)
    from qpolicy_sim.render import render_episode

    result = render_episode(a.bundle, a.out, backend=a.backend, seed=a.seed, width=a.width, height=a.height,
                            every=a.every, max_steps=a.max_steps, env_module=a.env_module)
    if a.json:
        print_json(result)
    else:
        print(f"{result['env_id']} ({result['backend']}), seed {a.seed}: return {result['return']:.1f} in "
              f"{result['steps']} steps; {result['frames']} frames at {result['fps']:.1f} fps -> {result['out']}")
    return 0

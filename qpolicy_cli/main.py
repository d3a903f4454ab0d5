"""``qpolicy``: one command for the whole flow (train, export, verify, ...).

Heavy imports (torch, brevitas, rclpy) happen inside the subcommand that needs them, so
``qpolicy --help`` is instant. Every error a user can cause prints one line, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from qpolicy_cli.options import add_env_module_option, add_trust_options, trust_from
from qpolicy_hw.errors import QpolicyError

EXIT_USAGE = 2
EXIT_FAILED_CHECK = 1
EXIT_INTERNAL = 70   # EX_SOFTWARE: a bug, not bad input


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=None, sort_keys=False, default=float))


def cmd_train(argv: list[str]) -> int:
    """qpolicy train [--preset NAME] [ARGS...]: run or resume one SAC/DDPG run."""
    import tyro

    from qpolicy_cli.options import tyro_cli
    from qpolicy_train.args import Args
    from qpolicy_train.presets import load_preset
    from qpolicy_train.training import train

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    known, rest = pre.parse_known_args(argv)
    default = load_preset(known.preset) if known.preset else Args()
    # the quantized actor's fields keep flat flags (--width, --core-bits, ...)
    args = tyro_cli(tyro.conf.OmitArgPrefixes[Args], default, rest, "qpolicy train",
                    "Train a quantized SAC/DDPG actor. --preset NAME loads config/train/NAME.yaml first.")
    summary = train(args)
    if args.export_bundle:
        from qpolicy_train.export import export_checkpoint

        bundle = export_checkpoint(os.path.join(args.out_dir, "actor.pt"), os.path.join(args.out_dir, "bundle"))
        summary["bundle"] = str(bundle)
    _print_json({k: v for k, v in summary.items() if k != "history"})
    return 0


def cmd_export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy export", description="Export a trained actor to a policy bundle.")
    p.add_argument("checkpoint", help="a training run directory, actor.pt or checkpoint.pt")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--evaluation", help="evaluation JSON to record in the bundle's provenance")
    a = p.parse_args(argv)
    from qpolicy_hw.errors import QpolicyError
    from qpolicy_train.ship import export_safely

    evaluation = None
    if a.evaluation:
        try:
            with open(a.evaluation) as f:
                evaluation = json.load(f)
        except (OSError, ValueError) as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise QpolicyError(f"cannot read evaluation {a.evaluation}: {exc}") from None
    out = export_safely(a.checkpoint, a.out, evaluation)
    print(f"wrote bundle {out}")
    return 0


def cmd_verify(argv: list[str]) -> int:
    from qpolicy_hw.bundle import load_bundle
    from qpolicy_hw.verify import RUNGS, verify

    p = argparse.ArgumentParser(prog="qpolicy verify",
                                description="Run the verification ladder on a bundle (exit 1 if a rung fails).")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--rung", action="append", choices=sorted(RUNGS), help="run only this rung (repeatable)")
    add_trust_options(p)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    load_bundle(a.bundle, trust=trust_from(a))   # a bundle the trust options refuse is refused before any rung
    result = verify(a.bundle, a.rung,
                    progress=lambda msg: print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True))
    if a.json:
        _print_json(result)
    else:
        for name, check in result["checks"].items():
            if check["status"] == "skip":
                print(f"skip {name}: {check['reason']}")
                continue
            detail = ", ".join(f"{k}={v}" for k, v in check.items()
                               if k in ("observations", "vectors", "codes", "mismatches", "rate", "latency_cycles",
                                        "fold"))
            print(f"{check['status']} {name}: {detail}")
        print(f"bundle digest {result['digest']}")
        print(result["verdict"], result["bundle"])
    return 0 if result["pass"] else EXIT_FAILED_CHECK


def cmd_eval(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy eval", description="Deterministic rollouts of a bundle.")
    p.add_argument("bundle")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--backend", default="int", choices=["int", "float"])
    p.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise on the normalized observation")
    p.add_argument("--seed", type=int, default=0, help="episode i resets with seed + i")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="also write the JSON result to this file")
    add_env_module_option(p)
    add_trust_options(p)
    a = p.parse_args(argv)
    from qpolicy_hw.bundle import load_bundle
    from qpolicy_hw.files import writable_file
    from qpolicy_train.evaluation import evaluate_bundle

    load_bundle(a.bundle, trust=trust_from(a))
    if a.out:
        writable_file(a.out)
    result = evaluate_bundle(a.bundle, a.episodes, a.backend, a.noise, a.seed, env_module=a.env_module)
    if a.out:
        tmp = Path(a.out).with_name(f".{Path(a.out).name}.partial")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, a.out)
    if a.json:
        _print_json(result)
    else:
        print(f"{result['env']} {a.backend}: {result['mean_return']:.1f} +- {result['std_return']:.1f} "
              f"over {a.episodes} episodes (noise {a.noise})")
    return 0


def cmd_noise(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy noise",
                                description="Input-noise robustness: returns of bundles vs noise sigma (CSV).")
    p.add_argument("bundles", nargs="+", help="LABEL=BUNDLE or BUNDLE (label = directory name)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="CSV to write (then: qpolicy plot --noise CSV)")
    a = p.parse_args(argv)
    from qpolicy_train.evaluation import noise_table

    labelled = []
    for item in a.bundles:
        label, _, path = item.rpartition("=")
        labelled.append((label, path))
    for row in noise_table(labelled, a.sigmas, a.episodes, a.seed, a.out):
        print(f"{row['model']} sigma={row['sigma']}: {row['mean_return']:.1f} +- {row['std_return']:.1f}")
    return 0


def cmd_select(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy select", description=(
        "The paper's staged selection: core bits (I/O at 8) -> width -> input bits. Trains what the "
        "results table lacks (resumable), or only decides with --from-table."))
    from qpolicy_train.args import Args

    defaults = Args()   # the training defaults are defined once, in Args
    p.add_argument("--from-table", help="decide from an existing results CSV; train nothing")
    p.add_argument("--env-id", default=defaults.env_id)
    p.add_argument("--algo", default=defaults.algo, choices=["sac", "ddpg"])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(1000, 1010)))
    p.add_argument("--steps", type=int, default=defaults.total_timesteps, help="training steps per run")
    p.add_argument("--scale-mode", default=defaults.quant.scale_mode, choices=["float", "po2"])
    p.add_argument("--eval-episodes", type=int, default=defaults.eval_episodes)
    p.add_argument("--jobs", type=int, default=None, help="parallel local processes (default: CPU count)")
    p.add_argument("--engine", default="local", choices=["local", "ray"])
    p.add_argument("--out", default="sweeps/selection")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from qpolicy_train.selection import read_results, select

    if a.from_table:
        decision = select(read_results(a.from_table))
    else:
        from qpolicy_train.sweep import default_jobs, run_selection

        base = {"env_id": a.env_id, "algo": a.algo, "total_timesteps": a.steps, "scale_mode": a.scale_mode}
        decision = run_selection(base, a.seeds, a.out, a.jobs or default_jobs(), a.engine, a.eval_episodes)
        print("wrote " + ", ".join(str(Path(a.out) / f) for f in ("selection.json", *decision["figures"])),
              file=sys.stderr)
    if a.json:
        _print_json(decision)
    else:
        sel = decision["selected"]
        open_stage = next((st for st in decision["stages"] if st["missing"]), None)
        verdict = "selected" if decision["complete"] else \
            f"provisional (stage {open_stage['stage']} lacks {len(open_stage['missing'])} configurations)"
        print(f"FP32 {decision['fp32']['mean']:.1f} +- {decision['fp32']['std']:.1f}; {verdict}: width {sel['width']}, "
              f"core {sel['core_bits']} bits, input {sel['input_bits']} bits, output {sel['output_bits']} bits")
    return 0


def cmd_plot(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy plot", description="Reward-vs-bit-width and noise-robustness figures.")
    p.add_argument("results", nargs="?", help="results CSV of a sweep (reward vs bit width)")
    p.add_argument("--noise", help="noise CSV from `qpolicy noise`")
    p.add_argument("--curves", nargs="+", metavar="LABEL=CSV", help="training logs (progress.csv) to draw as curves")
    p.add_argument("--reference", type=float, help="a horizontal reference return on the curves figure")
    p.add_argument("--out", default=".", help="directory for the PNG files")
    a = p.parse_args(argv)
    from qpolicy_train.plots import plot_bit_sweep, plot_curves, plot_noise, plot_selection

    if not a.results and not a.noise and not a.curves:
        p.error("give a results CSV, --noise CSV or --curves LABEL=CSV ...")
    curves = {}
    for item in a.curves or []:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            p.error(f"--curves wants LABEL=CSV with an existing file, got {item!r}")
        curves[label] = path
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.results:
        print(f"wrote {plot_bit_sweep(a.results, out / 'reward_vs_bits.png')}")
        try:
            print(f"wrote {plot_selection(a.results, out / 'staged_selection.png')}")
        except QpolicyError as exc:   # a scopes sweep without FP32 runs has no selection to draw
            print(f"no staged-selection figure: {exc}")
    if a.noise:
        print(f"wrote {plot_noise(a.noise, out / 'noise_robustness.png')}")
    if curves:
        try:
            print(f"wrote {plot_curves(curves, out / 'training_curves.png', a.reference)}")
        except (ValueError, KeyError) as exc:
            p.error(f"cannot draw the curves: {exc}")
    return 0


def cmd_ship(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy ship", description=(
        "Package a training run as a shipped policy: the bundle, its training log and the evaluation "
        "that produced its figures (the evaluation is also recorded in the bundle's provenance). --out must be "
        "new, empty, or a previous ship; nothing else is ever deleted."))
    p.add_argument("run", help="training run directory (actor.pt or checkpoint.pt)")
    p.add_argument("--out", required=True, help="e.g. policies/hopper/selected")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--signing-key", metavar="KEY.pem", help="sign the bundle with this Ed25519 key (qpolicy keygen)")
    a = p.parse_args(argv)
    from qpolicy_train.ship import ship

    evaluation = ship(a.run, a.out, a.episodes, a.seed, a.signing_key)
    print(f"shipped {a.out}: {evaluation['mean_return']:.1f} +- {evaluation['std_return']:.1f} over "
          f"{a.episodes} episodes ({evaluation['backend']} backend)" + (", signed" if a.signing_key else ""))
    return 0


def cmd_keygen(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy keygen", description="A new Ed25519 key pair for signing bundles.")
    p.add_argument("--out", required=True, metavar="NAME", help="writes NAME.pem (private, mode 600) and NAME.pub.pem")
    a = p.parse_args(argv)
    from qpolicy_hw.trust import generate_key_pair

    kid = generate_key_pair(f"{a.out}.pem", f"{a.out}.pub.pem")
    print(f"key {kid}: private {a.out}.pem (keep it secret), public {a.out}.pub.pem (give it to servers)")
    return 0


def cmd_sign(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy sign", description=(
        "Sign a bundle (its verified digest) with an Ed25519 key: writes BUNDLE/signature.json."))
    p.add_argument("bundle")
    p.add_argument("--signing-key", required=True, metavar="KEY.pem")
    a = p.parse_args(argv)
    from qpolicy_hw.bundle import load_bundle
    from qpolicy_hw.trust import sign_bundle

    bundle = load_bundle(a.bundle)
    print(f"signed {bundle.digest[:16]}...: {sign_bundle(bundle.path, a.signing_key, bundle.digest)}")
    return 0


def cmd_hw(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy hw", description=(
        "Hardware project of a bundle: da4ml RTL core with valid/reset, Verilator check against the int "
        "reference, Yosys xc7 cell counts, Vivado out-of-context TCL, and report.json."))
    p.add_argument("bundle")
    p.add_argument("--target", required=True, help="xc7a15t (the paper's Artix-7) or pynq-z2")
    p.add_argument("--out", required=True)
    p.add_argument("--latency-cutoff", type=float, default=None, help="da4ml delay budget per pipeline stage")
    p.add_argument("--fold", default="auto", help="auto (default: the --objective's choice, within a 10%% margin of "
                   "the part), none (fully unrolled, da4ml) or PExSIMD per layer, e.g. 16x6,u,u (u = unrolled)")
    p.add_argument("--objective", default="auto", choices=["auto", "finn", "area", "latency"], help="finn: the "
                   "fastest core within the resources of the paper's FINN core for the task (Table 3); area: the "
                   "smallest core within --max-latency-us; latency: the fastest core that fits the part; auto "
                   "(default): finn for the paper's five tasks, else area")
    p.add_argument("--max-latency-us", type=float, default=None, help="the area objective's latency budget "
                   "(default: 50 multiply-accumulates per cycle, e.g. 1.2 us for Humanoid)")
    p.add_argument("--clock-mhz", type=float, default=None, help="the clock every core is pipelined for "
                   "(default: the target's, 100 MHz)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from qpolicy_hw.hw_project import build_hw
    from qpolicy_hw.rtl import DEFAULT_LATENCY_CUTOFF

    t0 = time.perf_counter()

    def stage(msg: str) -> None:   # on stderr, so --json output stays one object
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    report = build_hw(a.bundle, a.target, a.out, latency_cutoff=a.latency_cutoff or DEFAULT_LATENCY_CUTOFF,
                      stage=stage, fold=a.fold, objective=a.objective, max_latency_us=a.max_latency_us,
                      clock_mhz=a.clock_mhz)
    if a.json:
        _print_json(report)
    else:
        print((Path(a.out) / "REPORT.txt").read_text().rstrip())
    return 0


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
    return demo(a.policy, a.backend, a.mode, a.episodes, a.seed, a.out, a.json, a.record, a.env_id, a.rate_hz,
                a.domain_id, a.remote, a.video, trust=trust, server_params=server_params, interface=a.interface)


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
    from qpolicy_train.render import render_episode

    result = render_episode(a.bundle, a.out, a.backend, a.seed, a.width, a.height, a.every, None, a.max_steps,
                            env_module=a.env_module)
    if a.json:
        _print_json(result)
    else:
        print(f"{result['env_id']} ({result['backend']}), seed {a.seed}: return {result['return']:.1f} in "
              f"{result['steps']} steps; {result['frames']} frames at {result['fps']:.1f} fps -> {result['out']}")
    return 0


def cmd_agent(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy agent", description=(
        "Serve a bundle's FPGA core over the network (on the board; numpy and pynq only). Hosts use it with "
        "the remote backend: qpolicy demo --backend remote --remote HOST:PORT."))
    p.add_argument("bundle")
    p.add_argument("--listen", default="127.0.0.1:7450", metavar="HOST:PORT",
                   help="where to listen (default 127.0.0.1:7450; 0.0.0.0:7450 to accept the robot's computer)")
    p.add_argument("--mmio", default="board", choices=["board", "sim"],
                   help="board: the overlay through pynq; sim: the Verilated AXI-Lite slave (no board needed)")
    p.add_argument("--done-timeout-s", type=float, default=None,
                   help="an inference without DONE after this long is a fault (default: 2 ms; 0.5 s with --mmio sim)")
    p.add_argument("--auth-key", metavar="FILE", help="require hosts to prove they hold this shared key (HMAC)")
    p.add_argument("--max-clients", type=int, default=8, help="connections held at once (default 8)")
    add_trust_options(p)
    a = p.parse_args(argv)
    from qpolicy_hw.agent import Agent, driver_infer, parse_address, read_shared_key
    from qpolicy_hw.axi import PolicyCoreDriver
    from qpolicy_hw.bundle import load_bundle

    host, _ = parse_address(a.listen, listening=True)
    auth_key = read_shared_key(a.auth_key) if a.auth_key else None
    if auth_key is None and not host.startswith("127.") and host != "localhost":
        print(f"qpolicy agent: warning: listening on {host} without --auth-key: any host that reaches the port "
              "can use the core", file=sys.stderr)
    if a.max_clients < 1:
        raise QpolicyError("--max-clients must be at least 1")
    bundle = load_bundle(a.bundle, trust=trust_from(a))
    if a.mmio == "sim":
        from qpolicy_hw.axi import VerilatedMMIO, build_axi
        from qpolicy_hw.cache import cache_dir
        from qpolicy_hw.core_function import bundle_layers
        from qpolicy_hw.fold_cost import default_plan

        sim_dir = cache_dir("agent") / bundle.digest[:16]
        if not (sim_dir / "src" / "qpolicy_axi.v").exists():
            build_axi(bundle, sim_dir, plan=default_plan(bundle_layers(bundle)))
        mmio = VerilatedMMIO(sim_dir)
    else:
        from qpolicy_hw.runtime.pynq_backend import open_overlay_mmio

        mmio = open_overlay_mmio(bundle)
    driver = PolicyCoreDriver(mmio, bundle.obs_dim, bundle.act_dim, bundle.bits["input"], bundle.bits["output"],
                              digest=bundle.digest,
                              done_timeout_s=a.done_timeout_s or (0.5 if a.mmio == "sim" else 0.002))
    Agent(bundle, driver_infer(driver), log=lambda m: print(m, flush=True), auth_key=auth_key,
          max_clients=a.max_clients).serve_forever(a.listen)
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": cmd_train,
    "export": cmd_export,
    "verify": cmd_verify,
    "eval": cmd_eval,
    "noise": cmd_noise,
    "select": cmd_select,
    "plot": cmd_plot,
    "ship": cmd_ship,
    "hw": cmd_hw,
    "demo": cmd_demo,
    "agent": cmd_agent,
    "render": cmd_render,
    "keygen": cmd_keygen,
    "sign": cmd_sign,
}


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # e.g. `qpolicy verify ... | head`
        return 0


def _main(argv: list[str]) -> int:
    # --debug anywhere (or QPOLICY_DEBUG=1): unexpected errors show their traceback instead of one line
    debug = "--debug" in argv or os.environ.get("QPOLICY_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: qpolicy {" + ",".join(COMMANDS) + "} [ARGS...]\n\n"
              "  train    train a quantized SAC/DDPG actor (resumes from OUT_DIR/checkpoint.pt)\n"
              "  export   export a trained actor to a policy bundle\n"
              "  verify   run the verification ladder on a bundle\n"
              "  eval     deterministic rollouts of a bundle (int or float backend, optional input noise)\n"
              "  noise    input-noise robustness table of one or more bundles\n"
              "  select   the paper's staged model selection (runs the sweep, resumable)\n"
              "  plot     reward-vs-bit-width and noise-robustness figures\n"
              "  hw       hardware project of a bundle (RTL core, simulation, Yosys count, Vivado TCL)\n"
              "  ship     package a training run as a shipped policy (bundle, training log, evaluation)\n"
              "  demo     run the Hopper closed loop (main job)\n"
              "  render   one episode of a bundle to .mp4 or .gif (off-screen)\n"
              "  agent    serve a bundle's FPGA core over the network (on the board; the remote backend's peer)\n"
              "  keygen   a new Ed25519 key pair for signing bundles\n"
              "  sign     sign a bundle with a key (servers with --trusted-key accept only signed bundles)\n\n"
              "  --debug  (any command) show the traceback of an unexpected error\n")
        return 0 if argv else EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"qpolicy: error: unknown command {name!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return EXIT_USAGE
    from qpolicy_hw.errors import QpolicyError

    try:
        return COMMANDS[name](rest)
    except QpolicyError as exc:
        print(f"qpolicy {name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"qpolicy {name}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:   # an unwritable or unreadable path, a full disk
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"qpolicy {name}: error: {where}{exc.strerror or type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except UnicodeDecodeError as exc:   # a CSV or JSON input that is not text
        if debug:
            raise
        print(f"qpolicy {name}: error: an input file is not UTF-8 text ({exc.reason} at byte {exc.start})",
              file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if debug:
            raise
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        print(f"qpolicy {name}: internal error: {type(exc).__name__}: {first} "
              "(rerun with --debug for the traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())

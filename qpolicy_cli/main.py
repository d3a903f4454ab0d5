"""``qpolicy``: one command for the whole flow (train, export, verify, ...).

Heavy imports (torch, brevitas, rclpy) happen inside the subcommand that needs them, so
``qpolicy --help`` is instant. Every error a user can cause prints one line, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable

EXIT_USAGE = 2
EXIT_FAILED_CHECK = 1


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=None, sort_keys=False, default=float))


def cmd_train(argv: list[str]) -> int:
    """qpolicy train [--preset NAME] [ARGS...]: run or resume one SAC/DDPG run."""
    import tyro

    from qpolicy_train.presets import load_preset
    from qpolicy_train.sac import Args, train

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    known, rest = pre.parse_known_args(argv)
    default = load_preset(known.preset) if known.preset else Args()
    args = tyro.cli(Args, default=default, args=rest, prog="qpolicy train",
                     description="Train a quantized SAC/DDPG actor. --preset NAME loads config/train/NAME.yaml first.")
    summary = train(args)
    if args.export_bundle:
        from qpolicy_hw.export import export_checkpoint

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
    from qpolicy_hw.export import export_checkpoint

    evaluation = None
    if a.evaluation:
        try:
            with open(a.evaluation) as f:
                evaluation = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"qpolicy: error: cannot read evaluation {a.evaluation}: {exc}")
    out = export_checkpoint(a.checkpoint, a.out, evaluation)
    print(f"wrote bundle {out}")
    return 0


def cmd_verify(argv: list[str]) -> int:
    from qpolicy_hw.verify import RUNGS, verify

    p = argparse.ArgumentParser(prog="qpolicy verify",
                                description="Run the verification ladder on a bundle (exit 1 if a rung fails).")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--rung", action="append", choices=sorted(RUNGS), help="run only this rung (repeatable)")
    a = p.parse_args(argv)
    result = verify(a.bundle, a.rung)
    if a.json:
        _print_json(result)
    else:
        for name, check in result["checks"].items():
            status = "ok  " if check["pass"] else "FAIL"
            detail = ", ".join(f"{k}={v}" for k, v in check.items() if k in ("vectors", "codes", "mismatches", "rate"))
            print(f"{status} {name}: {detail}")
        print("PASS" if result["pass"] else "FAIL", result["bundle"])
    return 0 if result["pass"] else EXIT_FAILED_CHECK


def cmd_demo(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qpolicy demo", description="The Hopper closed loop over ROS 2 (main job).")
    p.parse_known_args(argv)
    print("qpolicy demo: not built yet -- the ROS 2 closed loop (policy_server + mujoco_bridge) lands with the "
          "ROS issue. Meanwhile: qpolicy export / qpolicy verify work on any bundle.")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": cmd_train,
    "export": cmd_export,
    "verify": cmd_verify,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # e.g. `qpolicy verify ... | head`
        return 0


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: qpolicy {" + ",".join(COMMANDS) + "} [ARGS...]\n\n"
              "  train    train a quantized SAC/DDPG actor (resumes from OUT_DIR/checkpoint.pt)\n"
              "  export   export a trained actor to a policy bundle\n"
              "  verify   run the verification ladder on a bundle\n"
              "  demo     run the Hopper closed loop (main job)\n")
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


if __name__ == "__main__":
    sys.exit(main())

"""``qpolicy``: one command for the whole flow (train, export, verify, ...).

This file is the wiring: the table of commands (name, where it lives, one line of help), the help built from
it, and the one place that turns every error a user can cause into one line. The commands parse their
arguments in ``learn.py``, ``hardware.py`` and ``loop.py`` and call the packages that do the work. Heavy
imports (torch, brevitas, rclpy) happen inside the command that needs them, so ``qpolicy --help`` is instant.
"""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

EXIT_USAGE = 2
EXIT_INTERNAL = 70   # EX_SOFTWARE: a bug, not bad input


class Command(NamedTuple):
    module: str      # qpolicy_cli.<module>.cmd_<name>
    summary: str     # the line in `qpolicy --help`


COMMANDS: dict[str, Command] = {
    "train": Command("learn", "train a quantized SAC/DDPG actor (resumes from OUT_DIR/checkpoint.pt)"),
    "export": Command("learn", "export a trained actor to a policy bundle"),
    "verify": Command("hardware", "run the verification ladder on a bundle"),
    "eval": Command("learn", "deterministic rollouts of a bundle (int or float backend, optional input noise)"),
    "noise": Command("learn", "input-noise robustness table of one or more bundles"),
    "select": Command("learn", "the paper's staged model selection (runs the sweep, resumable)"),
    "plot": Command("learn", "reward-vs-bit-width and noise-robustness figures"),
    "hw": Command("hardware", "hardware project of a bundle (RTL core, simulation, Yosys count, Vivado TCL)"),
    "ship": Command("learn", "package a training run as a shipped policy (bundle, training log, evaluation)"),
    "demo": Command("loop", "run the closed loop over ROS 2 (main job; Hopper by default)"),
    "render": Command("loop", "one episode of a bundle to .mp4 or .gif (off-screen)"),
    "agent": Command("hardware", "serve a bundle's FPGA core over the network (on the board; the remote backend's peer)"),
    "keygen": Command("hardware", "a new Ed25519 key pair for signing bundles"),
    "sign": Command("hardware", "sign a bundle with a key (servers with --trusted-key accept only signed bundles)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS)) + 2
    lines = [f"usage: qpolicy {{{','.join(COMMANDS)}}} [ARGS...]", ""]
    lines += [f"  {name:<{width}} {c.summary}" for name, c in COMMANDS.items()]
    lines += ["", f"  {'--debug':<{width}} (any command) show the traceback of an unexpected error", ""]
    return "\n".join(lines)


def command(name: str) -> Callable[[list[str]], int]:
    return getattr(importlib.import_module(f"qpolicy_cli.{COMMANDS[name].module}"), f"cmd_{name}")


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
        print(usage())
        return 0 if argv else EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"qpolicy: error: unknown command {name!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return EXIT_USAGE
    try:
        return command(name)(rest)
    except KeyboardInterrupt:
        print(f"qpolicy {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug and not _is_user_error(exc):
            raise
        line, code = one_line(exc)
        print(f"qpolicy {name}: {line}", file=sys.stderr)
        return code


def _is_user_error(exc: Exception) -> bool:
    from qpolicy_hw.errors import QpolicyError

    return isinstance(exc, QpolicyError)


def one_line(exc: Exception) -> tuple[str, int]:
    """The one line (and exit code) a user sees for an error: their input's fault (2) or ours (70)."""
    from qpolicy_hw.errors import QpolicyError

    if isinstance(exc, QpolicyError):
        return f"error: {exc}", EXIT_USAGE
    if isinstance(exc, OSError):        # an unwritable or unreadable path, a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        return f"error: {where}{exc.strerror or type(exc).__name__}", EXIT_USAGE
    if isinstance(exc, UnicodeDecodeError):   # a CSV or JSON input that is not text
        return f"error: an input file is not UTF-8 text ({exc.reason} at byte {exc.start})", EXIT_USAGE
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return (f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback, and please "
            "report it)", EXIT_INTERNAL)


if __name__ == "__main__":
    sys.exit(main())

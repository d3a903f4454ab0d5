"""Options several commands share (trust, the user's environment module) and tyro's errors in one line."""
from __future__ import annotations

import argparse
import contextlib
import io
import re

from qpolicy_hw.errors import QpolicyError

_BOX = re.compile(r"[│╭╮╰╯─]+")


def add_trust_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trusted-key", action="append", default=[], metavar="PUB.pem",
                   help="accept only bundles signed by this Ed25519 key (repeatable)")
    p.add_argument("--expected-digest", metavar="HEX", help="accept only the bundle with this digest")


def trust_from(a: argparse.Namespace):
    from qpolicy_hw.trust import TrustPolicy

    return TrustPolicy(tuple(a.trusted_key), a.expected_digest)


def add_env_module_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env-module", metavar="PACKAGE",
                   help="import this package first: it registers your own Gymnasium environment (never taken "
                        "from a bundle)")


def tyro_cli(cls, default, args: list[str], prog: str, description: str):
    """``tyro.cli`` with its boxed error message turned into the project's one line (help passes through)."""
    import tyro

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            return tyro.cli(cls, default=default, args=args, prog=prog, description=description)
    except SystemExit as exc:
        text = captured.getvalue()
        if not exc.code:           # --help: show it as tyro drew it
            print(text, end="")
            raise
        lines = [_BOX.sub(" ", line).strip() for line in text.splitlines()]
        lines = [line for line in lines if line]
        body = []
        for line in lines[1:] if len(lines) > 1 else lines:   # the first line is the box's title
            if line.startswith(("Argument helptext", "For full helptext")):
                break
            body.append(line)
        message = " ".join(body) or "invalid arguments"
        raise QpolicyError(f"{message} (see {prog} --help)") from None


def print_json(obj) -> None:
    """One JSON object on one line (numpy scalars as floats), for ``--json`` outputs."""
    import json

    print(json.dumps(obj, indent=None, sort_keys=False, default=float))

#!/usr/bin/env python3
"""Fingerprints of tiny SAC and DDPG runs (the determinism test's arguments, hidden width 16 and 256).

Long trainings are stopped and resumed with whatever code is on main, so a change to the training code
must leave these unchanged unless it means to change the numbers: run this before and after, compare.
Each fingerprint covers the final actor's parameters and buffers (names and bytes, in key order) and the
periodic evaluation returns.

    .venv/bin/python tools/tiny_run_hashes.py [--json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qpolicy_train.checkpoint import load_checkpoint  # noqa: E402
from qpolicy_train.training import train  # noqa: E402
from tests.test_determinism import tiny_args  # noqa: E402


def fingerprint(algo: str, width: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        args = tiny_args(Path(tmp), algo)
        args = replace(args, quant=replace(args.quant, width=width))
        summary = train(args)
        actor = load_checkpoint(Path(tmp) / "actor.pt")["actor"]
    h = hashlib.sha256()
    for name in sorted(actor):
        h.update(name.encode())
        h.update(actor[name].numpy().tobytes())
    h.update(json.dumps([row["eval_mean"] for row in summary["history"]]).encode())
    return h.hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    hashes = {f"{algo}-w{width}": fingerprint(algo, width) for algo in ("sac", "ddpg") for width in (16, 256)}
    print(json.dumps(hashes, indent=2) if a.json else "\n".join(f"{k} {v}" for k, v in hashes.items()))


if __name__ == "__main__":
    main()

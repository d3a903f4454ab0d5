"""``qpolicy ship``: a training run packaged as a shipped policy, without ever losing a user's files.

Every input is checked before anything is written: the run, the episode count, the key, and the target
folder, which must be empty, absent, or a previous ship (a bundle, its ``evaluation.json`` and training log,
nothing else) of the same kind, and never the run itself or a folder inside it. The new ship is built in a
fresh staging folder beside the target and moved into place when complete; the previous ship is removed
only after that, and nothing else is ever deleted.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from qpolicy_hw.bundle import KNOWN_FILES, load_bundle, record_evaluation
from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.trust import SIGNATURE_FILE, load_private_key, sign_bundle

SHIP_FILES = {"bundle.json", "evaluation.json", "training_log.csv", SIGNATURE_FILE,
              *(name.split("/")[0] for name in KNOWN_FILES)}
"""What a previous ship may hold (top-level names); anything else in ``--out`` makes ``ship`` refuse."""


def _run_folder(run: Path) -> Path:
    if run.is_dir():
        if not (run / "actor.pt").is_file() and not (run / "checkpoint.pt").is_file():
            raise QpolicyError(f"{run}: not a training run (no actor.pt or checkpoint.pt)")
        return run
    if run.is_file():
        return run.parent
    raise QpolicyError(f"no training run at {run}")


def check_ship_target(out: Path, run_folder: Path, inside_ok: bool = False) -> str | None:
    """Refuse an ``--out`` that ship could damage; returns the kind of the previous ship there, if any.
    ``inside_ok``: a new folder inside the run is fine (``export RUN/checkpoint.pt --out RUN/bundle``)."""
    out_r, run_r = out.resolve(), run_folder.resolve()
    if out_r == run_r or (out_r.is_relative_to(run_r) and not inside_ok):
        raise QpolicyError(f"--out {out} is the training run or inside it; ship to a folder of its own")
    if run_r.is_relative_to(out_r):
        raise QpolicyError(f"--out {out} holds the training run {run_folder}; ship to a folder of its own")
    if not out.exists():
        return None
    if not out.is_dir():
        raise QpolicyError(f"--out {out} exists and is not a folder")
    names = {p.name for p in out.iterdir()}
    if not names:
        return None
    foreign = sorted(names - SHIP_FILES)
    if foreign or "bundle.json" not in names:
        what = f"holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}" if foreign else "has no bundle.json"
        raise QpolicyError(f"--out {out} {what}: it is not a previous ship, and ship never deletes other files; "
                           "choose an empty or new folder")
    try:
        kind = json.loads((out / "bundle.json").read_text())["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        raise QpolicyError(f"--out {out}: its bundle.json is unreadable; move the folder away first") from None
    return kind


def export_safely(checkpoint: str | Path, out: str | Path, evaluation: dict | None = None,
                  env_module: str | None = None) -> Path:
    """``qpolicy export``: the bundle built in a staging folder beside ``out`` and moved into place; ``out``
    must be new, empty or a previous bundle or ship, and never the run or inside it."""
    from qpolicy_train.export import export_checkpoint

    checkpoint, out = Path(checkpoint), Path(out)
    run_folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    if not checkpoint.exists():
        raise QpolicyError(f"no checkpoint at {checkpoint}")
    check_ship_target(out, run_folder, inside_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        export_checkpoint(str(checkpoint), staging / "bundle", evaluation, env_module=env_module)
        if out.exists():
            os.replace(out, staging / "previous")
        os.replace(staging / "bundle", out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def ship(run: str | Path, out: str | Path, episodes: int = 100, seed: int = 0,
         signing_key: str | Path | None = None, env_module: str | None = None) -> dict:
    """Export, evaluate (``episodes`` deterministic episodes from ``seed``), optionally sign, and move the
    result into ``out``; returns the evaluation."""
    from qpolicy_sim.evaluation import evaluate_bundle
    from qpolicy_train.export import export_checkpoint

    run, out = Path(run), Path(out)
    if episodes <= 0:
        raise QpolicyError(f"--episodes {episodes}: must be positive")
    run_folder = _run_folder(run)
    if signing_key is not None:
        load_private_key(signing_key)          # a bad key is refused before an hour of evaluation
    previous_kind = check_ship_target(out, run_folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.shipping-", dir=out.parent))   # ours alone
    try:
        export_checkpoint(str(run), staging / "bundle", env_module=env_module)
        bundle_dir = staging / "bundle"
        kind = json.loads((bundle_dir / "bundle.json").read_text())["kind"]
        if previous_kind is not None and previous_kind != kind:
            raise QpolicyError(f"--out {out} holds a {previous_kind} bundle and this run gives a {kind} one; "
                               "ship it to another folder")
        backend = "int" if kind == "integer" else "float"
        evaluation = evaluate_bundle(str(bundle_dir), episodes, backend, 0.0, seed, env_module=env_module)
        evaluation["bundle"] = str(out)
        record_evaluation(bundle_dir, {k: v for k, v in evaluation.items() if k != "returns"})
        (bundle_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
        log = run_folder / "progress.csv"
        if log.exists():
            shutil.copy(log, bundle_dir / "training_log.csv")
        if signing_key is not None:
            sign_bundle(bundle_dir, signing_key, load_bundle(bundle_dir).digest)
        old = staging / "previous"
        if out.exists():
            os.replace(out, old)               # checked above: empty or a previous ship
        os.replace(bundle_dir, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**evaluation, "backend": backend}

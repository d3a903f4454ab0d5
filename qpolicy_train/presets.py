"""Training presets: YAML files of :class:`~qpolicy_train.args.Args` fields under ``config/train``."""
from __future__ import annotations

from pathlib import Path

import yaml

from qpolicy_train.args import Args, TrainError

PRESET_DIR = Path(__file__).resolve().parent.parent / "config" / "train"


def load_preset(path_or_name: str, **overrides) -> Args:
    """Args from a preset file (or a name under config/train), then ``overrides``; unknown keys are refused."""
    path = Path(path_or_name)
    if not path.exists():
        path = PRESET_DIR / f"{path_or_name}.yaml"
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise TrainError(f"no preset {path_or_name!r}; available: {names}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise TrainError(f"{path}: a preset is a mapping of training arguments")
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Args.from_dict(values)
    except TrainError as exc:
        raise TrainError(f"{path}: {exc}") from None

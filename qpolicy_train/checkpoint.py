"""Reading training checkpoints without running code from them.

``torch.load(weights_only=True)`` rebuilds tensors, numbers, strings and containers only. Checkpoints
also hold numeric numpy arrays (the replay buffer, the observation normalizer); the few numpy globals
that rebuild *numeric* arrays are allowed, nothing else, and an array of Python objects is refused
after loading. A crafted pickle that would call anything else fails with a one-line refusal.
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qpolicy_hw.errors import QpolicyError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

_NUMERIC_DTYPES = [getattr(np.dtypes, n) for n in (
    "BoolDType", "Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType", "Int32DType",
    "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType")]
SAFE_GLOBALS = [np.ndarray, np.dtype, _reconstruct, *_NUMERIC_DTYPES]


class CheckpointError(QpolicyError, ValueError):
    """A checkpoint that cannot be read safely; the message says why."""


def _refuse_objects(value: Any, where: str) -> None:
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise CheckpointError(f"{where}: an array of Python objects; only numeric arrays are read")
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_objects(v, f"{where}/{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _refuse_objects(v, f"{where}[{i}]")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, read with ``weights_only=True``; anything else is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # torch warns about odd pickle protocols before it refuses them
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)|but got (<[^>]+>)", str(exc))
        if not found:
            raise CheckpointError(f"corrupt or foreign checkpoint {path}: not a torch checkpoint") from None
        what = next(g for g in found.groups() if g)
        raise CheckpointError(f"refused {path}: loading it would call {what}; only tensors, numbers, strings and "
                              "numeric arrays are read from checkpoints") from None
    except Exception as exc:  # truncated, not a torch file, a directory
        raise CheckpointError(f"corrupt or foreign checkpoint {path}: {type(exc).__name__}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: a checkpoint is a mapping, this is a {type(state).__name__}")
    _refuse_objects(state, str(path))
    return state

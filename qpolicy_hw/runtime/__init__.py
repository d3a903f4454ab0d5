"""Runtime backends: every one serves the same integer function (``float`` serves the float reference).

``make_policy(bundle, backend)`` returns an object with ``act(obs) -> np.ndarray`` and, for the
integer backends, ``codes(q_in) -> q_out``. Backends import their heavy dependencies lazily, so
``int`` needs numpy only.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from qpolicy_hw.bundle import Bundle, load_bundle
from qpolicy_hw.errors import BackendUnavailable, QpolicyError

BACKENDS = ("auto", "int", "float", "rtl", "pynq")
FLOAT_REFERENCE = "qpolicy_train.float_reference"
"""Where the float reference lives: with training (it needs torch, Brevitas and the actor's definition).
It is imported by name only when the ``float`` backend or a float rung is asked for, so nothing here
depends on training code, and a board without torch gets a clear refusal instead."""


def float_reference() -> ModuleType:
    """The training side's float reference module, or :class:`BackendUnavailable` where it is not installed."""
    try:
        return importlib.import_module(FLOAT_REFERENCE)
    except ImportError as exc:
        raise BackendUnavailable(f"the float reference needs the training stack (torch, brevitas): {exc}") from None


def make_policy(bundle: Bundle | str | Path, backend: str = "int"):
    """A policy serving ``bundle`` through ``backend`` (see :data:`BACKENDS`)."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if backend not in BACKENDS:
        raise QpolicyError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "int" if bundle.is_integer else "float"
    if backend == "int":
        from qpolicy_hw.runtime.int_backend import IntegerPolicy
        return IntegerPolicy(bundle)
    if backend == "float":
        return float_reference().FloatPolicy(bundle)
    if backend == "rtl":
        from qpolicy_hw.runtime.rtl_backend import RTLPolicy
        return RTLPolicy(bundle)
    from qpolicy_hw.runtime.pynq_backend import PynqPolicy
    return PynqPolicy(bundle)

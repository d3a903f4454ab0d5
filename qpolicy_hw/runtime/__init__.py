"""Runtime backends: every one serves the same integer function (``float`` serves the float reference).

``make_policy(bundle, backend)`` returns an object with ``act(obs) -> np.ndarray`` and, for the
integer backends, ``codes(q_in) -> q_out``. Backends import their heavy dependencies lazily, so
``int`` needs numpy only.
"""
from __future__ import annotations

from pathlib import Path

from qpolicy_hw.bundle import Bundle, load_bundle
from qpolicy_hw.errors import QpolicyError

BACKENDS = ("auto", "int", "float", "rtl", "pynq")


def make_policy(bundle: Bundle | str | Path, backend: str = "int"):
    """A policy serving ``bundle`` through ``backend`` (see :data:`BACKENDS`)."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if backend not in BACKENDS:
        raise QpolicyError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "int" if bundle.is_integer else "float"
    if backend == "int":
        from qpolicy_hw.integer_reference import IntegerPolicy
        return IntegerPolicy(bundle)
    if backend == "float":
        from qpolicy_hw.runtime.float_backend import FloatPolicy
        return FloatPolicy(bundle)
    if backend == "rtl":
        from qpolicy_hw.runtime.rtl_backend import RTLPolicy
        return RTLPolicy(bundle)
    from qpolicy_hw.runtime.pynq_backend import PynqPolicy
    return PynqPolicy(bundle)

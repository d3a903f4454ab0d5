"""Runtime backends: every one serves the same integer function (``float`` serves the float reference).

``make_policy(bundle, backend)`` returns an object with ``act(obs) -> np.ndarray`` and, for the
integer backends, ``codes(q_in) -> q_out``. Backends import their heavy dependencies lazily, so
``int`` needs numpy only.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from types import ModuleType

from qpolicy_hw.bundle import Bundle, load_bundle
from qpolicy_hw.errors import BackendUnavailable, QpolicyError
from qpolicy_hw.trust import TrustPolicy

BACKENDS = ("auto", "int", "float", "rtl", "pynq", "remote")
"""``auto``: ``pynq`` where an overlay answers, else ``int`` (``float`` for a float bundle). ``remote``: a board
agent's core over the network (``address="HOST:PORT"``)."""
FLOAT_REFERENCE_GROUP = "qpolicy.float_reference"
"""The entry-point group through which the training side offers the float reference (it needs torch, Brevitas
and the actor's definition). Nothing here names training code: the package that provides the reference
registers it, through this group (setup.py) or by calling :func:`register_float_reference` when imported."""
_float_reference: ModuleType | None = None


def register_float_reference(module: ModuleType) -> None:
    """Offer the float reference (a module with ``FloatPolicy``, ``float_vs_int`` and ``qonnx_vs_float``)."""
    global _float_reference
    _float_reference = module


def float_reference() -> ModuleType:
    """The registered float reference module, or :class:`BackendUnavailable` where none is installed."""
    if _float_reference is None:
        for entry in importlib.metadata.entry_points(group=FLOAT_REFERENCE_GROUP):
            try:
                register_float_reference(entry.load())
            except ImportError as exc:
                raise BackendUnavailable(f"the float reference needs the training stack (torch, brevitas): "
                                         f"{exc}") from None
    if _float_reference is None:
        raise BackendUnavailable("no float reference is installed (it comes with the training stack: torch, "
                                 "brevitas)")
    return _float_reference


def make_policy(bundle: Bundle | str | Path, backend: str = "int", address: str | None = None,
                timeout_s: float | None = None, trust: TrustPolicy | None = None, auth_key: bytes | None = None):
    """A policy serving ``bundle`` through ``backend`` (see :data:`BACKENDS`); ``address`` and ``timeout_s``
    are the ``remote`` backend's agent and answer deadline, ``auth_key`` the agent's shared key. With an active ``trust`` policy, a bundle it does
    not accept is refused before any backend is built (nothing compiled, nothing served)."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, trust=trust)
    elif trust is not None and trust.active:
        trust.check(bundle.path, bundle.digest)
    if backend not in BACKENDS:
        raise QpolicyError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        # the FPGA where an overlay answers, else the bit-exact int fallback (float for a float bundle);
        # the policy's fallback_reason says why it is not on the FPGA
        if not bundle.is_integer:
            backend = "float"
        else:
            from qpolicy_hw.runtime.pynq_backend import PynqPolicy

            try:
                return PynqPolicy(bundle)
            except QpolicyError as exc:
                from qpolicy_hw.runtime.int_backend import IntegerPolicy

                policy = IntegerPolicy(bundle, compiled=True)
                policy.fallback_reason = str(exc)
                return policy
    if backend == "int":
        from qpolicy_hw.runtime.int_backend import IntegerPolicy
        return IntegerPolicy(bundle, compiled=True)
    if backend == "float":
        return float_reference().FloatPolicy(bundle)
    if backend == "rtl":
        from qpolicy_hw.runtime.rtl_backend import RTLPolicy
        return RTLPolicy(bundle)
    if backend == "remote":
        from qpolicy_hw.runtime.remote_backend import DEFAULT_TIMEOUT_S, RemotePolicy

        if not address:
            raise QpolicyError("the remote backend needs the agent's address (HOST:PORT)")
        return RemotePolicy(bundle, address, timeout_s or DEFAULT_TIMEOUT_S, auth_key=auth_key)
    from qpolicy_hw.runtime.pynq_backend import PynqPolicy
    return PynqPolicy(bundle)

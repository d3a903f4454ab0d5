"""The ``int`` backend's compiled ``act()``: the bundle's C library (:mod:`qpolicy_hw.host_c`) through ctypes.

A numpy ``act()`` costs about 15 us, nearly all of it numpy's per-call overhead (a dozen small array
operations), not arithmetic: the Hopper core is 480 multiply-adds. The same contract in C, one call,
takes a few microseconds. It is used only where it is proven equal: the library is generated from the
bundle, compiled with IEEE flags (:mod:`qpolicy_hw.cc`), and must reproduce the numpy reference's actions on
the bundle's golden observations and on random raw ones before it serves; otherwise, or without a C
compiler, or with ``QPOLICY_NO_COMPILED_ACT=1``, the backend stays on numpy (the same numbers) and says why.
numpy and the standard library only, so it also runs on a board that has a compiler.
"""
from __future__ import annotations

import ctypes
import os
import subprocess

import numpy as np

from qpolicy_hw.bundle import Bundle
from qpolicy_hw.cc import PORTABLE_CFLAGS, shared_library
from qpolicy_hw.host_c import host_library, single_unit

DISABLE_ENV = "QPOLICY_NO_COMPILED_ACT"
SELF_TEST_RANDOM = 4096
"""Random raw observations (besides the golden ones) the library must answer as numpy before it serves."""


class CompiledAct:
    """``act(obs)`` in one C call; ``None`` from :meth:`act` for an observation it does not take (wrong shape,
    NaN/Inf, not numeric), which the caller then checks the slow way to say why. One instance serves one
    thread (it reuses its buffers)."""

    def __init__(self, bundle: Bundle):
        source = single_unit(host_library(bundle, latency=0))
        try:
            library = shared_library(source, "act", "act")
        except subprocess.CalledProcessError:      # e.g. a compiler without -march=native
            library = shared_library(source, "act", "act", PORTABLE_CFLAGS)
        self._lib = ctypes.CDLL(str(library))
        self._fn = self._lib.qpolicy_act
        self._fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._fn.restype = ctypes.c_int
        self.obs_dim, self.act_dim = bundle.obs_dim, bundle.act_dim
        self._obs = np.zeros(bundle.obs_dim)
        self._action = np.zeros(bundle.act_dim)
        self._obs_ptr, self._action_ptr = self._obs.ctypes.data, self._action.ctypes.data

    def act(self, obs) -> np.ndarray | None:
        try:
            if type(obs) is not np.ndarray:
                obs = np.asarray(obs, dtype=np.float64)
            if obs.shape != (self.obs_dim,):
                return None
            self._obs[...] = obs            # one copy into the buffer the library reads
        except (TypeError, ValueError):
            return None
        if self._fn(self._obs_ptr, self._action_ptr) != 0:
            return None
        return self._action.copy()


def _self_test_observations(bundle: Bundle, n: int, seed: int = 0) -> np.ndarray:
    raw = bundle.random_observations(n, seed, spreads=(0.1, 1.0, 3.0, 30.0))
    return np.vstack([np.load(bundle.path / "golden" / "obs.npy"), raw])


def compiled_act(bundle: Bundle, reference) -> tuple[CompiledAct | None, str]:
    """The compiled ``act`` for ``bundle`` after it reproduced ``reference`` (the numpy ``act``), or ``None``;
    and a few words saying which it is and why."""
    if os.environ.get(DISABLE_ENV):
        return None, f"numpy (the compiled act is disabled by {DISABLE_ENV})"
    try:
        fast = CompiledAct(bundle)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = (getattr(exc, "stderr", None) or str(exc)).strip().splitlines()
        return None, f"numpy (no compiled act: {detail[0] if detail else type(exc).__name__})"
    obs = _self_test_observations(bundle, SELF_TEST_RANDOM)
    for o in obs:
        got = fast.act(o)
        if got is None or not np.array_equal(got, reference(o)):
            return None, "numpy (the compiled act disagreed with the reference on its self-test; not used)"
    return fast, f"compiled C (equal to numpy on {len(obs)} observations)"

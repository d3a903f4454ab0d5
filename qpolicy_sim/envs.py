"""Making a task's Gymnasium environment without letting a bundle choose code to import.

``gym.make("pkg.mod:Env-v0")`` imports ``pkg.mod``: a bundle (or a ROS parameter copied from one) must never
be able to do that. The id must match :data:`~qpolicy_hw.bundle_schema.ENV_ID` (no ``module:`` part) and
be registered when it is made; a user whose environment lives in a package of their own names that package
with ``--env-module`` (or the ``env_module`` parameter), and it is imported because they said so.
"""
from __future__ import annotations

import importlib
import re

import numpy as np

from qpolicy_hw.bundle_schema import check_env_id
from qpolicy_hw.errors import BundleError, QpolicyError

MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def import_env_module(module: str | None) -> str | None:
    """Import the user's module that registers their environments (``--env-module``); one-line errors."""
    if not module:
        return None
    if not MODULE_NAME.fullmatch(module):
        raise QpolicyError(f"--env-module {module[:60]!r}: not a dotted Python module name")
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or anything the user's module raises while it registers
        raise QpolicyError(f"--env-module {module}: cannot import it ({type(exc).__name__}: {str(exc)[:100]})") from None
    return module


def checked_env_id(env_id: str, env_module: str | None = None) -> str:
    """``env_id`` if it has the usual form and is registered (after importing ``env_module``)."""
    import gymnasium as gym

    try:
        check_env_id(env_id, "environment id")
    except BundleError as exc:
        raise QpolicyError(str(exc)) from None
    import_env_module(env_module)
    if env_id not in gym.registry:
        raise QpolicyError(f"Gymnasium has no environment {env_id!r}" + (
            f" (after importing {env_module})" if env_module else
            "; if a package of yours registers it, name it with --env-module PACKAGE"))
    return env_id


def make_env(env_id: str, env_module: str | None = None, **kwargs):
    """``gym.make(env_id, **kwargs)`` for a checked, registered id; errors in one line."""
    import gymnasium as gym

    checked_env_id(env_id, env_module)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise QpolicyError(f"cannot make {env_id!r}: {str(exc)[:160]}") from None
    except Exception as exc:   # the environment's own constructor (a user's package) failed
        raise QpolicyError(f"cannot make {env_id!r}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}") from None


def check_spaces(env, env_id: str) -> None:
    """What a quantized continuous controller needs: a flat Box of observations and a bounded flat Box of
    actions. Anything else is refused in one line that says why."""
    from gymnasium.spaces import Box

    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, Box) or len(obs.shape) != 1:
        raise QpolicyError(f"{env_id}: the observation space is {type(obs).__name__}{getattr(obs, 'shape', '')}; "
                           "qpolicy needs a flat Box (flatten it with gymnasium.wrappers.FlattenObservation)")
    if not isinstance(act, Box) or len(act.shape) != 1:
        raise QpolicyError(f"{env_id}: the action space is {type(act).__name__}; qpolicy learns continuous "
                           "controllers and needs a flat Box of actions")
    if not (np.all(np.isfinite(act.low)) and np.all(np.isfinite(act.high))):
        raise QpolicyError(f"{env_id}: the action space is unbounded; the actor squashes its output into the "
                           "action box, so give it finite bounds (gymnasium.wrappers.RescaleAction)")


def control_rate_hz(env) -> float | None:
    """The rate an environment is stepped at, one action per ``env.unwrapped.dt``; None where it has no dt."""
    dt = getattr(env.unwrapped, "dt", None)
    try:
        dt = float(dt)
    except (TypeError, ValueError):
        return None
    return 1.0 / dt if np.isfinite(dt) and dt > 0 else None

"""The closed loop's logic without ROS: message keys, input checks, latency and command bookkeeping.

The rclpy nodes only move messages; everything decided here is tested without a middleware.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qpolicy_hw.errors import ObservationError

KEY_PREFIX = "step:"


def step_key(episode: int, step: int) -> str:
    """Identifies one observation; the command for it echoes the key (``layout.dim[0].label``)."""
    return f"{KEY_PREFIX}{episode}:{step}"


def parse_key(key: str) -> tuple[int, int] | None:
    if not key.startswith(KEY_PREFIX):
        return None
    try:
        episode, step = key[len(KEY_PREFIX):].split(":")
        return int(episode), int(step)
    except ValueError:
        return None


@dataclass
class Counters:
    """Why inputs were rejected, by reason (reported in diagnostics)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def classify_rejection(exc: Exception) -> str:
    msg = str(exc)
    if "NaN or Inf" in msg:
        return "non_finite"
    if "shape" in msg or "entries" in msg:
        return "wrong_length"
    return "malformed"


def serve(policy, values, stamp_age_s: float | None, stale_after_s: float,
          rejected: Counters) -> tuple[np.ndarray, str | None]:
    """The action for one observation message, or the safe action and the reason it was refused."""
    if stamp_age_s is not None and stale_after_s > 0 and stamp_age_s > stale_after_s:
        rejected.add("stale")
        return policy.bundle.safe_action, f"stale observation ({stamp_age_s * 1e3:.1f} ms old)"
    try:
        return policy.act(values), None
    except ObservationError as exc:
        rejected.add(classify_rejection(exc))
        return policy.bundle.safe_action, str(exc)
    except Exception as exc:  # a bug must not stop the server: this one observation gets the safe action
        rejected.add("internal_error")
        return policy.bundle.safe_action, f"internal error {type(exc).__name__}: {str(exc)[:160]}"


def check_command(data, act_dim: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """A command the simulator may apply: right length, finite, clipped to the action box."""
    a = np.asarray(data, dtype=np.float64)
    if a.shape != (act_dim,):
        raise ObservationError(f"command has shape {a.shape}, expected ({act_dim},)")
    if not np.all(np.isfinite(a)):
        raise ObservationError("command contains NaN or Inf")
    return np.clip(a, low, high)

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


@dataclass
class RejectionWindow:
    """The server's side of degradation: per window of ``window`` observations, how many got the safe action
    instead of the policy's answer, by reason (read from the server's running :class:`Counters`); a window past
    ``warn_fraction`` is reported once."""

    window: int = 250
    warn_fraction: float = 0.05

    def __post_init__(self) -> None:
        self.seen, self.start = 0, {}

    def add(self, rejected: Counters) -> str | None:
        """Count one served observation; at a window's end, the report when too many were refused."""
        self.seen += 1
        if self.seen < self.window:
            return None
        counts = {k: v - self.start.get(k, 0) for k, v in rejected.counts.items() if v != self.start.get(k, 0)}
        seen, total = self.seen, sum(counts.values())
        self.seen, self.start = 0, dict(rejected.counts)
        if total <= self.warn_fraction * seen:
            return None
        by_reason = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        return f"{total} of the last {seen} observations got the safe action ({by_reason})"


def classify_rejection(exc: Exception) -> str:
    msg = str(exc)
    if msg.startswith("out of sync"):
        return "out_of_sync"
    if "message yet" in msg:
        return "missing_message"
    if "NaN or Inf" in msg:
        return "non_finite"
    if "shape" in msg or "entries" in msg:
        return "wrong_length"
    return "malformed"


def serve(policy, values, stamp_age_s: float | None, stale_after_s: float,
          rejected: Counters) -> tuple[np.ndarray, str | None]:
    """The action for one observation message, or the safe action and the reason it was refused. ``values``
    is the observation, or a function that builds it from the message (the standard interface's map): a
    message it refuses is counted and answered like any other bad input."""
    if stamp_age_s is not None and stale_after_s > 0 and stamp_age_s > stale_after_s:
        rejected.add("stale")
        return policy.bundle.safe_action, f"stale observation ({stamp_age_s * 1e3:.1f} ms old)"
    try:
        return policy.act(values() if callable(values) else values), None
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


SPLIT_ROWS = (
    ("host_in", "server", "check, normalize, quantize"),
    ("core", "server", "the backend's core: MMIO, the simulator or the network"),
    ("host_out", "server", "decode through the action table"),
    ("int_act", "server", "the int backend alone: all three in one call"),
    ("compute_latency", "server", "server total: the callback, receipt to publish"),
    ("transport_in", "server", "the observation's stamp to its receipt"),
)


def latency_split(report: dict) -> list[dict]:
    """Where an action's time goes, from one run: the server's phases and totals (its last diagnostics), the
    bridge's round trip, what is left of it for the command's way back and the executors (a difference of
    medians, not a per-sample figure), and the loop's jitter (realtime) or step interval (lockstep)."""
    diag = report.get("server_diagnostics") or {}

    def number(key: str) -> float | None:
        try:
            return float(diag[key]) if diag.get(key) not in (None, "", "None") else None
        except ValueError:
            return None

    rows = []
    for name, where, what in SPLIT_ROWS:
        p50, p99 = number(f"{name}_us_p50"), number(f"{name}_us_p99")
        if p50 is not None:
            rows.append({"phase": name, "measured_by": where, "what": what, "p50_us": p50, "p99_us": p99})
    rtt = report.get("latency_us") or {}
    rows.append({"phase": "round_trip", "measured_by": "bridge", "what": "observation published to its command",
                 "p50_us": rtt.get("p50"), "p99_us": rtt.get("p99")})
    server, inbound = number("compute_latency_us_p50"), number("transport_in_us_p50")
    if None not in (rtt.get("p50"), server, inbound):
        rows.append({"phase": "return_and_executors", "measured_by": "difference of medians",
                     "what": "round trip - transport in - server total", "p50_us": rtt["p50"] - inbound - server,
                     "p99_us": None})
    if report.get("mode") == "realtime":
        jitter = report.get("jitter_us") or {}
        rows.append({"phase": "loop_jitter", "measured_by": "bridge", "what": "|tick interval - control period|",
                     "p50_us": jitter.get("p50"), "p99_us": jitter.get("p99")})
    else:
        step = report.get("step_interval_us") or {}
        rows.append({"phase": "step_interval", "measured_by": "bridge", "what": "between lockstep steps",
                     "p50_us": step.get("p50"), "p99_us": step.get("p99")})
    return rows


def format_split(rows: list[dict]) -> str:
    def us(v) -> str:
        return "-" if v is None else f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"
    lines = [f"{'phase':22s} {'p50 us':>8} {'p99 us':>8}  measured by: what"]
    lines += [f"{r['phase']:22s} {us(r['p50_us']):>8} {us(r['p99_us']):>8}  {r['measured_by']}: {r['what']}"
              for r in rows]
    return "\n".join(lines)

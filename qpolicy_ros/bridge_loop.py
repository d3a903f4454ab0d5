"""The MuJoCo bridge's loop without ROS: which observation is pending, which command is applied, when to
give up waiting, and the run's statistics in bounded memory.

``lockstep``: step t waits for the answer to observation t (deterministic, for verification); a lost
observation is published again, and after ``lockstep_timeout_s`` the safe action is applied.
``realtime``: every control period applies the answer to the latest observation. Commands are keyed:
an answer to an older observation is *late*, a command with a key this bridge never sent is *foreign*;
both are counted and dropped. A period without the answer holds the previous command for up to
``command_timeout_s``, then the safe action.

The node (:mod:`qpolicy_ros.mujoco_bridge`) only moves messages and calls these methods with the time.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qpolicy_hw.errors import ObservationError, QpolicyError
from qpolicy_hw.latency import LatencyStats
from qpolicy_ros.loop_core import check_command, parse_key, step_key

MODES = ("lockstep", "realtime")
SENT_KEYS_KEPT = 256          # send times remembered for the round-trip latency
LATENCIES_KEPT = 10_000       # latency samples kept (a sliding window) for the percentiles and the report
SAFE_STEPS_KEPT = 1000        # indices of safe-action steps listed in the report (all are counted)
RETURNS_KEPT = 10_000         # episode returns listed in the report (the mean covers every episode)


RATE_RANGE_HZ = (1.0, 1000.0)
"""Control rates the bridge accepts: MuJoCo tasks run at 20-500 Hz; below 1 Hz a run looks hung, above 1 kHz the
round trip over DDS (about 1-2 ms here) can never answer in time and every step would be a safe action."""


@dataclass(frozen=True)
class Degradation:
    """What went wrong in one window of ``steps`` applied steps, and how bad it is (``warn`` or ``error``)."""

    level: str
    message: str
    counts: dict


@dataclass
class DegradationMonitor:
    """Counts, per window of ``window`` steps, the missing commands (no answer in time), the late ones, the
    periods that overran (a tick more than half a period late) and the longest run of held commands; a window
    past a threshold is reported, once per window."""

    window: int = 250
    missing_warn: float = 0.05        # fraction of the window's steps without their answer
    missing_error: float = 0.5
    overrun_warn: float = 0.1         # fraction of ticks more than 1.5 periods after the previous one
    held_warn: int = 5                # periods one command was held in a row

    def __post_init__(self) -> None:
        self.steps = self.missing = self.late = self.overruns = self.held_run = self.held_max = 0

    def step(self, missing: bool, held: bool, late: int, overran: bool) -> Degradation | None:
        self.steps += 1
        self.missing += missing
        self.late += late
        self.overruns += overran
        self.held_run = self.held_run + 1 if held else 0
        self.held_max = max(self.held_max, self.held_run)
        if self.steps < self.window:
            return None
        counts = {"steps": self.steps, "missing": self.missing, "late": self.late, "overruns": self.overruns,
                  "held_max": self.held_max}
        self.__post_init__()
        problems = []
        if counts["missing"] > self.missing_warn * counts["steps"]:
            problems.append(f"{counts['missing']} of {counts['steps']} steps had no command in time "
                            f"({counts['late']} came late)")
        if counts["overruns"] > self.overrun_warn * counts["steps"]:
            problems.append(f"the loop could not hold its rate: {counts['overruns']} of {counts['steps']} periods "
                            "overran by more than half a period")
        if counts["held_max"] > self.held_warn:
            problems.append(f"a command was held for {counts['held_max']} periods in a row")
        if not problems:
            return None
        level = "error" if counts["missing"] > self.missing_error * counts["steps"] else "warn"
        return Degradation(level, "; ".join(problems), counts)


@dataclass(frozen=True)
class Outgoing:
    """An observation for the node to publish under ``key``; ``repeat`` when it is sent again."""

    key: str
    observation: np.ndarray
    repeat: bool = False


class BridgeLoop:
    """One closed-loop run on a Gymnasium environment, driven by the node's callbacks."""

    def __init__(self, env, mode: str = "lockstep", episodes: int = 3, seed: int = 0, max_steps: int = 0,
                 command_timeout_s: float = 0.1, lockstep_timeout_s: float = 5.0,
                 republish_after_s: float = 0.5, record_actions: int = 10_000,
                 after_step: Callable[[int], None] | None = None, period_s: float | None = None):
        """``period_s``: the realtime control period, for the loop's jitter (each tick's interval minus it)."""
        if mode not in MODES:
            raise QpolicyError(f"mode={mode!r}: choose lockstep or realtime")
        for name, value in (("episodes", episodes), ("command_timeout_s", command_timeout_s),
                            ("lockstep_timeout_s", lockstep_timeout_s), ("republish_after_s", republish_after_s)):
            if not value > 0:
                raise QpolicyError(f"{name}={value!r} must be positive")
        if max_steps < 0 or record_actions < 0:
            raise QpolicyError("max_steps and record_actions must be >= 0")
        self.env, self.mode, self.episodes, self.seed, self.max_steps = env, mode, episodes, seed, max_steps
        self.command_timeout_s, self.lockstep_timeout_s = command_timeout_s, lockstep_timeout_s
        self.republish_after_s, self.record_actions = republish_after_s, record_actions
        self.after_step = after_step or (lambda steps: None)   # e.g. a video frame of the new state
        self.monitor = DegradationMonitor()
        self.degradation: Degradation | None = None   # the last window's report, for the node to warn once
        self._counted = (0, 0, 0)    # missing, held and late counts at the last step, for the monitor's deltas
        self.degraded_windows, self.last_degradation = 0, ""
        self.low, self.high = env.action_space.low, env.action_space.high
        self.safe_action = (self.low + self.high) / 2.0
        self.act_dim = self.low.shape[0]

        self.done = False
        self.obs: np.ndarray | None = None
        self.episode = self.step_in_episode = self.steps = 0
        self.episode_return = 0.0
        self.pending_key: str | None = None
        self.first_sent_at = self.last_sent_at = 0.0
        self.sent_at: OrderedDict[str, float] = OrderedDict()
        self.answer: np.ndarray | None = None      # realtime: the answer to the pending observation
        self.held: np.ndarray | None = None        # realtime: the last applied command and when it came
        self.held_at = 0.0
        self.latency = LatencyStats(window=LATENCIES_KEPT)
        self.period_s = period_s
        self.step_interval = LatencyStats(window=LATENCIES_KEPT)   # between applied steps (realtime: ticks)
        self.jitter = LatencyStats(window=LATENCIES_KEPT)          # |tick interval - period_s|, realtime only
        self.last_step_at: float | None = None
        self.late = self.foreign = self.missing = self.held_steps = self.rejected = self.republished = 0
        self.safe_count = 0
        self.safe_steps: list[int] = []
        self.returns: list[float] = []
        self.return_sum, self.episodes_done = 0.0, 0
        self.actions: list[list[float]] = []
        self.episode_finished: dict | None = None
        self._digest = hashlib.sha256()

    # --- the node's events ----------------------------------------------------------------
    def start(self, now: float) -> Outgoing:
        self.obs, _ = self.env.reset(seed=self.seed)
        self.after_step(self.steps)
        return self._send(now)

    def on_command(self, label: str, data, now: float) -> Outgoing | None:
        """A command message: applied (lockstep) or kept for the next period (realtime) only when it answers
        the pending observation. Returns the next observation to publish, if any."""
        if self.done or self.pending_key is None:
            return None
        try:
            action = check_command(data, self.act_dim, self.low, self.high)
        except ObservationError:
            self.rejected += 1
            raise
        sent = self.sent_at.pop(label, None)
        if sent is not None:
            self.latency.add(now - sent)
        if label != self.pending_key:
            key = parse_key(label)
            if key is not None and key < (self.episode, self.step_in_episode):
                self.late += 1     # one of ours, for an observation already answered or given up
            else:
                self.foreign += 1
            return None
        if self.mode == "lockstep":
            return self._apply(action, now)
        self.answer = action
        return None

    def realtime_tick(self, now: float) -> Outgoing | None:
        """One control period: apply the answer to the latest observation, else hold, else the safe action."""
        if self.done:
            return None
        if self.answer is not None:
            action, self.held, self.held_at = self.answer, self.answer, now
        else:
            self.missing += 1
            if self.held is not None and now - self.held_at <= self.command_timeout_s:
                self.held_steps += 1
                action = self.held
            else:
                action = self._safe()
        return self._apply(action, now)

    def lockstep_watchdog(self, now: float) -> Outgoing | None:
        """Publish a lost observation again, or give up on it after ``lockstep_timeout_s``."""
        if self.done or self.pending_key is None:
            return None
        if now - self.first_sent_at > self.lockstep_timeout_s:
            self.missing += 1
            self.sent_at.pop(self.pending_key, None)
            return self._apply(self._safe(), now)
        if now - self.last_sent_at > self.republish_after_s:
            self.republished += 1
            return self._send(now, repeat=True)
        return None

    # --- stepping ----------------------------------------------------------------------------
    def _safe(self) -> np.ndarray:
        self.safe_count += 1
        if len(self.safe_steps) < SAFE_STEPS_KEPT:
            self.safe_steps.append(self.steps)
        return self.safe_action.copy()

    def _send(self, now: float, repeat: bool = False) -> Outgoing:
        key = step_key(self.episode, self.step_in_episode)
        if not repeat:
            self.first_sent_at = now
            self.answer = None
        self.last_sent_at = now
        self.pending_key = key
        self.sent_at[key] = now
        self.sent_at.move_to_end(key)
        while len(self.sent_at) > SENT_KEYS_KEPT:
            self.sent_at.popitem(last=False)
        return Outgoing(key, np.asarray(self.obs, dtype=np.float64), repeat)

    def _apply(self, action: np.ndarray, now: float) -> Outgoing | None:
        overran = False
        if self.last_step_at is not None:
            self.step_interval.add(now - self.last_step_at)
            if self.mode == "realtime" and self.period_s:
                self.jitter.add(abs(now - self.last_step_at - self.period_s))
                overran = now - self.last_step_at > 1.5 * self.period_s
        missing, held, late = self._counted
        found = self.monitor.step(self.missing > missing, self.held_steps > held, self.late - late, overran)
        self._counted = (self.missing, self.held_steps, self.late)
        if found is not None:
            self.degradation = found
            self.degraded_windows += 1
            self.last_degradation = found.message
        self.last_step_at = now
        self.pending_key = None
        self.answer = None
        action = np.asarray(action, dtype=np.float64)
        self._digest.update(action.tobytes())
        if len(self.actions) < self.record_actions:
            self.actions.append(action.tolist())
        self.obs, reward, terminated, truncated, _ = self.env.step(action)
        self.episode_return += float(reward)
        self.step_in_episode += 1
        self.steps += 1
        self.after_step(self.steps)
        if self.max_steps and self.steps >= self.max_steps:
            self.done = True
            return None
        if terminated or truncated:
            self._end_episode()
            if self.done:
                return None
        return self._send(now)

    def _end_episode(self) -> None:
        self.episode_finished = {"episode": self.episode, "return": self.episode_return,
                                 "steps": self.step_in_episode, "late_commands": self.late,
                                 "missing_commands": self.missing}
        if len(self.returns) < RETURNS_KEPT:
            self.returns.append(self.episode_return)
        self.return_sum += self.episode_return
        self.episodes_done += 1
        self.episode += 1
        self.episode_return, self.step_in_episode = 0.0, 0
        if self.episode >= self.episodes:
            self.done = True
            return
        self.obs, _ = self.env.reset(seed=self.seed + self.episode)

    def pop_degradation(self) -> Degradation | None:
        """The last window's degradation report (once), for the node to warn about and publish."""
        found, self.degradation = self.degradation, None
        return found

    def pop_finished_episode(self) -> dict | None:
        """The summary of an episode that just ended (once), for the node to publish."""
        finished = self.episode_finished
        self.episode_finished = None
        return finished

    def report(self) -> dict:
        """The run's statistics; every list in it is bounded (the counts cover the whole run)."""
        return {"mode": self.mode, "seed": self.seed, "returns": self.returns, "episodes": self.episodes_done,
                "mean_return": self.return_sum / self.episodes_done if self.episodes_done else None,
                "latency_us": self.latency.percentiles_us(), "latency_samples_s": list(self.latency.values),
                "step_interval_us": self.step_interval.percentiles_us(), "jitter_us": self.jitter.percentiles_us(),
                "late_commands": self.late, "foreign_commands": self.foreign, "missing_commands": self.missing,
                "held_steps": self.held_steps, "rejected_commands": self.rejected,
                "republished_observations": self.republished, "steps": self.steps,
                "safe_action_count": self.safe_count, "safe_action_steps": self.safe_steps,
                "actions_sha256": self._digest.hexdigest(), "actions": self.actions,
                "actions_recorded": len(self.actions), "degraded_windows": self.degraded_windows,
                "degradation_window_steps": self.monitor.window, "last_degradation": self.last_degradation}

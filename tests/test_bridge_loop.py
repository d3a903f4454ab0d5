"""The bridge's loop logic without a middleware: keyed commands, timeouts, bounded statistics."""
from __future__ import annotations

import hashlib

import gymnasium as gym
import numpy as np
import pytest

from qpolicy_hw.errors import ObservationError, QpolicyError
from qpolicy_hw.runtime import make_policy
from qpolicy_ros.bridge_loop import LATENCIES_KEPT, SAFE_STEPS_KEPT, SENT_KEYS_KEPT, BridgeLoop
from qpolicy_ros.loop_core import format_split, latency_split, step_key
from qpolicy_sim.evaluation import rollout

PERIOD = 0.008


def _loop(**kw) -> BridgeLoop:
    return BridgeLoop(gym.make("Hopper-v5"), **kw)


def test_lockstep_driven_by_the_int_policy_equals_the_offline_rollout(bundle_factory):
    policy = make_policy(bundle_factory(), "int")
    loop = _loop(mode="lockstep", episodes=2, seed=5)
    out, t = loop.start(0.0), 0.0
    while out is not None:
        t += 1e-4
        out = loop.on_command(out.key, policy.act(out.observation).tolist(), t)
    offline = []
    returns = rollout(policy, "Hopper-v5", 2, seed=5, on_step=lambda o, x, a: offline.append(a.tolist()))
    report = loop.report()
    assert loop.done and report["returns"] == returns and report["actions"] == offline
    assert report["actions_sha256"] == hashlib.sha256(np.asarray(offline, dtype=np.float64).tobytes()).hexdigest()
    assert report["missing_commands"] == report["foreign_commands"] == report["late_commands"] == 0
    assert report["latency_us"]["n"] == len(offline)


def test_realtime_applies_only_the_answer_to_its_latest_observation():
    loop = _loop(mode="realtime", episodes=1, seed=0)
    first = loop.start(0.0)
    mine = [0.3, -0.2, 0.1]
    # a foreign node's command (no key, a made-up key, a key from the future) and then ours
    assert loop.on_command("", [1.0, 1.0, 1.0], 0.001) is None
    assert loop.on_command("teleop", [1.0, 1.0, 1.0], 0.001) is None
    assert loop.on_command(step_key(7, 99), [1.0, 1.0, 1.0], 0.001) is None
    assert loop.on_command(first.key, mine, 0.002) is None
    assert loop.on_command(step_key(3, 0), [-1.0, -1.0, -1.0], 0.003) is None   # after ours: still foreign
    second = loop.realtime_tick(PERIOD)
    assert loop.actions == [mine] and second.key != first.key
    # the answer to the first observation arrives again, late: dropped
    assert loop.on_command(first.key, [1.0, 1.0, 1.0], PERIOD + 0.001) is None
    loop.realtime_tick(2 * PERIOD)
    report = loop.report()
    assert report["foreign_commands"] == 4 and report["late_commands"] == 1
    assert report["missing_commands"] == 1 and report["held_steps"] == 1   # the second period held ours
    assert loop.actions == [mine, mine]


def test_realtime_holds_the_last_command_then_the_safe_action():
    loop = _loop(mode="realtime", episodes=1, command_timeout_s=0.02)
    out = loop.start(0.0)
    loop.on_command(out.key, [0.5, 0.5, 0.5], 0.001)
    t = PERIOD
    loop.realtime_tick(t)
    for _ in range(5):     # the server goes silent
        t += PERIOD
        loop.realtime_tick(t)
    held = [a for a in loop.actions if a == [0.5, 0.5, 0.5]]
    assert len(held) == 3                    # its own period, then 2 more within 20 ms
    assert loop.actions[3:] == [[0.0, 0.0, 0.0]] * 3   # Hopper's safe action: the middle of the box
    assert loop.report()["safe_action_steps"] == [3, 4, 5] and loop.report()["missing_commands"] == 5


def test_lockstep_republishes_a_lost_observation_then_gives_up_with_the_safe_action():
    loop = _loop(mode="lockstep", episodes=1, lockstep_timeout_s=2.0, republish_after_s=0.5)
    first = loop.start(0.0)
    assert loop.lockstep_watchdog(0.3) is None
    again = loop.lockstep_watchdog(0.6)
    assert again.repeat and again.key == first.key and np.array_equal(again.observation, first.observation)
    nxt = loop.lockstep_watchdog(2.1)
    assert not nxt.repeat and nxt.key != first.key
    assert loop.actions == [[0.0, 0.0, 0.0]] and loop.report()["missing_commands"] == 1
    assert loop.report()["republished_observations"] == 1


def test_bad_commands_are_counted_and_refused():
    loop = _loop(mode="lockstep", episodes=1)
    out = loop.start(0.0)
    for bad in ([0.1, 0.2], [float("nan"), 0.0, 0.0], ["x", 0.0, 0.0]):
        with pytest.raises((ObservationError, ValueError)):
            loop.on_command(out.key, bad, 0.001)
    assert loop.report()["rejected_commands"] >= 2 and loop.steps == 0


def test_a_long_run_keeps_bounded_statistics():
    loop = _loop(mode="realtime", episodes=10**6, max_steps=6000, record_actions=100, command_timeout_s=0.001)
    t = 0.0
    out = loop.start(t)
    for i in range(6000):
        if i % 2 == 0 and out is not None:      # every other period unanswered: safe actions pile up
            loop.on_command(out.key, [0.1, 0.1, 0.1], t + 1e-4)
        t += PERIOD
        out = loop.realtime_tick(t)
    report = loop.report()
    assert loop.done and report["steps"] == 6000 and report["actions_recorded"] == 100
    assert len(loop.sent_at) <= SENT_KEYS_KEPT and len(report["latency_samples_s"]) <= LATENCIES_KEPT
    assert report["safe_action_count"] == 3000 and len(report["safe_action_steps"]) == SAFE_STEPS_KEPT
    assert report["episodes"] == len(report["returns"]) > 0


@pytest.mark.parametrize("kw, message", [({"mode": "fast"}, "mode='fast'"), ({"episodes": 0}, "episodes=0"),
                                         ({"command_timeout_s": 0.0}, "command_timeout_s"),
                                         ({"max_steps": -1}, "max_steps")])
def test_bad_loop_parameters_are_refused(kw, message):
    with pytest.raises(QpolicyError, match=message):
        _loop(**kw)


def test_realtime_jitter_and_the_latency_split():
    """Every other tick 1 ms late: the jitter counts it; the split puts the server's phases, its total,
    the inbound transport and the round trip side by side, and what is left as a difference of medians."""
    loop = _loop(mode="realtime", episodes=1, period_s=PERIOD, max_steps=40)
    out, t = loop.start(0.0), 0.0
    for i in range(40):
        loop.on_command(out.key, [0.0, 0.0, 0.0], t + 0.0004)
        t += PERIOD + (0.001 if i % 2 else 0.0)
        out = loop.realtime_tick(t) or out
    report = loop.report()
    # 39 intervals: 20 one period + 1 ms (jitter 1 ms), 19 exactly one period (jitter 0)
    assert report["jitter_us"]["n"] == 39 and report["jitter_us"]["max"] == pytest.approx(1000.0, abs=0.01)
    assert report["jitter_us"]["p50"] == pytest.approx(1000.0, abs=0.01)
    assert report["step_interval_us"]["p50"] == pytest.approx(9000.0, abs=0.01)
    report["server_diagnostics"] = {"host_in_us_p50": "5.0", "host_in_us_p99": "9.0", "compute_latency_us_p50": "60",
                                    "compute_latency_us_p99": "90", "transport_in_us_p50": "150",
                                    "transport_in_us_p99": "400", "core_us_p50": "None"}
    rows = {r["phase"]: r for r in latency_split(report)}
    assert list(rows) == ["host_in", "compute_latency", "transport_in", "round_trip", "return_and_executors",
                          "loop_jitter"]
    assert rows["round_trip"]["p50_us"] == pytest.approx(400.0)
    assert rows["return_and_executors"]["p50_us"] == pytest.approx(400.0 - 150.0 - 60.0)
    assert "loop_jitter" in format_split(list(rows.values()))


def test_a_stalled_server_is_reported_as_degradation_once_per_window():
    """Realtime ticks with no commands (a frozen server): the window's report names the counts, at ERROR when
    most steps had no answer; a healthy window reports nothing."""
    loop = _loop(mode="realtime", episodes=100, seed=0, period_s=PERIOD)
    window = loop.monitor.window
    out, t = loop.start(0.0), 0.0
    for _ in range(window):                       # healthy: every observation answered within its period
        loop.on_command(out.key, [0.0, 0.0, 0.0], t + 0.001)
        t += PERIOD
        out = loop.realtime_tick(t)
    assert loop.pop_degradation() is None
    for _ in range(window):                       # the server stalls: nothing comes back
        t += PERIOD
        loop.realtime_tick(t)
    found = loop.pop_degradation()
    assert found is not None and found.level == "error"
    assert found.counts["missing"] == window and found.counts["held_max"] > 5
    assert f"{window} of {window} steps had no command in time" in found.message
    assert "held for" in found.message
    assert loop.pop_degradation() is None         # once
    assert loop.report()["degraded_windows"] == 1


def test_ticks_that_overrun_their_period_are_reported():
    loop = _loop(mode="realtime", episodes=100, seed=0, period_s=PERIOD)
    out, t = loop.start(0.0), 0.0
    for _ in range(loop.monitor.window):          # answered, but every tick comes two periods late
        loop.on_command(out.key, [0.0, 0.0, 0.0], t + 0.001)
        t += 2 * PERIOD
        out = loop.realtime_tick(t)
    found = loop.pop_degradation()
    assert found is not None and found.level == "warn" and "could not hold its rate" in found.message


@pytest.mark.parametrize("rate", [0.001, 100000.0])
def test_control_rates_outside_the_sane_range_are_refused(rate):
    from qpolicy_ros.task import resolve_task

    with pytest.raises(QpolicyError, match="choose a control rate from 1 to 1000 Hz"):
        resolve_task("policies/hopper/selected", rate_hz=rate)


def test_the_server_warns_when_many_observations_in_a_window_get_the_safe_action():
    from qpolicy_ros.loop_core import Counters, RejectionWindow

    window, rejected = RejectionWindow(window=100), Counters()
    assert all(window.add(rejected) is None for _ in range(100))        # a healthy window: nothing

    def serve_one(k):
        reason = "stale" if k % 5 == 0 else ("non_finite" if k % 7 == 0 else None)
        if reason:
            rejected.add(reason)
        return window.add(rejected)

    found = [serve_one(k) for k in range(100)]
    assert found[:-1] == [None] * 99
    assert found[-1] == "32 of the last 100 observations got the safe action (non_finite 12, stale 20)"

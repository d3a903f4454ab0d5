"""FPGA faults while serving, without a middleware: each is answered from the int reference in the same call."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_hw.errors import BackendUnavailable, ObservationError
from qpolicy_hw.runtime.guard import GuardedPolicy
from qpolicy_hw.runtime.int_backend import IntegerPolicy
from qpolicy_hw.runtime.pynq_backend import PynqPolicy
from tests.fault_mmio import FaultyMMIO, SoftCoreMMIO


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _observations(bundle, n=40, seed=0):
    rng = np.random.default_rng(seed)
    norm = bundle.normalization
    return np.asarray(norm["mean"]) + rng.standard_normal((n, bundle.obs_dim)) * np.sqrt(norm["var"]) * 2


@pytest.mark.parametrize("fault", ["hang", "garbage", "oserror", "wrong"])
def test_a_fault_is_answered_from_int_in_the_same_call(bundle_factory, tmp_path, fault):
    bundle = load_bundle(bundle_factory())
    reference = IntegerPolicy(bundle)
    primary = PynqPolicy(bundle, mmio=FaultyMMIO(bundle, {5: fault}))
    primary.driver.done_timeout_s = 0.002
    events = []
    guard = GuardedPolicy(primary, shadow_every=1, retry_after_s=1.0, max_retries=1,
                          mismatch_log=tmp_path / "mismatches.jsonl", notify=lambda lvl, m: events.append((lvl, m)),
                          clock=FakeClock())
    obs = _observations(bundle)
    t0 = time.perf_counter()
    actions = [guard.act(o) for o in obs[:10]]
    assert time.perf_counter() - t0 < 1.0                  # the hung core cost one 2 ms timeout, not a hang
    assert all(np.array_equal(a, reference.act(o)) for a, o in zip(actions, obs[:10], strict=True))
    assert guard.faults == 1 and guard.degraded and guard.backend == "int"
    assert events[0][0] == "error" and "retried in 1 s" in events[0][1]
    if fault == "wrong":     # only the shadow check can see a wrong code in range; its inputs are logged
        assert guard.mismatches == 1
        logged = [json.loads(line) for line in (tmp_path / "mismatches.jsonl").read_text().splitlines()]
        assert logged[0]["q_in"] == reference.quantize(obs[4]).tolist() and logged[0]["bundle"] == bundle.digest
    else:
        assert fault_words(fault) in guard.last_fault


def fault_words(fault: str) -> str:
    return {"hang": "did not signal DONE", "garbage": "outside", "oserror": "OSError"}[fault]


def test_a_slow_bus_is_not_a_fault_while_the_core_has_cycles_left(bundle_factory):
    """Five 3 ms reads to DONE pass a 2 ms bound: the core had fewer cycles than its LATENCY, so it is not hung."""
    bundle = load_bundle(bundle_factory())
    primary = PynqPolicy(bundle, mmio=FaultyMMIO(bundle, {1: "slow"}))
    primary.driver.done_timeout_s = 0.002
    q = IntegerPolicy(bundle).quantize(_observations(bundle, n=1)[0])
    assert np.array_equal(primary.codes(q), IntegerPolicy(bundle).codes(q))


def test_the_fpga_is_retried_by_the_stated_policy(bundle_factory):
    bundle = load_bundle(bundle_factory())
    clock = FakeClock()
    mmio = FaultyMMIO(bundle, {2: "garbage", 4: "garbage", 6: "garbage"})
    guard = GuardedPolicy(PynqPolicy(bundle, mmio=mmio), retry_after_s=5.0, max_retries=2, clock=clock)
    obs = _observations(bundle)
    guard.act(obs[0])
    guard.act(obs[1])                        # inference 2: fault -> int
    assert guard.backend == "int"
    guard.act(obs[2])                        # still int: 5 s have not passed
    assert mmio.inferences == 2
    clock.now = 5.0
    guard.act(obs[3])                        # retry 1: inference 3 fine
    assert guard.backend == "pynq" and guard.retries == 1
    guard.act(obs[4])                        # inference 4: fault
    clock.now = 10.0
    guard.act(obs[5])                        # retry 2: inference 5 fine
    guard.act(obs[6])                        # inference 6: fault, and no retries left
    clock.now = 100.0
    guard.act(obs[7])
    assert guard.backend == "int" and guard.faults == 3 and guard.retries == 2


def test_bad_input_is_still_bad_input_not_a_fault(bundle_factory):
    bundle = load_bundle(bundle_factory())
    guard = GuardedPolicy(PynqPolicy(bundle, mmio=SoftCoreMMIO(bundle)))
    with pytest.raises(ObservationError):
        guard.act([float("nan")] * bundle.obs_dim)
    assert guard.faults == 0 and guard.backend == "pynq"
    o = _observations(bundle)[0]
    assert np.array_equal(guard.act(o), IntegerPolicy(bundle).act(o)) and guard.shadow_checks == 1


def test_a_stale_overlay_is_refused(bundle_factory):
    first, other = load_bundle(bundle_factory()), load_bundle(bundle_factory(seed=1, name="other"))
    with pytest.raises(BackendUnavailable, match="built for bundle .*rebuild the overlay"):
        PynqPolicy(other, mmio=SoftCoreMMIO(first))


def test_an_out_of_range_code_never_indexes_the_table_from_its_end(bundle_factory):
    from qpolicy_hw.errors import CoreFault

    reference = IntegerPolicy(load_bundle(bundle_factory()))
    with pytest.raises(CoreFault):
        reference.decode(np.array([-129, 0, 0]))


def test_the_board_rung_says_skip_without_an_fpga(bundle_factory):
    from qpolicy_hw.verify import verify

    result = verify(bundle_factory(), ["pynq_vs_int"])
    check = result["checks"]["pynq_vs_int"]
    assert check["status"] == "skip" and "no FPGA overlay" in check["reason"] and not result["pass"]


@pytest.mark.board
def test_the_fpga_on_this_board_matches_int():  # pragma: no cover - needs a PYNQ-Z2 with the overlay
    """On a board: `QPOLICY_BOARD_BUNDLE=<bundle with overlay/> pytest -m board`."""
    import os

    from qpolicy_hw.verify import verify

    path = os.environ.get("QPOLICY_BOARD_BUNDLE")
    if not path:
        pytest.skip("set QPOLICY_BOARD_BUNDLE to a bundle whose overlay/ holds the bitstream")
    result = verify(path, ["pynq_vs_int"])
    assert result["checks"]["pynq_vs_int"]["status"] == "pass", result

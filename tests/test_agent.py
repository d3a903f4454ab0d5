"""The board agent and the remote backend, over loopback TCP (127.0.0.1 only)."""
from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from qpolicy_hw.agent import HELLO, WELCOME, Agent, driver_infer, recv_exact
from qpolicy_hw.axi import PolicyCoreDriver
from qpolicy_hw.bundle import load_bundle, signed_range
from qpolicy_hw.errors import BackendUnavailable, CoreFault
from qpolicy_hw.runtime import make_policy
from qpolicy_hw.runtime.guard import GuardedPolicy
from qpolicy_hw.runtime.int_backend import IntegerPolicy
from tests.fault_mmio import FaultyMMIO, SoftCoreMMIO


def start_agent(bundle, mmio) -> tuple[str, Agent]:
    driver = PolicyCoreDriver(mmio, bundle.obs_dim, bundle.act_dim, bundle.bits["input"], bundle.bits["output"],
                              digest=bundle.digest, done_timeout_s=0.002)
    agent = Agent(bundle, driver_infer(driver), log=lambda m: None)
    ready = threading.Event()
    where = {}
    thread = threading.Thread(target=agent.serve_forever, args=("127.0.0.1:0",),
                              kwargs={"ready": lambda a: (where.update(a=a), ready.set())}, daemon=True)
    thread.start()
    assert ready.wait(10)
    return f"{where['a'][0]}:{where['a'][1]}", agent


def test_remote_codes_equal_int_and_carry_the_cycle_count(bundle_factory):
    bundle = load_bundle(bundle_factory())
    address, agent = start_agent(bundle, SoftCoreMMIO(bundle))
    remote = make_policy(bundle, "remote", address=address, timeout_s=1.0)
    lo, hi = signed_range(bundle.bits["input"])
    q = np.random.default_rng(0).integers(lo, hi + 1, size=(2000, bundle.obs_dim))
    assert np.array_equal(remote.codes(q), IntegerPolicy(bundle).codes(q))
    assert remote.last_cycles == 6 and agent.served == 2000
    obs = np.load(bundle.path / "golden" / "obs.npy")
    assert np.array_equal(np.array([remote.act(o) for o in obs]), np.load(bundle.path / "golden" / "actions.npy"))


def test_a_host_with_another_bundle_is_refused_in_one_line(bundle_factory):
    bundle, other = load_bundle(bundle_factory()), load_bundle(bundle_factory(seed=1, name="other"))
    address, agent = start_agent(bundle, SoftCoreMMIO(bundle))
    with pytest.raises(BackendUnavailable, match="serves bundle .*start the agent with the same bundle") as info:
        make_policy(other, "remote", address=address)
    assert "\n" not in str(info.value) and agent.refused == 1
    make_policy(bundle, "remote", address=address)          # and the agent still serves the right host


def test_nobody_listening_is_refused_in_one_line(bundle_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendUnavailable, match=f"no qpolicy agent at 127.0.0.1:{port}"):
        make_policy(bundle_factory(), "remote", address=f"127.0.0.1:{port}")


def test_garbage_and_a_core_fault_do_not_stop_the_agent(bundle_factory):
    bundle = load_bundle(bundle_factory())
    address, agent = start_agent(bundle, FaultyMMIO(bundle, {3: "hang"}))
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:     # not the protocol: closed
        s.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(HELLO.size))
        welcome = WELCOME.unpack(recv_exact(s, WELCOME.size))
        assert welcome[2] != 0
    remote = make_policy(bundle, "remote", address=address, timeout_s=1.0)
    q = np.zeros((1, bundle.obs_dim), dtype=np.int64)
    remote.codes(q)
    remote.codes(q)
    with pytest.raises(CoreFault, match="did not signal DONE"):
        remote.codes(q)                                    # the agent reports its core's fault...
    assert np.array_equal(remote.codes(q), IntegerPolicy(bundle).codes(q))   # ...and keeps serving


def test_a_killed_agent_is_answered_from_int_in_the_same_call(bundle_factory):
    bundle = load_bundle(bundle_factory())
    address, agent = start_agent(bundle, SoftCoreMMIO(bundle))
    remote = make_policy(bundle, "remote", address=address, timeout_s=0.05)
    guard = GuardedPolicy(remote, retry_after_s=0.0, max_retries=-1)
    obs = np.load(bundle.path / "golden" / "obs.npy")[:20]
    want = np.load(bundle.path / "golden" / "actions.npy")[:20]
    got = [guard.act(o) for o in obs[:10]]
    remote._sock.shutdown(socket.SHUT_RDWR)               # the connection dies (the agent or the network)
    got += [guard.act(o) for o in obs[10:]]
    assert np.array_equal(np.array(got), want) and guard.faults >= 1

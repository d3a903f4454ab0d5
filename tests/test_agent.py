"""The board agent and the remote backend, over loopback TCP (127.0.0.1 only), with well-behaved and hostile
peers on both sides."""
from __future__ import annotations

import socket
import statistics
import struct
import threading
import time

import numpy as np
import pytest

from qpolicy_hw.agent import (
    ANSWER_HEAD,
    CHALLENGE,
    HELLO,
    MAGIC,
    OK,
    VERSION,
    WELCOME,
    Agent,
    driver_infer,
    hello_mac,
    welcome_mac,
)
from qpolicy_hw.axi import PolicyCoreDriver
from qpolicy_hw.bundle import load_bundle, signed_range
from qpolicy_hw.errors import BackendUnavailable, CoreFault
from qpolicy_hw.runtime import make_policy
from qpolicy_hw.runtime.guard import GuardedPolicy
from qpolicy_hw.runtime.int_backend import IntegerPolicy
from tests.fault_mmio import FaultyMMIO, SoftCoreMMIO


def start_agent(bundle, mmio, **options) -> tuple[str, Agent]:
    driver = PolicyCoreDriver(mmio, bundle.obs_dim, bundle.act_dim, bundle.bits["input"], bundle.bits["output"],
                              digest=bundle.digest, done_timeout_s=0.002)
    agent = Agent(bundle, driver_infer(driver), log=lambda m: None, **options)
    ready = threading.Event()
    where = {}
    thread = threading.Thread(target=agent.serve_forever, args=("127.0.0.1:0",),
                              kwargs={"ready": lambda a: (where.update(a=a), ready.set())}, daemon=True)
    thread.start()
    assert ready.wait(10)
    return f"{where['a'][0]}:{where['a'][1]}", agent


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def connect(address: str) -> socket.socket:
    host, port = address.split(":")
    return socket.create_connection((host, int(port)), timeout=5)


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


def test_a_host_with_another_bundle_is_refused_in_one_line_and_learns_no_digest(bundle_factory):
    bundle, other = load_bundle(bundle_factory()), load_bundle(bundle_factory(seed=1, name="other"))
    address, agent = start_agent(bundle, SoftCoreMMIO(bundle))
    with pytest.raises(BackendUnavailable, match="serves another bundle .*start the agent with the same bundle") as info:
        make_policy(other, "remote", address=address)
    assert "\n" not in str(info.value) and agent.refused == 1
    assert bundle.digest[:16] not in str(info.value)
    with connect(address) as s:   # a stranger: the challenge and the welcome carry no digest
        challenge = recv_exact(s, CHALLENGE.size)
        s.sendall(HELLO.pack(MAGIC, VERSION, bytes(32), bytes(32)))
        welcome = recv_exact(s, WELCOME.size)
    assert bytes.fromhex(bundle.digest) not in challenge + welcome
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
    with connect(address) as s:     # not the protocol: refused and closed
        recv_exact(s, CHALLENGE.size)
        s.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(HELLO.size))
        welcome = WELCOME.unpack(recv_exact(s, WELCOME.size))
        assert welcome[2] != OK
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


# --- the agent under hostile clients ------------------------------------------------------------------
def test_a_good_host_is_served_while_slowloris_idle_and_held_connections_last(bundle_factory):
    bundle = load_bundle(bundle_factory())
    address, agent = start_agent(bundle, SoftCoreMMIO(bundle), max_clients=8)
    held = []
    slow = connect(address)                     # sends 10 bytes of its hello and waits
    recv_exact(slow, CHALLENGE.size)
    slow.sendall(bytes(10))
    idle = connect(address)                     # completes the handshake, then idles
    recv_exact(idle, CHALLENGE.size)
    idle.sendall(HELLO.pack(MAGIC, VERSION, bytes.fromhex(bundle.digest), bytes(32)))
    assert WELCOME.unpack(recv_exact(idle, WELCOME.size))[2] == OK
    half = struct.pack("<I", 1) + bytes(4)      # and starts a request it never finishes
    idle.sendall(half)
    for _ in range(200):                         # 200 connections that say nothing
        held.append(connect(address))
    t0 = time.monotonic()
    remote = make_policy(bundle, "remote", address=address, timeout_s=1.0, )
    lo, hi = signed_range(bundle.bits["input"])
    q = np.random.default_rng(1).integers(lo, hi + 1, size=(50, bundle.obs_dim))
    assert np.array_equal(remote.codes(q), IntegerPolicy(bundle).codes(q))
    assert time.monotonic() - t0 < 1.0
    assert len(agent._clients) <= 8 and agent.dropped >= 190
    for s in (slow, idle, *held):
        s.close()


def test_deadlines_close_stalled_handshakes_requests_and_idle_hosts(bundle_factory):
    bundle = load_bundle(bundle_factory())
    address, agent = start_agent(bundle, SoftCoreMMIO(bundle), handshake_timeout_s=0.2, request_timeout_s=0.2,
                                 idle_timeout_s=0.3)
    slow = connect(address)
    recv_exact(slow, CHALLENGE.size)
    slow.sendall(bytes(5))
    busy = connect(address)
    recv_exact(busy, CHALLENGE.size)
    busy.sendall(HELLO.pack(MAGIC, VERSION, bytes.fromhex(bundle.digest), bytes(32)))
    recv_exact(busy, WELCOME.size)
    busy.sendall(bytes(3))                       # a started request
    idle = connect(address)
    recv_exact(idle, CHALLENGE.size)
    idle.sendall(HELLO.pack(MAGIC, VERSION, bytes.fromhex(bundle.digest), bytes(32)))
    recv_exact(idle, WELCOME.size)
    for s in (slow, busy, idle):
        s.settimeout(3)
        assert s.recv(100) == b""                # each closed by the agent
        s.close()
    assert not agent._clients


def test_a_shared_key_is_required_when_the_agent_has_one(bundle_factory, tmp_path):
    bundle = load_bundle(bundle_factory())
    key, wrong = b"k" * 32, b"x" * 32
    address, agent = start_agent(bundle, SoftCoreMMIO(bundle), auth_key=key)
    with pytest.raises(BackendUnavailable, match="requires a shared key"):
        make_policy(bundle, "remote", address=address)
    with pytest.raises(BackendUnavailable, match="refused the shared key|does not hold the shared key"):
        make_policy(bundle, "remote", address=address, auth_key=wrong)
    remote = make_policy(bundle, "remote", address=address, auth_key=key, timeout_s=1.0)
    q = np.zeros((3, bundle.obs_dim), dtype=np.int64)
    assert np.array_equal(remote.codes(q), IntegerPolicy(bundle).codes(q))
    assert agent.refused == 1       # the keyless host stopped at the challenge; the wrong key was refused


# --- the remote backend under hostile agents --------------------------------------------------------------
class FakeAgent:
    """Handshakes correctly (so the backend connects), then answers requests as ``mode`` says."""

    def __init__(self, bundle, mode: str):
        self.bundle, self.mode = bundle, mode
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.request = struct.Struct(f"<I{bundle.obs_dim}i")
        self.reference = IntegerPolicy(bundle)
        self.stop = threading.Event()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        self.server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        try:
            nonce = bytes(16)
            conn.sendall(CHALLENGE.pack(MAGIC, VERSION, 0, nonce))
            recv_exact(conn, HELLO.size)
            conn.sendall(WELCOME.pack(MAGIC, VERSION, OK, self.bundle.obs_dim, self.bundle.act_dim,
                                      welcome_mac(None, nonce, OK)))
            while not self.stop.is_set():
                seq, *codes = self.request.unpack(recv_exact(conn, self.request.size))
                out = self.reference.codes(np.asarray(codes))
                answer = ANSWER_HEAD.pack(seq, 0, 6) + struct.pack(f"<{len(out)}i", *map(int, out))
                if self.mode == "flood":      # endless answers to other requests
                    wrong = ANSWER_HEAD.pack(seq + 1, 0, 6) + answer[ANSWER_HEAD.size:]
                    while not self.stop.is_set():
                        conn.sendall(wrong * 64)
                elif self.mode == "drip":     # the right answer, one byte every 3 ms
                    for b in answer:
                        conn.sendall(bytes([b]))
                        time.sleep(0.003)
                elif self.mode == "stall":    # never answers
                    self.stop.wait()
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.server.close()


@pytest.mark.parametrize("mode", ["flood", "drip", "stall"])
def test_no_hostile_agent_holds_act_past_the_deadline_and_every_answer_is_int(bundle_factory, mode):
    bundle = load_bundle(bundle_factory())
    fake = FakeAgent(bundle, mode)
    timeout_s = 0.005
    try:
        remote = make_policy(bundle, "remote", address=fake.address, timeout_s=timeout_s)
        remote.reconnect_interval_s = 0.0        # every call tries the peer again: the worst case
        guard = GuardedPolicy(remote, retry_after_s=0.0, max_retries=-1)
        reference = IntegerPolicy(bundle)
        obs = np.load(bundle.path / "golden" / "obs.npy")[:50]
        times = []
        for o in obs:
            t0 = time.perf_counter()
            action = guard.act(o)
            times.append(time.perf_counter() - t0)
            assert np.array_equal(action, reference.act(o))
        median = statistics.median(times)
        print(f"{mode}: act() median {median * 1e3:.2f} ms, max {max(times) * 1e3:.2f} ms "
              f"(remote_timeout_s {timeout_s * 1e3:g} ms), faults {guard.faults}")
        assert median <= timeout_s + 0.002
        assert guard.faults == 50 and remote.last_cycles is None   # no late or wrong answer was served
    finally:
        fake.close()


def test_hello_mac_binds_the_nonce_and_the_digest():
    key = b"k" * 32
    assert hello_mac(key, bytes(16), bytes(32)) != hello_mac(key, bytes([1]) * 16, bytes(32))
    assert hello_mac(key, bytes(16), bytes(32)) != hello_mac(key, bytes(16), bytes([1]) * 32)
    assert hello_mac(None, bytes(16), bytes(32)) == bytes(32)

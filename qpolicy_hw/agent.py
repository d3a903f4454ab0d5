"""The board agent: serves a bundle's core over the network, for hosts that run ROS 2 where the FPGA is not.

The PYNQ-Z2's CPU is 32-bit ARM, where the ROS 2 wheels do not exist; so ROS 2 runs on the robot's computer
and the board answers integer codes: ``qpolicy agent BUNDLE --listen HOST:PORT`` on the board, and the
``remote`` backend (:mod:`qpolicy_hw.runtime.remote_backend`) on the host. numpy and pynq only (plus the
standard library's ``hmac`` when a shared key is used).

Protocol version 2 (TCP, little-endian, fixed sizes, no pickle):

- **challenge** (agent -> host, on accept): ``b"QPLY"``, version ``u16``, flags ``u8`` (bit 0: a shared key is
  required), a fresh 16-byte nonce.
- **hello** (host -> agent): ``b"QPLY"``, version ``u16``, the host's bundle digest (32 bytes), and
  ``HMAC-SHA256(key, "qpolicy-hello" || nonce || digest)`` (32 zero bytes without a key).
- **welcome** (agent -> host): ``b"QPLY"``, version ``u16``, status ``u8`` (0 ok, 1 another bundle, 2 another
  protocol version, 3 authentication failed), ``n_in u16``, ``n_out u16``, and
  ``HMAC-SHA256(key, "qpolicy-welcome" || nonce || status)`` (zeros without a key), so a host with the key
  knows it reached the agent that has it. The agent's digest is never sent: a host learns only whether its
  own matches. On a status other than 0 the agent closes the connection.
- **request**: sequence number ``u32``, then ``n_in`` input codes ``i32``.
  **answer**: the same sequence number ``u32``, status ``u8`` (0 ok, 1 core fault), the core's cycle count
  ``u32`` (START to DONE), then ``n_out`` output codes ``i32``; for a fault, instead of the codes a message
  length ``u16`` and at most 200 bytes of UTF-8 saying what failed.

Serving under hostile clients. One thread and a selector serve every connection, and no read ever blocks:
bytes are taken as they arrive and a message is answered once it is complete. So a client that sends half a
hello and waits (slowloris), one that finishes the handshake and idles, or many held connections never stop
another host from being served. Every connection has deadlines: the handshake must complete within
``handshake_timeout_s`` of the accept, a started request within ``request_timeout_s``, and a connection with
no request for ``idle_timeout_s`` is closed. At most ``max_clients`` connections are held: at the limit, a new
one evicts the oldest connection still in its handshake, else the one idle longest, so held connections
never lock a host out. The core answers requests in the order they complete (one core, microseconds each).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qpolicy_hw.bundle import Bundle
from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.integer_ranges import signed_range

MAGIC = b"QPLY"
VERSION = 2
NONCE_BYTES = 16
CHALLENGE = struct.Struct(f"<4sHB{NONCE_BYTES}s")
HELLO = struct.Struct("<4sH32s32s")
WELCOME = struct.Struct("<4sHBHH32s")
REQUEST_HEAD = struct.Struct("<I")
ANSWER_HEAD = struct.Struct("<IBI")
FAULT_TEXT = struct.Struct("<H")
OK, WRONG_BUNDLE, WRONG_VERSION, AUTH_FAILED = 0, 1, 2, 3
AUTH_REQUIRED = 1
CORE_OK, CORE_FAULT = 0, 1
MAX_FAULT_TEXT = 200
NO_MAC = bytes(32)
MIN_KEY_BYTES = 16


def parse_address(address: str, default_host: str = "127.0.0.1", listening: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``) as a (host, port) pair, or :class:`QpolicyError` saying why not; a listening
    address may use port 0 (any free port)."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not port.isdigit() or not (0 if listening else 1) <= int(port) < 65536:
        raise QpolicyError(f"address {address!r}: expected HOST:PORT with a port in 1-65535")
    return host or default_host, int(port)


def read_shared_key(path: str | Path) -> bytes:
    """The shared key in ``path`` (its bytes, at least 16, at most 4096), or a one-line error."""
    p = Path(path)
    try:
        if p.stat().st_size > 4096:
            raise QpolicyError(f"auth key {p}: larger than 4096 bytes")
        key = p.read_bytes().strip()
    except OSError as exc:
        raise QpolicyError(f"auth key {p}: {exc.strerror or exc}") from None
    if len(key) < MIN_KEY_BYTES:
        raise QpolicyError(f"auth key {p}: at least {MIN_KEY_BYTES} bytes (e.g. `head -c 32 /dev/urandom | "
                           "xxd -p -c 64 > board.key`)")
    return key


def hello_mac(key: bytes | None, nonce: bytes, digest: bytes) -> bytes:
    return hmac.new(key, b"qpolicy-hello" + nonce + digest, hashlib.sha256).digest() if key else NO_MAC


def welcome_mac(key: bytes | None, nonce: bytes, status: int) -> bytes:
    return hmac.new(key, b"qpolicy-welcome" + nonce + bytes([status]), hashlib.sha256).digest() if key else NO_MAC


@dataclass
class _Client:
    sock: socket.socket
    peer: str
    nonce: bytes
    accepted: float
    serving: bool = False
    buffer: bytearray = field(default_factory=bytearray)
    started: float = 0.0          # when the first byte of the message in ``buffer`` came
    last_request: float = 0.0


class Agent:
    """Answers requests for one bundle with ``infer(q_in) -> (codes, cycles)`` (the core's driver)."""

    def __init__(self, bundle: Bundle, infer: Callable[[np.ndarray], tuple[np.ndarray, int]],
                 log: Callable[[str], None] = print, auth_key: bytes | None = None, max_clients: int = 8,
                 handshake_timeout_s: float = 2.0, request_timeout_s: float = 0.5, idle_timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.bundle, self.infer, self.log = bundle, infer, log
        self.digest = bytes.fromhex(bundle.digest)
        self.n_in, self.n_out = bundle.obs_dim, bundle.act_dim
        self.in_lo, self.in_hi = signed_range(bundle.bits["input"])
        self.request = struct.Struct(f"<I{self.n_in}i")
        self.answer = struct.Struct(f"<IBI{self.n_out}i")
        self.auth_key = auth_key
        self.max_clients = max_clients
        self.handshake_timeout_s, self.request_timeout_s = handshake_timeout_s, request_timeout_s
        self.idle_timeout_s, self.clock = idle_timeout_s, clock
        self.served = self.refused = self.dropped = 0
        self._clients: dict[int, _Client] = {}
        self._stop = False

    def stop(self) -> None:
        """End :meth:`serve_forever` within one poll interval (tests)."""
        self._stop = True

    def serve_forever(self, listen: str, ready: Callable[[tuple[str, int]], None] | None = None) -> None:
        host, port = parse_address(listen, listening=True)
        with socket.create_server((host, port)) as server, selectors.DefaultSelector() as sel:
            server.setblocking(False)
            sel.register(server, selectors.EVENT_READ)
            address = server.getsockname()[:2]
            self.log(f"qpolicy agent: serving bundle {self.bundle.digest[:16]}... ({self.bundle.env_id}) on "
                     f"{address[0]}:{address[1]}" + (", shared key required" if self.auth_key else ""))
            if ready is not None:
                ready(address)
            while not self._stop:
                for key, _ in sel.select(timeout=0.05):
                    if key.fileobj is server:
                        self._accept(server, sel)
                    else:
                        client = self._clients.get(key.fd)
                        try:
                            self._readable(client, sel)
                        except Exception as exc:  # one client's trouble never ends the agent
                            if client is not None:
                                self._close(client, sel, f"{type(exc).__name__}: {str(exc)[:80]}")
                self._expire(sel)
            for client in list(self._clients.values()):
                self._close(client, sel)

    # --- connections ------------------------------------------------------------------------------
    def _accept(self, server: socket.socket, sel: selectors.BaseSelector) -> None:
        try:
            conn, peer = server.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(self._clients) >= self.max_clients:
            self._evict(sel)
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now = self.clock()
        client = _Client(conn, f"{peer[0]}:{peer[1]}", os.urandom(NONCE_BYTES), now, last_request=now)
        self._clients[conn.fileno()] = client
        sel.register(conn, selectors.EVENT_READ)
        flags = AUTH_REQUIRED if self.auth_key else 0
        self._send(client, CHALLENGE.pack(MAGIC, VERSION, flags, client.nonce), sel)

    def _evict(self, sel: selectors.BaseSelector) -> None:
        """Make room for a new connection: the oldest one still in its handshake goes first, else the one
        idle longest. Held connections thus never lock a host out: a real host handshakes within a
        millisecond and then sends every control period."""
        waiting = [c for c in self._clients.values() if not c.serving]
        victim = (min(waiting, key=lambda c: c.accepted) if waiting
                  else min(self._clients.values(), key=lambda c: c.last_request))
        self.dropped += 1
        self._close(victim, sel, f"evicted at the limit of {self.max_clients} connections")

    def _close(self, client: _Client, sel: selectors.BaseSelector, why: str | None = None) -> None:
        if self._clients.pop(client.sock.fileno(), None) is None:
            return
        try:
            sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        if why:
            self.log(f"qpolicy agent: closed {client.peer}: {why}")

    def _send(self, client: _Client, data: bytes, sel: selectors.BaseSelector) -> bool:
        """Send a short message without blocking; a peer that does not read its answers is closed."""
        try:
            sent = client.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._close(client, sel, f"gone ({exc.strerror or exc})")
            return False
        if sent != len(data):
            self._close(client, sel, "does not read its answers")
            return False
        return True

    def _expire(self, sel: selectors.BaseSelector) -> None:
        now = self.clock()
        for client in list(self._clients.values()):
            if not client.serving and now - client.accepted > self.handshake_timeout_s:
                self._close(client, sel, f"no handshake within {self.handshake_timeout_s:g} s")
            elif client.buffer and now - client.started > self.request_timeout_s:
                self._close(client, sel, f"a request not completed within {self.request_timeout_s:g} s")
            elif client.serving and now - client.last_request > self.idle_timeout_s:
                self._close(client, sel, f"idle for {self.idle_timeout_s:g} s")

    # --- messages -------------------------------------------------------------------------------------
    def _readable(self, client: _Client | None, sel: selectors.BaseSelector) -> None:
        if client is None:
            return
        want = self.request.size if client.serving else HELLO.size
        try:
            chunk = client.sock.recv(max(want - len(client.buffer), 1) if not client.serving else 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._close(client, sel, f"gone ({exc.strerror or exc})")
            return
        if not chunk:
            self._close(client, sel, "disconnected" if client.serving else None)
            return
        if not client.buffer:
            client.started = self.clock()
        client.buffer += chunk
        if not client.serving:
            if len(client.buffer) >= HELLO.size:
                self._handshake(client, sel)
            return
        while client.sock.fileno() in self._clients and len(client.buffer) >= self.request.size:
            message = bytes(client.buffer[:self.request.size])
            del client.buffer[:self.request.size]
            client.started = self.clock()
            self._answer(client, message, sel)

    def _handshake(self, client: _Client, sel: selectors.BaseSelector) -> None:
        magic, version, digest, mac = HELLO.unpack(bytes(client.buffer[:HELLO.size]))
        extra = bytes(client.buffer[HELLO.size:])
        client.buffer.clear()
        status = OK
        if magic != MAGIC or version != VERSION:
            status = WRONG_VERSION
        elif self.auth_key and not hmac.compare_digest(mac, hello_mac(self.auth_key, client.nonce, digest)):
            status = AUTH_FAILED
        elif digest != self.digest:
            status = WRONG_BUNDLE
        if status != OK:
            self.refused += 1   # counted before the host hears it, so a host that saw the refusal sees the count
        welcome = WELCOME.pack(MAGIC, VERSION, status, self.n_in, self.n_out,
                               welcome_mac(self.auth_key, client.nonce, status))
        if not self._send(client, welcome, sel):
            return
        if status != OK:
            why = {WRONG_VERSION: "another protocol", AUTH_FAILED: "authentication failed",
                   WRONG_BUNDLE: f"bundle {digest.hex()[:16]}..."}[status]
            self._close(client, sel, f"refused: {why}")
            return
        client.serving, client.last_request = True, self.clock()
        if extra:
            client.buffer += extra
            client.started = self.clock()

    def _answer(self, client: _Client, message: bytes, sel: selectors.BaseSelector) -> None:
        seq, *codes = self.request.unpack(message)
        q = np.asarray(codes, dtype=np.int64)
        client.last_request = self.clock()
        if q.min() < self.in_lo or q.max() > self.in_hi:
            self._close(client, sel, f"input codes outside [{self.in_lo}, {self.in_hi}]")
            return
        try:
            out, cycles = self.infer(q)
            out = np.asarray(out, dtype=np.int64)
            if out.shape != (self.n_out,) or np.abs(out).max() >= 1 << 31:
                raise ValueError(f"the core gave {out.shape} codes out of the i32 range or count")
        except Exception as exc:  # a core fault: say so, and keep serving
            text = f"{type(exc).__name__}: {exc}".encode()[:MAX_FAULT_TEXT]
            self._send(client, ANSWER_HEAD.pack(seq, CORE_FAULT, 0) + FAULT_TEXT.pack(len(text)) + text, sel)
            return
        self.served += 1      # before the answer: a host that counts answers never sees a stale count
        self._send(client, self.answer.pack(seq, CORE_OK, int(cycles or 0) & 0xFFFFFFFF, *map(int, out)), sel)


def driver_infer(driver) -> Callable[[np.ndarray], tuple[np.ndarray, int]]:
    """``infer`` for an agent from a :class:`~qpolicy_hw.axi.PolicyCoreDriver`."""
    def infer(q: np.ndarray) -> tuple[np.ndarray, int]:
        codes = driver.infer(q)
        return codes, driver.last_cycles or 0
    return infer


def open_core_driver(bundle: Bundle, mmio: str = "board", done_timeout_s: float | None = None):
    """The register driver of the bundle's core: on the board through pynq (``mmio`` "board"), or over the
    Verilated AXI-Lite slave of its default core (``mmio`` "sim", no board needed). A DONE wait past
    ``done_timeout_s`` is a fault (default 2 ms on the board, 0.5 s in simulation)."""
    from qpolicy_hw.axi import PolicyCoreDriver

    if mmio == "sim":
        from qpolicy_hw.axi import VerilatedMMIO
        from qpolicy_hw.default_core import default_core_dir

        port = VerilatedMMIO(default_core_dir(bundle, "axi"))
    elif mmio == "board":
        from qpolicy_hw.runtime.pynq_backend import open_overlay_mmio

        port = open_overlay_mmio(bundle)
    else:
        raise QpolicyError(f"mmio={mmio!r}: choose board or sim")
    return PolicyCoreDriver(port, bundle.obs_dim, bundle.act_dim, bundle.bits["input"], bundle.bits["output"],
                            digest=bundle.digest, done_timeout_s=done_timeout_s or (0.5 if mmio == "sim" else 0.002))

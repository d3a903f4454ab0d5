"""The board agent: serves a bundle's core over the network, for hosts that run ROS 2 where the FPGA is not.

The PYNQ-Z2's CPU is 32-bit ARM, where the ROS 2 wheels do not exist; so ROS 2 runs on the robot's computer
and the board answers integer codes: ``qpolicy agent BUNDLE --listen HOST:PORT`` on the board, and the
``remote`` backend (:mod:`qpolicy_hw.runtime.remote_backend`) on the host. numpy and pynq only.

Protocol (TCP, little-endian, fixed sizes, no pickle):

- **hello** (host -> agent): ``b"QPLY"``, version ``u16``, the host's bundle digest (32 bytes).
  **welcome** (agent -> host): ``b"QPLY"``, version ``u16``, status ``u8`` (0 ok, 1 another bundle,
  2 another protocol version), ``n_in u16``, ``n_out u16``, the agent's bundle digest (32 bytes). On a
  status other than 0 the agent closes the connection.
- **request**: sequence number ``u32``, then ``n_in`` input codes ``i32``.
  **answer**: the same sequence number ``u32``, status ``u8`` (0 ok, 1 core fault), the core's cycle count
  ``u32`` (START to DONE), then ``n_out`` output codes ``i32``; for a fault, instead of the codes a message
  length ``u16`` and at most 200 bytes of UTF-8 saying what failed.

Every message has a size known from the handshake; anything else closes the connection. Input codes
outside the input range are a protocol error (the host quantized them), not a core fault. The agent
serves one host at a time (one core, one controller); a second waits until the first disconnects.
"""
from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import numpy as np

from qpolicy_hw.bundle import Bundle, signed_range
from qpolicy_hw.errors import QpolicyError

MAGIC = b"QPLY"
VERSION = 1
HELLO = struct.Struct("<4sH32s")
WELCOME = struct.Struct("<4sHBHH32s")
REQUEST_HEAD = struct.Struct("<I")
ANSWER_HEAD = struct.Struct("<IBI")
FAULT_TEXT = struct.Struct("<H")
OK, WRONG_BUNDLE, WRONG_VERSION = 0, 1, 2
CORE_OK, CORE_FAULT = 0, 1
MAX_FAULT_TEXT = 200


def parse_address(address: str, default_host: str = "127.0.0.1", listening: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``) as a (host, port) pair, or :class:`QpolicyError` saying why not; a listening
    address may use port 0 (any free port)."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not port.isdigit() or not (0 if listening else 1) <= int(port) < 65536:
        raise QpolicyError(f"address {address!r}: expected HOST:PORT with a port in 1-65535")
    return host or default_host, int(port)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes, or ``ConnectionError`` when the peer closed first."""
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class Agent:
    """Answers requests for one bundle with ``infer(q_in) -> (codes, cycles)`` (the core's driver)."""

    def __init__(self, bundle: Bundle, infer: Callable[[np.ndarray], tuple[np.ndarray, int]],
                 log: Callable[[str], None] = print):
        self.bundle, self.infer, self.log = bundle, infer, log
        self.digest = bytes.fromhex(bundle.digest)
        self.n_in, self.n_out = bundle.obs_dim, bundle.act_dim
        self.in_lo, self.in_hi = signed_range(bundle.bits["input"])
        self.request = struct.Struct(f"<I{self.n_in}i")
        self.answer = struct.Struct(f"<IBI{self.n_out}i")
        self.served = self.refused = 0

    def serve_forever(self, listen: str, ready: Callable[[tuple[str, int]], None] | None = None) -> None:
        host, port = parse_address(listen, listening=True)
        with socket.create_server((host, port)) as server:
            address = server.getsockname()[:2]
            self.log(f"qpolicy agent: serving bundle {self.bundle.digest[:16]}... ({self.bundle.env_id}) on "
                     f"{address[0]}:{address[1]}")
            if ready is not None:
                ready(address)
            while True:
                conn, peer = server.accept()
                with conn:
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    try:
                        self.handle(conn, peer)
                    except (ConnectionError, OSError, struct.error) as exc:
                        self.log(f"qpolicy agent: {peer[0]}:{peer[1]} gone ({exc})")

    def handle(self, conn: socket.socket, peer) -> None:
        magic, version, digest = HELLO.unpack(recv_exact(conn, HELLO.size))
        status = OK
        if magic != MAGIC or version != VERSION:
            status = WRONG_VERSION
        elif digest != self.digest:
            status = WRONG_BUNDLE
        if status != OK:
            self.refused += 1   # counted before the host hears it, so a host that saw the refusal sees the count
        conn.sendall(WELCOME.pack(MAGIC, VERSION, status, self.n_in, self.n_out, self.digest))
        if status != OK:
            self.log(f"qpolicy agent: refused {peer[0]}:{peer[1]}: "
                     + ("another protocol" if status == WRONG_VERSION else f"bundle {digest.hex()[:16]}..."))
            return
        while True:
            seq, *codes = self.request.unpack(recv_exact(conn, self.request.size))
            q = np.asarray(codes, dtype=np.int64)
            if q.min() < self.in_lo or q.max() > self.in_hi:
                raise ConnectionError(f"input codes outside [{self.in_lo}, {self.in_hi}]")
            try:
                out, cycles = self.infer(q)
                out = np.asarray(out, dtype=np.int64)
            except Exception as exc:  # a core fault: say so, and keep serving
                text = f"{type(exc).__name__}: {exc}".encode()[:MAX_FAULT_TEXT]
                conn.sendall(ANSWER_HEAD.pack(seq, CORE_FAULT, 0) + FAULT_TEXT.pack(len(text)) + text)
                continue
            self.served += 1      # before the answer: a host that counts answers never sees a stale count
            conn.sendall(self.answer.pack(seq, CORE_OK, int(cycles or 0) & 0xFFFFFFFF, *map(int, out)))


def driver_infer(driver) -> Callable[[np.ndarray], tuple[np.ndarray, int]]:
    """``infer`` for an agent from a :class:`~qpolicy_hw.axi.PolicyCoreDriver`."""
    def infer(q: np.ndarray) -> tuple[np.ndarray, int]:
        codes = driver.infer(q)
        return codes, driver.last_cycles or 0
    return infer

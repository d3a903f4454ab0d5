"""The ``remote`` backend: the core of a board agent (``qpolicy agent``) over the network.

The host steps (checks, normalization, quantization, decoding) run here, as for every backend; only the
input codes travel, and the agent answers the output codes and the core's cycle count
(:mod:`qpolicy_hw.agent` has the protocol). The agent must serve the same bundle: the handshake tells the
host whether its digest matches and refuses another one in one line; with a shared key (``auth_key``) both
sides prove they hold it.

One monotonic deadline per call covers the whole exchange (a reconnect, the send and every byte of the
answer): however a peer behaves (it floods answers with wrong sequence numbers, drips a correct answer byte
by byte, or stalls), :meth:`codes` returns or raises :class:`CoreFault` by ``timeout_s``. Any answer that is
late, malformed or for another request is a fault; the connection is then closed, so a stale answer can
never be taken for a fresh one, and the server's guard answers that observation from ``int`` in the same
period. After a failed connect, the next attempt waits ``reconnect_interval_s`` (calls meanwhile fault at
once instead of spending their deadline on a dead address).
"""
from __future__ import annotations

import socket
import struct
import time

import numpy as np

from qpolicy_hw.agent import (
    ANSWER_HEAD,
    AUTH_FAILED,
    AUTH_REQUIRED,
    CHALLENGE,
    CORE_OK,
    FAULT_TEXT,
    HELLO,
    MAGIC,
    MAX_FAULT_TEXT,
    OK,
    VERSION,
    WELCOME,
    WRONG_BUNDLE,
    hello_mac,
    parse_address,
    welcome_mac,
)
from qpolicy_hw.bundle import Bundle
from qpolicy_hw.errors import BackendUnavailable, CoreFault
from qpolicy_hw.runtime.int_backend import IntegerPolicy

DEFAULT_TIMEOUT_S = 0.005


class _Late(Exception):
    """The deadline passed before the exchange completed."""


def recv_by(sock: socket.socket, n: int, deadline: float) -> bytes:
    """Exactly ``n`` bytes before ``deadline`` (``time.monotonic``), else :class:`_Late` or ``ConnectionError``."""
    chunks, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Late()
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - got)
        except TimeoutError:
            raise _Late() from None
        if not chunk:
            raise ConnectionError("the agent closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def send_by(sock: socket.socket, data: bytes, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Late()
    sock.settimeout(left)
    try:
        sock.sendall(data)
    except TimeoutError:
        raise _Late() from None


class RemotePolicy(IntegerPolicy):
    backend = "remote"

    def __init__(self, bundle: Bundle, address: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 connect_timeout_s: float = 2.0, auth_key: bytes | None = None, reconnect_interval_s: float = 0.2):
        super().__init__(bundle)
        self.address = parse_address(address)
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.auth_key, self.reconnect_interval_s = auth_key, reconnect_interval_s
        self.answer = struct.Struct(f"<IBI{self.act_dim}i")
        self.request = struct.Struct(f"<I{self.obs_dim}i")
        self.seq = 0
        self.last_cycles: int | None = None
        self._sock: socket.socket | None = None
        self._next_connect = 0.0
        try:   # an unreachable agent, another bundle or a wrong key fails here, in one line
            self._connect(time.monotonic() + connect_timeout_s)
        except (_Late, OSError, ConnectionError, struct.error) as exc:
            raise BackendUnavailable(f"no qpolicy agent at {self._where} ({self._why(exc)})") from None

    @property
    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    @staticmethod
    def _why(exc: Exception) -> str:
        return "no answer in time" if isinstance(exc, _Late) else str(exc) or type(exc).__name__

    def _connect(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Late()
        try:
            sock = socket.create_connection(self.address, timeout=left)
        except TimeoutError:
            raise _Late() from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            magic, version, flags, nonce = CHALLENGE.unpack(recv_by(sock, CHALLENGE.size, deadline))
            if magic != MAGIC or version != VERSION:
                raise BackendUnavailable(f"{self._where} is not a qpolicy agent of protocol version {VERSION}")
            if flags & AUTH_REQUIRED and not self.auth_key:
                raise BackendUnavailable(f"the agent at {self._where} requires a shared key: give --auth-key "
                                         "(auth_key:=) with the board's key file")
            digest = bytes.fromhex(self.bundle.digest)
            send_by(sock, HELLO.pack(MAGIC, VERSION, digest, hello_mac(self.auth_key, nonce, digest)), deadline)
            magic, version, status, n_in, n_out, mac = WELCOME.unpack(recv_by(sock, WELCOME.size, deadline))
            if magic != MAGIC or version != VERSION or status not in (OK, WRONG_BUNDLE, AUTH_FAILED):
                raise BackendUnavailable(f"{self._where} is not a qpolicy agent of protocol version {VERSION}")
            if self.auth_key and mac != welcome_mac(self.auth_key, nonce, status):
                raise BackendUnavailable(f"the agent at {self._where} does not hold the shared key")
            if status == AUTH_FAILED:
                raise BackendUnavailable(f"the agent at {self._where} refused the shared key")
            if status == WRONG_BUNDLE or (n_in, n_out) != (self.obs_dim, self.act_dim):
                raise BackendUnavailable(f"the agent at {self._where} serves another bundle than this host's "
                                         f"{self.bundle.digest[:16]}...: start the agent with the same bundle")
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def codes(self, q_in: np.ndarray) -> np.ndarray:
        q = self.check_codes(q_in)
        rows = q.reshape(-1, self.obs_dim)
        return np.array([self._infer(r) for r in rows]).reshape(q.shape[:-1] + (self.act_dim,))

    def _infer(self, row: np.ndarray) -> np.ndarray:
        deadline = time.monotonic() + self.timeout_s
        if self._sock is None:
            if time.monotonic() < self._next_connect:
                raise CoreFault(f"the agent at {self._where} is unreachable (next try in "
                                f"{(self._next_connect - time.monotonic()) * 1e3:.0f} ms)")
            try:   # while serving, a reconnect shares the call's deadline
                self._connect(deadline)
            except (_Late, OSError, ConnectionError, struct.error, BackendUnavailable) as exc:
                self._next_connect = time.monotonic() + self.reconnect_interval_s
                raise CoreFault(f"cannot reach the agent at {self._where} ({self._why(exc)})") from None
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        sock = self._sock
        try:
            send_by(sock, self.request.pack(self.seq, *map(int, row)), deadline)
            seq, status, cycles = ANSWER_HEAD.unpack(recv_by(sock, ANSWER_HEAD.size, deadline))
            if seq != self.seq:
                raise CoreFault(f"the agent answered request {seq}, not {self.seq}")
            if status != CORE_OK:
                (n,) = FAULT_TEXT.unpack(recv_by(sock, FAULT_TEXT.size, deadline))
                text = recv_by(sock, min(n, MAX_FAULT_TEXT), deadline).decode(errors="replace")
                if n > MAX_FAULT_TEXT:
                    raise CoreFault("the agent sent a malformed fault")
                raise CoreFault(f"the agent's core failed: {text}")
            codes = struct.unpack(f"<{self.act_dim}i", recv_by(sock, 4 * self.act_dim, deadline))
        except _Late:
            self.close()   # a half-read answer would put the stream out of step: reconnect next time
            raise CoreFault(f"no answer from the agent within {self.timeout_s * 1e3:g} ms") from None
        except CoreFault as exc:
            if "core failed" not in str(exc):   # a core fault keeps the stream in step; anything else does not
                self.close()
            raise
        except (OSError, ConnectionError, struct.error) as exc:
            self.close()
            raise CoreFault(f"the connection to the agent failed ({exc})") from None
        self.last_cycles = cycles
        return np.asarray(codes, dtype=np.int64)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

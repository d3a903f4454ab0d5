"""The ``remote`` backend: the core of a board agent (``qpolicy agent``) over the network.

The host steps (checks, normalization, quantization, decoding) run here, as for every backend; only the
input codes travel, and the agent answers the output codes and the core's cycle count
(:mod:`qpolicy_hw.agent` has the protocol). The agent must serve the same bundle: the handshake compares
digests and refuses another one in one line. A reply that does not come within ``timeout_s``, a closed
connection or a core fault raises :class:`CoreFault`, which the server's guard answers from ``int`` in the
same period; the next request reconnects.
"""
from __future__ import annotations

import socket
import struct

import numpy as np

from qpolicy_hw.agent import (
    ANSWER_HEAD,
    CORE_OK,
    FAULT_TEXT,
    HELLO,
    MAGIC,
    OK,
    VERSION,
    WELCOME,
    WRONG_BUNDLE,
    parse_address,
    recv_exact,
)
from qpolicy_hw.bundle import Bundle
from qpolicy_hw.errors import BackendUnavailable, CoreFault
from qpolicy_hw.runtime.int_backend import IntegerPolicy

DEFAULT_TIMEOUT_S = 0.005


class RemotePolicy(IntegerPolicy):
    backend = "remote"

    def __init__(self, bundle: Bundle, address: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 connect_timeout_s: float = 2.0):
        super().__init__(bundle)
        self.address = parse_address(address)
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.answer = struct.Struct(f"<IBI{self.act_dim}i")
        self.seq = 0
        self.last_cycles: int | None = None
        self._sock: socket.socket | None = None
        self._connect()   # an unreachable agent or another bundle fails here, in one line

    def _connect(self, timeout_s: float | None = None) -> None:
        where = f"{self.address[0]}:{self.address[1]}"
        try:
            sock = socket.create_connection(self.address, timeout=timeout_s or self.connect_timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(HELLO.pack(MAGIC, VERSION, bytes.fromhex(self.bundle.digest)))
            magic, version, status, n_in, n_out, digest = WELCOME.unpack(recv_exact(sock, WELCOME.size))
        except (OSError, ConnectionError, struct.error) as exc:
            raise BackendUnavailable(f"no qpolicy agent at {where} ({exc})") from None
        if magic != MAGIC or version != VERSION or status not in (OK, WRONG_BUNDLE):
            sock.close()
            raise BackendUnavailable(f"{where} is not a qpolicy agent of protocol version {VERSION}")
        if status == WRONG_BUNDLE or (n_in, n_out) != (self.obs_dim, self.act_dim):
            sock.close()
            raise BackendUnavailable(f"the agent at {where} serves bundle {digest.hex()[:16]}..., this host has "
                                     f"{self.bundle.digest[:16]}...: start the agent with the same bundle")
        sock.settimeout(self.timeout_s)
        self._sock = sock

    def codes(self, q_in: np.ndarray) -> np.ndarray:
        q = self.check_codes(q_in)
        rows = q.reshape(-1, self.obs_dim)
        return np.array([self._infer(r) for r in rows]).reshape(q.shape[:-1] + (self.act_dim,))

    def _infer(self, row: np.ndarray) -> np.ndarray:
        if self._sock is None:
            try:   # while serving, a reconnect may take no longer than an answer would
                self._connect(self.timeout_s)
            except BackendUnavailable as exc:
                raise CoreFault(str(exc)) from None
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        try:
            self._sock.sendall(struct.pack(f"<I{self.obs_dim}i", self.seq, *map(int, row)))
            while True:   # an answer to an earlier request that timed out may come first: skip it
                seq, status, cycles = ANSWER_HEAD.unpack(recv_exact(self._sock, ANSWER_HEAD.size))
                if status != CORE_OK:
                    (n,) = FAULT_TEXT.unpack(recv_exact(self._sock, FAULT_TEXT.size))
                    text = recv_exact(self._sock, min(n, 200)).decode(errors="replace")
                    if seq == self.seq:
                        raise CoreFault(f"the agent's core failed: {text}")
                    continue
                codes = struct.unpack(f"<{self.act_dim}i", recv_exact(self._sock, 4 * self.act_dim))
                if seq == self.seq:
                    self.last_cycles = cycles
                    return np.asarray(codes, dtype=np.int64)
        except TimeoutError:
            self.close()   # a half-read answer would put the stream out of step: reconnect next time
            raise CoreFault(f"no answer from the agent within {self.timeout_s * 1e3:g} ms") from None
        except (OSError, ConnectionError, struct.error) as exc:
            self.close()
            raise CoreFault(f"the connection to the agent failed ({exc})") from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

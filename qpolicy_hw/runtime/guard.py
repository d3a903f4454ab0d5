"""Serving through hardware with the ``int`` reference beside it: a fault never reaches the robot.

:class:`GuardedPolicy` wraps the backend a server chose. The host steps (checks, normalization,
quantization, decoding) run once, in the reference; only the integer core runs on the backend. Then:

- **Faults.** Any error from the backend while serving (no DONE in time, an ``OSError`` from MMIO, a
  simulator that died, an output code outside the range, anything else) answers *that same observation*
  from the ``int`` reference, switches to ``int``, and is counted with its reason.
- **Shadow verification.** Every ``shadow_every``-th action of the backend is recomputed by the reference
  (microseconds); a mismatch is a fault too, and its input codes are appended to ``mismatch_log``
  (JSON lines) for bring-up.
- **Retries.** After a fault the backend is tried again ``retry_after_s`` later, at most ``max_retries``
  times (``-1``: always; ``0``: never), so a transient error does not retire the FPGA for good.

numpy only, like every runtime: it runs on the board as well as in the ROS node.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qpolicy_hw.errors import ObservationError
from qpolicy_hw.latency import LatencyStats
from qpolicy_hw.runtime.int_backend import IntegerPolicy

SPLIT_WINDOW = 2000
"""Latency samples kept per phase (a sliding window)."""
MISMATCH_LINES_KEPT = 1000
"""At most this many mismatches are written to the log (they are all counted)."""


class GuardedPolicy:
    """``act(obs)`` of ``primary``, answered by the ``int`` reference whenever ``primary`` fails or disagrees."""

    def __init__(self, primary, shadow_every: int = 1, retry_after_s: float = 5.0, max_retries: int = 3,
                 mismatch_log: str | Path | None = None, notify: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.primary, self.bundle = primary, primary.bundle
        self.shadow_every, self.retry_after_s, self.max_retries = shadow_every, retry_after_s, max_retries
        self.mismatch_log = Path(mismatch_log) if mismatch_log else None
        self.notify = notify or (lambda level, msg: None)
        self.clock = clock
        if type(primary) is IntegerPolicy:
            self.reference: IntegerPolicy | None = primary          # int is its own reference
        elif self.bundle.is_integer:
            self.reference = IntegerPolicy(self.bundle, compiled=True)   # fast when it serves alone
        else:
            self.reference = None                                   # a float bundle: no integer function
        self.active = primary
        self.faults = self.retries = self.shadow_checks = self.mismatches = self.served_by_primary = 0
        self.last_fault: str | None = None
        # where the time of one action goes: host_in (check, normalize, quantize), core (the backend's codes:
        # MMIO, the simulator or the network), host_out (decode); int_act when int serves alone
        self.split = {name: LatencyStats(window=SPLIT_WINDOW) for name in ("host_in", "core", "host_out", "int_act")}
        self._failed_at = 0.0
        self._mismatch_lines = 0

    # --- what the server reports -------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.active.backend

    @property
    def degraded(self) -> bool:
        """Serving from the fallback because the chosen backend failed."""
        return self.active is not self.primary

    @property
    def fallback_reason(self) -> str | None:
        return getattr(self.primary, "fallback_reason", None)

    # --- serving ------------------------------------------------------------------------------
    def act(self, obs) -> np.ndarray:
        """The action for ``obs``; :class:`ObservationError` for unusable input (the caller sends the safe
        action), never a backend error."""
        if self.reference is None:
            return self._act_without_reference(obs)
        self._maybe_retry()
        if self.active is self.reference:                  # int: its one-call path (ObservationError propagates)
            t0 = time.perf_counter()
            action = self.reference.act(obs)
            self.split["int_act"].add(time.perf_counter() - t0)
            return action
        t0 = time.perf_counter()
        q_in = self.reference.quantize(obs)                 # ObservationError propagates: bad input, not a fault
        t1 = time.perf_counter()
        try:
            if hasattr(self.active, "codes"):
                q_out = np.asarray(self.active.codes(q_in[None]), dtype=np.int64)[0]
                t2 = time.perf_counter()
                action = self.reference.decode(q_out)       # CoreFault for a code outside the range
                t3 = time.perf_counter()
                self.split["host_in"].add(t1 - t0)
                self.split["core"].add(t2 - t1)
                self.split["host_out"].add(t3 - t2)
            else:                                          # float: no codes to compare, only faults
                return np.asarray(self.active.act(obs), dtype=np.float64)
        except ObservationError:
            raise
        except Exception as exc:  # any backend error: answer this observation from int
            return self._fall_back(q_in, f"{type(exc).__name__}: {str(exc)[:160]}")
        self.served_by_primary += 1
        if self.shadow_every > 0 and self.served_by_primary % self.shadow_every == 0:
            expected = self.reference.codes(q_in[None])[0]
            self.shadow_checks += 1
            if not np.array_equal(expected, q_out):
                self.mismatches += 1
                self._log_mismatch(q_in, q_out, expected)
                return self._fall_back(q_in, f"shadow check: {self.active.backend} gave codes {q_out.tolist()}, "
                                             f"int gives {expected.tolist()}")
        return action

    def _act_without_reference(self, obs) -> np.ndarray:
        try:
            return np.asarray(self.active.act(obs), dtype=np.float64)
        except ObservationError:
            raise
        except Exception as exc:  # nothing to fall back to: the safe action, loudly
            self._record_fault(f"{type(exc).__name__}: {str(exc)[:160]}")
            return self.bundle.safe_action

    def _record_fault(self, reason: str) -> None:
        self.faults += 1
        self.last_fault = reason
        self._failed_at = self.clock()

    def _fall_back(self, q_in: np.ndarray, reason: str) -> np.ndarray:
        failed = self.active.backend
        self._record_fault(reason)
        self.active = self.reference
        can_retry = self.max_retries < 0 or self.retries < self.max_retries
        self.notify("error", f"{failed} failed ({reason}); this and the next observations are served by int"
                             + (f", {failed} is retried in {self.retry_after_s:g} s" if can_retry else
                                ", for the rest of the run"))
        return self.reference.decode(self.reference.codes(q_in[None])[0])

    def _maybe_retry(self) -> None:
        if not self.degraded or not (self.max_retries < 0 or self.retries < self.max_retries):
            return
        if self.clock() - self._failed_at >= self.retry_after_s:
            self.retries += 1
            self.active = self.primary
            self.notify("warn", f"retrying {self.primary.backend} (retry {self.retries}"
                                + (f" of {self.max_retries})" if self.max_retries >= 0 else ")"))

    def _log_mismatch(self, q_in, got, expected) -> None:
        if self.mismatch_log is None or self._mismatch_lines >= MISMATCH_LINES_KEPT:
            return
        try:
            self.mismatch_log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.mismatch_log, "a") as f:
                f.write(json.dumps({"time": time.time(), "backend": self.active.backend, "bundle": self.bundle.digest,
                                    "q_in": np.asarray(q_in).tolist(), "codes": np.asarray(got).tolist(),
                                    "int_codes": np.asarray(expected).tolist()}) + "\n")
            self._mismatch_lines += 1
        except OSError as exc:  # an unwritable log must not stop serving
            self.notify("warn", f"cannot write the mismatch log {self.mismatch_log}: {exc.strerror}")
            self.mismatch_log = None

    def stats(self) -> dict:
        out = {"faults": self.faults, "last_fault": self.last_fault, "degraded": self.degraded,
               "fpga_retries": self.retries, "shadow_checks": self.shadow_checks,
               "shadow_mismatches": self.mismatches,
               "int_act_path": self.reference.act_path if self.reference is not None else None}
        for name, stats in self.split.items():
            if stats.values:
                pct = stats.percentiles_us()
                out[f"{name}_us_p50"], out[f"{name}_us_p99"] = pct["p50"], pct["p99"]
        return out

"""Latency statistics in bounded memory (numpy only): shared by the runtimes, the server and the bridge."""
from __future__ import annotations

import math
from collections import deque

import numpy as np


class LatencyStats:
    """A sliding window of latencies (seconds) with percentiles in microseconds."""

    def __init__(self, window: int = 10_000):
        self.values: deque[float] = deque(maxlen=window)

    def add(self, seconds: float) -> None:
        if math.isfinite(seconds):
            self.values.append(seconds)

    def percentiles_us(self) -> dict[str, float | None]:
        if not self.values:
            return {"p50": None, "p90": None, "p99": None, "max": None, "n": 0}
        a = np.asarray(self.values) * 1e6
        return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
                "p99": float(np.percentile(a, 99)), "max": float(a.max()), "n": int(a.size)}

"""What the learner samples: the replay buffer of raw transitions and the running observation
normalization applied to them at sampling time (and frozen for evaluation and export)."""
from __future__ import annotations

import numpy as np
from gymnasium.wrappers.utils import RunningMeanStd

from qpolicy_hw.host_float import NORM_EPSILON, normalize_observation


class ObservationNormalizer:
    """Running per-dimension statistics (Gymnasium's RunningMeanStd), frozen for evaluation/export.

    ``raw_dims`` stay at mean 0 and variance 1 (only the clip acts): inputs the environment already bounds,
    which the statistics would amplify, such as Ant-v5's mostly-zero contact forces (docs/training.md)."""

    def __init__(self, obs_dim: int, clip: float, adapt: bool = True, raw_dims: np.ndarray | None = None):
        self.rms = RunningMeanStd(shape=(obs_dim,))
        self.clip = clip
        self.adapt = adapt   # False: mean 0 and variance 1 throughout (only the clip acts)
        self.raw_dims = np.zeros(0, np.int64) if raw_dims is None else np.asarray(raw_dims, np.int64)

    def update(self, obs: np.ndarray) -> None:
        if self.adapt:
            self.rms.update(np.asarray(obs, dtype=np.float64)[None])
            self.rms.mean[self.raw_dims] = 0.0
            self.rms.var[self.raw_dims] = 1.0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return normalize_observation(obs, self.rms.mean, self.rms.var, self.clip, NORM_EPSILON)

    def state(self) -> dict:
        return {"mean": self.rms.mean.copy(), "var": self.rms.var.copy(), "count": float(self.rms.count),
                "clip": self.clip, "epsilon": NORM_EPSILON}

    def load(self, state: dict) -> None:
        self.rms.mean, self.rms.var, self.rms.count = state["mean"].copy(), state["var"].copy(), state["count"]


SPARSE_SHARE_LIMIT = 0.5
"""The most of the normalized input's mean square that mostly-zero dimensions may take before a run warns."""


def sparse_input_share(obs: np.ndarray, normalizer: ObservationNormalizer) -> tuple[float, np.ndarray]:
    """The share of the normalized input's mean square on dimensions that are zero in at least half of the
    rows of ``obs`` (raw observations: contact forces, typically), and those dimensions.

    Normalization gives every dimension unit variance, so a block of mostly-zero inputs weighs as much as the
    state: on Ant-v5 the 54 contact forces that move carry 2 % of the raw input and 67 % of the normalized one,
    and the FP32 actor learned far slower with them normalized than raw (docs/training.md)."""
    obs = np.asarray(obs, np.float64)
    sparse = np.flatnonzero(np.mean(obs == 0.0, axis=0) >= 0.5)
    energy = np.mean(np.square(normalizer(obs).astype(np.float64)), axis=0)
    total = float(energy.sum())
    return (float(energy[sparse].sum()) / total if total > 0 else 0.0), sparse


class ReplayBuffer:
    """Raw observations; they are normalized with the current statistics at sampling time."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.capacity, self.pos, self.full = capacity, 0, False
        self.obs = np.zeros((capacity, obs_dim), np.float64)
        self.next_obs = np.zeros((capacity, obs_dim), np.float64)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew = np.zeros((capacity,), np.float32)
        self.done = np.zeros((capacity,), np.float32)

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def add(self, obs, next_obs, act, rew, terminated) -> None:
        i = self.pos
        self.obs[i], self.next_obs[i], self.act[i], self.rew[i], self.done[i] = obs, next_obs, act, rew, terminated
        self.pos = (i + 1) % self.capacity
        self.full = self.full or self.pos == 0

    def sample(self, rng: np.random.Generator, n: int):
        idx = rng.integers(0, len(self), n)
        return self.obs[idx], self.next_obs[idx], self.act[idx], self.rew[idx], self.done[idx]

    def state(self) -> dict:
        n = len(self)
        return {"pos": self.pos, "full": self.full, "obs": self.obs[:n].copy(), "next_obs": self.next_obs[:n].copy(),
                "act": self.act[:n].copy(), "rew": self.rew[:n].copy(), "done": self.done[:n].copy()}

    def load(self, s: dict) -> None:
        """Restore a saved buffer. Its capacity follows ``total_timesteps``, so a run resumed with a
        longer budget gets a larger buffer: the saved transitions are then laid out oldest first, as an
        uninterrupted run with that budget would hold them (and only the newest fit a smaller one)."""
        n = len(s["obs"])
        keys = ("obs", "next_obs", "act", "rew", "done")
        if (s["full"] and n == self.capacity) or (not s["full"] and n < self.capacity):  # same layout: exact
            for k in keys:
                getattr(self, k)[:n] = s[k]
            self.pos, self.full = s["pos"], s["full"]
            return
        order = np.r_[s["pos"]:n, 0:s["pos"]] if s["full"] else np.arange(n)
        keep = order[-self.capacity:]
        for k in keys:
            getattr(self, k)[:len(keep)] = s[k][keep]
        self.full = len(keep) == self.capacity
        self.pos = 0 if self.full else len(keep)

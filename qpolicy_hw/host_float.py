"""The two float steps of the integer contract that run on the host (numpy only).

Training and every runtime call these same functions, so the float operations that feed
the quantizer are identical by construction, not by coincidence.
"""
from __future__ import annotations

import numpy as np

from qpolicy_hw.integer_ranges import signed_range

NORM_EPSILON = 1e-8
"""Added to the running variance before the square root (Gymnasium's convention)."""


def normalize_observation(obs: np.ndarray, mean: np.ndarray, var: np.ndarray,
                          clip: float, epsilon: float = NORM_EPSILON) -> np.ndarray:
    """Frozen running normalization, clipped: float64 arithmetic, float32 result (the actor's input dtype)."""
    z = (np.asarray(obs, dtype=np.float64) - mean) / np.sqrt(var + epsilon)
    return np.clip(z, -clip, clip).astype(np.float32)


def quantize_input(normalized: np.ndarray, scale: np.float32, bits: int) -> np.ndarray:
    """Signed ``bits``-bit input codes: ``clip(round_half_even(n / s))`` in float32, as Brevitas does."""
    y = np.asarray(normalized, dtype=np.float32) / np.float32(scale)
    lo, hi = signed_range(bits)
    return np.clip(np.rint(y), lo, hi).astype(np.int64)


def check_observation(obs, obs_dim: int) -> np.ndarray:
    """``obs`` as a finite float64 vector of length ``obs_dim``, else :class:`ObservationError` saying why."""
    from qpolicy_hw.errors import ObservationError

    try:
        x = np.asarray(obs, dtype=np.float64)
    except (TypeError, ValueError):
        raise ObservationError("observation is not a numeric vector") from None
    if x.ndim != 1 or x.shape[0] != obs_dim:
        raise ObservationError(f"observation has shape {x.shape}, expected ({obs_dim},)")
    if not np.all(np.isfinite(x)):
        raise ObservationError("observation contains NaN or Inf")
    return x


class ObservationHost:
    """The host side every backend shares: input checks and the frozen normalization of a bundle.

    Subclasses add ``act_normalized``; ``act(obs)`` is then the same for all of them.
    """

    def __init__(self, bundle):
        norm = bundle.normalization
        self.bundle = bundle
        self.obs_dim, self.act_dim = bundle.obs_dim, bundle.act_dim
        self._mean = np.asarray(norm["mean"], dtype=np.float64)
        self._var = np.asarray(norm["var"], dtype=np.float64)
        self._clip = float(norm["clip"])
        self._eps = float(norm["epsilon"])

    def check_observation(self, obs) -> np.ndarray:
        """Return ``obs`` as float64 or raise :class:`ObservationError` naming what is wrong."""
        return check_observation(obs, self.obs_dim)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return normalize_observation(obs, self._mean, self._var, self._clip, self._eps)

    def act(self, obs) -> np.ndarray:
        """Observation -> action (float64), raising :class:`ObservationError` for unusable input."""
        return self.act_normalized(self.normalize(self.check_observation(obs)))

    def act_normalized(self, normalized: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

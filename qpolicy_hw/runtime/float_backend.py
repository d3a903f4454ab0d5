"""The ``float`` backend: the Brevitas (or FP32) forward of the trained actor, for reference."""
from __future__ import annotations

import numpy as np
import torch

from qpolicy_hw.bundle import Bundle
from qpolicy_hw.float_model import rebuild_actor
from qpolicy_hw.host_float import check_observation, normalize_observation


class FloatPolicy:
    backend = "float"

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.body, self.squash = rebuild_actor(bundle)
        norm = bundle.normalization
        self._norm = (np.asarray(norm["mean"], np.float64), np.asarray(norm["var"], np.float64),
                      float(norm["clip"]), float(norm["epsilon"]))
        self.obs_dim, self.act_dim = bundle.obs_dim, bundle.act_dim

    def check_observation(self, obs) -> np.ndarray:
        return check_observation(obs, self.obs_dim)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        mean, var, clip, eps = self._norm
        return normalize_observation(obs, mean, var, clip, eps)

    def act(self, obs) -> np.ndarray:
        return self.act_normalized(self.normalize(self.check_observation(obs)))

    @torch.no_grad()
    def act_normalized(self, normalized: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(normalized, dtype=np.float32))[None]
        return self.squash(self.body(x))[0].numpy().astype(np.float64)

"""The ``float`` backend: the Brevitas (or FP32) forward of the trained actor, for reference."""
from __future__ import annotations

import numpy as np
import torch

from qpolicy_hw.bundle import Bundle
from qpolicy_hw.float_model import rebuild_actor
from qpolicy_hw.host_float import ObservationHost


class FloatPolicy(ObservationHost):
    backend = "float"

    def __init__(self, bundle: Bundle):
        super().__init__(bundle)
        self.body, self.squash = rebuild_actor(bundle)

    @torch.no_grad()
    def act_normalized(self, normalized: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(normalized, dtype=np.float32))[None]
        return self.squash(self.body(x))[0].numpy().astype(np.float64)

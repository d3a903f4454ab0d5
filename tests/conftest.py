"""Shared fixtures: tiny quantized actors built in code (nothing downloaded), one directory per test."""
from __future__ import annotations

import os

import numpy as np
import pytest

# Every test process that might touch DDS stays on this machine, on a private domain.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))

OBS_DIM, ACT_DIM = 11, 3


def calibrated_body(spec, seed: int = 0, obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM):
    """A Brevitas actor body past its 300-step activation-scale warm-up, with non-trivial biases."""
    import torch

    from qpolicy_train.quant_actor import make_actor_body

    torch.manual_seed(seed)
    body = make_actor_body(obs_dim, act_dim, spec)
    with torch.no_grad():
        for p in body.parameters():
            if p.ndim == 1 and p.numel() > 1:  # biases: give them some spread
                p.uniform_(-0.3, 0.3)
    body.train()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(301):
            body(torch.randn(64, obs_dim, generator=gen) * 1.5)
    body.eval()
    return body


def make_bundle(tmp_path, spec, seed: int = 0, name: str = "bundle"):
    """Export a calibrated tiny actor to ``tmp_path/name`` and return the path."""
    from qpolicy_train.export import export_actor
    from qpolicy_train.quant_actor import SquashedAction

    body = calibrated_body(spec, seed)
    rng = np.random.default_rng(seed)
    norm = {"mean": rng.normal(0, 1, OBS_DIM), "var": rng.uniform(0.5, 2.0, OBS_DIM), "clip": 10.0,
            "epsilon": 1e-8}
    squash = SquashedAction(-np.ones(ACT_DIM), np.ones(ACT_DIM))
    return export_actor(body, squash, spec, "Hopper-v5", norm, {"note": "test fixture", "seed": seed},
                        tmp_path / name)


@pytest.fixture
def bundle_factory(tmp_path):
    def factory(spec=None, seed: int = 0, name: str = "bundle"):
        from qpolicy_train.quant_actor import QuantSpec

        return make_bundle(tmp_path, spec or QuantSpec(6, 2, 8, 16, 2, "float"), seed, name)

    return factory

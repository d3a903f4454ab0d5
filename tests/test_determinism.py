"""Same seed, same config -> identical evaluation returns and a byte-identical bundle (SB3-style)."""
from __future__ import annotations

import filecmp

import numpy as np
import pytest

from qpolicy_hw.bundle import load_bundle
from qpolicy_hw.runtime.int_backend import IntegerPolicy
from qpolicy_train.args import Args
from qpolicy_train.export import export_checkpoint
from qpolicy_train.training import train


def tiny_args(out_dir, algo="sac", seed=3) -> Args:
    # DDPG updates its actor every other step, so it needs more steps to finish the 300-step warm-up
    return Args.from_dict(dict(env_id="Hopper-v5", algo=algo, seed=seed, total_timesteps=700 if algo == "sac" else 900, learning_starts=100,
                batch_size=64, input_bits=6, core_bits=2, output_bits=8, width=16, critic_width=64,
                eval_every=350, eval_episodes=2, checkpoint_every=200, out_dir=str(out_dir), progress=False,
                export_bundle=False))


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("algo", ["sac", "ddpg"])
def test_same_seed_same_returns_same_bundle(tmp_path, algo):
    runs = []
    for name in ("a", "b"):
        summary = train(tiny_args(tmp_path / name, algo))
        bundle = export_checkpoint(tmp_path / name / "actor.pt", tmp_path / name / "bundle")
        runs.append((summary, bundle))
    (s1, b1), (s2, b2) = runs
    assert [h["eval_mean"] for h in s1["history"]] == [h["eval_mean"] for h in s2["history"]]
    assert _files(b1) == _files(b2)
    _, mismatch, errors = filecmp.cmpfiles(b1, b2, [str(f) for f in _files(b1)], shallow=False)
    assert mismatch == [] and errors == []
    # ...and the exported bundle is a working policy
    pol = IntegerPolicy(load_bundle(b1))
    assert pol.act(np.zeros(pol.obs_dim)).shape == (3,)


def test_other_seed_other_bundle(tmp_path):
    train(tiny_args(tmp_path / "a", seed=3))
    train(tiny_args(tmp_path / "b", seed=4))
    a = export_checkpoint(tmp_path / "a", tmp_path / "a" / "bundle")
    b = export_checkpoint(tmp_path / "b", tmp_path / "b" / "bundle")
    assert (a / "arrays.npz").read_bytes() != (b / "arrays.npz").read_bytes()

"""Deterministic rollouts of a bundle through any runtime backend, optionally with input noise.

Noise follows the paper: i.i.d. Gaussian with standard deviation ``sigma`` added to the *normalized*
(and clipped) observation at test time only. It is not clipped again: the input quantizer saturates.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.files import writable_file
from qpolicy_hw.runtime import make_policy

NOISE_FIELDS = ("env_id", "model", "sigma", "seed", "mean_return", "std_return", "episodes")
"""The columns of ``qpolicy noise``'s CSV (and what ``qpolicy plot --noise`` reads)."""
NOISE_STREAM = 0x5EED
"""The noise generator is ``np.random.default_rng((seed, NOISE_STREAM))``, independent of the env's."""


def rollout(policy, env_id: str, episodes: int, seed: int, noise: float = 0.0,
            on_step: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None,
            env_module: str | None = None) -> list[float]:
    """Episode ``i`` resets with ``seed + i``. ``on_step(obs, policy_input, action)`` sees every step."""
    from qpolicy_sim.envs import make_env

    if episodes <= 0:
        raise QpolicyError(f"episodes={episodes} must be positive")
    if not np.isfinite(noise) or noise < 0:
        raise QpolicyError(f"noise={noise} must be a finite standard deviation >= 0")
    env = make_env(env_id, env_module)
    noise_rng = np.random.default_rng((seed, NOISE_STREAM))
    returns = []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            total, done = 0.0, False
            while not done:
                x = policy.normalize(policy.check_observation(obs))
                if noise > 0:
                    x = (x + noise * noise_rng.standard_normal(x.shape)).astype(np.float32)
                action = policy.act_normalized(x)
                if on_step is not None:
                    on_step(obs, x, action)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns


def evaluate_bundle(bundle_path: str, episodes: int = 10, backend: str = "int", noise: float = 0.0,
                    seed: int = 0, env_module: str | None = None) -> dict[str, Any]:
    """``qpolicy eval``: the summary printed as JSON."""
    policy = make_policy(bundle_path, backend)
    returns = rollout(policy, policy.bundle.env_id, episodes, seed, noise, env_module=env_module)
    return {"env": policy.bundle.env_id, "episodes": episodes, "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)), "backend": policy.backend, "noise": noise, "seed": seed,
            "bundle": str(policy.bundle.path), "returns": returns}


def noise_table(bundles: list[tuple[str, str]], sigmas: list[float], episodes: int, seed: int,
                out_csv: str, env_module: str | None = None) -> list[dict[str, Any]]:
    """Returns of each ``(label, bundle)`` at each noise sigma, written to ``out_csv`` row by row.

    Every input (the sigmas, the episode count, every bundle) is checked before the CSV is touched, and the
    rows go to a temporary file beside it that replaces it only when the table is complete: a refused or
    interrupted run leaves an existing ``out_csv`` as it was."""
    import os

    if episodes <= 0:
        raise QpolicyError(f"episodes={episodes} must be positive")
    bad = [s for s in sigmas if not np.isfinite(s) or s < 0]
    if bad:
        raise QpolicyError(f"sigma {bad[0]}: noise must be a finite standard deviation >= 0")
    policies = [(label, path, make_policy(path, "auto")) for label, path in bundles]
    out = writable_file(out_csv)
    tmp = out.with_name(f".{out.name}.partial")
    rows = []
    try:
        rows = _write_noise_rows(tmp, policies, sigmas, episodes, seed, env_module)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return rows


def _write_noise_rows(tmp, policies, sigmas, episodes, seed, env_module=None) -> list[dict[str, Any]]:
    import csv
    from pathlib import Path

    rows = []
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=NOISE_FIELDS)
        writer.writeheader()
        for label, path, policy in policies:
            for sigma in sigmas:
                rets = rollout(policy, policy.bundle.env_id, episodes, seed, sigma, env_module=env_module)
                row = {"env_id": policy.bundle.env_id, "model": label or Path(path).name, "sigma": sigma,
                       "seed": policy.bundle.meta.get("provenance", {}).get("seed", ""),
                       "mean_return": float(np.mean(rets)), "std_return": float(np.std(rets)), "episodes": episodes}
                writer.writerow(row)
                f.flush()
                rows.append(row)
    return rows

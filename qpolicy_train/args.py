"""The arguments of a training run (SAC or DDPG) and the environment it trains on.

One :class:`Args` dataclass for both algorithms: every field carries a one-line docstring, so
``qpolicy train --help`` (tyro) documents them; the defaults are CleanRL's, as used by Kresse & Lampert.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import gymnasium as gym

from qpolicy_hw.errors import QpolicyError
from qpolicy_train.quant_actor import QuantSpec

TASKS = ("Hopper", "Walker2d", "HalfCheetah", "Ant", "Humanoid")

class TrainError(QpolicyError):
    """A run that cannot start or resume; the message says why and what to do."""


@dataclass
class Args:
    """Arguments of one SAC/DDPG run. Every field is documented; ``qpolicy train --help`` shows them."""

    env_id: str = "Hopper-v5"
    """Gymnasium MuJoCo task: Hopper, Walker2d, HalfCheetah, Ant or Humanoid, -v5 (default) or -v4 (paper)"""
    algo: Literal["sac", "ddpg"] = "sac"
    """actor-critic algorithm"""
    seed: int = 1000
    """seed of torch, numpy, the replay sampling and the environment (paper seeds: 1000-1009)"""
    total_timesteps: int = 1_000_000
    """environment steps of the run (the paper: 1M)"""
    # --- quantized actor -------------------------------------------------------------------
    input_bits: int = 8
    """signed bits of the quantized, normalized observation"""
    core_bits: int = 8
    """bits of the actor weights and hidden activations"""
    output_bits: int = 8
    """signed bits of the pre-tanh action code"""
    width: int = 256
    """actor hidden width"""
    depth: int = 2
    """actor hidden layers"""
    scale_mode: Literal["float", "po2"] = "float"
    """'float' scales (paper) or power-of-two scales with an integer bias (exact hls4ml)"""
    quantized: bool = True
    """train an FP32 actor instead (the baseline) when False"""
    # --- SAC / DDPG (CleanRL defaults) --------------------------------------------------------
    buffer_size: int = 1_000_000
    """replay buffer capacity"""
    gamma: float = 0.99
    """discount"""
    tau: float = 0.005
    """target smoothing coefficient"""
    batch_size: int = 256
    """replay batch size"""
    learning_starts: int = 5000
    """random-action steps before learning begins"""
    policy_lr: float = 3e-4
    """actor (and entropy coefficient) learning rate"""
    q_lr: float = 1e-3
    """critic learning rate (DDPG uses policy_lr for both, as CleanRL)"""
    policy_frequency: int = 2
    """critic steps per delayed actor update (the actor then updates this many times)"""
    target_network_frequency: int = 1
    """critic steps per target update"""
    alpha: float = 0.2
    """entropy coefficient when not autotuned"""
    autotune: bool = True
    """tune the entropy coefficient automatically"""
    exploration_noise: float = 0.1
    """DDPG: Gaussian exploration noise, relative to the action half-range"""
    critic_width: int = 256
    """hidden width of the FP32 critics"""
    log_std_width: int = 64
    """hidden width of SAC's FP32 log-std branch"""
    obs_clip: float = 10.0
    """normalized observations are clipped to [-obs_clip, obs_clip]"""
    # --- bookkeeping ---------------------------------------------------------------------
    out_dir: str = "runs/hopper-sac"
    """where logs, checkpoints and the final bundle go"""
    eval_every: int = 10_000
    """environment steps between deterministic evaluations"""
    eval_episodes: int = 10
    """episodes per periodic evaluation (the paper: 10 for curves)"""
    checkpoint_every: int = 10_000
    """a checkpoint is written at the first episode end after this many steps"""
    torch_threads: int = 1
    """torch intra-op threads; 1 is fastest for these small nets on a 2-core machine"""
    fused_quant: bool = True
    """after the warm-up, run the actor through the fused fake-quant forward (bit-identical to Brevitas,
    checked on the first batch; faster on CPU, docs/training.md); False keeps Brevitas' modules throughout"""
    progress: bool = True
    """show a progress bar"""
    export_bundle: bool = True
    """export the final actor to OUT_DIR/bundle when the run ends"""

    def spec(self) -> QuantSpec:
        return QuantSpec(self.input_bits, self.core_bits, self.output_bits, self.width, self.depth,
                         self.scale_mode, self.quantized)

    def validate(self) -> Args:
        """Refuse a run that cannot work, before anything is trained or written."""
        task = self.env_id.split("-")[0]
        if task not in TASKS or not (self.env_id.endswith("-v4") or self.env_id.endswith("-v5")):
            raise TrainError(f"unknown task {self.env_id!r}: use one of "
                             + ", ".join(f"{t}-v5" for t in TASKS) + " (or -v4)")
        self.spec().validate()
        for name in ("total_timesteps", "batch_size", "buffer_size", "eval_episodes", "critic_width"):
            if getattr(self, name) <= 0:
                raise TrainError(f"{name}={getattr(self, name)} must be positive")
        if self.learning_starts < 0:
            raise TrainError(f"learning_starts={self.learning_starts} must be >= 0")
        if self.learning_starts >= self.total_timesteps:
            raise TrainError(f"learning_starts={self.learning_starts} >= total_timesteps={self.total_timesteps}: "
                             "the actor would never be trained; raise --total-timesteps or lower --learning-starts")
        return self


def make_env(env_id: str, seed: int, render_mode: str | None = None) -> gym.Env:
    env = gym.make(env_id, render_mode=render_mode)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env.action_space.seed(seed)
    return env

"""The arguments of a training run (SAC or DDPG) and the environment it trains on.

One :class:`Args` dataclass for both algorithms: every field carries a one-line docstring, so
``qpolicy train --help`` (tyro) documents them; the defaults are CleanRL's, as used by Kresse & Lampert.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import gymnasium as gym

from qpolicy_hw.errors import QpolicyError
from qpolicy_train.quant_actor import QuantSpec

_QUANT_FIELDS = tuple(f.name for f in fields(QuantSpec))

TASKS = ("Hopper", "Walker2d", "HalfCheetah", "Ant", "Humanoid")

class TrainError(QpolicyError):
    """A run that cannot start or resume; the message says why and what to do."""


@dataclass(slots=True)   # slots: a misspelt or flattened field (args.width) is an error, not a silent no-op
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
    quant: QuantSpec = field(default_factory=QuantSpec)
    """the quantized actor: bit widths per part, width, depth, scale mode (flat flags on the command line:
    --input-bits, --core-bits, --output-bits, --width, --depth, --scale-mode, --quantized)"""
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
    normalize_observations: bool = True
    """learn running mean/variance statistics of the observations; off, they stay at 0 and 1 and only the clip
    acts (SB3's and CleanRL's SAC use none: the FP32 cross-check's ablation)"""
    freeze_normalization_at: int = 0
    """stop updating the observation statistics at this step (0: never), so the learner sees a stationary input
    after it (the FP32 cross-check's frozen-norm ablation)"""
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

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Args:
        """Args from flat keys (presets, checkpoints, provenance, sweeps) or a nested ``quant`` mapping.

        Unknown keys are refused in one line, naming them.
        """
        if not isinstance(values, dict):
            raise TrainError(f"training arguments must be a mapping, not {type(values).__name__}")
        values = dict(values)
        quant = values.pop("quant", None) or {}
        if not isinstance(quant, (dict, QuantSpec)):
            raise TrainError(f"quant must be a mapping, not {type(quant).__name__}")
        quant = quant.to_dict() if isinstance(quant, QuantSpec) else dict(quant)
        quant.update({k: values.pop(k) for k in _QUANT_FIELDS if k in values})
        own = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - own) + sorted(set(quant) - set(_QUANT_FIELDS))
        if unknown:
            raise TrainError(f"unknown training argument(s) {', '.join(unknown)}")
        return cls(**values, quant=QuantSpec(**quant))

    def to_dict(self) -> dict[str, Any]:
        """Flat keys, in field order: the form checkpoints, presets and bundle provenance store."""
        flat: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "quant":
                flat.update(self.quant.to_dict())
            else:
                flat[f.name] = getattr(self, f.name)
        return flat

    def validate(self) -> Args:
        """Refuse a run that cannot work, before anything is trained or written."""
        task = self.env_id.split("-")[0]
        if task not in TASKS or not (self.env_id.endswith("-v4") or self.env_id.endswith("-v5")):
            raise TrainError(f"unknown task {self.env_id!r}: use one of "
                             + ", ".join(f"{t}-v5" for t in TASKS) + " (or -v4)")
        self.quant.validate()
        for name in ("total_timesteps", "batch_size", "buffer_size", "eval_episodes", "critic_width"):
            if getattr(self, name) <= 0:
                raise TrainError(f"{name}={getattr(self, name)} must be positive")
        if self.learning_starts < 0 or self.freeze_normalization_at < 0:
            raise TrainError(f"learning_starts={self.learning_starts} and freeze_normalization_at="
                             f"{self.freeze_normalization_at} must be >= 0")
        if self.learning_starts >= self.total_timesteps:
            raise TrainError(f"learning_starts={self.learning_starts} >= total_timesteps={self.total_timesteps}: "
                             "the actor would never be trained; raise --total-timesteps or lower --learning-starts")
        return self


def make_env(env_id: str, seed: int, render_mode: str | None = None) -> gym.Env:
    from qpolicy_sim.envs import make_env as make_checked_env

    env = make_checked_env(env_id, render_mode=render_mode)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env.action_space.seed(seed)
    return env

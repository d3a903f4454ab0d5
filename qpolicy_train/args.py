"""The arguments of a training run (SAC or DDPG) and the environment it trains on.

One :class:`Args` dataclass for both algorithms: every field carries a one-line docstring, so
``qpolicy train --help`` (tyro) documents them; the defaults are CleanRL's, as used by Kresse & Lampert.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from itertools import groupby
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from qpolicy_hw.errors import QpolicyError
from qpolicy_train.quant_actor import QuantSpec

_QUANT_FIELDS = tuple(f.name for f in fields(QuantSpec))

PAPER_TASKS = ("Hopper", "Walker2d", "HalfCheetah", "Ant", "Humanoid")
"""The paper's tasks, which have presets (config/train/); any other Box environment trains on the defaults."""

class TrainError(QpolicyError):
    """A run that cannot start or resume; the message says why and what to do."""


@dataclass(slots=True)   # slots: a misspelt or flattened field (args.width) is an error, not a silent no-op
class Args:
    """Arguments of one SAC/DDPG run. Every field is documented; ``qpolicy train --help`` shows them."""

    env_id: str = "Hopper-v5"
    """Gymnasium environment with Box observations and bounded Box actions: the paper's Hopper, Walker2d,
    HalfCheetah, Ant, Humanoid (-v5, or -v4), Gymnasium's others (InvertedPendulum-v5, Reacher-v5, ...) or
    your own (--env-module)"""
    env_module: str = ""
    """a package of yours to import first: it registers your environment (never taken from a bundle; its name
    and version go into the bundle's provenance)"""
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
    raw_observation_dims: str = ""
    """observation dimensions kept out of the statistics (mean 0, variance 1: only the clip acts), as Python
    slices separated by commas, e.g. '27:' for Ant-v5's 78 contact forces, which the environment bounds to
    [-1, 1] and which are zero in most steps (the FP32 cross-check's raw-contacts ablation, docs/training.md)"""
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
    rate_hz: float = 0.0
    """the control rate the bundle records for realtime serving: 0 takes 1/env.dt (needed where the
    environment has no dt)"""
    safe_action: tuple[float, ...] = ()
    """the action a server holds when it cannot answer (one value per action dimension, inside the action box;
    default: the box's middle, which is not safe for every robot)"""

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
        from qpolicy_sim.envs import MODULE_NAME

        check_env_form(self.env_id)
        if self.env_module and not MODULE_NAME.fullmatch(self.env_module):
            raise TrainError(f"env_module={self.env_module[:60]!r}: not a dotted Python module name")
        if not (self.rate_hz == 0 or (math.isfinite(self.rate_hz) and self.rate_hz > 0)):
            raise TrainError(f"rate_hz={self.rate_hz}: a positive control rate in Hz (0: the environment's)")
        if not all(math.isfinite(v) for v in self.safe_action):
            raise TrainError(f"safe_action={self.safe_action}: finite numbers only")
        self.quant.validate()
        for name in ("total_timesteps", "batch_size", "buffer_size", "eval_episodes", "critic_width"):
            if getattr(self, name) <= 0:
                raise TrainError(f"{name}={getattr(self, name)} must be positive")
        if self.learning_starts < 0 or self.freeze_normalization_at < 0:
            raise TrainError(f"learning_starts={self.learning_starts} and freeze_normalization_at="
                             f"{self.freeze_normalization_at} must be >= 0")
        parse_dim_slices(self.raw_observation_dims, "raw_observation_dims")
        if self.learning_starts >= self.total_timesteps:
            raise TrainError(f"learning_starts={self.learning_starts} >= total_timesteps={self.total_timesteps}: "
                             "the actor would never be trained; raise --total-timesteps or lower --learning-starts")
        return self


def parse_dim_slices(text: str, name: str) -> list[slice]:
    """'27:' or '0:3,10:12' -> slices, refusing anything else in one line (the text may come from a preset)."""
    if not isinstance(text, str):
        raise TrainError(f"{name} must be a string of slices such as '27:', not {type(text).__name__}")
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        bounds = part.split(":")
        if len(bounds) > 2 or not all(b.strip().isdigit() or not b.strip() for b in bounds):
            raise TrainError(f"{name}={text!r}: '{part}' is not an index or a slice of non-negative indices")
        ends = [int(b) if b.strip() else None for b in bounds]
        out.append(slice(ends[0], ends[0] + 1) if len(ends) == 1 else slice(*ends))
    return out


def dim_indices(text: str, dim: int, name: str) -> np.ndarray:
    """The sorted indices ``text``'s slices select from ``range(dim)``; a slice that selects nothing is refused."""
    picked: set[int] = set()
    for sl in parse_dim_slices(text, name):
        chosen = range(dim)[sl]
        if not chosen:
            shown = f"{sl.start}:{'' if sl.stop is None else sl.stop}"
            raise TrainError(f"{name}={text!r}: {shown} selects none of the {dim} observation dimensions")
        picked.update(chosen)
    return np.array(sorted(picked), np.int64)


def dims_text(indices) -> str:
    """Sorted indices as the shortest slice text :func:`dim_indices` reads back ('27:105', '0,3:5')."""
    parts = []
    # consecutive indices share index - position: each group is one run
    for _, group in groupby(enumerate(sorted(int(i) for i in indices)), key=lambda pair: pair[1] - pair[0]):
        run = [i for _, i in group]
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1] + 1}")
    return ",".join(parts)


def check_env_form(env_id: str) -> None:
    """A Gymnasium id of the usual form; the registry is asked when the environment is made."""
    from qpolicy_hw.bundle_schema import check_env_id
    from qpolicy_hw.errors import BundleError

    try:
        check_env_id(env_id, "env_id")
    except BundleError as exc:
        raise TrainError(str(exc)) from None


def check_task(args: Args) -> None:
    """Make the environment once and refuse, in one line and before anything is written, what a continuous
    quantized controller can't serve: a non-Box space, a non-vector one, unbounded actions, a safe action
    of the wrong length or outside the box, raw observation dimensions beyond the observation."""
    from qpolicy_sim.envs import check_spaces

    env = make_env(args.env_id, args.seed, env_module=args.env_module)
    try:
        check_spaces(env, args.env_id)
        dim_indices(args.raw_observation_dims, env.observation_space.shape[0], "raw_observation_dims")
        space = env.action_space
        if args.safe_action:
            safe = np.asarray(args.safe_action, np.float64)
            if safe.shape != space.shape or np.any(safe < space.low) or np.any(safe > space.high):
                raise TrainError(f"safe_action={args.safe_action}: {space.shape[0]} values inside the action box "
                                 f"[{space.low.tolist()}, {space.high.tolist()}]")
    finally:
        env.close()


def make_env(env_id: str, seed: int, render_mode: str | None = None, env_module: str | None = None) -> gym.Env:
    from qpolicy_sim.envs import make_env as make_checked_env

    env = make_checked_env(env_id, env_module or None, render_mode=render_mode)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env.action_space.seed(seed)
    return env

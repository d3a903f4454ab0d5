"""Soft Actor-Critic with a quantized actor, in one readable file (CleanRL style).

Read top to bottom: arguments, environment, networks, the training loop. The defaults are
CleanRL's SAC hyperparameters as used by Kresse & Lampert (L4DC 2026); differences from the
paper are listed in docs/training.md.

Only the actor body (observation -> pre-tanh mean) is quantized (Brevitas QAT from step 0).
The two critics and the log-std branch (one hidden layer of 64) are FP32 and used only here.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium.wrappers.utils import RunningMeanStd
from torch import nn

from qpolicy_hw.errors import QpolicyError
from qpolicy_hw.host_float import NORM_EPSILON, normalize_observation
from qpolicy_train import fakequant_kernel
from qpolicy_train.quant_actor import (
    QuantSpec,
    SquashedAction,
    load_quantized_state,
    make_actor_body,
    warmup_counters,
    warmup_done,
    warmup_in_progress,
)

TASKS = ("Hopper", "Walker2d", "HalfCheetah", "Ant", "Humanoid")
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))   # the constant torch.distributions.Normal.log_prob uses
WARMUP_GUARD_STEPS = 1000
"""Steps after learning starts during which acting uses eval mode (covers Brevitas' 300-step warm-up)."""


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


# --- environment ------------------------------------------------------------------------------
def make_env(env_id: str, seed: int, render_mode: str | None = None) -> gym.Env:
    env = gym.make(env_id, render_mode=render_mode)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env.action_space.seed(seed)
    return env


class ObservationNormalizer:
    """Running per-dimension statistics (Gymnasium's RunningMeanStd), frozen for evaluation/export."""

    def __init__(self, obs_dim: int, clip: float):
        self.rms = RunningMeanStd(shape=(obs_dim,))
        self.clip = clip

    def update(self, obs: np.ndarray) -> None:
        self.rms.update(np.asarray(obs, dtype=np.float64)[None])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return normalize_observation(obs, self.rms.mean, self.rms.var, self.clip, NORM_EPSILON)

    def state(self) -> dict:
        return {"mean": self.rms.mean.copy(), "var": self.rms.var.copy(), "count": float(self.rms.count),
                "clip": self.clip, "epsilon": NORM_EPSILON}

    def load(self, state: dict) -> None:
        self.rms.mean, self.rms.var, self.rms.count = state["mean"].copy(), state["var"].copy(), state["count"]


# --- networks ---------------------------------------------------------------------------------
class TwinQ(nn.Module):
    """Two Q-networks evaluated as one batched matmul (same maths as two MLPs, half the kernel calls)."""

    def __init__(self, in_dim: int, width: int, n: int = 2):
        super().__init__()
        dims = [in_dim, width, width, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=False):
            w = torch.empty(n, fan_in, fan_out)
            b = torch.empty(n, 1, fan_out)
            bound = 1.0 / np.sqrt(fan_in)  # torch.nn.Linear's default init
            for i in range(n):
                nn.init.kaiming_uniform_(w[i].T, a=np.sqrt(5))
                nn.init.uniform_(b[i], -bound, bound)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Returns Q-values of shape (n, batch)."""
        x = torch.cat([obs, act], 1).unsqueeze(0).expand(len(self.weights[0]), -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=False)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = F.relu(x)
        return x.squeeze(-1)


class Actor(nn.Module):
    """Quantized body (the deployed part) + SquashedAction; SAC adds an FP32 log-std branch."""

    def __init__(self, obs_dim: int, act_dim: int, low, high, spec: QuantSpec, stochastic: bool,
                 log_std_width: int = 64):
        super().__init__()
        self.body = make_actor_body(obs_dim, act_dim, spec)
        self.squash = SquashedAction(low, high)
        self.log_std = (nn.Sequential(nn.Linear(obs_dim, log_std_width), nn.ReLU(),
                                      nn.Linear(log_std_width, act_dim)) if stochastic else None)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return self.squash(self.body(obs))

    def _gaussian(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, standard deviation and a reparameterised pre-tanh sample. ``torch.distributions.Normal``
        computes the same values with the same ops (``loc + eps * scale``, ``eps`` from ``normal_``); written
        out, it skips the distribution object and its argument checks on every step."""
        mean = self.body(obs)
        log_std = torch.tanh(self.log_std(obs))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        std = log_std.exp()
        eps = torch.empty(mean.shape, dtype=mean.dtype).normal_()
        return mean, std, mean + eps * std

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised tanh-Gaussian sample and its log-probability (CleanRL's formulation)."""
        mean, std, x_t = self._gaussian(obs)
        y_t = torch.tanh(x_t)
        action = y_t * self.squash.action_scale + self.squash.action_bias
        # Normal(mean, std).log_prob(x_t), op for op
        normal_log_prob = -((x_t - mean) ** 2) / (2 * std ** 2) - std.log() - _LOG_SQRT_2PI
        log_prob = normal_log_prob - torch.log(self.squash.action_scale * (1 - y_t.pow(2)) + 1e-6)
        return action, log_prob.sum(1, keepdim=True)

    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """The action of :meth:`sample` alone (same random draw), for acting: no log-probability."""
        return self.squash(self._gaussian(obs)[2])


# --- replay buffer ----------------------------------------------------------------------------
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


# --- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(actor: Actor, normalizer: ObservationNormalizer, env_id: str, episodes: int, seed: int) -> list[float]:
    """Deterministic rollouts with frozen statistics (the float/Brevitas forward of the actor)."""
    env = make_env(env_id, seed)
    was_training = actor.training
    actor.eval()
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            x = torch.as_tensor(normalizer(obs))[None]
            obs, r, term, trunc, _ = env.step(actor.deterministic(x)[0].numpy())
            total += float(r)
            done = term or trunc
        returns.append(total)
    env.close()
    actor.train(was_training)
    return returns


def _run_identity(args: dict) -> dict:
    """The arguments that define a run; the others (length, logging) may change on resume."""
    free = {"total_timesteps", "progress", "export_bundle", "eval_every", "checkpoint_every", "out_dir",
            "fused_quant"}   # bit-identical either way
    return {k: v for k, v in args.items() if k not in free}


# --- the training loop ------------------------------------------------------------------------
def train(args: Args) -> dict:
    """Run (or resume) one training run; returns a summary with the final evaluation."""
    args.validate()
    out = Path(args.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write_test").touch()
        (out / ".write_test").unlink()
    except OSError as exc:
        raise TrainError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None
    ckpt_path = out / "checkpoint.pt"
    state = None
    if ckpt_path.exists():
        try:
            state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            if _run_identity(state.get("args", {})) != _run_identity(asdict(args)):
                raise TrainError(f"{ckpt_path} belongs to a run with other arguments; use another --out-dir")
        except TrainError:
            raise
        except Exception as exc:  # a truncated or foreign file
            raise TrainError(f"corrupt checkpoint {ckpt_path}: {type(exc).__name__}; delete it to start over") from None

    torch.set_num_threads(args.torch_threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    env = make_env(args.env_id, args.seed)
    obs_dim = env.observation_space.shape[0]
    act_dim = env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    sac = args.algo == "sac"
    actor = Actor(obs_dim, act_dim, low, high, args.spec(), stochastic=sac, log_std_width=args.log_std_width)
    qf = TwinQ(obs_dim + act_dim, args.critic_width, n=2 if sac else 1)
    qf_target = copy.deepcopy(qf)
    actor_target = copy.deepcopy(actor) if not sac else None
    target_entropy = -float(act_dim)
    log_alpha = torch.zeros(1, requires_grad=True)
    normalizer = ObservationNormalizer(obs_dim, args.obs_clip)
    rb = ReplayBuffer(min(args.buffer_size, args.total_timesteps), obs_dim, act_dim)

    start_step, episode, history = 0, 0, []
    obs, _ = env.reset(seed=args.seed)
    env_rng_before_reset = None
    normalizer.update(obs)
    if state is not None:
        load_quantized_state(actor, state["actor"])
        qf.load_state_dict(state["qf"])
        qf_target.load_state_dict(state["qf_target"])
        if actor_target is not None:
            load_quantized_state(actor_target, state["actor_target"])
        with torch.no_grad():
            log_alpha.copy_(state["log_alpha"])
    # Optimizers are built only now: loading a Brevitas state dict replaces the activation-scale
    # Parameter objects, and an optimizer built before would keep updating the stale ones.
    q_opt = torch.optim.Adam(qf.parameters(), lr=args.q_lr if sac else args.policy_lr)
    # foreach: the same update, value for value, a quarter faster over the actor's 14 small tensors
    # (the critics' 6 large ones gain nothing)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, foreach=True)
    alpha_opt = torch.optim.Adam([log_alpha], lr=args.policy_lr)
    alpha = float(log_alpha.detach().exp()) if args.autotune else args.alpha
    if state is not None:
        q_opt.load_state_dict(state["q_opt"])
        actor_opt.load_state_dict(state["actor_opt"])
        alpha_opt.load_state_dict(state["alpha_opt"])
        normalizer.load(state["normalizer"])
        rb.load(state["replay"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        env.action_space.np_random.bit_generator.state = state["action_space_rng"]
        start_step, episode, history = state["global_step"], state["episode"], state["history"]
        # Checkpoints are taken at episode ends with the env's generator as it was *before* that
        # reset, so this reset reproduces the uninterrupted run's (the normalizer already saw it).
        # A checkpoint without that state (written before any episode ended)
        # starts a fresh episode from the generator as saved: a valid continuation, not a bit-identical one.
        env_state = state.get("env_rng_before_reset") or state.get("env_rng")
        if env_state is not None:
            env.unwrapped.np_random.bit_generator.state = env_state
        obs, _ = env.reset()
        print(f"resumed {ckpt_path} at step {start_step}")

    csv_path = out / "progress.csv"
    rows = list(csv.reader(open(csv_path, newline=""))) if start_step and csv_path.exists() else []
    csv_file = open(csv_path, "w", newline="")
    log = csv.writer(csv_file)
    # a resumed run keeps the rows up to its checkpoint and drops what was logged after it
    log.writerows(rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= start_step] if rows else
                  [["global_step", "episode", "episodic_return", "eval_mean", "eval_std", "alpha", "sps"]])
    csv_file.flush()
    try:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tb"), purge_step=start_step or None)
    except ImportError:  # tensorboard is in the pinned environment; this only guards partial installs
        writer = None

    def save_checkpoint(step: int) -> None:
        payload = {
            "args": asdict(args), "actor": actor.state_dict(), "qf": qf.state_dict(),
            "qf_target": qf_target.state_dict(),
            "actor_target": actor_target.state_dict() if actor_target is not None else None,
            "q_opt": q_opt.state_dict(), "actor_opt": actor_opt.state_dict(), "alpha_opt": alpha_opt.state_dict(),
            "log_alpha": log_alpha.detach().clone(), "normalizer": normalizer.state(), "replay": rb.state(),
            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "env_rng_before_reset": env_rng_before_reset,
            "env_rng": copy.deepcopy(env.unwrapped.np_random.bit_generator.state),
            "action_space_rng": env.action_space.np_random.bit_generator.state,
            "global_step": step, "episode": episode, "history": history,
        }
        csv_file.flush()
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, ckpt_path)  # atomic: a kill mid-write never leaves a corrupt checkpoint

    bar = None
    if args.progress:
        from tqdm import tqdm
        bar = tqdm(total=args.total_timesteps, initial=start_step, unit="step", dynamic_ncols=True,
                   desc=f"{args.algo} {args.env_id}")
    t0, steps_at_t0 = time.time(), start_step
    paused = 0.0   # seconds of evaluations and checkpoint saves: the logged steps/s leave them out
    next_eval = (start_step // args.eval_every + 1) * args.eval_every
    next_ckpt = (start_step // args.checkpoint_every + 1) * args.checkpoint_every
    last_return = float("nan")
    # actors that switch to the fused forward once their activation-scale warm-up is over
    fused_since = None
    fuse_pending = ([n for n in (actor, actor_target) if n is not None]
                    if args.fused_quant and args.quantized and args.scale_mode == "float" else [])
    actor.train()
    global_step = start_step
    try:
        for global_step in range(start_step, args.total_timesteps):
            # 1. act: random before learning starts (and until the actor has seen one update)
            if global_step <= args.learning_starts:
                action = env.action_space.sample()
            else:
                # Brevitas collects activation statistics in train mode during its warm-up; acting
                # must not feed it batch-1 samples. Afterwards both modes compute the same thing,
                # and skipping the mode switch saves ~10% of the step time.
                warming_up = global_step < args.learning_starts + WARMUP_GUARD_STEPS
                if warming_up:
                    actor.eval()
                with torch.no_grad():
                    x = torch.as_tensor(normalizer(obs))[None]
                    if sac:
                        action = actor.explore(x)[0].numpy()
                    else:
                        a = actor.deterministic(x)[0]
                        a = a + torch.randn_like(a) * actor.squash.action_scale * args.exploration_noise
                        action = a.numpy().clip(low, high)
                if warming_up:
                    actor.train()
            next_obs, reward, terminated, truncated, info = env.step(action)
            rb.add(obs, next_obs, action, reward, terminated)
            obs = next_obs
            episode_end = terminated or truncated
            if episode_end:
                episode += 1
                last_return = float(info["episode"]["r"])
                log.writerow([global_step + 1, episode, last_return, "", "", alpha, ""])
                if writer:
                    writer.add_scalar("charts/episodic_return", last_return, global_step + 1)
                env_rng_before_reset = copy.deepcopy(env.unwrapped.np_random.bit_generator.state)
                obs, _ = env.reset()
            normalizer.update(obs)

            # 2. learn
            if global_step >= args.learning_starts:
                b_obs, b_next, b_act, b_rew, b_done = rb.sample(rng, args.batch_size)
                o = torch.as_tensor(normalizer(b_obs))
                o2 = torch.as_tensor(normalizer(b_next))
                a = torch.as_tensor(b_act)
                r = torch.as_tensor(b_rew)
                d = torch.as_tensor(b_done)
                policy_step = global_step % args.policy_frequency == 0
                for net in [n for n in fuse_pending if warmup_done(n.body)]:
                    fuse_pending.remove(net)
                    if not net.body.use_fused_forward(o):
                        print("the fused fake-quant forward differs from Brevitas here; keeping Brevitas' modules")
                    elif net is actor:
                        fused_since = global_step
                with torch.no_grad():
                    if sac:
                        a2, logp2 = actor.sample(o2)
                        q_next = qf_target(o2, a2).min(0).values - alpha * logp2.squeeze(1)
                    else:
                        q_next = qf_target(o2, actor_target.deterministic(o2))[0]
                    target = r + (1 - d) * args.gamma * q_next
                q = qf(o, a)
                q_loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(1).sum()
                q_opt.zero_grad(set_to_none=True)
                q_loss.backward()
                q_opt.step()

                if policy_step:
                    # The actor loss differentiates through the critics, but only the actor's gradient is
                    # used: frozen critic weights skip their weight-gradient products (same actor gradient).
                    qf.requires_grad_(False)
                    for _ in range(args.policy_frequency if sac else 1):
                        if sac:
                            pi, logp = actor.sample(o)
                            actor_loss = (alpha * logp.squeeze(1) - qf(o, pi).min(0).values).mean()
                        else:
                            actor_loss = -qf(o, actor.deterministic(o))[0].mean()
                        actor_opt.zero_grad(set_to_none=True)
                        actor_loss.backward()
                        actor_opt.step()
                        if sac and args.autotune:
                            # The same sample's log-probability (as Stable-Baselines3 does).
                            alpha_loss = (-log_alpha.exp() * (logp.detach() + target_entropy)).mean()
                            alpha_opt.zero_grad(set_to_none=True)
                            alpha_loss.backward()
                            alpha_opt.step()
                            alpha = float(log_alpha.detach().exp())
                    qf.requires_grad_(True)
                if global_step % args.target_network_frequency == 0:
                    with torch.no_grad():
                        pairs = [(qf, qf_target)] + ([(actor, actor_target)] if actor_target is not None else [])
                        for net, tgt in pairs:
                            for p, tp in zip(net.parameters(), tgt.parameters(), strict=False):
                                tp.lerp_(p, args.tau)

            # 3. bookkeeping
            step = global_step + 1
            if step >= next_eval or step == args.total_timesteps:
                next_eval += args.eval_every
                t_eval = time.time()
                rets = evaluate(actor, normalizer, args.env_id, args.eval_episodes, seed=args.seed + 10_000)
                paused += time.time() - t_eval
                sps = (step - steps_at_t0) / max(time.time() - t0 - paused, 1e-9)
                history.append({"step": step, "eval_mean": float(np.mean(rets)), "eval_std": float(np.std(rets)),
                                "sps": sps})
                log.writerow([step, episode, "", float(np.mean(rets)), float(np.std(rets)), alpha, sps])
                csv_file.flush()
                if writer:
                    writer.add_scalar("eval/mean_return", float(np.mean(rets)), step)
                    writer.add_scalar("charts/SPS", sps, step)
                if bar:
                    bar.set_postfix(eval=f"{np.mean(rets):.0f}", last=f"{last_return:.0f}", sps=f"{sps:.0f}")
            if episode_end and step >= next_ckpt and not warmup_in_progress(actor):
                next_ckpt = (step // args.checkpoint_every + 1) * args.checkpoint_every
                t_ckpt = time.time()
                save_checkpoint(step)
                paused += time.time() - t_ckpt
            if bar:
                bar.update(1)
    except KeyboardInterrupt:
        if bar:
            bar.close()
        if warmup_in_progress(actor):   # Brevitas' warm-up counters do not resume: keep the last checkpoint
            csv_file.close()
            where = f"the last checkpoint in {ckpt_path}" if ckpt_path.exists() else "step 0 (no checkpoint yet)"
            raise TrainError(f"interrupted at step {global_step}, inside the activation-scale warm-up: running the "
                             f"same command again resumes from {where}") from None
        save_checkpoint(global_step)   # mid-episode: the resumed run restarts that episode (valid, not bit-identical)
        csv_file.close()
        raise TrainError(f"interrupted at step {global_step}: checkpoint saved to {ckpt_path}; run the same command "
                         "again to resume") from None
    if bar:
        bar.close()
    train_loop_seconds = time.time() - t0 - paused
    save_checkpoint(args.total_timesteps)
    csv_file.close()
    if writer:
        writer.close()
    env.close()
    summary = {"env_id": args.env_id, "algo": args.algo, "seed": args.seed, "total_timesteps": args.total_timesteps,
               "spec": args.spec().to_dict(), "history": history,
               "final_eval_mean": history[-1]["eval_mean"] if history else None,
               "train_loop_steps": args.total_timesteps - steps_at_t0, "train_loop_seconds": train_loop_seconds,
               "fused_since_step": fused_since,
               "fused_quant_loops": None if fused_since is None else (
                   "c" if fakequant_kernel.kernels() else f"torch ops ({fakequant_kernel.unavailable_reason()})")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    torch.save({"args": asdict(args), "actor": actor.state_dict(), "warmup_counters": warmup_counters(actor),
                "normalizer": normalizer.state(),
                "obs_dim": obs_dim, "act_dim": act_dim, "low": low, "high": high, "history": history},
               out / "actor.pt")
    return summary

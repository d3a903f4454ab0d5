"""The machinery SAC and DDPG share (Stable-Baselines3's ``common`` idea): setting up or resuming a run,
acting and stepping the environment, sampling batches, the switch to the fused fake-quant forward,
target updates, periodic evaluation, checkpoints, logs, Ctrl-C, and the final save.

The algorithms (``sac.py``, ``ddpg.py``) read top to bottom as their updates and call this for the rest::

    with TrainingRun(args) as run:
        ...optimizers...
        run.track(q_opt=..., actor_opt=...)     # restored on resume, saved in checkpoints
        for step in run.steps():
            run.step_env(run.act(step, choose_action))
            if step >= args.learning_starts:
                o, o2, a, r, d = run.sample_batch()
                run.fuse_when_ready(o, step)
                ...the algorithm's update...
                run.update_targets(step)
    return run.summary()

Every operation happens in the order the single-file trainer had, so runs are bit-identical to it.
"""
from __future__ import annotations

import copy
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from qpolicy_hw.files import writable_dir
from qpolicy_train import fakequant_kernel
from qpolicy_train.args import Args, TrainError, check_task, dim_indices, dims_text, make_env
from qpolicy_train.checkpoint import CheckpointError, load_checkpoint
from qpolicy_train.networks import Actor, TwinQ
from qpolicy_train.quant_actor import load_quantized_state, warmup_counters, warmup_done, warmup_in_progress
from qpolicy_train.replay import SPARSE_SHARE_LIMIT, ObservationNormalizer, ReplayBuffer, sparse_input_share
from qpolicy_train.run_log import RunLog

WARMUP_GUARD_STEPS = 1000
"""Steps after learning starts during which acting uses eval mode (covers Brevitas' 300-step warm-up)."""


@torch.no_grad()
def evaluate(actor: Actor, normalizer: ObservationNormalizer, env_id: str, episodes: int, seed: int,
             env_module: str = "") -> list[float]:
    """Deterministic rollouts with frozen statistics (the float/Brevitas forward of the actor)."""
    env = make_env(env_id, seed, env_module=env_module)
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


def fit_critics(qf: TwinQ, q_opt: torch.optim.Optimizer, o: torch.Tensor, a: torch.Tensor,
                target: torch.Tensor) -> None:
    """One gradient step of every critic towards the TD target (mean squared error, summed over critics)."""
    q = qf(o, a)
    q_loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(1).sum()
    q_opt.zero_grad(set_to_none=True)
    q_loss.backward()
    q_opt.step()


def _run_identity(args: dict) -> dict:
    """The arguments that define a run; the others (length, logging) may change on resume."""
    free = {"total_timesteps", "progress", "export_bundle", "eval_every", "checkpoint_every", "out_dir",
            "fused_quant", "rate_hz", "safe_action"}   # bit-identical either way, or used at export only
    return {k: v for k, v in args.items() if k not in free}


def _load_checkpoint(ckpt_path: Path, args: Args) -> dict | None:
    if not ckpt_path.exists():
        return None
    try:
        state = load_checkpoint(ckpt_path)
    except CheckpointError as exc:
        raise TrainError(f"{exc}; move it away to start over") from None
    saved = state.get("args")
    try:   # through Args: a field added since the checkpoint was written takes its default
        saved = Args.from_dict(saved).to_dict() if isinstance(saved, dict) else None
    except (TypeError, ValueError):
        saved = None
    if saved is None or _run_identity(saved) != _run_identity(args.to_dict()):
        raise TrainError(f"{ckpt_path} belongs to a run with other arguments; use another --out-dir")
    return state


class TrainingRun:
    """One run's state and bookkeeping; the algorithm owns its optimizers and its update."""

    def __init__(self, args: Args):
        args.validate()
        check_task(args)          # the environment's spaces, before anything is written
        self.args = args
        self.out = out = writable_dir(args.out_dir, TrainError)
        self.ckpt_path = out / "checkpoint.pt"
        self._state = _load_checkpoint(self.ckpt_path, args)

        torch.set_num_threads(args.torch_threads)
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        self.rng = np.random.default_rng(args.seed)

        self._build(args)
        self.start_step, self.episode, self.history = 0, 0, []
        self.obs, _ = self.env.reset(seed=args.seed)
        self.env_rng_before_reset = None
        self.normalizer.update(self.obs)
        if self._state is not None:
            self._resume(self._state)
        # the entropy coefficient SAC tunes; logged in the CSV for both algorithms
        self.alpha = 1.0 if args.autotune else args.alpha
        self._tracked: dict[str, Any] = {}
        self.global_step = self.start_step
        self.episode_end = False
        self.last_return = float("nan")
        self.fused_since: int | None = None
        self._fuse_pending = ([n for n in (self.actor, self.actor_target) if n is not None]
                              if args.fused_quant and args.quant.quantized and args.quant.scale_mode == "float" else [])

        self.log = RunLog(out, args, self.start_step)
        self._t0, self._steps_at_t0 = time.time(), self.start_step
        self._paused = 0.0   # seconds of evaluations and checkpoint saves: the logged steps/s leave them out
        self._next_eval = (self.start_step // args.eval_every + 1) * args.eval_every
        self._next_ckpt = (self.start_step // args.checkpoint_every + 1) * args.checkpoint_every

    # --- setting up and resuming -------------------------------------------------------------------
    def _build(self, args: Args) -> None:
        """The environment, the networks, the normalizer and the replay buffer (in this order: the networks'
        initialization draws from torch's seeded generator)."""
        self.env = env = make_env(args.env_id, args.seed, env_module=args.env_module)
        self.obs_dim = env.observation_space.shape[0]
        self.act_dim = env.action_space.shape[0]
        self.low, self.high = env.action_space.low, env.action_space.high
        sac = args.algo == "sac"
        self.actor = Actor(self.obs_dim, self.act_dim, self.low, self.high, args.quant, stochastic=sac,
                           log_std_width=args.log_std_width)
        self.qf = TwinQ(self.obs_dim + self.act_dim, args.critic_width, n=2 if sac else 1)
        self.qf_target = copy.deepcopy(self.qf)
        self.actor_target = copy.deepcopy(self.actor) if not sac else None
        self.normalizer = ObservationNormalizer(
            self.obs_dim, args.obs_clip, args.normalize_observations,
            raw_dims=dim_indices(args.raw_observation_dims, self.obs_dim, "raw_observation_dims"))
        self.rb = ReplayBuffer(min(args.buffer_size, args.total_timesteps), self.obs_dim, self.act_dim)

    def _resume(self, state: dict) -> None:
        """Networks, statistics, buffer, generators and counters from a checkpoint."""
        env = self.env
        load_quantized_state(self.actor, state["actor"])
        self.qf.load_state_dict(state["qf"])
        self.qf_target.load_state_dict(state["qf_target"])
        if self.actor_target is not None:
            load_quantized_state(self.actor_target, state["actor_target"])
        self.normalizer.load(state["normalizer"])
        self.rb.load(state["replay"])
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        env.action_space.np_random.bit_generator.state = state["action_space_rng"]
        self.start_step, self.episode, self.history = state["global_step"], state["episode"], state["history"]
        # Checkpoints are taken at episode ends with the env's generator as it was *before* that
        # reset, so this reset reproduces the uninterrupted run's (the normalizer already saw it).
        # A checkpoint without that state (written before any episode ended)
        # starts a fresh episode from the generator as saved: a valid continuation, not a bit-identical one.
        env_state = state.get("env_rng_before_reset") or state.get("env_rng")
        if env_state is not None:
            env.unwrapped.np_random.bit_generator.state = env_state
        self.obs, _ = env.reset()
        print(f"resumed {self.ckpt_path} at step {self.start_step}")

    # --- the algorithm's own state ------------------------------------------------------------
    def track(self, **objects) -> None:
        """Optimizers and tensors the algorithm owns: restored now on resume, saved in every checkpoint.
        Optimizers must be built before (after the networks' state is loaded: loading a Brevitas state dict
        replaces the activation-scale Parameter objects, and an optimizer built earlier would keep
        updating the stale ones)."""
        self._tracked.update(objects)
        if self._state is not None:
            for name, obj in objects.items():
                if isinstance(obj, torch.Tensor):
                    with torch.no_grad():
                        obj.copy_(self._state[name])
                else:
                    obj.load_state_dict(self._state[name])
        self._state = None   # everything is restored: do not hold the saved replay buffer twice

    def save_checkpoint(self, step: int) -> None:
        payload = {
            "args": self.args.to_dict(), "actor": self.actor.state_dict(), "qf": self.qf.state_dict(),
            "qf_target": self.qf_target.state_dict(),
            "actor_target": self.actor_target.state_dict() if self.actor_target is not None else None,
            **{name: (obj.detach().clone() if isinstance(obj, torch.Tensor) else obj.state_dict())
               for name, obj in self._tracked.items()},
            "normalizer": self.normalizer.state(), "replay": self.rb.state(),
            "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "env_rng_before_reset": self.env_rng_before_reset,
            "env_rng": copy.deepcopy(self.env.unwrapped.np_random.bit_generator.state),
            "action_space_rng": self.env.action_space.np_random.bit_generator.state,
            "global_step": step, "episode": self.episode, "history": self.history,
        }
        self.log.flush()
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.ckpt_path)  # atomic: a kill mid-write never leaves a corrupt checkpoint

    # --- one environment step -------------------------------------------------------------------
    def act(self, step: int, choose: Callable[[torch.Tensor], np.ndarray]) -> np.ndarray:
        """Random before learning starts (and until the actor has seen one update), else ``choose`` on the
        normalized observation, without gradients."""
        args = self.args
        if step <= args.learning_starts:
            return self.env.action_space.sample()
        # Brevitas collects activation statistics in train mode during its warm-up; acting must not feed
        # it batch-1 samples. Afterwards both modes compute the same thing, and skipping the mode switch
        # saves ~10% of the step time.
        warming_up = step < args.learning_starts + WARMUP_GUARD_STEPS
        if warming_up:
            self.actor.eval()
        with torch.no_grad():
            action = choose(torch.as_tensor(self.normalizer(self.obs))[None])
        if warming_up:
            self.actor.train()
        return action

    def step_env(self, action: np.ndarray) -> None:
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        self.rb.add(self.obs, next_obs, action, reward, terminated)
        self.obs = next_obs
        self.episode_end = terminated or truncated
        if self.episode_end:
            self.episode += 1
            self.last_return = float(info["episode"]["r"])
            self.log.episode(self.global_step + 1, self.episode, self.last_return, self.alpha)
            self.env_rng_before_reset = copy.deepcopy(self.env.unwrapped.np_random.bit_generator.state)
            self.obs, _ = self.env.reset()
        if not self.args.freeze_normalization_at or self.global_step < self.args.freeze_normalization_at:
            self.normalizer.update(self.obs)

    def warn_if_sparse_inputs_dominate(self) -> None:
        """After the random warm-up: say so when mostly-zero inputs take most of the normalized input."""
        share, sparse = sparse_input_share(self.rb.obs[:len(self.rb)], self.normalizer)
        if share > SPARSE_SHARE_LIMIT:
            self.log.note(f"warning: {len(sparse)} observation dimensions are zero in most steps yet take {share:.0%} "
                          f"of the normalized input; if the policy learns slowly, keep them out of the statistics "
                          f"(--raw-observation-dims {dims_text(sparse)}) or train without statistics "
                          "(--no-normalize-observations): docs/training.md")

    # --- learning helpers -------------------------------------------------------------------
    def sample_batch(self) -> tuple[torch.Tensor, ...]:
        """A replay batch, normalized with the current statistics: obs, next obs, action, reward, done."""
        b_obs, b_next, b_act, b_rew, b_done = self.rb.sample(self.rng, self.args.batch_size)
        return (torch.as_tensor(self.normalizer(b_obs)), torch.as_tensor(self.normalizer(b_next)),
                torch.as_tensor(b_act), torch.as_tensor(b_rew), torch.as_tensor(b_done))

    def fuse_when_ready(self, o: torch.Tensor, step: int) -> None:
        """Switch each actor to the fused fake-quant forward once its activation-scale warm-up is over."""
        for net in [n for n in self._fuse_pending if warmup_done(n.body)]:
            self._fuse_pending.remove(net)
            if not net.body.use_fused_forward(o):
                print("the fused fake-quant forward differs from Brevitas here; keeping Brevitas' modules")
            elif net is self.actor:
                self.fused_since = step

    def update_targets(self, step: int) -> None:
        """Polyak averaging of the target networks every ``target_network_frequency`` steps."""
        if step % self.args.target_network_frequency == 0:
            with torch.no_grad():
                pairs = [(self.qf, self.qf_target)] + (
                    [(self.actor, self.actor_target)] if self.actor_target is not None else [])
                for net, tgt in pairs:
                    for p, tp in zip(net.parameters(), tgt.parameters(), strict=True):
                        tp.lerp_(p, self.args.tau)

    # --- the loop and its bookkeeping --------------------------------------------------------------
    def steps(self):
        """The run's step indices; after each, the periodic evaluation, checkpoint and progress."""
        args = self.args
        self.actor.train()
        for global_step in range(self.start_step, args.total_timesteps):
            self.global_step = global_step
            yield global_step
            step = global_step + 1
            if step == args.learning_starts and args.normalize_observations:
                self.warn_if_sparse_inputs_dominate()
            if step >= self._next_eval or step == args.total_timesteps:
                self._next_eval += args.eval_every
                t_eval = time.time()
                rets = evaluate(self.actor, self.normalizer, args.env_id, args.eval_episodes, seed=args.seed + 10_000,
                                env_module=args.env_module)
                self._paused += time.time() - t_eval
                sps = (step - self._steps_at_t0) / max(time.time() - self._t0 - self._paused, 1e-9)
                self.history.append({"step": step, "eval_mean": float(np.mean(rets)),
                                     "eval_std": float(np.std(rets)), "sps": sps})
                self.log.evaluation(step, self.episode, float(np.mean(rets)), float(np.std(rets)), self.alpha, sps,
                                    self.last_return)
            if self.episode_end and step >= self._next_ckpt and not warmup_in_progress(self.actor):
                self._next_ckpt = (step // args.checkpoint_every + 1) * args.checkpoint_every
                t_ckpt = time.time()
                self.save_checkpoint(step)
                self._paused += time.time() - t_ckpt
            self.log.advance()

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not KeyboardInterrupt:
            self.log.close()      # after summary() it is closed already; after an error, the files are let go
            return False
        self.log.close_bar()
        if warmup_in_progress(self.actor):   # Brevitas' warm-up counters do not resume: keep the last checkpoint
            self.log.close(tensorboard=False)
            where = f"the last checkpoint in {self.ckpt_path}" if self.ckpt_path.exists() else "step 0 (no checkpoint yet)"
            raise TrainError(f"interrupted at step {self.global_step}, inside the activation-scale warm-up: running "
                             f"the same command again resumes from {where}") from None
        self.save_checkpoint(self.global_step)   # mid-episode: the resumed run restarts that episode
        self.log.close(tensorboard=False)
        raise TrainError(f"interrupted at step {self.global_step}: checkpoint saved to {self.ckpt_path}; run the same "
                         "command again to resume") from None

    def summary(self) -> dict:
        """After the last step: the final checkpoint, summary.json and actor.pt; returns the summary."""
        args = self.args
        self.log.close_bar()
        train_loop_seconds = time.time() - self._t0 - self._paused
        self.save_checkpoint(args.total_timesteps)
        self.log.close()
        self.env.close()
        history = self.history
        summary = {"env_id": args.env_id, "algo": args.algo, "seed": args.seed, "total_timesteps": args.total_timesteps,
                   "spec": args.quant.to_dict(), "history": history,
                   "final_eval_mean": history[-1]["eval_mean"] if history else None,
                   "train_loop_steps": args.total_timesteps - self._steps_at_t0, "train_loop_seconds": train_loop_seconds,
                   "fused_since_step": self.fused_since,
                   "fused_quant_loops": None if self.fused_since is None else (
                       "c" if fakequant_kernel.kernels() else f"torch ops ({fakequant_kernel.unavailable_reason()})")}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        torch.save({"args": args.to_dict(), "actor": self.actor.state_dict(), "warmup_counters": warmup_counters(self.actor),
                    "normalizer": self.normalizer.state(),
                    "obs_dim": self.obs_dim, "act_dim": self.act_dim, "low": self.low, "high": self.high,
                    "history": history},
                   self.out / "actor.pt")
        return summary

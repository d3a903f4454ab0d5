"""DDPG with a quantized actor, in one readable file (CleanRL style).

CleanRL's DDPG: one FP32 critic, target networks for the actor and the critic, Gaussian exploration
noise, an actor update every ``policy_frequency`` critic steps, one learning rate (``policy_lr``) for both.
Setting up, resuming, logging and checkpoints are the shared machinery of ``run.py``.
"""
from __future__ import annotations

import torch

from qpolicy_train.args import Args
from qpolicy_train.run import TrainingRun, fit_critics


def train_ddpg(args: Args) -> dict:
    """Run (or resume) one DDPG run; returns a summary with the final evaluation."""
    with TrainingRun(args) as run:
        actor, actor_target, qf, qf_target = run.actor, run.actor_target, run.qf, run.qf_target
        low, high = run.low, run.high
        q_opt = torch.optim.Adam(qf.parameters(), lr=args.policy_lr)
        actor_opt = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, foreach=True)
        run.track(q_opt=q_opt, actor_opt=actor_opt)

        def explore(x: torch.Tensor):
            """The deterministic action plus Gaussian noise relative to the action half-range, clipped."""
            a = actor.deterministic(x)[0]
            a = a + torch.randn_like(a) * actor.squash.action_scale * args.exploration_noise
            return a.numpy().clip(low, high)

        for global_step in run.steps():
            run.step_env(run.act(global_step, explore))
            if global_step < args.learning_starts:
                continue
            o, o2, a, r, d = run.sample_batch()
            policy_step = global_step % args.policy_frequency == 0
            run.fuse_when_ready(o, global_step)
            with torch.no_grad():
                q_next = qf_target(o2, actor_target.deterministic(o2))[0]
                target = r + (1 - d) * args.gamma * q_next
            fit_critics(qf, q_opt, o, a, target)

            if policy_step:
                qf.requires_grad_(False)   # only the actor's gradient is used (same gradient, less work)
                actor_loss = -qf(o, actor.deterministic(o))[0].mean()
                actor_opt.zero_grad(set_to_none=True)
                actor_loss.backward()
                actor_opt.step()
                qf.requires_grad_(True)
            run.update_targets(global_step)
        return run.summary()

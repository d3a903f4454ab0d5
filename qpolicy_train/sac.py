"""Soft Actor-Critic with a quantized actor, in one readable file (CleanRL style).

The defaults are CleanRL's SAC hyperparameters as used by Kresse & Lampert (L4DC 2026); differences from
the paper are listed in docs/training.md. Only the actor body (observation -> pre-tanh mean) is quantized
(Brevitas QAT from step 0); the two critics and the log-std branch (one hidden layer of 64) are FP32 and
used only here. Setting up, resuming, logging and checkpoints are the shared machinery of ``run.py``;
what follows is the algorithm.
"""
from __future__ import annotations

import torch

from qpolicy_train.args import Args
from qpolicy_train.run import TrainingRun, fit_critics


def train_sac(args: Args) -> dict:
    """Run (or resume) one SAC run; returns a summary with the final evaluation."""
    with TrainingRun(args) as run:
        actor, qf, qf_target = run.actor, run.qf, run.qf_target
        target_entropy = -float(run.act_dim)
        log_alpha = torch.zeros(1, requires_grad=True)
        q_opt = torch.optim.Adam(qf.parameters(), lr=args.q_lr)
        # foreach: the same update, value for value, a quarter faster over the actor's 14 small tensors
        # (the critics' 6 large ones gain nothing)
        actor_opt = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, foreach=True)
        alpha_opt = torch.optim.Adam([log_alpha], lr=args.policy_lr)
        run.track(q_opt=q_opt, actor_opt=actor_opt, alpha_opt=alpha_opt, log_alpha=log_alpha)
        alpha = run.alpha = float(log_alpha.detach().exp()) if args.autotune else args.alpha

        for global_step in run.steps():
            # 1. act: a tanh-Gaussian sample of the current policy
            run.step_env(run.act(global_step, lambda x: actor.explore(x)[0].numpy()))
            if global_step < args.learning_starts:
                continue
            # 2. learn
            o, o2, a, r, d = run.sample_batch()
            policy_step = global_step % args.policy_frequency == 0
            run.fuse_when_ready(o, global_step)
            with torch.no_grad():
                a2, logp2 = actor.sample(o2)
                q_next = qf_target(o2, a2).min(0).values - alpha * logp2.squeeze(1)
                target = r + (1 - d) * args.gamma * q_next
            fit_critics(qf, q_opt, o, a, target)

            if policy_step:
                # The actor loss differentiates through the critics, but only the actor's gradient is
                # used: frozen critic weights skip their weight-gradient products (same actor gradient).
                qf.requires_grad_(False)
                for _ in range(args.policy_frequency):   # delayed updates, caught up (CleanRL)
                    pi, logp = actor.sample(o)
                    actor_loss = (alpha * logp.squeeze(1) - qf(o, pi).min(0).values).mean()
                    actor_opt.zero_grad(set_to_none=True)
                    actor_loss.backward()
                    actor_opt.step()
                    if args.autotune:
                        # The same sample's log-probability (as Stable-Baselines3 does).
                        alpha_loss = (-log_alpha.exp() * (logp.detach() + target_entropy)).mean()
                        alpha_opt.zero_grad(set_to_none=True)
                        alpha_loss.backward()
                        alpha_opt.step()
                        alpha = run.alpha = float(log_alpha.detach().exp())
                qf.requires_grad_(True)
            run.update_targets(global_step)
        return run.summary()

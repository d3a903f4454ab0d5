"""Cross-check our FP32 SAC baseline against an independent peer, Stable-Baselines3 SAC, on the same budget.

One row per call: train (or resume) one run, then evaluate it with our protocol (100 deterministic
episodes, episode ``i`` reset with evaluation seed ``0 + i``, the plain ``gym.make(env_id)``) and upsert the
row ``{task, implementation, seed, steps, episodes, mean, std}`` into ``bench/results/fp32_crosscheck.json``.

    .venv/bin/pip install -r requirements/bench.txt             # stable-baselines3 (optional peer)
    nice .venv/bin/python bench/fp32_crosscheck.py --impl sb3 --env-id Ant-v5 --seed 1000 --steps 300000 \\
        --out ~/qpolicy-runs/sb3-ant-s1000
    nice .venv/bin/python bench/fp32_crosscheck.py --impl qpolicy --env-id Ant-v5 --seed 1001 --steps 300000 \\
        --out ~/qpolicy-runs/qpolicy-ant-s1001
    .venv/bin/python bench/fp32_crosscheck.py --shipped policies/ant/fp32     # a shipped run's row

Both runs write a checkpoint every 10k steps and resume from it when the same command runs again. The SB3
checkpoint holds tensors and numeric arrays only (read with ``weights_only=True``), not SB3's pickled zip.
The hyperparameter pairs are in docs/training.md ("FP32 cross-check against Stable-Baselines3").
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "fp32_crosscheck.json"
PRESET_FOR_TASK = {"Ant-v5": "ant_fp32", "Humanoid-v5": "humanoid_fp32", "Hopper-v5": "hopper_fp32",
                   "Walker2d-v5": "walker2d_fp32", "HalfCheetah-v5": "halfcheetah_fp32"}

# Our SAC's defaults (qpolicy_train/args.py), mirrored onto SB3 where SB3 has the knob.
Q_LR = 1e-3
POLICY_LR = 3e-4
CHECKPOINT_EVERY = 10_000
ABLATIONS = {"no-obs-norm": ("--no-normalize-observations",),
             # Ant's FP32 preset trains without running statistics; these put them back, one variant each
             "running-obs-norm": ("--normalize-observations",),
             "frozen-norm": ("--normalize-observations", "--freeze-normalization-at", "5000"),   # the warm-up's
             "obs-clip-3": ("--normalize-observations", "--obs-clip", "3"),   # about what a 3-bit input keeps
             "raw-contacts": ("--normalize-observations", "--raw-observation-dims", "27:")}   # Ant-v5's contacts
"""Our SAC with one difference to SB3's removed (the hyperparameter table in docs/training.md), or one candidate
fix changed, to find what separates the two when their returns differ."""


def evaluate_sb3(model, env_id: str, episodes: int, seed: int = 0) -> list[float]:
    """Our evaluation protocol (``qpolicy_sim.evaluation.rollout``) applied to an SB3 policy."""
    import gymnasium as gym

    env = gym.make(env_id)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def train_sb3(env_id: str, seed: int, steps: int, out: Path) -> object:
    """SB3 SAC with our hyperparameters where SB3 has them; resumes from ``out/checkpoint.pt``."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor

    from qpolicy_train.checkpoint import load_checkpoint

    torch.set_num_threads(1)

    class MatchedSAC(SAC):
        """SB3 uses one learning rate for every optimizer; ours trains the critics at 1e-3."""

        def _update_learning_rate(self, optimizers):
            super()._update_learning_rate(optimizers)
            for group in self.critic.optimizer.param_groups:
                group["lr"] = Q_LR

    env = Monitor(gym.make(env_id))
    model = MatchedSAC(
        "MlpPolicy", env, learning_rate=POLICY_LR, buffer_size=min(1_000_000, steps), learning_starts=5000,
        batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, target_update_interval=1,
        ent_coef="auto", target_entropy="auto", policy_kwargs={"net_arch": {"pi": [256, 256], "qf": [256, 256]}},
        seed=seed, device="cpu", verbose=0)
    ckpt = out / "checkpoint.pt"
    log_path = out / "progress.csv"
    done_steps = 0
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        model.policy.load_state_dict(state["policy"])
        model.actor.optimizer.load_state_dict(state["actor_opt"])
        model.critic.optimizer.load_state_dict(state["critic_opt"])
        model.ent_coef_optimizer.load_state_dict(state["ent_opt"])
        with torch.no_grad():
            model.log_ent_coef.copy_(state["log_ent_coef"])
        rb = model.replay_buffer
        for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
            saved = np.asarray(state["replay"][name])
            getattr(rb, name)[:len(saved)] = saved
        rb.pos, rb.full = int(state["replay"]["pos"]), bool(state["replay"]["full"])
        done_steps = int(state["num_timesteps"])
        model.num_timesteps, model._n_updates = done_steps, int(state["n_updates"])
        print(f"resumed {ckpt} at step {done_steps}", flush=True)

    def save(num_timesteps: int) -> None:
        rb = model.replay_buffer
        n = rb.buffer_size if rb.full else rb.pos
        payload = {
            "policy": model.policy.state_dict(), "actor_opt": model.actor.optimizer.state_dict(),
            "critic_opt": model.critic.optimizer.state_dict(), "ent_opt": model.ent_coef_optimizer.state_dict(),
            "log_ent_coef": model.log_ent_coef.detach().clone(), "num_timesteps": num_timesteps,
            "n_updates": model._n_updates,
            "replay": {name: getattr(rb, name)[:n] for name in
                       ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")}
            | {"pos": rb.pos, "full": rb.full},
        }
        tmp = ckpt.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, ckpt)

    class Bookkeeping(BaseCallback):
        """Episode returns to progress.csv, a checkpoint every 10k steps, a progress line every 10k."""

        def _on_training_start(self) -> None:
            new = not log_path.exists() or done_steps == 0
            self.file = open(log_path, "w" if new else "a", newline="")
            self.log = csv.writer(self.file)
            if new:
                self.log.writerow(["global_step", "episodic_return", "sps"])
            self.t0, self.s0 = time.time(), self.num_timesteps
            self.returns: list[float] = []

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self.returns.append(float(info["episode"]["r"]))
                    self.log.writerow([self.num_timesteps, self.returns[-1], ""])
            if self.num_timesteps % CHECKPOINT_EVERY == 0:
                sps = (self.num_timesteps - self.s0) / max(time.time() - self.t0, 1e-9)
                recent = np.mean(self.returns[-10:]) if self.returns else float("nan")
                self.log.writerow([self.num_timesteps, "", f"{sps:.1f}"])
                self.file.flush()
                save(self.num_timesteps)
                print(f"sb3 {env_id} seed {seed}: {self.num_timesteps}/{steps} steps, {sps:.0f} steps/s, "
                      f"last 10 episodes {recent:.0f}", flush=True)
            return True

        def _on_training_end(self) -> None:
            self.file.close()

    if done_steps < steps:
        model.learn(total_timesteps=steps - done_steps, callback=Bookkeeping(), reset_num_timesteps=False)
        save(steps)
    return model


def run_qpolicy(env_id: str, seed: int, steps: int, out: Path, episodes: int, extra: tuple[str, ...] = ()) -> dict:
    """Our FP32 baseline through the CLI: the task's FP32 preset with another seed (and ``extra`` train
    options: an ablation), then ``qpolicy ship``."""
    qpolicy = [sys.executable, "-m", "qpolicy_cli.main"]
    subprocess.run([*qpolicy, "train", "--preset", PRESET_FOR_TASK[env_id], "--seed", str(seed),
                    "--total-timesteps", str(steps), "--out-dir", str(out / "run"), "--no-export-bundle", *extra],
                   check=True, cwd=ROOT)
    subprocess.run([*qpolicy, "ship", str(out / "run"), "--out", str(out / "bundle"), "--episodes", str(episodes)],
                   check=True, cwd=ROOT)
    return json.loads((out / "bundle" / "evaluation.json").read_text())


def upsert(row: dict, results: Path = RESULTS) -> None:
    rows = json.loads(results.read_text()) if results.exists() else []
    key = ("task", "implementation", "seed", "steps")
    rows = [r for r in rows if tuple(r[k] for k in key) != tuple(row[k] for k in key)] + [row]
    rows.sort(key=lambda r: (r["task"], r["implementation"], r["seed"], r["steps"]))
    tmp = results.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    os.replace(tmp, results)


def shipped_row(bundle: Path) -> dict:
    """The row of a shipped FP32 bundle, from its evaluation.json and provenance."""
    meta = json.loads((bundle / "bundle.json").read_text())
    evaluation = json.loads((bundle / "evaluation.json").read_text())
    prov = meta.get("provenance", {})
    return {"task": evaluation["env"], "implementation": "qpolicy", "seed": int(prov["seed"]),
            "steps": int(prov["steps"]), "episodes": int(evaluation["episodes"]),
            "mean": round(float(evaluation["mean_return"]), 1), "std": round(float(evaluation["std_return"]), 1),
            "source": str(bundle.resolve().relative_to(ROOT)) if bundle.resolve().is_relative_to(ROOT) else str(bundle)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--impl", choices=("sb3", "qpolicy"))
    p.add_argument("--ablation", choices=sorted(ABLATIONS), default=None,
                   help="qpolicy only: train with one difference to SB3 removed (the row's implementation names it)")
    p.add_argument("--env-id", default="Ant-v5", choices=sorted(PRESET_FOR_TASK))
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--steps", type=int, default=300_000)
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes (evaluation seed 0)")
    p.add_argument("--out", type=Path, help="run folder (checkpoints; resumes)")
    p.add_argument("--shipped", type=Path, nargs="*", default=[], help="add the rows of shipped FP32 bundles")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--json", action="store_true", help="print the row as JSON")
    a = p.parse_args()
    for bundle in a.shipped:
        row = shipped_row(bundle)
        upsert(row, a.results)
        print(json.dumps(row) if a.json else f"{row['task']} {row['implementation']} seed {row['seed']}: "
              f"{row['mean']:.1f} +- {row['std']:.1f} ({row['episodes']} episodes)")
    if a.impl is None:
        return 0 if a.shipped else p.error("give --impl (and --out) or --shipped")
    if a.out is None:
        p.error("--out is required with --impl")
    if a.ablation == "raw-contacts" and not a.env_id.startswith("Ant-"):
        p.error("--ablation raw-contacts keeps Ant-v5's contact forces (dims 27:) raw; it has no meaning for "
                f"{a.env_id}")
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if a.impl == "sb3":
        model = train_sb3(a.env_id, a.seed, a.steps, a.out)
        returns = evaluate_sb3(model, a.env_id, a.episodes)
        mean, std = float(np.mean(returns)), float(np.std(returns))
        (a.out / "evaluation.json").write_text(json.dumps(
            {"env": a.env_id, "episodes": a.episodes, "seed": 0, "mean_return": mean, "std_return": std,
             "returns": returns}, indent=2) + "\n")
    else:
        evaluation = run_qpolicy(a.env_id, a.seed, a.steps, a.out, a.episodes, ABLATIONS.get(a.ablation, ()))
        mean, std = evaluation["mean_return"], evaluation["std_return"]
    name = a.impl + (f" ({a.ablation})" if a.ablation and a.impl == "qpolicy" else "")
    row = {"task": a.env_id, "implementation": name, "seed": a.seed, "steps": a.steps, "episodes": a.episodes,
           "mean": round(mean, 1), "std": round(std, 1), "source": f"bench/fp32_crosscheck.py --impl {a.impl}"
           + (f" --ablation {a.ablation}" if a.ablation and a.impl == "qpolicy" else "")}
    upsert(row, a.results)
    print(json.dumps(row) if a.json else f"{a.env_id} {name} seed {a.seed}, {a.steps} steps: {mean:.1f} +- "
          f"{std:.1f} over {a.episodes} episodes ({(time.time() - t0) / 60:.0f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput: `qpolicy train` (SAC, quantized actor, paper config) vs Stable-Baselines3 SAC.

Both run in this process, one after the other, single-threaded, with the same task, network sizes
(critics 256-256, actor `--width`, 256 by default), batch size, learning start and update schedule. The figure is
environment steps per second over the learning phase, and their ratio. The first `--skip` learning
steps are not timed for either contender: they cover Brevitas' activation-scale warm-up (and the
eval-mode acting that guards it), which a long run pays once.

    .venv/bin/pip install -r requirements/bench.txt       # stable-baselines3 (optional peer)
    .venv/bin/python bench/train_throughput.py [--steps 3000] [--learning-starts 1000]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


def qpolicy_sps(env_id: str, steps: int, learning_starts: int, skip: int, quantized: bool, actor: dict) -> float:
    from qpolicy_train.sac import Args, train

    with tempfile.TemporaryDirectory() as tmp:
        common = dict(env_id=env_id, total_timesteps=learning_starts, learning_starts=learning_starts,
                      eval_every=10**9, eval_episodes=1, checkpoint_every=10**9, progress=False,
                      export_bundle=False, quantized=quantized, out_dir=tmp, **actor)
        train(Args(**{**common, "total_timesteps": learning_starts + skip}))  # random phase + warm-up, not timed
        t0 = time.perf_counter()
        train(Args(**{**common, "total_timesteps": learning_starts + skip + steps}))  # resumes, then learns
        return steps / (time.perf_counter() - t0)


def sb3_sps(env_id: str, steps: int, learning_starts: int, skip: int, actor_width: int) -> float:
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    class Clock(BaseCallback):
        start = None

        def _on_step(self) -> bool:
            if self.num_timesteps == learning_starts + skip:
                Clock.start = time.perf_counter()
            return True

    model = SAC("MlpPolicy", env_id, learning_rate=3e-4, buffer_size=1_000_000, learning_starts=learning_starts,
                batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, ent_coef="auto",
                policy_kwargs=dict(net_arch=dict(pi=[actor_width] * 2, qf=[256, 256])), device="cpu", seed=0, verbose=0)
    model.learn(total_timesteps=learning_starts + skip + steps, callback=Clock())
    return steps / (time.perf_counter() - Clock.start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-id", default="Hopper-v5")
    p.add_argument("--steps", type=int, default=3000, help="timed learning steps per contender")
    p.add_argument("--learning-starts", type=int, default=1000)
    p.add_argument("--skip", type=int, default=1000, help="learning steps run but not timed (warm-up)")
    p.add_argument("--width", type=int, default=256, help="actor hidden width (all contenders)")
    p.add_argument("--core-bits", type=int, default=8)
    p.add_argument("--input-bits", type=int, default=8)
    p.add_argument("--output-bits", type=int, default=8)
    p.add_argument("--no-fused", action="store_true", help="keep Brevitas' modules for the whole run")
    a = p.parse_args()
    torch.set_num_threads(1)
    actor = dict(width=a.width, core_bits=a.core_bits, input_bits=a.input_bits, output_bits=a.output_bits,
                 fused_quant=not a.no_fused)
    name = f"qpolicy_sac_quantized_w{a.width}_c{a.core_bits}i{a.input_bits}o{a.output_bits}"
    results = {
        name: qpolicy_sps(a.env_id, a.steps, a.learning_starts, a.skip, True, actor),
        "qpolicy_sac_fp32": qpolicy_sps(a.env_id, a.steps, a.learning_starts, a.skip, False, actor),
        "sb3_sac_fp32": sb3_sps(a.env_id, a.steps, a.learning_starts, a.skip, a.width),
    }
    for contender, sps in results.items():
        print(f"{contender:40s} {sps:8.1f} env steps/s")
    ratio = results[name] / results["sb3_sac_fp32"]
    print(f"ratio qpolicy (quantized) / SB3 SAC (FP32): {ratio:.2f}")
    print(f"ratio qpolicy (FP32) / SB3 SAC (FP32):      {results['qpolicy_sac_fp32'] / results['sb3_sac_fp32']:.2f}")
    print(json.dumps({**results, "ratio_quantized_vs_sb3": ratio, "steps": a.steps, "env_id": a.env_id,
                      "fused_quant": not a.no_fused}))


if __name__ == "__main__":
    main()

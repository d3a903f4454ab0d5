"""Training throughput: `qpolicy train` (SAC, quantized actor, paper config) vs Stable-Baselines3 SAC.

Same task, network sizes (critics 256-256, actor `--width`, 256 by default), batch size, learning start and
update schedule; one torch thread each. The figure is environment steps per second of the training loop
(evaluations and checkpoint saves left out; for qpolicy the resumed run's loop, for SB3 from the first timed
step), and their ratio. The first `--skip` learning steps are not timed for either contender: they cover
Brevitas' activation-scale warm-up (and the eval-mode acting that guards it), which a long run pays once.

This machine's speed drifts by 10-20% over tens of seconds, more than the differences measured. So the
contenders of a ratio run at the same time, each in its own process pinned to its own core (qpolicy
quantized beside SB3, then qpolicy FP32 beside SB3), and swap cores every round; each ratio is the median
over `--rounds` rounds. On a one-core machine they run one after the other.

    .venv/bin/pip install -r requirements/bench.txt       # stable-baselines3 (optional peer)
    .venv/bin/python bench/train_throughput.py [--steps 2000] [--rounds 3] [--width 16 --core-bits 2 --input-bits 6]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch


def qpolicy_sps(env_id: str, steps: int, learning_starts: int, skip: int, quantized: bool,
                actor: dict) -> tuple[float, dict]:
    from qpolicy_train.args import Args
    from qpolicy_train.training import train

    with tempfile.TemporaryDirectory() as tmp:
        common = dict(env_id=env_id, total_timesteps=learning_starts, learning_starts=learning_starts,
                      eval_every=10**9, eval_episodes=1, checkpoint_every=10**9, progress=False,
                      export_bundle=False, quantized=quantized, out_dir=tmp, **actor)
        train(Args.from_dict({**common, "total_timesteps": learning_starts + skip}))  # random phase + warm-up, not timed
        summary = train(Args.from_dict({**common, "total_timesteps": learning_starts + skip + steps}))  # resumes, learns
        return summary["train_loop_steps"] / summary["train_loop_seconds"], summary


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


CONTENDERS = ("qpolicy_quantized", "qpolicy_fp32", "sb3_fp32")


def run_contender(name: str, a: argparse.Namespace) -> dict:
    """One contender in this process: its steps/s (and, for qpolicy, which fake-quant loops ran)."""
    torch.set_num_threads(1)
    actor = dict(width=a.width, core_bits=a.core_bits, input_bits=a.input_bits, output_bits=a.output_bits,
                 fused_quant=not a.no_fused)
    if name == "sb3_fp32":
        return {"sps": sb3_sps(a.env_id, a.steps, a.learning_starts, a.skip, a.width)}
    sps, summary = qpolicy_sps(a.env_id, a.steps, a.learning_starts, a.skip, name == "qpolicy_quantized", actor)
    return {"sps": sps, "fused_quant_loops": summary.get("fused_quant_loops")}


def run_pair(pair: tuple[str, str], cores: list[int], argv: list[str]) -> list[dict]:
    """Both contenders at once, each in a child process pinned to one core (one after the other with one core)."""
    def launch(name: str, core: int | None) -> subprocess.Popen:
        pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
        return subprocess.Popen([sys.executable, __file__, *argv, "--contender", name], stdout=subprocess.PIPE,
                                text=True, preexec_fn=pin)

    def result(proc: subprocess.Popen) -> dict:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a contender failed (exit {proc.returncode})")
        return json.loads(out.strip().splitlines()[-1])

    if len(cores) < 2:
        return [result(launch(name, None)) for name in pair]
    procs = [launch(name, core) for name, core in zip(pair, cores, strict=False)]
    return [result(proc) for proc in procs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-id", default="Hopper-v5")
    p.add_argument("--steps", type=int, default=2000, help="timed learning steps per contender")
    p.add_argument("--learning-starts", type=int, default=1000)
    p.add_argument("--skip", type=int, default=1000, help="learning steps run but not timed (warm-up)")
    p.add_argument("--width", type=int, default=256, help="actor hidden width (all contenders)")
    p.add_argument("--core-bits", type=int, default=8)
    p.add_argument("--input-bits", type=int, default=8)
    p.add_argument("--output-bits", type=int, default=8)
    p.add_argument("--no-fused", action="store_true", help="keep Brevitas' modules for the whole run")
    p.add_argument("--rounds", type=int, default=3, help="each pair runs this many times (cores swapped)")
    p.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)   # internal: one child process
    a = p.parse_args()
    if a.contender:
        print(json.dumps(run_contender(a.contender, a)))
        return
    argv = sys.argv[1:]
    cores = sorted(os.sched_getaffinity(0))[:2]
    name = f"qpolicy_sac_quantized_w{a.width}_c{a.core_bits}i{a.input_bits}o{a.output_bits}"
    rows: dict[str, list[float]] = {"quantized": [], "sb3_beside_quantized": [], "fp32": [], "sb3_beside_fp32": []}
    loops = None
    for i in range(a.rounds):
        order = cores if i % 2 == 0 else cores[::-1]
        q, sb3_q = run_pair(("qpolicy_quantized", "sb3_fp32"), order, argv)
        f, sb3_f = run_pair(("qpolicy_fp32", "sb3_fp32"), order, argv)
        loops = q.get("fused_quant_loops")
        for key, r in zip(rows, (q, sb3_q, f, sb3_f), strict=False):
            rows[key].append(r["sps"])
        print(f"round {i + 1} (cores {order}): quantized {q['sps']:.1f} | SB3 {sb3_q['sps']:.1f}   "
              f"fp32 {f['sps']:.1f} | SB3 {sb3_f['sps']:.1f} env steps/s", flush=True)
    ratios = [q / s for q, s in zip(rows["quantized"], rows["sb3_beside_quantized"], strict=False)]
    fp32_ratios = [f / s for f, s in zip(rows["fp32"], rows["sb3_beside_fp32"], strict=False)]
    median = {k: statistics.median(v) for k, v in rows.items()}
    print(f"{name:40s} {median['quantized']:8.1f} env steps/s (median of {a.rounds})")
    print(f"{'qpolicy_sac_fp32':40s} {median['fp32']:8.1f} env steps/s")
    print(f"{'sb3_sac_fp32':40s} {statistics.median(rows['sb3_beside_quantized'] + rows['sb3_beside_fp32']):8.1f} env steps/s")
    print(f"fused fake-quant loops: {loops}; contenders side by side on cores {cores}")
    print(f"ratio qpolicy (quantized) / SB3 SAC (FP32): {statistics.median(ratios):.2f} "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"ratio qpolicy (FP32) / SB3 SAC (FP32):      {statistics.median(fp32_ratios):.2f} "
          f"(rounds: {', '.join(f'{r:.2f}' for r in fp32_ratios)})")
    print(json.dumps({"contender": name, **median, "ratio_quantized_vs_sb3": statistics.median(ratios),
                      "round_ratios": ratios, "ratio_fp32_vs_sb3": statistics.median(fp32_ratios),
                      "round_ratios_fp32": fp32_ratios, "rounds": rows, "steps": a.steps, "env_id": a.env_id,
                      "cores": cores, "fused_quant": not a.no_fused, "fused_quant_loops": loops}))


if __name__ == "__main__":
    main()

"""One action, observation in, action out: the int fallback next to torch FP32 eager on the same network,
and where the time goes when the core runs elsewhere (host steps vs core), measured in the same run.

Contenders per bundle: ``int act()`` (the runtime's one-observation path), the int reference path
(``decode(codes(quantize(obs)))``, three calls), and the peer, a torch FP32 eager actor of the same shape
(Linear/ReLU layers + tanh, one thread, ``torch.inference_mode``, from a numpy observation to a numpy
action). With Verilator, the ``rtl`` backend under the server's guard gives the split: host_in (check,
normalize, quantize), core (the Verilated core through a pipe: a stand-in for MMIO or the network),
host_out (decode). Observations are the bundle's raw golden ones; p50 and p99 over ``--n`` calls.

    .venv/bin/python bench/act_latency.py [--bundles policies/hopper/selected ...] [--n 5000] [--json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qpolicy_hw.bundle import load_bundle  # noqa: E402
from qpolicy_hw.runtime.int_backend import IntegerPolicy  # noqa: E402


def timed(fn, inputs: np.ndarray, n: int) -> dict:
    for x in inputs[:200]:
        fn(x)                                   # warm-up
    samples = np.empty(n)
    for i in range(n):
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter()
        fn(x)
        samples[i] = time.perf_counter() - t0
    return {"p50_us": float(np.percentile(samples, 50) * 1e6), "p99_us": float(np.percentile(samples, 99) * 1e6)}


def torch_peer(bundle):
    """A float32 MLP of the bundle's shape (weights random: the cost, not the function, is compared)."""
    import torch

    torch.set_num_threads(1)
    sizes = [bundle.obs_dim] + [layer.out_features for layer in bundle.layers]
    mods = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        mods.append(torch.nn.Linear(a, b))
        mods.append(torch.nn.ReLU() if i < len(sizes) - 2 else torch.nn.Tanh())
    net = torch.nn.Sequential(*mods).eval()
    mean = torch.tensor(bundle.normalization["mean"], dtype=torch.float32)
    std = torch.tensor(np.sqrt(np.asarray(bundle.normalization["var"]) + bundle.normalization["epsilon"]),
                       dtype=torch.float32)

    def act(obs):
        with torch.inference_mode():
            x = torch.clamp((torch.from_numpy(obs).float() - mean) / std, -10.0, 10.0)
            return net(x).numpy()
    return act


def measure(path: str, n: int) -> dict:
    bundle = load_bundle(path)
    obs = np.load(bundle.path / "golden" / "obs.npy")
    ref = IntegerPolicy(bundle)
    row = {"bundle": path, "int_act": timed(ref.act, obs, n),
           "int_reference_path": timed(lambda o: ref.decode(ref.codes(ref.quantize(o)[None])[0]), obs, n),
           "torch_fp32_eager": timed(torch_peer(bundle), obs, n)}
    row["ratio_int_vs_torch_p50"] = row["int_act"]["p50_us"] / row["torch_fp32_eager"]["p50_us"]
    if shutil.which("verilator"):
        from qpolicy_hw.runtime import make_policy
        from qpolicy_hw.runtime.guard import GuardedPolicy

        guard = GuardedPolicy(make_policy(bundle, "rtl"), shadow_every=1)
        timed(guard.act, obs, min(n, 2000))
        row["rtl_split_p50_us"] = {k: v.percentiles_us()["p50"] for k, v in guard.split.items() if v.values}
        row["rtl_faults"] = guard.faults
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundles", nargs="+", default=["policies/hopper/selected", "policies/walker2d/selected"])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    for path in a.bundles:
        r = measure(path, a.n)
        rows.append(r)
        print(f"{path}: int act p50 {r['int_act']['p50_us']:.1f} us (p99 {r['int_act']['p99_us']:.1f}); "
              f"int reference path {r['int_reference_path']['p50_us']:.1f} us; torch FP32 eager (peer) "
              f"{r['torch_fp32_eager']['p50_us']:.1f} us; int / torch {r['ratio_int_vs_torch_p50']:.2f}", flush=True)
        if "rtl_split_p50_us" in r:
            s = r["rtl_split_p50_us"]
            print(f"  rtl backend under the guard, p50: host_in {s['host_in']:.1f} us, core {s['core']:.1f} us "
                  f"(Verilator through a pipe), host_out {s['host_out']:.1f} us; faults {r['rtl_faults']}")
    if a.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()

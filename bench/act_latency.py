"""One action, observation in, action out: the int fallback next to torch FP32 eager on the same network,
and where the time goes when the core runs elsewhere (host steps vs core), measured in the same run.

Contenders per bundle: ``int act()`` as served (``make_policy(bundle, "int")``: the bundle's compiled C
library where a compiler is at hand), the same on its numpy path (what a board without a compiler
runs), the int reference path (``decode(codes(quantize(obs)))``, three calls), the ``float`` backend (the
bundle's float reference), and two peers of the bundle's shape with random weights (the cost, not the
function, is compared): a torch FP32 eager actor (Linear/ReLU + tanh, one thread, ``inference_mode``,
numpy in and out) and the same net in numpy float32. Before timing, the served act must equal the
reference path on the golden observations and ``--check`` random raw ones. With Verilator, the ``rtl``
backend under the server's guard gives the split: host_in (check, normalize, quantize), core (the
Verilated core through a pipe: a stand-in for MMIO or the network), host_out (decode). Observations are
the bundle's raw golden ones; p50 and p99 over ``--n`` back-to-back calls, and over ``--spaced`` calls one
control period apart (what a loop sees: other processes run in between and the caches go cold).

    .venv/bin/python bench/act_latency.py [--bundles policies/hopper/selected ...] [--n 5000] [--json]
"""
from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qpolicy_hw.bundle import load_bundle  # noqa: E402
from qpolicy_hw.runtime.int_backend import IntegerPolicy  # noqa: E402


def timed(fn, inputs: np.ndarray, n: int, period_s: float = 0.0) -> dict:
    """p50/p99 of ``n`` calls after a warm-up: back to back, or with ``period_s`` one call per control period, as
    a loop calls it (caches and branch predictors go cold while other processes run, which a back-to-back
    loop never shows)."""
    for x in inputs[:200]:
        fn(x)                                   # warm-up
    samples = np.empty(n)
    for i in range(n):
        x = inputs[i % len(inputs)]
        if period_s:
            time.sleep(period_s)
        t0 = time.perf_counter()
        fn(x)
        samples[i] = time.perf_counter() - t0
    out = {"p50_us": float(np.percentile(samples, 50) * 1e6), "p99_us": float(np.percentile(samples, 99) * 1e6)}
    return {**out, "period_ms": period_s * 1e3} if period_s else out


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


def numpy_peer(bundle):
    """The torch peer's network in numpy float32 (random weights, same shapes)."""
    rng = np.random.default_rng(0)
    sizes = [bundle.obs_dim] + [layer.out_features for layer in bundle.layers]
    layers = [(rng.standard_normal((b, a)).astype(np.float32) / np.sqrt(a), np.zeros(b, np.float32))
              for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    mean = np.asarray(bundle.normalization["mean"], dtype=np.float32)
    std = np.sqrt(np.asarray(bundle.normalization["var"]) + bundle.normalization["epsilon"]).astype(np.float32)

    def act(obs):
        x = np.clip((obs.astype(np.float32) - mean) / std, -10.0, 10.0)
        for w, b in layers[:-1]:
            x = np.maximum(w @ x + b, 0.0)
        w, b = layers[-1]
        return np.tanh(w @ x + b)
    return act


def mismatches(served, ref: IntegerPolicy, obs: np.ndarray) -> int:
    """Entries where the served act differs from decode(codes(quantize(obs)))."""
    expected = ref.decode(ref.codes(np.array([ref.quantize(o) for o in obs])))
    return int((np.array([served.act(o) for o in obs]) != expected).sum())


def measure(path: str, n: int, check: int, spaced: int, period_s: float) -> dict:
    from qpolicy_hw.runtime import make_policy

    bundle = load_bundle(path)
    obs = np.load(bundle.path / "golden" / "obs.npy")
    ref = IntegerPolicy(bundle)
    served = make_policy(bundle, "int")
    torch_act = torch_peer(bundle)         # one peer for both timings
    row = {"bundle": path, "int_act_path": served.act_path,
           "checked_observations": len(obs) + check,
           "mismatches": mismatches(served, ref, np.vstack([obs, bundle.random_observations(check, 11, spreads=(0.3, 1.0, 3.0))])),
           "int_act": timed(served.act, obs, n), "int_act_numpy": timed(ref.act, obs, n),
           "int_reference_path": timed(lambda o: ref.decode(ref.codes(ref.quantize(o)[None])[0]), obs, n),
           "torch_fp32_eager": timed(torch_act, obs, n), "numpy_fp32": timed(numpy_peer(bundle), obs, n)}
    if spaced:
        row["spaced"] = {"int_act": timed(served.act, obs, spaced, period_s),
                         "int_act_numpy": timed(ref.act, obs, spaced, period_s),
                         "torch_fp32_eager": timed(torch_act, obs, spaced, period_s)}
    try:
        row["float_backend"] = timed(make_policy(bundle, "float").act, obs, min(n, 2000))
    except Exception as exc:  # noqa: BLE001 - reported, not fatal: the other figures stand
        row["float_backend"] = {"skipped": str(exc)}
    row["ratio_torch_vs_int_p50"] = row["torch_fp32_eager"]["p50_us"] / row["int_act"]["p50_us"]
    row["ratio_torch_vs_int_numpy_p50"] = row["torch_fp32_eager"]["p50_us"] / row["int_act_numpy"]["p50_us"]
    if shutil.which("verilator"):
        from qpolicy_hw.runtime.guard import GuardedPolicy

        guard = GuardedPolicy(make_policy(bundle, "rtl"), shadow_every=1)
        timed(guard.act, obs, min(n, 2000))
        row["rtl_split_p50_us"] = {k: v.percentiles_us()["p50"] for k, v in guard.split.items() if v.values}
        row["rtl_faults"] = guard.faults
    return row


def figure(row: dict, key: str) -> str:
    t = row[key]
    return f"{t['p50_us']:.1f} us (p99 {t['p99_us']:.1f})" if "p50_us" in t else f"skipped: {t['skipped']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundles", nargs="+", default=None, help="default: every shipped selection")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--check", type=int, default=100_000, help="random raw observations checked before timing")
    ap.add_argument("--spaced", type=int, default=300, help="calls one control period apart (0: skip)")
    ap.add_argument("--period-ms", type=float, default=8.0, help="the spacing (Hopper and Walker2d: 8 ms)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    shipped = sorted(str(d.relative_to(ROOT)) for d in ROOT.glob("policies/*/selected") if (d / "bundle.json").exists())
    for path in a.bundles or shipped:
        r = measure(path, a.n, a.check, a.spaced, a.period_ms / 1e3)
        rows.append(r)
        fmt = functools.partial(figure, r)
        print(f"{path}: int act {fmt('int_act')} [{r['int_act_path']}; {r['mismatches']} mismatches on "
              f"{r['checked_observations']} observations]\n"
              f"  int act numpy {fmt('int_act_numpy')}; int reference path {fmt('int_reference_path')}; "
              f"float backend {fmt('float_backend')}\n"
              f"  peers: torch FP32 eager {fmt('torch_fp32_eager')}, numpy FP32 {fmt('numpy_fp32')}\n"
              f"  torch / int act {r['ratio_torch_vs_int_p50']:.1f}x; torch / int numpy "
              f"{r['ratio_torch_vs_int_numpy_p50']:.2f}x", flush=True)
        if "spaced" in r:
            sp = functools.partial(figure, r["spaced"])
            print(f"  one call every {a.period_ms:g} ms: int act {sp('int_act')}, numpy path {sp('int_act_numpy')}, "
                  f"torch FP32 eager {sp('torch_fp32_eager')}")
        if "rtl_split_p50_us" in r:
            s = r["rtl_split_p50_us"]
            print(f"  rtl backend under the guard, p50: host_in {s['host_in']:.1f} us, core {s['core']:.1f} us "
                  f"(Verilator through a pipe), host_out {s['host_out']:.1f} us; faults {r['rtl_faults']}")
    if a.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()

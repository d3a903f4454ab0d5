"""Export a trained (Brevitas) actor to a policy bundle: the integer function, derived exactly.

The delicate step is turning float scales into integer thresholds. Every float32 number is a
dyadic rational, so the ideal real-valued pre-activation ``y = s_in*s_w*(acc - B) + b`` and the
rounding points ``(m - 1/2) * s_out`` are compared in exact rational arithmetic
(:class:`fractions.Fraction`), including the round-half-to-even rule at exact ties. The float
forward of Brevitas can then disagree only where float32 rounding moves ``y`` across a rounding
point, i.e. at a float tie; ``qpolicy verify`` measures how often.

This module needs torch and brevitas (it runs where training runs, not on the board).
"""
from __future__ import annotations

import math
import os
import subprocess
import tempfile
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qpolicy_hw.bundle import Bundle, channel_acc_range, code_range, signed_range, signed_width, validate, write_bundle
from qpolicy_hw.errors import BundleError, QpolicyError
from qpolicy_train.quant_actor import QuantActorBody, QuantSpec, SquashedAction

GOLDEN_RANDOM = 1024
"""Random input code vectors in golden/ (plus the all-min, all-max and alternating extremes)."""
GOLDEN_RAW = 256
"""Raw observations (and their actions) in golden/."""


def _frac(x) -> Fraction:
    return Fraction(float(np.float32(x)))


def derive_thresholds(s_acc: Fraction, bias: list[Fraction], bias_int: np.ndarray, out_scale: Fraction,
                      out_lo: int, out_hi: int) -> np.ndarray:
    """Thresholds ``T[c, k]`` such that ``round_half_even(y(acc) / out_scale) >= out_lo + 1 + k``
    exactly when ``acc >= T[c, k]``, for ``y(acc) = s_acc * (acc - B_c) + b_c``.

    A threshold is the smallest integer ``acc`` with ``y/s > m - 1/2``, or ``= m - 1/2`` with
    ``m`` even (the tie rounds to the even neighbour).
    """
    levels = range(out_lo + 1, out_hi + 1)
    out = np.empty((len(bias), len(levels)), dtype=object)
    for c, (b, bi) in enumerate(zip(bias, bias_int, strict=False)):
        for k, m in enumerate(levels):
            t = int(bi) + ((Fraction(2 * m - 1, 2) * out_scale - b) / s_acc)
            fl = math.floor(t)
            if t == fl:  # exact tie: the tie value itself counts only for even m
                out[c, k] = fl if m % 2 == 0 else fl + 1
            else:
                out[c, k] = fl + 1
    return out


def _trace(body: QuantActorBody, obs_dim: int) -> dict[str, Any]:
    """Scales and integer parameters of every quantized stage (read from Brevitas QuantTensors)."""
    from brevitas.nn import QuantLinear, QuantReLU

    body.eval()
    with torch.no_grad():
        x = body.input_quant(torch.zeros(1, obs_dim))
        stages = {"input_scale": x.scale.reshape(()).item(), "linears": [], "act_scales": []}
        for layer in list(body.hidden) + [body.out_linear]:
            if isinstance(layer, QuantLinear):
                qw = layer.quant_weight()
                entry = {"module": layer, "w_int": qw.int().to(torch.int64).numpy(),
                         "w_scale": qw.scale.reshape(()).item(), "in_scale": x.scale.reshape(()).item()}
                x = layer(x)
                entry["bias_value"] = layer.bias.detach().numpy().astype(np.float32)
                if body.spec.scale_mode == "po2":
                    # Int32Bias: the float forward adds round(b / (s_in*s_w)) * (s_in*s_w)
                    s_acc = torch.tensor(entry["in_scale"]) * torch.tensor(entry["w_scale"])
                    entry["bias_int"] = torch.round(layer.bias.detach() / s_acc).to(torch.int64).numpy()
                stages["linears"].append(entry)
            elif isinstance(layer, QuantReLU):
                x = layer(x)
                stages["act_scales"].append(x.scale.reshape(()).item())
        stages["output_scale"] = body.output_quant(x).scale.reshape(()).item()
    return stages


def integer_layers(body: QuantActorBody, obs_dim: int) -> tuple[list[dict], dict[str, np.ndarray], dict]:
    """The integer layers of a Brevitas actor: metadata, arrays and the scales."""
    spec = body.spec
    tr = _trace(body, obs_dim)
    out_scales = tr["act_scales"] + [tr["output_scale"]]
    metas, arrays = [], {}
    in_bits, in_signed = spec.input_bits, True
    for i, (entry, s_out) in enumerate(zip(tr["linears"], out_scales, strict=False)):
        last = i == len(tr["linears"]) - 1
        out_bits, out_signed = (spec.output_bits, True) if last else (spec.core_bits, False)
        w = entry["w_int"]
        s_in, s_w = _frac(entry["in_scale"]), _frac(entry["w_scale"])
        s_acc = s_in * s_w
        if "bias_int" in entry:
            bias_int = entry["bias_int"]
            bias = [s_acc * int(v) for v in bias_int]          # the float forward adds exactly this
        else:
            bias = [_frac(v) for v in entry["bias_value"]]
            bias_int = np.array([round(b / s_acc) for b in bias], dtype=np.int64)
        qlo, qhi = code_range(in_bits, in_signed)
        acc_min, acc_max = channel_acc_range(w, bias_int, qlo, qhi)
        olo, ohi = code_range(out_bits, out_signed)
        t = derive_thresholds(s_acc, bias, bias_int, _frac(s_out), olo, ohi)
        # Thresholds outside the reachable accumulator range are clamped: same function, bounded width.
        t = np.clip(t, acc_min[:, None].astype(object), (acc_max + 1)[:, None].astype(object)).astype(np.int64)
        lo_all = int(min(acc_min.min(), t.min(), bias_int.min()))
        hi_all = int(max(acc_max.max(), t.max(), bias_int.max()))
        acc_bits = signed_width(lo_all, hi_all)
        if acc_bits > 62:
            raise BundleError(f"layer {i}: accumulator needs {acc_bits} bits; the scales are degenerate")
        idt = np.int32 if acc_bits <= 32 else np.int64
        shift = None
        ratio = s_acc / _frac(s_out)
        if spec.scale_mode == "po2" and ratio.numerator == 1 and ratio.denominator & (ratio.denominator - 1) == 0:
            shift = ratio.denominator.bit_length() - 1
        elif spec.scale_mode == "po2" and ratio.denominator == 1 and ratio.numerator & (ratio.numerator - 1) == 0:
            shift = -(ratio.numerator.bit_length() - 1)
        name = f"fc{i}"
        arrays[f"{name}.weight"] = w.astype(np.int8 if spec.core_bits <= 8 else np.int16)
        arrays[f"{name}.bias"] = bias_int.astype(idt)
        arrays[f"{name}.thresholds"] = t.astype(idt)
        metas.append(dict(name=name, in_features=int(w.shape[1]), out_features=int(w.shape[0]),
                          weight_bits=spec.core_bits, in_bits=in_bits, in_signed=in_signed, out_bits=out_bits,
                          out_signed=out_signed, acc_bits=acc_bits, acc_min=int(acc_min.min()),
                          acc_max=int(acc_max.max()), weight_scale=float(entry["w_scale"]),
                          in_scale=float(entry["in_scale"]), out_scale=float(s_out), shift=shift))
        in_bits, in_signed = out_bits, out_signed
    return metas, arrays, {"input_scale": tr["input_scale"], "output_scale": tr["output_scale"]}


def action_table(squash: SquashedAction, output_scale: float, output_bits: int, act_dim: int) -> np.ndarray:
    """``table[j, c - lo] = squash(c * s_out)[j]``, computed by the very module the actor uses."""
    lo, hi = signed_range(output_bits)
    codes = torch.arange(lo, hi + 1, dtype=torch.float32)[:, None].expand(-1, act_dim)
    with torch.no_grad():
        values = squash(codes * torch.tensor(np.float32(output_scale)))
    return values.T.contiguous().numpy().astype(np.float32)


def qonnx_bytes(body: QuantActorBody, obs_dim: int) -> bytes:
    """The quantized actor body as a QONNX graph (batch size 1, TorchScript exporter)."""
    with warnings.catch_warnings():
        # brevitas.graph warns that an optional CUDA kernel (Hadamard rotations) is missing: export never uses it
        warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")
        from brevitas.export import export_qonnx

    body.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_qonnx(body, input_t=torch.zeros(1, obs_dim), export_path=path, dynamo=False)
        # The standard QONNX cleanup (shape inference, constant folding, unique names) that FINN and
        # hls4ml expect of their input; execute_onnx needs the inferred shapes too.
        from qonnx.util.cleanup import cleanup

        cleanup(path, out_file=path)
        return Path(path).read_bytes()


def code_version() -> str:
    """The git commit of this checkout (plus '-dirty'), or 'unknown' outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def golden_vectors(bundle: Bundle, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random input codes plus the extremes, and the reference output codes for them."""
    from qpolicy_hw.runtime.int_backend import IntegerPolicy

    lo, hi = signed_range(bundle.bits["input"])
    rng = np.random.default_rng(seed)
    rand = rng.integers(lo, hi + 1, size=(GOLDEN_RANDOM, bundle.obs_dim))
    alt = np.where(np.arange(bundle.obs_dim) % 2 == 0, lo, hi)
    q_in = np.vstack([np.full(bundle.obs_dim, lo), np.full(bundle.obs_dim, hi), alt, -alt - 1, rand])
    q_in = q_in.astype(np.int16)
    q_out = IntegerPolicy(bundle).codes(q_in).astype(np.int16)
    return q_in, q_out


def golden_observations(bundle: Bundle, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw observations around the normalization statistics (inside, at and beyond the clip) and the actions the
    whole host path of the int reference gives for them: what a robot would get, so that a changed
    normalization, scale or action table fails ``qpolicy verify`` even where the codes agree."""
    from qpolicy_hw.runtime.int_backend import IntegerPolicy

    norm = bundle.normalization
    mean, std = np.asarray(norm["mean"]), np.sqrt(np.asarray(norm["var"]) + norm["epsilon"])
    rng = np.random.default_rng(seed)
    spread = np.repeat([0.5, 1.0, 3.0, norm["clip"] + 1.0], GOLDEN_RAW // 4)[:, None]
    obs = mean + rng.standard_normal((GOLDEN_RAW, bundle.obs_dim)) * spread * std
    policy = IntegerPolicy(bundle)
    return obs, np.array([policy.act(o) for o in obs])


def float_state_arrays(body: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in body.state_dict().items() if isinstance(v, torch.Tensor)}


def export_actor(body: torch.nn.Module, squash: SquashedAction, spec: QuantSpec, env_id: str,
                 normalization: dict[str, Any], provenance: dict[str, Any], out_dir: str | Path,
                 safe_action: tuple[float, ...] = (), control_rate_hz: float | None = None) -> Path:
    """Write the bundle for ``body``: integer (quantized actor) or float (FP32 baseline). The safe action is
    the box's middle unless one is given; the control rate is recorded where it is known."""
    obs_dim = int(np.asarray(normalization["mean"]).shape[0])
    low = (squash.action_bias - squash.action_scale).numpy().astype(np.float64)
    high = (squash.action_bias + squash.action_scale).numpy().astype(np.float64)
    act_dim = int(low.shape[0])
    task: dict[str, Any] = {"env_id": env_id, "obs_dim": obs_dim, "act_dim": act_dim,
                            "action_low": low.tolist(), "action_high": high.tolist(),
                            "safe_action": list(map(float, safe_action)) if safe_action else ((low + high) / 2).tolist()}
    if control_rate_hz:
        task["control_rate_hz"] = float(control_rate_hz)
    meta: dict[str, Any] = {
        "kind": "integer" if spec.quantized else "float",
        "task": task,
        "normalization": {"mean": np.asarray(normalization["mean"], np.float64).tolist(),
                          "var": np.asarray(normalization["var"], np.float64).tolist(),
                          "clip": float(normalization["clip"]), "epsilon": float(normalization["epsilon"])},
        "spec": spec.to_dict(),
        "provenance": provenance,
    }
    arrays: dict[str, np.ndarray] = {}
    onnx = None
    golden = golden_raw = None
    if spec.quantized:
        layers, arrays, scales = integer_layers(body, obs_dim)
        meta["quant"] = {"bits": {"input": spec.input_bits, "core": spec.core_bits, "output": spec.output_bits},
                         "scale_mode": spec.scale_mode, "rounding": "half_to_even",
                         "input_scale": scales["input_scale"], "output_scale": scales["output_scale"],
                         "output": "codes"}
        meta["layers"] = layers
        arrays["action_table"] = action_table(squash, scales["output_scale"], spec.output_bits, act_dim)
        probe = Bundle(path=None, meta=meta, arrays=arrays)
        validate(probe)
        golden = golden_vectors(probe)
        golden_raw = golden_observations(probe)
        onnx = qonnx_bytes(body, obs_dim)
    return write_bundle(out_dir, meta, arrays, float_state_arrays(body), onnx, golden, golden_raw)


# --- from training artifacts ------------------------------------------------------------------
def load_training_actor(checkpoint: str | Path) -> dict[str, Any]:
    """Read ``actor.pt`` or ``checkpoint.pt`` written by ``qpolicy train``."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "actor.pt" if (path / "actor.pt").exists() else path / "checkpoint.pt"
    if not path.exists():
        raise QpolicyError(f"no checkpoint at {checkpoint} (expected actor.pt or checkpoint.pt of a training run)")
    from qpolicy_train.checkpoint import load_checkpoint

    state = load_checkpoint(path)   # refuses anything but tensors, numbers and numeric arrays
    missing = [k for k in ("args", "actor", "normalizer") if k not in state]
    if missing:
        raise QpolicyError(f"{path}: not a qpolicy training checkpoint (no {', '.join(missing)})")
    args, actor_state, normalizer = state["args"], state["actor"], state["normalizer"]
    if not isinstance(args, dict) or not isinstance(actor_state, dict) or not isinstance(normalizer, dict):
        raise QpolicyError(f"{path}: args, actor and normalizer must be mappings")
    return {"path": path, "args": args, "actor": actor_state, "normalizer": normalizer,
            "warmup_counters": state.get("warmup_counters"),
            "history": state.get("history", []), "global_step": state.get("global_step", args.get("total_timesteps", 0))}


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, evaluation: dict | None = None,
                      env_module: str | None = None) -> Path:
    """``qpolicy export``: a training checkpoint to a bundle. A run on an environment of the user's own
    names its package; it is imported only when the user names the same one here (``env_module``): a
    checkpoint, like a bundle, never makes anything import."""
    from qpolicy_sim.envs import control_rate_hz
    from qpolicy_train.args import Args, make_env
    from qpolicy_train.networks import Actor
    from qpolicy_train.quant_actor import load_quantized_state, set_warmup_counters, warmup_done

    ck = load_training_actor(checkpoint)
    try:
        args = Args.from_dict(ck["args"])
    except (TypeError, ValueError) as exc:  # TrainError and ConfigError are ValueErrors
        raise QpolicyError(f"{ck['path']}: foreign training arguments ({exc})") from None
    if (env_module or "") != args.env_module:
        raise QpolicyError(f"{ck['path']}: the run trained on {args.env_id}" + (
            f" from --env-module {args.env_module}: export it with --env-module {args.env_module}"
            if args.env_module else f" without --env-module; drop --env-module {env_module}"))
    env = make_env(args.env_id, args.seed, env_module=args.env_module)
    rate = args.rate_hz or control_rate_hz(env)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    actor = Actor(obs_dim, act_dim, env.action_space.low, env.action_space.high, args.quant,
                  stochastic=args.algo == "sac", log_std_width=args.log_std_width)
    env.close()
    try:
        load_quantized_state(actor, ck["actor"])
    except RuntimeError as exc:
        raise QpolicyError(f"{ck['path']}: actor weights do not match its arguments ({str(exc)[:120]})") from None
    if ck["warmup_counters"] is not None:  # load_state_dict marked the warm-up done; put back the truth
        set_warmup_counters(actor, ck["warmup_counters"])
    if args.quant.quantized and not warmup_done(actor.body):
            raise QpolicyError(f"{ck['path']}: the actor has not finished its 300-step activation-scale warm-up; "
                               "train past learning_starts + 300 updates before exporting")
    history = ck["history"]
    local = {"out_dir", "progress"}  # where and how it ran, not what was trained
    provenance = {
        "training_args": {k: v for k, v in args.to_dict().items() if k not in local}, "seed": args.seed, "steps": int(ck["global_step"]),
        "algo": args.algo, "code_version": code_version(),
        # the last periodic evaluation, without its wall-clock speed (which would break reproducibility)
        "training_eval": {k: history[-1][k] for k in ("step", "eval_mean", "eval_std")} if history else None,
        "evaluation": evaluation,
    }
    if args.env_module:   # for the record only: a bundle never makes anything import it
        provenance["env_module"] = {"name": args.env_module, "version": module_version(args.env_module)}
    return export_actor(actor.body, actor.squash, args.quant, args.env_id, ck["normalizer"], provenance, out_dir,
                        safe_action=tuple(args.safe_action), control_rate_hz=rate)


def module_version(module: str) -> str | None:
    """The installed distribution version of the package ``module`` belongs to, where there is one."""
    import importlib.metadata

    top = module.split(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None

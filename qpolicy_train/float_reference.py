"""The float reference: the bundle's actor rebuilt in Brevitas/torch from ``float_state.npz``.

It serves the ``float`` backend and the float rungs of the verification ladder. It lives with training,
since it needs torch, Brevitas and the actor's definition; ``qpolicy_hw`` loads it by name
(``qpolicy_hw.runtime.FLOAT_REFERENCE``) only when one of them is asked for, so the bundle, the integer
runtimes and the hardware generators never import training code.

How a mismatch is known to be a float tie: for the first stage where the two disagree, the exact
pre-activation ``y`` (rational arithmetic on the float32 scales) is compared with the rounding point
``(m - 1/2) * s_out`` between the two codes. The float32 forward computes ``y`` with a sum of
``n`` products, whose error is bounded by ``gamma_{n+4} * (sum |x_j w_j| + |b|)`` with
``gamma_k = k u / (1 - k u)``, ``u = 2^-24`` (Higham, Accuracy and Stability, Sec. 3.1). A mismatch
whose distance to the rounding point is within that bound is a float tie; anything else is a bug.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import torch

from qpolicy_hw.bundle import Bundle
from qpolicy_hw.errors import BackendUnavailable, BundleError
from qpolicy_hw.host_float import ObservationHost
from qpolicy_hw.runtime.int_backend import IntegerPolicy
from qpolicy_hw.verify import verification_inputs
from qpolicy_train.quant_actor import QuantSpec, SquashedAction, make_actor_body

U32 = 2.0 ** -24
TIE_RATE_BOUND = 1e-4
"""Allowed share of mismatching codes between the float forward and the integer contract (DESIGN.md)."""


def _gamma(k: int) -> float:
    return k * U32 / (1 - k * U32)


def rebuild_actor(bundle: Bundle) -> tuple[torch.nn.Module, SquashedAction]:
    """The actor body (eval mode) and its squash, exactly as trained."""
    if bundle.float_state is None:
        raise BackendUnavailable(f"{bundle.path}: the bundle carries no float_state.npz")
    spec = QuantSpec(**bundle.meta["spec"])
    body = make_actor_body(bundle.obs_dim, bundle.act_dim, spec)
    state = {k: torch.from_numpy(np.array(v)) for k, v in bundle.float_state.items()}
    try:
        body.load_state_dict(state)
    except RuntimeError as exc:
        raise BundleError(f"{bundle.path}: float_state.npz does not match the actor ({str(exc)[:160]})") from None
    body.eval()
    task = bundle.meta["task"]
    return body, SquashedAction(np.asarray(task["action_low"]), np.asarray(task["action_high"]))


class FloatPolicy(ObservationHost):
    backend = "float"

    def __init__(self, bundle: Bundle):
        super().__init__(bundle)
        self.body, self.squash = rebuild_actor(bundle)

    @torch.no_grad()
    def act_normalized(self, normalized: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(normalized, dtype=np.float32))[None]
        return self.squash(self.body(x))[0].numpy().astype(np.float64)


# --- the float rungs of the verification ladder -------------------------------------------------
def _float_bias(body, bundle: Bundle, layer_index: int) -> list[Fraction]:
    """The bias the float forward adds, exactly (float bias, or the Int32 bias at accumulator scale)."""
    layer = bundle.layers[layer_index]
    if bundle.meta["quant"]["scale_mode"] == "po2":
        s_acc = Fraction(layer.in_scale) * Fraction(layer.weight_scale)
        return [s_acc * int(v) for v in bundle.bias(layer_index)]
    linears = [m for m in list(body.hidden) + [body.out_linear] if hasattr(m, "quant_weight")]
    return [Fraction(float(v)) for v in linears[layer_index].bias.detach().numpy().astype(np.float32)]


def classify_mismatch(bundle: Bundle, stage: int, q_prev: np.ndarray, channel: int, code_float: int,
                      code_int: int, bias: list[Fraction]) -> tuple[bool, float, float]:
    """Is this first-stage mismatch a float tie? Returns (is_tie, distance, float32 error bound)."""
    layer = bundle.layers[stage]
    if abs(code_float - code_int) != 1:
        return False, float("inf"), 0.0
    w = bundle.weights(stage)[channel].astype(np.int64)
    q = q_prev.astype(np.int64)
    s_in, s_w, s_out = Fraction(layer.in_scale), Fraction(layer.weight_scale), Fraction(layer.out_scale)
    y = s_in * s_w * int(q @ w) + bias[channel]
    m = max(code_float, code_int)
    distance = abs(y - Fraction(2 * m - 1, 2) * s_out)
    magnitude = float(s_in * s_w) * float(np.abs(q * w).sum()) + abs(float(bias[channel]))
    bound = _gamma(layer.in_features + 4) * magnitude + U32 * abs(float(y))
    return float(distance) <= bound, float(distance), bound


def float_vs_int(bundle: Bundle, n_random: int = 2500, seed: int = 0) -> dict[str, Any]:
    """Brevitas float32 forward vs the integer reference, every stage, every code."""
    from qpolicy_hw.host_float import quantize_input

    body, _ = rebuild_actor(bundle)
    ref = IntegerPolicy(bundle)
    x = verification_inputs(bundle, n_random, seed)
    fcodes = [c.numpy() for c in body.forward_codes(torch.from_numpy(x))]
    host = quantize_input(x, bundle.input_scale, bundle.bits["input"])
    icodes = ref.layer_codes(fcodes[0])
    per_stage = [int((f != i).sum()) for f, i in zip(fcodes[1:], icodes[1:], strict=False)]
    biases = [_float_bias(body, bundle, i) for i in range(len(bundle.layers))]
    ties = not_ties = 0
    worst = []
    bad = np.zeros(len(x), dtype=bool)
    for stage in range(len(bundle.layers)):
        diff = fcodes[stage + 1] != icodes[stage + 1]
        first = diff.any(axis=1) & ~bad       # samples whose first disagreement is at this stage
        for n in np.flatnonzero(first):
            for c in np.flatnonzero(diff[n]):
                tie, dist, bound = classify_mismatch(bundle, stage, icodes[stage][n], int(c),
                                                     int(fcodes[stage + 1][n, c]), int(icodes[stage + 1][n, c]),
                                                     biases[stage])
                ties += tie
                not_ties += not tie
                if not tie and len(worst) < 5:
                    worst.append({"stage": stage, "sample": int(n), "channel": int(c), "distance": dist,
                                  "bound": bound})
        bad |= first
    total_codes = int(sum(f.size for f in fcodes[1:]))
    all_mismatch = int(sum(per_stage))
    return {
        "vectors": int(len(x)),
        "codes": int(fcodes[-1].size),
        "mismatches": per_stage[-1],
        "all_stage_codes": total_codes,
        "all_stage_mismatches": all_mismatch,
        "rate": all_mismatch / total_codes,
        "per_stage_mismatches": per_stage,
        "first_disagreements_at_float_ties": ties,
        "first_disagreements_not_at_ties": not_ties,
        "host_quantization_mismatches": int((host != fcodes[0]).sum()),
        "not_tie_examples": worst,
        "pass": not_ties == 0 and all_mismatch / total_codes <= TIE_RATE_BOUND
        and int((host != fcodes[0]).sum()) == 0,
    }


def qonnx_vs_float(bundle: Bundle, n: int = 300, seed: int = 1) -> dict[str, Any]:
    """qonnx ``execute_onnx`` of the bundle's QONNX model vs the Brevitas forward (batch-1 graph)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from qpolicy_hw.bundle import ONNX_FILE

    body, _ = rebuild_actor(bundle)
    model = ModelWrapper(str(bundle.path / ONNX_FILE))
    in_name, out_name = model.graph.input[0].name, model.graph.output[0].name
    x = verification_inputs(bundle, max(1, n // 4), seed)[:n]
    with torch.no_grad():
        expected = body(torch.from_numpy(x)).numpy()
    got = np.vstack([execute_onnx(model, {in_name: row[None]})[out_name] for row in x])
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    mism = int((got != expected).sum())
    return {"vectors": int(len(x)), "values": int(expected.size), "mismatches": mism,
            "max_abs_diff": float(diff.max()) if diff.size else 0.0, "pass": mism == 0}


def _register() -> None:
    import sys

    from qpolicy_hw.runtime import register_float_reference

    register_float_reference(sys.modules[__name__])


_register()

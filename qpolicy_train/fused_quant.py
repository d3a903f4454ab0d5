"""A faster training forward for the quantized actor, bit-identical to Brevitas.

Brevitas stays the definition of every quantizer: the integer ranges and thresholds come from its
``IntQuant``/``IntScaling`` modules, export and verification go through the Brevitas graph, and the
result is checked against Brevitas. What this module replaces is the dispatch through ~40 nested
modules per quantizer: the scale is the value Brevitas' scaling modules compute (``abs``, signed
clamp-min, ``/ threshold``; under autograd in train mode one node, :class:`_ClampedScale`, whose gradient
is provably the same), and the elementwise part of ``RescalingIntQuant`` (``x / s -> round -> clamp ->
* s``) runs as one autograd node. That dispatch is most of the actor's cost on a CPU.

The node performs the same float operations in the same order as Brevitas, forward and backward
(``RoundSte`` and ``TensorClampSte`` pass the gradient, ``TensorClamp`` zeroes it outside the
range, and the scale's gradient is the sum of the two products autograd would form), so outputs
and every parameter gradient are equal bit for bit; ``tests/test_fused_quant.py`` checks that, and
:meth:`FusedActorForward.matches_brevitas` re-checks it at run time before the trainer switches over.
Only the ``float`` scale mode after the activation-scale warm-up takes this path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from brevitas.function.ops_ste import abs_binary_sign_grad, scalar_clamp_min_ste
from torch import nn


class _FakeQuant(torch.autograd.Function):
    """``clamp(round(x / s), lo, hi) * s`` with Brevitas' straight-through gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, s: torch.Tensor, lo: float, hi: float, clamp_passes_grad: bool):
        z = x / s
        r = torch.round(z)
        c = torch.clamp(r, lo, hi)
        ctx.save_for_backward(z, s, r, c)
        ctx.lo, ctx.hi, ctx.clamp_passes_grad = lo, hi, clamp_passes_grad
        return c * s

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        z, s, r, c = ctx.saved_tensors
        g_c = g * s                                   # d(c * s)/dc
        g_s = (g * c).sum()                           # d(c * s)/ds
        if not ctx.clamp_passes_grad:                 # TensorClamp: torch.where, no gradient outside
            g_c = torch.where((r > ctx.hi) | (r < ctx.lo), 0.0, g_c)
        g_x = g_c / s                                 # round is straight-through; d(x / s)/dx
        g_s = g_s + -(g_c * (z / s)).sum()            # d(x / s)/ds = -(x / s) / s, as autograd forms it
        return g_x, g_s.reshape(s.shape), None, None, None


def _int_range(tensor_quant: nn.Module) -> tuple[torch.Tensor, float, float]:
    """Brevitas' integer threshold and clamp range of one quantizer (its bit width is constant)."""
    bit_width = tensor_quant.msb_clamp_bit_width_impl()
    return (tensor_quant.int_scaling_impl(bit_width), float(tensor_quant.int_quant.min_int(bit_width)),
            float(tensor_quant.int_quant.max_int(bit_width)))


def _clamp_min_value(clamp: nn.Module) -> float | None:
    """The ``min_val`` of a Brevitas ``ScalarSignedClampMinSte`` (None for its Identity stand-in)."""
    name = type(clamp).__name__
    if name == "Identity":
        return None
    if name != "ScalarSignedClampMinSte":
        raise TypeError(f"unexpected scale clamp {name}")
    return float(clamp.min_val)


def _signed_clamp_min(v: torch.Tensor, min_val: float | None) -> torch.Tensor:
    """Brevitas' ``ScalarSignedClampMinSte.forward``, op for op (without autograd, its straight-through
    functions are plain ``abs`` and ``clamp_min``: the same values)."""
    if min_val is None:
        return v
    if not torch.is_grad_enabled():
        return torch.where(v >= 0, 1., -1.).type_as(v) * torch.clamp_min(torch.abs(v), min_val)
    return torch.where(v >= 0, 1., -1.).type_as(v) * scalar_clamp_min_ste(abs_binary_sign_grad(v), min_val)


def _fake_quant(x: torch.Tensor, s: torch.Tensor, lo: float, hi: float, clamp_passes_grad: bool) -> torch.Tensor:
    if not torch.is_grad_enabled():   # acting and critic targets: the same ops, no autograd node
        return torch.clamp(torch.round(x / s), lo, hi) * s
    return _FakeQuant.apply(x, s, lo, hi, clamp_passes_grad)


def _expect(module: nn.Module, kind: str) -> None:
    if type(module).__name__ != kind:
        raise TypeError(f"unexpected Brevitas module {type(module).__name__} (expected {kind})")


class _ClampedScale(torch.autograd.Function):
    """``clamp_min(v, min_val) / threshold`` for a statistic ``v >= 0`` (an ``abs`` or an abs-max).

    Brevitas reaches this value through ``ScalarSignedClampMinSte`` (``where(v >= 0, 1, -1) *
    clamp_min_ste(abs_binary_sign_grad(v))``), ``abs`` and ``/ threshold``. For ``v >= 0`` every factor
    its backward multiplies by is exactly 1.0 (the sign, the binary sign, the straight-through clamp, the
    ``abs`` of a positive value), so its gradient is exactly ``grad / threshold``: one node instead of
    four Python-level autograd functions per quantizer."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, threshold: torch.Tensor, min_val: float):
        ctx.save_for_backward(threshold)
        return torch.clamp_min(v, min_val) / threshold

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (threshold,) = ctx.saved_tensors
        return g / threshold, None, None


def _activation_scale(tq: nn.Module, threshold: torch.Tensor, min_val: float | None) -> torch.Tensor:
    """``ParameterFromRuntimeStatsScaling.forward`` after its warm-up (restrict = abs, scale-threshold
    restrict = identity): in train mode ``clamp(abs(value)) / threshold``, in eval mode the clamp comes
    after the division."""
    impl = tq.scaling_impl
    if impl.training:
        if torch.is_grad_enabled() and min_val is not None:
            return _ClampedScale.apply(torch.abs(impl.value), threshold, min_val)
        return _signed_clamp_min(torch.abs(impl.value), min_val) / threshold
    return _signed_clamp_min(torch.abs(impl.value) / threshold, min_val)


def _weight_scale(weight: torch.Tensor, threshold: torch.Tensor, min_val: float | None) -> torch.Tensor:
    """``StatsFromParameterScaling.forward`` with ``AbsMax`` statistics over the whole tensor, then
    ``_StatsScaling``: clamp, abs (restrict pre), abs + clamp (restrict), ``/ threshold``."""
    stats = torch.max(torch.abs(weight.reshape(-1))).view(())
    if torch.is_grad_enabled() and min_val is not None:
        return _ClampedScale.apply(stats, threshold, min_val)
    stats = _signed_clamp_min(stats, min_val)
    stats = torch.abs(stats)
    stats = _signed_clamp_min(torch.abs(stats), min_val)
    return stats / threshold


def _check_activation_quant(tq: nn.Module) -> float | None:
    impl = tq.scaling_impl
    _expect(impl, "ParameterFromRuntimeStatsScaling")
    _expect(impl.restrict_scaling.restrict_value_impl, "FloatRestrictValue")
    _expect(impl.restrict_threshold.restrict_value_impl, "FloatRestrictValue")
    _expect(impl.restrict_scale_threshold.restrict_value_impl, "Identity")
    if impl.counter <= impl.collect_stats_steps or impl.local_loss_mode:
        raise ValueError("activation scale still in its warm-up")
    return _clamp_min_value(impl.clamp_scaling.clamp_min_ste)


def _check_weight_quant(tq: nn.Module) -> float | None:
    impl = tq.scaling_impl
    _expect(impl, "StatsFromParameterScaling")
    stats = impl.parameter_list_stats
    _expect(stats.stats.stats_impl, "AbsMax")
    if stats.stats.stats_impl.stats_reduce_dim is not None or stats.extra_tracked_params_list is not None:
        raise TypeError("only per-tensor AbsMax weight scales are fused")
    scaling = impl.stats_scaling_impl
    _expect(scaling.affine_rescaling, "Identity")
    _expect(scaling.restrict_clamp_scaling.restrict_value_impl, "FloatRestrictValue")
    _expect(scaling.restrict_clamp_threshold.restrict_value_impl, "FloatRestrictValue")
    _expect(scaling.restrict_clamp_threshold.clamp_ste, "Identity")
    _expect(scaling.restrict_clamp_scale_threshold.restrict_value_impl, "Identity")
    _expect(scaling.restrict_clamp_scale_threshold.clamp_ste, "Identity")
    min_val = _clamp_min_value(scaling.clamp_scaling.clamp_min_ste)
    if _clamp_min_value(scaling.restrict_clamp_scaling.clamp_ste) != min_val:
        raise TypeError("weight scale clamps differ")
    return min_val


class FusedActorForward:
    """The forward of a ``QuantActorBody`` in ``float`` scale mode, without Brevitas' wrappers.

    Holds no parameters: it reads the body's Brevitas modules at every call, so optimizer updates,
    ``load_state_dict`` and checkpoints see exactly one set of tensors.
    """

    def __init__(self, body: nn.Module):
        from brevitas.nn import QuantReLU

        self.body = body
        # (kind, module, integer threshold, clamp low, clamp high, scale min_val); no id()-keyed
        # tables, so a deepcopy of the body (DDPG's target actor) copies this coherently
        def activation(qid) -> tuple:
            tq = qid.act_quant.fused_activation_quant_proxy.tensor_quant
            return (tq, *_int_range(tq), _check_activation_quant(tq))

        self._input = activation(body.input_quant)
        self._output = activation(body.output_quant)
        self._stages: list[tuple] = []
        for m in [*body.hidden, body.out_linear]:
            if isinstance(m, QuantReLU):
                if not isinstance(m.act_quant.fused_activation_quant_proxy.activation_impl, nn.ReLU):
                    raise TypeError("unexpected activation in a QuantReLU")
                self._stages.append(("relu", activation(m)))
            else:
                tq = m.weight_quant.tensor_quant
                _expect(tq.int_quant.tensor_clamp_impl, "TensorClampSte")
                _expect(tq.int_quant.float_to_int_impl, "RoundSte")
                _expect(tq.zero_point_impl, "ZeroZeroPoint")
                self._stages.append(("linear", (m, *_int_range(tq), _check_weight_quant(tq))))
        for tq, *_ in [self._input, self._output] + [q for kind, q in self._stages if kind == "relu"]:
            _expect(tq.int_quant.tensor_clamp_impl, "TensorClamp")
            _expect(tq.int_quant.float_to_int_impl, "RoundSte")
            _expect(tq.zero_point_impl, "ZeroZeroPoint")

    @staticmethod
    def _activation(quant: tuple, x: torch.Tensor) -> torch.Tensor:
        tq, threshold, lo, hi, min_val = quant
        return _fake_quant(x, _activation_scale(tq, threshold, min_val), lo, hi, False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self._activation(self._input, x)
        for kind, q in self._stages:
            if kind == "relu":
                y = self._activation(q, F.relu(y))
            else:
                m, threshold, lo, hi, min_val = q
                w = _fake_quant(m.weight, _weight_scale(m.weight, threshold, min_val), lo, hi, True)
                y = F.linear(y, w, m.bias)
        return self._activation(self._output, y)

    def matches_brevitas(self, x: torch.Tensor) -> bool:
        """True when this forward and Brevitas' give the same values and the same gradients on ``x``."""
        params = [p for p in self.body.parameters() if p.requires_grad]
        weights = torch.linspace(-1.0, 1.0, steps=x.shape[0] * self.body.out_linear.out_features).view(x.shape[0], -1)
        results = []
        for forward in (self.body.brevitas_forward, self):
            out = forward(x)
            grads = torch.autograd.grad((out * weights).sum(), params, allow_unused=True)
            results.append((out.detach(), grads))
        (o1, g1), (o2, g2) = results
        return torch.equal(o1, o2) and all((a is None and b is None) or (a is not None and b is not None and
                                                                           torch.equal(a, b)) for a, b in zip(g1, g2))

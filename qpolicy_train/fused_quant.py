"""A faster training forward for the quantized actor, bit-identical to Brevitas.

Brevitas stays the definition of every quantizer: the integer ranges and thresholds come from its
``IntQuant``/``IntScaling`` modules, export and verification go through the Brevitas graph, and the
result is checked against Brevitas. What this module replaces is the dispatch through ~40 nested
modules per quantizer: the scale is the value Brevitas' scaling modules compute (``abs``, signed
clamp-min, ``/ threshold``; under autograd in train mode formed inside the fake-quant node, with a
gradient that is provably the same, see :func:`_scale_from_stat`), and the elementwise part of
``RescalingIntQuant`` (``x / s -> round -> clamp -> * s``) runs as one autograd node, its loops in C
where a compiler is at hand (:mod:`qpolicy_train.fakequant_kernel`, same values). That dispatch is most
of the actor's cost on a CPU.

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

from qpolicy_train import fakequant_kernel


def _clamped_scale(v: torch.Tensor, threshold: torch.Tensor, min_val: float) -> torch.Tensor:
    """``clamp_min(v, min_val) / threshold``: a quantizer's scale from its statistic ``v >= 0`` (see
    :func:`_scale_from_stat` for why its gradient is ``grad / threshold``)."""
    return torch.clamp_min(v, min_val) / threshold


def _abs_max(weight: torch.Tensor) -> torch.Tensor:
    """Brevitas' per-tensor ``AbsMax`` weight statistic (0-dim)."""
    return torch.max(torch.abs(weight.reshape(-1)))


def _fake_quant_backward_from(g: torch.Tensor, z: torch.Tensor, s: torch.Tensor, r: torch.Tensor, c: torch.Tensor,
                              lo: float, hi: float, clamp_passes_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``c * s`` (``c = clamp(r)``, ``r = round(z)``, ``z = x / s``) for ``x`` and ``s``, with the
    float operations autograd performs on Brevitas' graph, in its order."""
    g_c = g * s                                   # d(c * s)/dc
    g_s = (g * c).sum()                           # d(c * s)/ds
    if not clamp_passes_grad:                     # TensorClamp: torch.where, no gradient outside
        g_c = torch.where((r > hi) | (r < lo), 0.0, g_c)
    g_x = g_c / s                                 # round is straight-through; d(x / s)/dx
    g_s = g_s + -(g_c * (z / s)).sum()            # d(x / s)/ds = -(x / s) / s, as autograd forms it
    return g_x, g_s


def _fake_quant_backward(g: torch.Tensor, x: torch.Tensor, s: torch.Tensor, lo: float, hi: float,
                         clamp_passes_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_fake_quant_backward_from` from the input ``x``: the C loop where it applies (a
    non-contiguous ``g`` keeps torch's layout-following ops), the same values either way."""
    if fakequant_kernel.usable(g):
        g_x, p1, p2 = fakequant_kernel.backward(g, x, float(s), lo, hi, clamp_passes_grad)
        return g_x, p1.sum() + -p2.sum()          # the same sums, in the same order
    z = x / s
    r = torch.round(z)
    return _fake_quant_backward_from(g, z, s, r, torch.clamp(r, lo, hi), lo, hi, clamp_passes_grad)


class _FakeQuant(torch.autograd.Function):
    """``clamp(round(x / s), lo, hi) * s`` with Brevitas' straight-through gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, s: torch.Tensor, lo: float, hi: float, clamp_passes_grad: bool,
                threshold: torch.Tensor | None = None, min_val: float = 0.0):
        ctx.lo, ctx.hi, ctx.clamp_passes_grad, ctx.threshold = lo, hi, clamp_passes_grad, threshold
        if threshold is not None:             # s is the statistic v >= 0 of the scale (see _scale_from_stat)
            s = _clamped_scale(s, threshold, min_val)
        if fakequant_kernel.usable(x, s):     # one loop; the backward recomputes z, r and c from x
            ctx.save_for_backward(x, s)
            ctx.in_c = True
            return fakequant_kernel.forward(x, float(s), lo, hi)
        ctx.in_c = False
        z = x / s
        r = torch.round(z)
        c = torch.clamp(r, lo, hi)
        ctx.save_for_backward(z, s, r, c)
        return c * s

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        if ctx.in_c:
            x, s = ctx.saved_tensors
            g_x, g_s = _fake_quant_backward(g, x, s, ctx.lo, ctx.hi, ctx.clamp_passes_grad)
        else:
            z, s, r, c = ctx.saved_tensors
            g_x, g_s = _fake_quant_backward_from(g, z, s, r, c, ctx.lo, ctx.hi, ctx.clamp_passes_grad)
        return g_x, _FakeQuant._scale_input_grad(ctx, g_s.reshape(s.shape)), None, None, None, None, None

    @staticmethod
    def _scale_input_grad(ctx, g_s: torch.Tensor) -> torch.Tensor:
        """The gradient of the node's second input: the scale's, or its statistic's (``g_s / threshold``,
        see :func:`_scale_from_stat`)."""
        return g_s if ctx.threshold is None else g_s / ctx.threshold


class _FusedBody(torch.autograd.Function):
    """The whole actor body under autograd as one node, for train-mode scales with a clamp and C loops.

    Per quantizer, :class:`_FakeQuant` costs two Python-level autograd calls and the scale statistics a
    handful of engine nodes; at the paper's width of 16 that overhead, not arithmetic, was most of an
    actor update. Here the forward runs the same ops as :meth:`FusedActorForward.__call__`, and the
    backward forms what autograd forms on that graph, op for op: ``F.linear`` is ``addmm(b, y, wq.t())``
    (input gradient ``g.mm(wq)``, weight gradient ``g.t().mm(y)``, bias gradient ``g`` summed over the
    batch), ReLU's is ``threshold_backward`` on its result, ``abs``'s is ``grad * sgn``, and a full
    ``max`` spreads its gradient evenly over the maxima. The weight's two gradient paths meet in one
    addition, as in autograd's input buffer (two summands: the order cannot matter). The tests and the
    trainer's run-time check compare it with Brevitas bit for bit."""

    @staticmethod
    def forward(ctx, plan: list, x: torch.Tensor, *params: torch.Tensor):
        ctx.plan = plan
        saved: list[torch.Tensor] = []
        k = 0

        def act_quant(y: torch.Tensor, threshold: torch.Tensor, lo: float, hi: float, min_val: float):
            nonlocal k
            value = params[k]
            k += 1
            s = _clamped_scale(torch.abs(value), threshold, min_val)
            saved.extend((y, s, value))
            return fakequant_kernel.forward(y, float(s), lo, hi)

        y = None
        for kind, threshold, lo, hi, min_val in plan:
            if kind == "input":
                y = act_quant(x, threshold, lo, hi, min_val)
            elif kind in ("relu", "output"):
                y = act_quant(F.relu(y) if kind == "relu" else y, threshold, lo, hi, min_val)
            else:   # linear
                w, b = params[k], params[k + 1]
                k += 2
                v = _abs_max(w)
                s = _clamped_scale(v, threshold, min_val)
                wq = fakequant_kernel.forward(w, float(s), lo, hi)
                saved.extend((y, w, b, s, v, wq))
                y = F.linear(y, wq, b)
        ctx.save_for_backward(*saved)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        saved = list(ctx.saved_tensors)
        grads: list[torch.Tensor] = []   # in reverse order of ``params``
        g_x = None
        for kind, threshold, lo, hi, _ in reversed(ctx.plan):
            if kind == "linear":
                y, w, b, s, v, wq = saved[-6:]
                del saved[-6:]
                g_b = g.sum((0,), keepdim=True).view(b.shape)
                g_wq = g.t().mm(y)
                g_y = g.mm(wq)
                g_w, g_s = _fake_quant_backward(g_wq, w, s, lo, hi, True)
                g_w = g_w.contiguous()   # a fresh tensor either way; the C loop adds into it in place
                fakequant_kernel.add_abs_max_grad(g_w, w, v, g_s.reshape(s.shape) / threshold)
                grads += [g_b, g_w]
                g = g_y
            else:
                y, s, value = saved[-3:]
                del saved[-3:]
                g_in, g_s = _fake_quant_backward(g, y, s, lo, hi, False)
                grads.append((g_s.reshape(s.shape) / threshold) * value.sgn())
                if kind == "relu":
                    g = torch.ops.aten.threshold_backward(g_in, y, 0)
                elif kind == "output":
                    g = g_in
                else:
                    g_x = g_in
        return (None, g_x, *reversed(grads))


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


def _fake_quant(x: torch.Tensor, scale: torch.Tensor | tuple, lo: float, hi: float,
                clamp_passes_grad: bool) -> torch.Tensor:
    """``scale`` is the scale tensor, or ``(v, threshold, min_val)`` from :func:`_scale_from_stat`."""
    if isinstance(scale, tuple):      # only under autograd: the node forms clamp_min(v) / threshold
        return _FakeQuant.apply(x, *scale[:1], lo, hi, clamp_passes_grad, *scale[1:])
    if not torch.is_grad_enabled():   # acting and critic targets: the same ops, no autograd node
        if fakequant_kernel.usable(x, scale):
            return fakequant_kernel.forward(x, float(scale), lo, hi)
        return torch.clamp(torch.round(x / scale), lo, hi) * scale
    return _FakeQuant.apply(x, scale, lo, hi, clamp_passes_grad)


def _expect(module: nn.Module, kind: str) -> None:
    if type(module).__name__ != kind:
        raise TypeError(f"unexpected Brevitas module {type(module).__name__} (expected {kind})")


def _scale_from_stat(v: torch.Tensor, threshold: torch.Tensor, min_val: float) -> tuple:
    """``clamp_min(v, min_val) / threshold`` for a statistic ``v >= 0`` (an ``abs`` or an abs-max), to be
    formed inside the fake-quant node.

    Brevitas reaches this value through ``ScalarSignedClampMinSte`` (``where(v >= 0, 1, -1) *
    clamp_min_ste(abs_binary_sign_grad(v))``), ``abs`` and ``/ threshold``. For ``v >= 0`` every factor
    its backward multiplies by is exactly 1.0 (the sign, the binary sign, the straight-through clamp, the
    ``abs`` of a positive value), so its gradient is exactly ``grad / threshold``: the fake-quant node
    applies that itself, instead of four Python-level autograd functions per quantizer."""
    return v, threshold, min_val


def _activation_scale(tq: nn.Module, threshold: torch.Tensor, min_val: float | None) -> torch.Tensor | tuple:
    """``ParameterFromRuntimeStatsScaling.forward`` after its warm-up (restrict = abs, scale-threshold
    restrict = identity): in train mode ``clamp(abs(value)) / threshold``, in eval mode the clamp comes
    after the division."""
    impl = tq.scaling_impl
    if impl.training:
        if torch.is_grad_enabled() and min_val is not None:
            return _scale_from_stat(torch.abs(impl.value), threshold, min_val)
        return _signed_clamp_min(torch.abs(impl.value), min_val) / threshold
    return _signed_clamp_min(torch.abs(impl.value) / threshold, min_val)


def _weight_scale(weight: torch.Tensor, threshold: torch.Tensor, min_val: float | None) -> torch.Tensor | tuple:
    """``StatsFromParameterScaling.forward`` with ``AbsMax`` statistics over the whole tensor, then
    ``_StatsScaling``: clamp, abs (restrict pre), abs + clamp (restrict), ``/ threshold``."""
    stats = _abs_max(weight).view(())
    if torch.is_grad_enabled() and min_val is not None:
        return _scale_from_stat(stats, threshold, min_val)
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
        self._no_grad_cache: dict[str, tuple] = {}
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

    def __getstate__(self) -> dict:
        # a copy (DDPG's target actor) gets its own parameters: it must not inherit this cache
        return {**self.__dict__, "_no_grad_cache": {}}

    def _cached(self, key: str, source: torch.Tensor, training: bool, compute) -> torch.Tensor:
        """``compute()`` of a parameter, reused while the parameter is unchanged, without autograd only.

        Acting and the critic target run the actor several times between two optimizer steps; every
        in-place update (optimizer step, ``lerp_``, ``load_state_dict``) bumps ``source._version``, so a
        hit returns exactly what ``compute()`` would."""
        if torch.is_grad_enabled():
            return compute()
        stamp = (source._version, training)
        hit = self._no_grad_cache.get(key)
        if hit is not None and hit[0] is source and hit[1] == stamp:
            return hit[2]
        value = compute()
        self._no_grad_cache[key] = (source, stamp, value)
        return value

    def _activation(self, key: str, quant: tuple, x: torch.Tensor) -> torch.Tensor:
        tq, threshold, lo, hi, min_val = quant
        value = tq.scaling_impl.value
        s = self._cached(key, value, tq.scaling_impl.training, lambda: _activation_scale(tq, threshold, min_val))
        return _fake_quant(x, s, lo, hi, False)

    def _whole_body_plan(self, x: torch.Tensor) -> tuple[list, list] | None:
        """The :class:`_FusedBody` plan and its parameters, or None where it does not apply (no autograd,
        eval-mode or unclamped scales, no C loops, an input the loops do not take)."""
        if not torch.is_grad_enabled() or not fakequant_kernel.usable(x):
            return None
        plan, params = [], []
        for kind, q in [("input", self._input), *self._stages, ("output", self._output)]:
            if kind == "linear":
                m, threshold, lo, hi, min_val = q
                plan.append((kind, threshold, lo, hi, min_val))
                params += [m.weight, m.bias]
            else:
                tq, threshold, lo, hi, min_val = q
                if not tq.scaling_impl.training:
                    return None
                plan.append((kind, threshold, lo, hi, min_val))
                params.append(tq.scaling_impl.value)
            if min_val is None:
                return None
        # the C loops read raw memory: contiguous float32 parameters only
        if any(p is None or p.dtype is not torch.float32 or not p.is_contiguous() for p in params):
            return None
        return plan, params

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        whole = self._whole_body_plan(x)
        if whole is not None:
            return _FusedBody.apply(whole[0], x, *whole[1])
        y = self._activation("input", self._input, x)
        for i, (kind, q) in enumerate(self._stages):
            if kind == "relu":
                y = self._activation(f"relu{i}", q, F.relu(y))
            else:
                m, threshold, lo, hi, min_val = q
                w = self._cached(f"weight{i}", m.weight, False, lambda m=m, t=threshold, lo=lo, hi=hi, mv=min_val:
                                 _fake_quant(m.weight, _weight_scale(m.weight, t, mv), lo, hi, True))
                y = F.linear(y, w, m.bias)
        return self._activation("output", self._output, y)

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
                                                                           torch.equal(a, b)) for a, b in zip(g1, g2, strict=False))

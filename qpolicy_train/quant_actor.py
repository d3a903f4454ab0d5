"""The quantized actor: the one network that becomes integer hardware.

Quantize/dequantize sits at the input, on every weight matrix, after every ReLU and
before the final tanh (Kresse & Lampert, Sec. 3). Only this network is quantized; the
critics and SAC's log-std branch stay FP32 and are used only in training.

Two scale modes:

``float``  the paper: weight scale = per-tensor abs max (from statistics, not learned);
           activation scales initialised over a 300-step warm-up from the 99.999th
           percentile, then learned by gradient. The bias stays float; the exporter
           folds it into the integer thresholds exactly.
``po2``    power-of-two scales and a 32-bit integer bias at the accumulator scale.
           Every float op of the forward is then exact, so the integer contract is
           bit-identical by construction (and hls4ml is exact too).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8ActPerTensorFloat,
    Int8WeightPerTensorFixedPoint,
    Int8WeightPerTensorFloat,
    Int32Bias,
    Uint8ActPerTensorFixedPoint,
    Uint8ActPerTensorFloat,
)
from torch import nn

from qpolicy_hw.errors import QpolicyError

ScaleMode = Literal["float", "po2"]
MAX_BITS = 16


class ConfigError(QpolicyError, ValueError):
    """A configuration that cannot be built; the message names the field."""


@dataclass(frozen=True)
class QuantSpec:
    """Bit widths and shape of the quantized actor (one source of truth, stored in the bundle)."""

    input_bits: int = 8
    """signed bits of the quantized, normalized observation"""
    core_bits: int = 8
    """bits of the weights (signed) and the hidden activations (unsigned, after ReLU)"""
    output_bits: int = 8
    """signed bits of the pre-tanh action code"""
    width: int = 256
    """hidden layer width"""
    depth: int = 2
    """number of hidden layers"""
    scale_mode: ScaleMode = "float"
    """'float' (paper) or 'po2' (power-of-two scales, integer bias; exact hls4ml)"""
    quantized: bool = True
    """False gives the FP32 baseline actor with the same shape"""

    def validate(self) -> QuantSpec:
        for name in ("input_bits", "core_bits", "output_bits"):
            bits = getattr(self, name)
            if not isinstance(bits, int) or not 2 <= bits <= MAX_BITS:
                raise ConfigError(f"{name}={bits!r}: bit widths must be integers in [2, {MAX_BITS}]")
        if not isinstance(self.width, int) or self.width <= 0:
            raise ConfigError(f"width={self.width!r}: hidden width must be a positive integer")
        if not isinstance(self.depth, int) or self.depth <= 0:
            raise ConfigError(f"depth={self.depth!r}: depth must be a positive integer")
        if self.scale_mode not in ("float", "po2"):
            raise ConfigError(f"scale_mode={self.scale_mode!r}: choose 'float' or 'po2'")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _quantizers(mode: ScaleMode):
    if mode == "po2":
        return Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint, Int32Bias
    return Int8ActPerTensorFloat, Int8WeightPerTensorFloat, Uint8ActPerTensorFloat, None


class QuantActorBody(nn.Module):
    """Observation (normalized, clipped) -> pre-tanh action, quantized end to end.

    ``forward`` returns a plain float tensor (the dequantized output code times scale)
    so it exports to QONNX as one graph; :meth:`forward_codes` returns the integer codes
    of every quantized stage for verification.
    """

    def __init__(self, obs_dim: int, act_dim: int, spec: QuantSpec):
        super().__init__()
        spec.validate()
        self.spec = spec
        act_q, weight_q, relu_q, bias_q = _quantizers(spec.scale_mode)
        # Signed weights over the paper's full range [-2^(b-1), 2^(b-1)-1] (narrow_range=False).
        lin_kw = dict(weight_quant=weight_q, weight_bit_width=spec.core_bits, weight_narrow_range=False,
                      bias=True, return_quant_tensor=True)
        if bias_q is not None:
            lin_kw["bias_quant"] = bias_q
        self.input_quant = QuantIdentity(act_quant=act_q, bit_width=spec.input_bits, return_quant_tensor=True)
        layers: list[nn.Module] = []
        fan_in = obs_dim
        for _ in range(spec.depth):
            layers.append(QuantLinear(fan_in, spec.width, **lin_kw))
            layers.append(QuantReLU(act_quant=relu_q, bit_width=spec.core_bits, return_quant_tensor=True))
            fan_in = spec.width
        self.hidden = nn.ModuleList(layers)
        self.out_linear = QuantLinear(fan_in, act_dim, **lin_kw)
        self.output_quant = QuantIdentity(act_quant=act_q, bit_width=spec.output_bits, return_quant_tensor=True)
        self._fused = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused is not None and not torch.jit.is_tracing():   # never in a QONNX export trace
            return self._fused(x)
        return self.brevitas_forward(x)

    def use_fused_forward(self, probe: torch.Tensor) -> bool:
        """Switch ``forward`` to :class:`~qpolicy_train.fused_quant.FusedActorForward` once it has shown
        the same outputs and gradients as Brevitas on ``probe``; returns whether it switched. Only the
        ``float`` scale mode after the activation-scale warm-up qualifies (po2 keeps Brevitas)."""
        from qpolicy_train.fused_quant import FusedActorForward

        if self.spec.scale_mode != "float" or not warmup_done(self):
            raise ValueError("the fused forward needs the float scale mode and a finished warm-up")
        try:
            fused = FusedActorForward(self)
        except (TypeError, ValueError):  # a quantizer built or set up unlike the ones it transcribes
            return False
        if not fused.matches_brevitas(probe):
            return False
        self._fused = fused
        return True

    def brevitas_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The forward as Brevitas defines it (the reference; QONNX export traces this)."""
        y = self.input_quant(x)
        for layer in self.hidden:
            y = layer(y)
        y = self.output_quant(self.out_linear(y))
        return y.value

    @torch.no_grad()
    def forward_codes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Integer codes after each quantizer: [input, hidden..., output] (int64)."""
        codes = []
        y = self.input_quant(x)
        codes.append(y.int().to(torch.int64))
        for layer in self.hidden:
            y = layer(y)
            if isinstance(layer, QuantReLU):
                codes.append(y.int().to(torch.int64))
        y = self.output_quant(self.out_linear(y))
        codes.append(y.int().to(torch.int64))
        return codes


class FloatActorBody(nn.Module):
    """The FP32 baseline with the same shape (ReLU MLP), for parity comparisons."""

    def __init__(self, obs_dim: int, act_dim: int, spec: QuantSpec):
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        fan_in = obs_dim
        for _ in range(spec.depth):
            layers += [nn.Linear(fan_in, spec.width), nn.ReLU()]
            fan_in = spec.width
        layers.append(nn.Linear(fan_in, act_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_actor_body(obs_dim: int, act_dim: int, spec: QuantSpec) -> nn.Module:
    spec.validate()
    return QuantActorBody(obs_dim, act_dim, spec) if spec.quantized else FloatActorBody(obs_dim, act_dim, spec)


class SquashedAction(nn.Module):
    """tanh squash to the action box; the host-side output table is built from this very module."""

    def __init__(self, low, high):
        super().__init__()
        low_t = torch.as_tensor(low, dtype=torch.float32)
        high_t = torch.as_tensor(high, dtype=torch.float32)
        self.register_buffer("action_scale", (high_t - low_t) / 2.0)
        self.register_buffer("action_bias", (high_t + low_t) / 2.0)

    def forward(self, pre_tanh: torch.Tensor) -> torch.Tensor:
        return torch.tanh(pre_tanh) * self.action_scale + self.action_bias


def load_quantized_state(module: nn.Module, state: dict) -> None:
    """``load_state_dict`` that accepts Brevitas' omission of a scale never initialised (warm-up not
    started: Brevitas leaves ``value`` out of the state dict), and nothing else."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("scaling_impl.value")]
    if missing or unexpected:
        raise RuntimeError(f"state does not match the module: missing {missing[:3]}, unexpected {unexpected[:3]}")


def warmup_counters(module: nn.Module) -> dict[str, int]:
    """Brevitas' activation-scale warm-up counters (not part of ``state_dict``: loading a scale marks
    the warm-up as finished)."""
    return {name: int(m.counter) for name, m in module.named_modules()
            if hasattr(m, "collect_stats_steps") and hasattr(m, "counter")}


def set_warmup_counters(module: nn.Module, counters: dict[str, int]) -> None:
    modules = dict(module.named_modules())
    for name, value in counters.items():
        modules[name].counter = value


def warmup_in_progress(module: nn.Module) -> bool:
    """True between the first and the last warm-up step. A checkpoint taken then could not be
    restored exactly (Brevitas saves the running statistic in place of the scale), so the trainer
    waits until the warm-up is over."""
    return any(0 < c <= m.collect_stats_steps for m, c in
               ((m, int(m.counter)) for m in module.modules() if hasattr(m, "collect_stats_steps")
                and hasattr(m, "counter")))


def warmup_done(module: nn.Module) -> bool:
    """True when every activation quantizer has finished collecting its warm-up statistics."""
    return all(c > m.collect_stats_steps for m, c in
               ((m, int(m.counter)) for m in module.modules() if hasattr(m, "collect_stats_steps")
                and hasattr(m, "counter")))

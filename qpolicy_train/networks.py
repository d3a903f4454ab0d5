"""The networks of both algorithms: FP32 twin critics and the actor (quantized body + squash; SAC adds
an FP32 log-std branch and samples a tanh-Gaussian, DDPG acts deterministically)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qpolicy_train.quant_actor import QuantSpec, SquashedAction, make_actor_body

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))   # the constant torch.distributions.Normal.log_prob uses


class TwinQ(nn.Module):
    """Two Q-networks evaluated as one batched matmul (same maths as two MLPs, half the kernel calls)."""

    def __init__(self, in_dim: int, width: int, n: int = 2):
        super().__init__()
        dims = [in_dim, width, width, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=False):
            w = torch.empty(n, fan_in, fan_out)
            b = torch.empty(n, 1, fan_out)
            bound = 1.0 / np.sqrt(fan_in)  # torch.nn.Linear's default init
            for i in range(n):
                nn.init.kaiming_uniform_(w[i].T, a=np.sqrt(5))
                nn.init.uniform_(b[i], -bound, bound)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Returns Q-values of shape (n, batch)."""
        x = torch.cat([obs, act], 1).unsqueeze(0).expand(len(self.weights[0]), -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=False)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = F.relu(x)
        return x.squeeze(-1)


class Actor(nn.Module):
    """Quantized body (the deployed part) + SquashedAction; SAC adds an FP32 log-std branch."""

    def __init__(self, obs_dim: int, act_dim: int, low, high, spec: QuantSpec, stochastic: bool,
                 log_std_width: int = 64):
        super().__init__()
        self.body = make_actor_body(obs_dim, act_dim, spec)
        self.squash = SquashedAction(low, high)
        self.log_std = (nn.Sequential(nn.Linear(obs_dim, log_std_width), nn.ReLU(),
                                      nn.Linear(log_std_width, act_dim)) if stochastic else None)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return self.squash(self.body(obs))

    def _gaussian(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, standard deviation and a reparameterised pre-tanh sample. ``torch.distributions.Normal``
        computes the same values with the same ops (``loc + eps * scale``, ``eps`` from ``normal_``); written
        out, it skips the distribution object and its argument checks on every step."""
        mean = self.body(obs)
        log_std = torch.tanh(self.log_std(obs))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        std = log_std.exp()
        eps = torch.empty(mean.shape, dtype=mean.dtype).normal_()
        return mean, std, mean + eps * std

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised tanh-Gaussian sample and its log-probability (CleanRL's formulation)."""
        mean, std, x_t = self._gaussian(obs)
        y_t = torch.tanh(x_t)
        action = y_t * self.squash.action_scale + self.squash.action_bias
        # Normal(mean, std).log_prob(x_t), op for op
        normal_log_prob = -((x_t - mean) ** 2) / (2 * std ** 2) - std.log() - _LOG_SQRT_2PI
        log_prob = normal_log_prob - torch.log(self.squash.action_scale * (1 - y_t.pow(2)) + 1e-6)
        return action, log_prob.sum(1, keepdim=True)

    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """The action of :meth:`sample` alone (same random draw), for acting: no log-probability."""
        return self.squash(self._gaussian(obs)[2])

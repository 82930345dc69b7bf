"""Differentiable probability models of the latents, used in training and at export.

* :class:`FactorizedDensity` - the learned, per-channel, non-parametric density of the
  hyper-latent ``z`` (Ballé et al. 2018, appendix 6.1).
* :func:`gaussian_likelihood` - the probability mass of a quantized Gaussian.

At coding time nothing here runs: the export step evaluates these models once into integer
probability tables (see :mod:`lcodec.entropy.tables`) that the range coder uses.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

LIKELIHOOD_BOUND = 1e-9
SCALE_BOUND = 0.11


class _LowerBound(torch.autograd.Function):
    """``max(x, bound)``; below the bound, the gradient passes only where it pulls ``x`` up."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * ((x >= ctx.bound) | (grad < 0)).to(grad.dtype), None


def _lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``max(x, bound)`` whose gradient still pulls values below the bound upwards, and never
    pushes them further down (the value there no longer changes anything). Until 2026-11-30 the
    gradient passed in both directions: raw scales of latents that are always 0 drifted without
    end (hyperprior v3: down to -497; run 23's new latent channels: -122 on average), dragging
    the hyper-synthesis' shared layers with them (docs/model-card.md, run 23)."""
    return _LowerBound.apply(x, bound)


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


class FactorizedDensity(nn.Module):
    """A univariate learned cumulative density per channel.

    The cumulative is ``sigmoid(f(x))`` where ``f`` is a small monotone network
    (filters ``(3, 3, 3)``: matrices kept positive by softplus, tanh "factors").
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3),
                 init_scale: float = 10.0) -> None:
        super().__init__()
        self.channels = channels
        dims = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)`` for ``x`` of shape ``(channels, 1, n)``."""
        h = x
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            h = torch.matmul(F.softplus(m), h) + b
            if i < len(self.factors):
                h = h + torch.tanh(self.factors[i]) * torch.tanh(h)
        return h

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """Probability mass of the unit interval around each value of ``z`` (NCHW)."""
        n, c, hh, ww = z.shape
        v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cumulative(v - 0.5)
        upper = self.logits_cumulative(v + 0.5)
        # Evaluate on the side of the median where the sigmoids are far from 1 (precision).
        sign = -torch.sign(lower + upper).detach()
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        lik = _lower_bound(lik, LIKELIHOOD_BOUND)
        return lik.reshape(c, n, hh, ww).permute(1, 0, 2, 3)

    @torch.no_grad()
    def pmf_grid(self, lo: int, hi: int) -> torch.Tensor:
        """Float64 probability of every integer in ``[lo, hi]`` per channel: ``(C, hi-lo+1)``."""
        v = torch.arange(lo, hi + 1, dtype=torch.float64)
        v = v.view(1, 1, -1).expand(self.channels, 1, -1)
        params = [p.double() for p in (*self.matrices, *self.biases, *self.factors)]
        k = len(self.matrices)
        ms, bs, fs = params[:k], params[k:2 * k], params[2 * k:]

        def f(x: torch.Tensor) -> torch.Tensor:
            h = x
            for i, (m, b) in enumerate(zip(ms, bs)):
                h = torch.matmul(F.softplus(m), h) + b
                if i < len(fs):
                    h = h + torch.tanh(fs[i]) * torch.tanh(h)
            return h

        lower, upper = f(v - 0.5), f(v + 0.5)
        sign = -torch.sign(lower + upper)
        pmf = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return pmf.squeeze(1)


def gaussian_likelihood(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Mass of ``[v - 1/2, v + 1/2]`` under a zero-mean Gaussian of the given scale."""
    scales = _lower_bound(scales, SCALE_BOUND)
    v = torch.abs(values)
    c = -(2 ** -0.5)
    upper = 0.5 * torch.erfc(c * (0.5 - v) / scales)
    lower = 0.5 * torch.erfc(c * (-0.5 - v) / scales)
    return _lower_bound(upper - lower, LIKELIHOOD_BOUND)

"""Building blocks of the transforms: GDN / inverse GDN, strided convolutions and residual blocks.

Pure torch; no file, byte or image handling here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.transforms import GDN_BETA_MIN, GDN_PEDESTAL


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016).

    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)`` (or ``x_i * sqrt(...)`` when
    ``inverse``). ``beta`` and ``gamma`` are kept non-negative by storing their square
    roots (offset by a small pedestal) and squaring on use.
    """

    _pedestal = GDN_PEDESTAL

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = GDN_BETA_MIN,
                 gamma_init: float = 0.1) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_min = beta_min
        p = self._pedestal
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + p))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + p))

    def _params(self) -> tuple[torch.Tensor, torch.Tensor]:
        p = self._pedestal
        beta = self.beta.clamp_min((self.beta_min + p) ** 0.5).pow(2) - p
        gamma = self.gamma.clamp_min(p ** 0.5).pow(2) - p
        return beta, gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta, gamma = self._params()
        c = x.shape[1]
        norm = F.conv2d(x * x, gamma.view(c, c, 1, 1).to(x.dtype), beta.to(x.dtype))
        norm = torch.sqrt(norm.float()).to(x.dtype)
        return x * norm if self.inverse else x / norm


def conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    """A 'same'-padded convolution that downsamples by ``stride``."""
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """A transposed convolution that upsamples by exactly ``stride``."""
    return nn.ConvTranspose2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                              output_padding=stride - 1)


class ResidualBlock(nn.Module):
    """``x + conv(leaky_relu(conv(x)))`` with two 3x3 'same' convolutions of ``channels``.

    The second convolution starts at zero, so a new block is the identity: it can be put into
    trained transforms without changing what they compute, and training then decides what it
    adds (the blocks of Cheng et al. 2020, here between the GDN layers).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(channels, channels, 3, 1), nn.LeakyReLU(inplace=True),
                                  conv(channels, channels, 3, 1))
        nn.init.zeros_(self.body[2].weight)
        nn.init.zeros_(self.body[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)

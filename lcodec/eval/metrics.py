"""Image quality metrics on 8-bit images: PSNR and MS-SSIM.

Depends on numpy only (no scipy, no torch, no PIL). Inputs are uint8 arrays of
shape HxW (grayscale) or HxWxC (C channels, usually RGB).

Conventions
-----------
* ``psnr``: one mean squared error over all pixels and all channels, peak 255.
  Identical images (MSE 0) give ``PSNR_CAP`` (100 dB) instead of infinity, and
  every value is capped at ``PSNR_CAP`` so averages stay finite.
* ``ms_ssim``: Wang, Simoncelli & Bovik (2003) multi-scale SSIM computed on each
  channel separately (RGB, not luma) and then averaged over channels -- the
  convention of the ``pytorch_msssim`` package used by most learned-codec papers.
  11x11 Gaussian window (sigma 1.5) applied with no padding ("valid"),
  K1=0.01, K2=0.03, L=255, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
  2x2 average downsampling between scales (an odd last row/column is dropped).
  Negative contrast-structure terms are clamped to 0 before the fractional
  powers (as ``pytorch_msssim`` does), so the result lies in [0, 1].
* Small images: the number of scales is the largest M <= 5 for which the
  smallest side at the coarsest scale is still >= 11 pixels
  (min(H, W) >= 11 * 2**(M-1)); the first M weights are used, renormalised to
  sum to 1. Images with a side below 11 pixels use one scale and a Gaussian
  window shrunk to the largest odd size that fits (still sigma 1.5).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

PSNR_CAP = 100.0
"""PSNR reported for identical images, and upper bound of every PSNR value."""

MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1 = 0.01
K2 = 0.03
DATA_RANGE = 255.0


def _check_pair(a: NDArray, b: NDArray) -> None:
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        raise TypeError("expected numpy arrays")
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {a.dtype} and {b.dtype}")
    if a.ndim not in (2, 3) or a.size == 0:
        raise ValueError(f"expected a non-empty HxW or HxWxC image, got shape {a.shape}")


def mse(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    """Mean squared error over all pixels and channels, in 8-bit units."""
    _check_pair(a, b)
    diff = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr_from_mse(value: float) -> float:
    """PSNR in dB for an 8-bit MSE, capped at ``PSNR_CAP``."""
    if value <= 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(DATA_RANGE * DATA_RANGE / value))


def psnr(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    """PSNR (dB) between two uint8 images, over all channels; capped at 100 dB."""
    return psnr_from_mse(mse(a, b))


def gaussian_kernel(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> NDArray[np.float64]:
    """Normalised 1-D Gaussian of odd ``size``."""
    if size < 1 or size % 2 == 0:
        raise ValueError("kernel size must be a positive odd integer")
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def filter_valid(x: NDArray[np.float64], kernel: NDArray[np.float64]) -> NDArray[np.float64]:
    """Separable 2-D filtering of the last two axes with no padding ("valid").

    Each pass is a dot product of a strided sliding-window view with the 1-D
    kernel (no copies of the windows, BLAS does the sums).
    """
    n = kernel.size
    if x.shape[-2] < n or x.shape[-1] < n:
        raise ValueError("image smaller than the filter window")
    rows = sliding_window_view(x, n, axis=-1) @ kernel
    return sliding_window_view(rows, n, axis=-2) @ kernel


def _downsample2(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """2x2 average pooling of the last two axes; an odd last row/column is dropped."""
    h, w = (x.shape[-2] // 2) * 2, (x.shape[-1] // 2) * 2
    x = x[..., :h, :w]
    lead = x.shape[:-2]
    return x.reshape(*lead, h // 2, 2, w // 2, 2).mean(axis=(-3, -1))


def _ssim_terms(
    x: NDArray[np.float64], y: NDArray[np.float64], kernel: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-channel mean SSIM and mean contrast-structure term for (C, H, W) inputs."""
    c1 = (K1 * DATA_RANGE) ** 2
    c2 = (K2 * DATA_RANGE) ** 2
    stacked = np.stack([x, y, x * x, y * y, x * y])  # (5, C, H, W)
    mu_x, mu_y, e_xx, e_yy, e_xy = filter_valid(stacked, kernel)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    cs_map = (2.0 * cov + c2) / (var_x + var_y + c2)
    lum_map = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    ssim = (lum_map * cs_map).mean(axis=(-2, -1))
    cs = cs_map.mean(axis=(-2, -1))
    return ssim, cs


def ms_ssim_scales(height: int, width: int) -> int:
    """Number of MS-SSIM scales used for an image of this size (1 to 5)."""
    side = min(height, width)
    m = 1
    while m < len(MS_SSIM_WEIGHTS) and side >= WINDOW_SIZE * 2**m:
        m += 1
    return m


def ms_ssim(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    """MS-SSIM in [0, 1] between two uint8 images (per channel, then averaged).

    See the module docstring for the exact conventions and small-image handling.
    """
    _check_pair(a, b)
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    if x.ndim == 2:
        x, y = x[None], y[None]
    else:
        x = np.ascontiguousarray(np.moveaxis(x, -1, 0))
        y = np.ascontiguousarray(np.moveaxis(y, -1, 0))
    height, width = x.shape[-2], x.shape[-1]
    scales = ms_ssim_scales(height, width)
    side = min(height, width)
    size = WINDOW_SIZE if side >= WINDOW_SIZE else (side if side % 2 else side - 1)
    kernel = gaussian_kernel(size, WINDOW_SIGMA)
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales], dtype=np.float64)
    weights = weights / weights.sum()

    factors = []
    for level in range(scales):
        ssim, cs = _ssim_terms(x, y, kernel)
        if level < scales - 1:
            factors.append(np.maximum(cs, 0.0))
            x, y = _downsample2(x), _downsample2(y)
        else:
            factors.append(np.maximum(ssim, 0.0))
    stack = np.stack(factors)  # (scales, C)
    per_channel = np.prod(stack ** weights[:, None], axis=0)
    return float(np.mean(per_channel))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM expressed in dB: -10*log10(1 - value), capped at ``PSNR_CAP``."""
    if value >= 1.0:
        return PSNR_CAP
    return min(PSNR_CAP, -10.0 * math.log10(1.0 - value))

"""PSNR and MS-SSIM of lcodec.eval.metrics against known values and an independent path."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lcodec.eval.metrics import (
    MS_SSIM_WEIGHTS,
    PSNR_CAP,
    gaussian_kernel,
    ms_ssim,
    ms_ssim_db,
    ms_ssim_scales,
    psnr,
)


def pattern(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Deterministic RGB test picture (smooth, ramp and hash-noise channels)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack(
        [
            127.5 + 100 * np.sin(xx / 7.0 + seed) * np.cos(yy / 11.0),
            (xx * 3 + yy * 5 + seed * 17) % 256,
            ((xx * yy + seed) * 2654435761 % 4294967296) / 4294967296 * 255,
        ],
        -1,
    )
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def hash_noise(img: np.ndarray, mult: int, amplitude: int) -> np.ndarray:
    """img + deterministic integer noise in [-amplitude, amplitude], clipped."""
    noise = (np.arange(img.size).reshape(img.shape) * mult) % (2 * amplitude + 1) - amplitude
    return np.clip(img.astype(np.int64) + noise, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ PSNR


def test_psnr_constant_offset_of_one_is_48_13_db():
    a = np.full((16, 16, 3), 77, np.uint8)
    assert psnr(a, a + 1) == pytest.approx(48.1308036, abs=1e-6)
    assert psnr(a + 1, a) == pytest.approx(48.1308036, abs=1e-6)


def test_psnr_known_mse_over_all_channels():
    a = np.full((10, 10, 3), 50, np.uint8)
    b = a.copy()
    b[..., 1] += 10  # only the green channel is off by 10: MSE = 100 / 3 over all channels
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (100 / 3)), abs=1e-9)
    g = np.zeros((4, 4), np.uint8)
    h = g.copy()
    h[0, 0] = 255  # grayscale, one pixel at full error: MSE = 255^2 / 16
    assert psnr(g, h) == pytest.approx(10 * math.log10(16), abs=1e-9)


def test_psnr_identical_images_are_capped_and_inputs_are_checked():
    a = pattern(8, 8)
    assert psnr(a, a) == PSNR_CAP == 100.0
    with pytest.raises(ValueError):
        psnr(a, a[:4])
    with pytest.raises(ValueError):
        psnr(a.astype(np.float32), a.astype(np.float32))


# ------------------------------------------------------------------------------ MS-SSIM


def test_ms_ssim_identical_is_one_and_decreases_with_noise():
    a = pattern(96, 128)
    rng = np.random.default_rng(1)
    values = []
    for sigma in (2, 8, 25, 60):
        noisy = np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8)
        values.append(ms_ssim(a, noisy))
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert 1.0 > values[0] > values[1] > values[2] > values[3] >= 0.0
    assert ms_ssim(a, 255 - a) < 0.5


# Reference values from the pytorch_msssim package (v1.0.0, win_size 11, sigma 1.5,
# data_range 255, the implementation most learned-codec papers use), computed on the
# deterministic pictures below; 176x192 has even sizes at every scale, so the downsampling
# conventions coincide.
PUBLISHED = [
    (lambda a: hash_noise(a, 7919, 10), 0.9943589858349361),
    (lambda a: hash_noise(a, 104729, 40), 0.95704951708545),
    (lambda a: np.roll(a, 1, axis=1), 0.6578974802360219),
]


@pytest.mark.parametrize("distort,expected", PUBLISHED)
def test_ms_ssim_matches_pytorch_msssim_reference(distort, expected):
    a = pattern(176, 192)
    assert ms_ssim(a, distort(a)) == pytest.approx(expected, abs=2e-5)


def _brute_force_ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Independent path: explicit 2-D window (outer product), loops over offsets, per channel."""
    k1 = gaussian_kernel(11, 1.5)
    win = np.outer(k1, k1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scales = ms_ssim_scales(*a.shape[:2])
    w = np.array(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    results = []
    for ch in range(a.shape[2]):
        x = a[..., ch].astype(np.float64)
        y = b[..., ch].astype(np.float64)
        total = 1.0
        for level in range(scales):
            oh, ow = x.shape[0] - 10, x.shape[1] - 10
            stats = {key: np.zeros((oh, ow)) for key in ("x", "y", "xx", "yy", "xy")}
            for i in range(11):
                for j in range(11):
                    xs, ys = x[i : i + oh, j : j + ow], y[i : i + oh, j : j + ow]
                    stats["x"] += win[i, j] * xs
                    stats["y"] += win[i, j] * ys
                    stats["xx"] += win[i, j] * xs * xs
                    stats["yy"] += win[i, j] * ys * ys
                    stats["xy"] += win[i, j] * xs * ys
            vx = stats["xx"] - stats["x"] ** 2
            vy = stats["yy"] - stats["y"] ** 2
            cov = stats["xy"] - stats["x"] * stats["y"]
            cs = (2 * cov + c2) / (vx + vy + c2)
            lum = (2 * stats["x"] * stats["y"] + c1) / (stats["x"] ** 2 + stats["y"] ** 2 + c1)
            if level < scales - 1:
                total *= max(cs.mean(), 0.0) ** w[level]
                h2, w2 = x.shape[0] // 2, x.shape[1] // 2
                x = (x[0 : 2 * h2 : 2, 0 : 2 * w2 : 2] + x[1 : 2 * h2 : 2, 0 : 2 * w2 : 2]
                     + x[0 : 2 * h2 : 2, 1 : 2 * w2 : 2] + x[1 : 2 * h2 : 2, 1 : 2 * w2 : 2]) / 4
                y = (y[0 : 2 * h2 : 2, 0 : 2 * w2 : 2] + y[1 : 2 * h2 : 2, 0 : 2 * w2 : 2]
                     + y[0 : 2 * h2 : 2, 1 : 2 * w2 : 2] + y[1 : 2 * h2 : 2, 1 : 2 * w2 : 2]) / 4
            else:
                total *= max((lum * cs).mean(), 0.0) ** w[level]
        results.append(total)
    return float(np.mean(results))


@pytest.mark.parametrize("shape", [(97, 121), (30, 45), (180, 200)])
def test_ms_ssim_matches_an_independent_brute_force_path(shape):
    a = pattern(*shape, seed=3)
    b = hash_noise(a, 6007, 25)
    assert ms_ssim(a, b) == pytest.approx(_brute_force_ms_ssim(a, b), abs=1e-10)


def test_ms_ssim_small_images_use_fewer_scales():
    assert ms_ssim_scales(512, 768) == 5
    assert ms_ssim_scales(176, 176) == 5
    assert ms_ssim_scales(175, 400) == 4
    assert ms_ssim_scales(22, 22) == 2
    assert ms_ssim_scales(21, 21) == 1
    assert ms_ssim_scales(5, 5) == 1
    tiny = pattern(9, 8)  # below the 11-pixel window: one scale, window shrunk to 7
    assert ms_ssim(tiny, tiny) == pytest.approx(1.0)
    assert 0.0 <= ms_ssim(tiny, hash_noise(tiny, 31, 30)) < 1.0
    gray = pattern(40, 40)[..., 0]
    assert 0.0 < ms_ssim(gray, hash_noise(gray, 13, 20)) < 1.0


def test_ms_ssim_db():
    assert ms_ssim_db(0.99) == pytest.approx(20.0)
    assert ms_ssim_db(0.9) == pytest.approx(10.0)
    assert ms_ssim_db(1.0) == PSNR_CAP

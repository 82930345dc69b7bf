"""BD-rate / BD-PSNR and the numpy PCHIP of lcodec.eval.bdrate."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lcodec.eval.bdrate import Pchip, bd_psnr, bd_rate, quality_at_rates

RATES = [0.12, 0.25, 0.47, 0.85, 1.5]
PSNRS = [27.1, 29.4, 31.9, 34.6, 37.3]


def test_curve_against_itself_is_zero():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-12)
    assert bd_psnr(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("factor", [0.9, 0.5, 1.25])
def test_scaled_rates_give_the_scale(factor):
    scaled = [r * factor for r in RATES]
    assert bd_rate(RATES, PSNRS, scaled, PSNRS) == pytest.approx((factor - 1) * 100, abs=1e-6)


def test_rates_times_0_9_is_minus_10_percent_also_unsorted():
    order = [3, 0, 4, 1, 2]
    r = [RATES[i] for i in order]
    d = [PSNRS[i] for i in order]
    assert bd_rate(r, d, [x * 0.9 for x in r], d) == pytest.approx(-10.0, abs=1e-6)


def test_linear_log_rate_difference_gives_the_analytic_value():
    # log r_a = (D - 30) / 8; log r_b = log r_a + k (D - 30): PCHIP reproduces straight
    # lines exactly, so the mean log-rate difference over the overlap [32, 38] is 5 k.
    k = -0.05
    da = np.array([26.0, 30.0, 34.0, 38.0])
    db = np.array([32.0, 33.0, 36.0, 40.0])
    ra = np.exp((da - 30) / 8)
    rb = np.exp((db - 30) / 8 + k * (db - 30))
    assert bd_rate(ra, da, rb, db) == pytest.approx((math.exp(5 * k) - 1) * 100, abs=1e-9)


def test_bd_psnr_of_a_shifted_curve():
    assert bd_psnr(RATES, PSNRS, RATES, [p + 0.7 for p in PSNRS]) == pytest.approx(0.7, abs=1e-9)


def test_quality_at_rates_is_the_curve_at_its_knots_and_nan_outside():
    got = quality_at_rates(RATES, PSNRS, [RATES[2], RATES[0], 0.01, 9.0])
    assert got[:2] == pytest.approx([PSNRS[2], PSNRS[0]], abs=1e-9)
    assert math.isnan(got[2]) and math.isnan(got[3])  # no extrapolation


def test_quality_at_rates_follows_a_log_linear_curve_between_knots():
    # PSNR = 30 + 4 log(r) is a straight line in log-rate: PCHIP reproduces it exactly.
    rates = [0.1, 0.3, 0.8, 2.0]
    d = [30 + 4 * math.log(r) for r in rates]
    at = [0.15, 0.5, 1.7]
    assert quality_at_rates(rates, d, at) == pytest.approx([30 + 4 * math.log(r) for r in at], abs=1e-9)


def test_quality_at_rates_agrees_with_bd_psnr_for_a_shifted_curve():
    shifted = [p + 0.7 for p in PSNRS]
    mid = [0.2, 0.6, 1.2]
    gaps = [b - a for a, b in zip(quality_at_rates(RATES, PSNRS, mid), quality_at_rates(RATES, shifted, mid))]
    assert gaps == pytest.approx([0.7] * 3, abs=1e-9)
    with pytest.raises(ValueError):
        quality_at_rates(RATES, PSNRS, [0.0])


def test_no_overlap_is_nan():
    assert math.isnan(bd_rate(RATES, PSNRS, RATES, [p + 20 for p in PSNRS]))
    assert math.isnan(bd_psnr(RATES, PSNRS, [r * 100 for r in RATES], PSNRS))


@pytest.mark.parametrize(
    "ra,da",
    [
        ([0.1], [30.0]),  # one point
        ([0.1, -0.2, 0.3], [30.0, 31.0, 32.0]),  # negative rate
        ([0.1, 0.2], [30.0, 31.0, 32.0]),  # lengths differ
        ([0.1, 0.2, float("nan")], [30.0, 31.0, 32.0]),
    ],
)
def test_invalid_curves_raise(ra, da):
    with pytest.raises(ValueError):
        bd_rate(ra, da, RATES, PSNRS)


def test_pchip_interpolates_is_monotone_and_integrates_exactly():
    x = np.array([0.0, 1.0, 1.5, 4.0, 5.0, 8.0])
    y = np.array([0.0, 0.2, 2.0, 2.1, 5.0, 5.0])  # monotone, with a flat end
    p = Pchip(x, y)
    assert np.allclose(p(x), y, atol=1e-12)
    t = np.linspace(0, 8, 80001)
    v = p(t)
    assert np.all(np.diff(v) >= -1e-12)  # shape preserving: no overshoot
    assert v.max() <= 5.0 + 1e-12
    dense = float(np.sum((v[1:] + v[:-1]) / 2 * np.diff(t)))
    assert p.integrate(0.0, 8.0) == pytest.approx(dense, abs=1e-7)
    t2 = np.linspace(0.7, 6.3, 56001)
    v2 = p(t2)
    assert p.integrate(0.7, 6.3) == pytest.approx(float(np.sum((v2[1:] + v2[:-1]) / 2 * np.diff(t2))), abs=1e-7)


def test_pchip_matches_scipy_when_available():
    interpolate = pytest.importorskip("scipy.interpolate")
    x = np.array([25.0, 28.0, 29.0, 33.5, 36.0, 41.0])
    y = np.log([0.1, 0.3, 0.33, 0.9, 1.3, 3.0])
    ref = interpolate.PchipInterpolator(x, y)
    t = np.linspace(25, 41, 1001)
    assert np.allclose(Pchip(x, y)(t), ref(t), atol=1e-12)
    assert Pchip(x, y).integrate(26.0, 40.0) == pytest.approx(float(ref.integrate(26.0, 40.0)), abs=1e-10)


def test_pchip_slopes_by_hand():
    # h = [1, 1], secants [1, 2]: three-point end slopes (2*1+1)*1-1*2)/2 = 0.5 and
    # ((2*1+1)*2-1*1)/2 = 2.5; interior weighted harmonic mean 6 / (3/1 + 3/2) = 4/3.
    p = Pchip([0.0, 1.0, 2.0], [0.0, 1.0, 3.0])
    assert np.allclose(p.d, [0.5, 4 / 3, 2.5])
    # Hermite value at the middle of the first piece: (y0+y1)/2 + h (d0-d1)/8
    assert float(p(0.5)) == pytest.approx(0.5 + (0.5 - 4 / 3) / 8)
    # a secant sign change gives a flat interior slope (no overshoot at a peak)
    assert Pchip([0.0, 1.0, 2.0], [0.0, 1.0, 0.0]).d[1] == 0.0

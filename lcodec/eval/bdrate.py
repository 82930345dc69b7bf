"""Bjontegaard delta metrics (BD-rate, BD-PSNR) with a numpy PCHIP interpolant.

Depends on numpy only (no scipy, no torch).

Method (BD-rate): for each curve, log(rate) is interpolated as a function of
distortion (e.g. PSNR in dB) with a monotone piecewise cubic Hermite
interpolant (PCHIP, Fritsch-Carlson slopes, the same slopes and end conditions
as ``scipy.interpolate.PchipInterpolator``). Both interpolants are integrated
exactly (closed-form antiderivative of each cubic piece) over the overlapping
distortion interval [max(min_a, min_b), min(max_a, max_b)]; the mean difference
of log-rates over that interval, d, gives BD-rate = (exp(d) - 1) * 100 percent.
Negative means curve b needs fewer bits than curve a for the same quality.

BD-PSNR swaps the roles: distortion is interpolated as a function of log(rate)
and the mean difference (b - a) over the overlapping log-rate interval is
returned in the distortion's unit. ``quality_at_rates`` evaluates that same
interpolant at given rates: the quality an anchor reaches at a test codec's
bitrates, from which the gap at each setting is read.

If the intervals do not overlap (or overlap in a single point) the result is
``nan``. Invalid input (fewer than 2 points, non-positive rates, non-finite
values, mismatched lengths) raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def _pchip_slopes(x: FloatArray, y: FloatArray) -> FloatArray:
    """Fritsch-Carlson derivative estimates at the knots (scipy's PCHIP rules)."""
    n = x.size
    h = np.diff(x)
    delta = np.diff(y) / h
    if n == 2:
        return np.array([delta[0], delta[0]])
    d = np.zeros(n)
    # interior: weighted harmonic mean where the secants have the same sign
    w1 = 2.0 * h[1:] + h[:-1]
    w2 = h[1:] + 2.0 * h[:-1]
    same_sign = (np.sign(delta[:-1]) * np.sign(delta[1:])) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
    d[1:-1] = np.where(same_sign, harmonic, 0.0)
    d[0] = _edge_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _edge_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _edge_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    """One-sided three-point end slope, shape preserving."""
    d = ((2.0 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3.0 * m0):
        return 3.0 * m0
    return float(d)


class Pchip:
    """Monotone piecewise cubic Hermite interpolant with an exact integral."""

    def __init__(self, x: Sequence[float], y: Sequence[float]) -> None:
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        if xa.ndim != 1 or xa.shape != ya.shape or xa.size < 2:
            raise ValueError("PCHIP needs two 1-D arrays of equal length >= 2")
        if np.any(np.diff(xa) <= 0):
            raise ValueError("PCHIP knots must be strictly increasing")
        self.x = xa
        self.y = ya
        self.d = _pchip_slopes(xa, ya)
        h = np.diff(xa)
        # exact integral of each full piece: h*(y0+y1)/2 + h^2*(d0-d1)/12
        pieces = h * (ya[:-1] + ya[1:]) / 2.0 + h * h * (self.d[:-1] - self.d[1:]) / 12.0
        self._cumulative = np.concatenate([[0.0], np.cumsum(pieces)])

    def _piece(self, t: FloatArray | float) -> NDArray[np.intp]:
        return np.clip(np.searchsorted(self.x, t, side="right") - 1, 0, self.x.size - 2)

    def __call__(self, t: FloatArray | float) -> FloatArray:
        t = np.asarray(t, dtype=np.float64)
        k = self._piece(t)
        h = self.x[k + 1] - self.x[k]
        s = (t - self.x[k]) / h
        h00 = 2 * s**3 - 3 * s**2 + 1
        h10 = s**3 - 2 * s**2 + s
        h01 = -2 * s**3 + 3 * s**2
        h11 = s**3 - s**2
        return h00 * self.y[k] + h10 * h * self.d[k] + h01 * self.y[k + 1] + h11 * h * self.d[k + 1]

    def antiderivative(self, t: float) -> float:
        """Integral of the interpolant from ``x[0]`` to ``t`` (t within the knots)."""
        k = int(self._piece(t))
        h = self.x[k + 1] - self.x[k]
        s = (t - self.x[k]) / h
        a00 = s**4 / 2 - s**3 + s
        a10 = s**4 / 4 - 2 * s**3 / 3 + s**2 / 2
        a01 = -(s**4) / 2 + s**3
        a11 = s**4 / 4 - s**3 / 3
        part = h * (
            a00 * self.y[k] + a10 * h * self.d[k] + a01 * self.y[k + 1] + a11 * h * self.d[k + 1]
        )
        return float(self._cumulative[k] + part)

    def integrate(self, lo: float, hi: float) -> float:
        """Exact integral over [lo, hi], which must lie within the knot range."""
        if lo < self.x[0] - 1e-12 or hi > self.x[-1] + 1e-12:
            raise ValueError("integration bounds outside the interpolation range")
        lo = max(lo, float(self.x[0]))
        hi = min(hi, float(self.x[-1]))
        return self.antiderivative(hi) - self.antiderivative(lo)


def _prepare(
    rates: Sequence[float], dist: Sequence[float], name: str
) -> tuple[FloatArray, FloatArray]:
    """Validate one RD curve; return (distortion, log-rate) sorted by distortion.

    Points with the same distortion are merged (the lowest rate is kept).
    """
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(dist, dtype=np.float64)
    if r.ndim != 1 or r.shape != q.shape:
        raise ValueError(f"curve {name}: rates and distortions must be 1-D of equal length")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
        raise ValueError(f"curve {name}: non-finite rate or distortion")
    if np.any(r <= 0):
        raise ValueError(f"curve {name}: rates must be positive")
    order = np.lexsort((r, q))
    q, r = q[order], r[order]
    keep = np.concatenate([[True], np.diff(q) > 0])
    q, r = q[keep], r[keep]
    if q.size < 2:
        raise ValueError(f"curve {name}: needs at least 2 points with distinct distortion")
    return q, np.log(r)


def bd_rate(
    rates_a: Sequence[float],
    dist_a: Sequence[float],
    rates_b: Sequence[float],
    dist_b: Sequence[float],
) -> float:
    """BD-rate of curve b relative to curve a, in percent (nan if no overlap).

    ``dist_*`` must be a quality measure where higher is better (PSNR dB,
    MS-SSIM dB, ...).
    """
    qa, la = _prepare(rates_a, dist_a, "a")
    qb, lb = _prepare(rates_b, dist_b, "b")
    lo = max(qa[0], qb[0])
    hi = min(qa[-1], qb[-1])
    if not hi > lo:
        return math.nan
    ia = Pchip(qa, la).integrate(lo, hi)
    ib = Pchip(qb, lb).integrate(lo, hi)
    return (math.exp((ib - ia) / (hi - lo)) - 1.0) * 100.0


def _rate_curve(rates: Sequence[float], dist: Sequence[float], name: str) -> tuple[FloatArray, FloatArray]:
    """Validate one RD curve; return (log-rate, distortion) sorted by rate, equal rates merged."""
    q, lr = _prepare(rates, dist, name)
    order = np.argsort(lr, kind="stable")
    lr, q = lr[order], q[order]
    keep = np.concatenate([[True], np.diff(lr) > 0])
    if keep.sum() < 2:
        raise ValueError(f"curve {name}: needs at least 2 points with distinct rates")
    return lr[keep], q[keep]


def bd_psnr(
    rates_a: Sequence[float],
    dist_a: Sequence[float],
    rates_b: Sequence[float],
    dist_b: Sequence[float],
) -> float:
    """BD-PSNR: mean quality gain of curve b over a at equal rate (nan if no overlap)."""
    ra, da = _rate_curve(rates_a, dist_a, "a")
    rb, db = _rate_curve(rates_b, dist_b, "b")
    lo = max(ra[0], rb[0])
    hi = min(ra[-1], rb[-1])
    if not hi > lo:
        return math.nan
    ia = Pchip(ra, da).integrate(lo, hi)
    ib = Pchip(rb, db).integrate(lo, hi)
    return (ib - ia) / (hi - lo)


def quality_at_rates(rates: Sequence[float], dist: Sequence[float], at: Sequence[float]) -> list[float]:
    """The quality of the curve (``rates``, ``dist``) at each rate of ``at``: the same PCHIP
    of quality over log-rate as :func:`bd_psnr`, ``nan`` outside the curve's rate range (no
    extrapolation). Invalid curves raise ``ValueError`` as in :func:`bd_rate`."""
    lr, q = _rate_curve(rates, dist, "curve")
    curve = Pchip(lr, q)
    out = []
    for r in at:
        if not (r > 0 and math.isfinite(r)):
            raise ValueError("rates must be positive and finite")
        t = math.log(r)
        out.append(float(curve(t)) if lr[0] - 1e-12 <= t <= lr[-1] + 1e-12 else math.nan)
    return out

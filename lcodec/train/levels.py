"""Move a trained variable-rate model to other quality levels (another ``lambdas`` vector).

With gain units, a quality level is a rate-distortion trade-off ``lambda`` plus one learned
gain and inverse-gain vector; the transforms are shared by all levels. To give ``-q 1..8``
another span (e.g. reach lower rates), :func:`retarget_levels` keeps the transforms and sets
each new level's log-gains (and the transforms' log-scales and offsets, when the model has them) by interpolating
the trained ones linearly in ``log lambda`` (extrapolating the end segments beyond the trained
span), per channel. Training then adapts
the gains, which is fast: they are a few hundred numbers per level.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

GAIN_KEYS = ("log_gain", "log_inv_gain")
# The transforms' per-level channel scales (level_scales_a / _s / _h): (levels, 3, Na) /
# (levels, 3, Ns) / (levels, 2, N)
LEVEL_SCALE_KEYS = ("log_level_scale_a", "log_level_scale_s", "log_level_scale_h")
# The analysis' per-level channel offsets (level_bias_a): (levels, 3, Na), added after its scales.
LEVEL_BIAS_KEYS = ("level_bias_a",)
# The parameters with one entry per quality level
LEVEL_KEYS = GAIN_KEYS + LEVEL_SCALE_KEYS + LEVEL_BIAS_KEYS


def check_lambdas(lambdas: Sequence[float]) -> tuple[float, ...]:
    """``lambdas`` as a tuple, or ``ValueError`` unless there are at least two, all positive
    and strictly increasing (level 1 is the smallest)."""
    values = tuple(float(v) for v in lambdas)
    if len(values) < 2 or any(v <= 0 for v in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"lambdas must be 2 or more positive, increasing values, got {values}")
    return values


def lambdas_of(state: dict[str, torch.Tensor]) -> tuple[float, ...]:
    """The levels of a state dict as the decimal values they were trained at (the tensor is
    float32: 0.0004 is stored as 0.00039999998989...)."""
    return tuple(float(f"{float(v):.7g}") for v in state["lambdas"])


def retarget_levels(state: dict[str, torch.Tensor], lambdas: Sequence[float]) -> dict[str, torch.Tensor]:
    """A copy of the state dict ``state`` whose quality levels are ``lambdas``."""
    new = torch.tensor(check_lambdas(lambdas), dtype=torch.float64)
    old = state["lambdas"].double()
    if old.numel() < 2:
        raise ValueError("the trained model has fewer than two levels to interpolate between")
    x_old, x_new = old.log(), new.log()
    hi = torch.searchsorted(x_old, x_new).clamp(1, x_old.numel() - 1)
    lo = hi - 1
    t = (x_new - x_old[lo]) / (x_old[hi] - x_old[lo])
    out = dict(state)
    for key in (k for k in LEVEL_KEYS if k in state):
        g = state[key].double()
        tk = t.view(-1, *[1] * (g.dim() - 1))
        out[key] = (g[lo] + tk * (g[hi] - g[lo])).to(state[key].dtype)
    out["lambdas"] = new.to(state["lambdas"].dtype)
    return out

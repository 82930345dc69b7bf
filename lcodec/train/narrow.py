"""Start a narrower model from trained weights: drop the latent channels a hyperprior never uses.

Widening the latent of hyperprior v5 from 96 to 192 channels (:func:`.widen.widen_latents`,
runs 24-25 in docs/model-card.md) gave hyperprior v6 its gains through the wider
hyper-synthesis, not through the new latents: none of the 96 new channels reached the rounding
threshold (``|y| > 0.5``) more than 0.05% of the time, even at ``-q 8``; they cost encode and
decode time, weights and context-model inputs for nothing (6500 steps later, some had begun
to open). :func:`narrow_latents` copies a model into one with only the channels it keeps and
the same hyper-synthesis widths (``hyper_hidden``), so it codes every image as before up to
the dropped channels' contribution.

:func:`channel_activity` measures which channels carry information: the fraction of latents
that round to a nonzero value at the top quality level, where every channel is at its
largest.
"""
from __future__ import annotations

import torch

from ..models.context import CONTEXT_PREFIXES
from .widen import latent_width


@torch.no_grad()
def channel_activity(model: torch.nn.Module, crops: list[torch.Tensor]) -> torch.Tensor:
    """Per latent channel, the fraction of positions where ``round(y) != 0`` at the top
    quality level, over ``crops`` (8-bit ``(H, W, 3)`` tensors, sides multiples of 64, as
    :func:`.data.center_crops` gives)."""
    top = float(model.num_levels)
    counts = torch.zeros(model.M)
    positions = 0
    for x in crops:
        y = model.analysis(x.permute(2, 0, 1)[None].float() / 255, top)[0]
        counts += (y.abs() > 0.5).float().flatten(1).sum(1)
        positions += y.shape[1] * y.shape[2]
    return counts / max(positions, 1)


def narrow_latents(old: dict[str, torch.Tensor], keep: list[int]) -> dict[str, torch.Tensor]:
    """The hyperprior state dict ``old`` with only the latent channels ``keep`` (in that
    order); the hyper-synthesis keeps its hidden widths (build the model with
    ``hyper_hidden=hyper_widths(old)``). Raises ``ValueError`` on an invalid ``keep``."""
    m = latent_width(old)
    if not keep or len(set(keep)) != len(keep) or not all(0 <= c < m for c in keep):
        raise ValueError(f"keep must list distinct latent channels of 0..{m - 1}")
    idx = torch.tensor(keep)
    rows = torch.cat([idx, idx + m])  # h_s's last layer: [scales; means]
    out = {}
    for key, t in old.items():
        if key in ("log_gain", "log_inv_gain", "h_a.0.weight"):   # (levels, M), (N, M, k, k)
            t = t[:, idx]
        elif key in ("g_a.6.weight", "g_a.6.bias", "g_s.0.weight"):  # out M; deconv in M
            t = t[idx]
        elif key in ("h_s.4.weight", "h_s.4.bias"):
            t = t[rows]
        elif key.startswith(CONTEXT_PREFIXES):
            raise ValueError("narrow a hyperprior, then train its context networks anew")
        out[key] = t.clone()
    return out

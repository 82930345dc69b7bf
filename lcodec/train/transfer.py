"""Carry trained context networks over to a hyperprior whose latent channels differ.

The context networks (:mod:`lcodec.models.context`) index the latent channels three times:
the masked convolution reads the anchors' ``M`` channels, the merging network reads the
hyperprior's ``M`` scales and ``M`` means, and its last layer writes ``M`` scale and ``M``
mean corrections. A hyperprior narrowed or widened from the one the networks were trained on
(:mod:`.narrow`, :mod:`.widen`) keeps some channels, drops others and may add new ones, so
the networks cannot be loaded as they are; training them from scratch costs an hour of CPU
where a warm start needs minutes.

:func:`match_latent_channels` pairs each channel of the new hyperprior with the old channel
that synthesizes the most similar pattern (the cosine of their rows in the first synthesis
layer, ``g_s.0.weight``): a channel that training moved keeps its pattern closely, a new one
matches nothing. :func:`transfer_context` re-indexes the networks along that pairing: a matched
channel keeps its weights, an unmatched one gets zero input weights and zero corrections, so it
is coded as the hyperprior alone codes it until training teaches the networks about it.
"""
from __future__ import annotations

import torch

from ..models.context import CONTEXT_PREFIXES


def match_latent_channels(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor],
                          min_cosine: float = 0.5) -> list[int | None]:
    """For each latent channel of the state dict ``new``, the channel of ``old`` whose
    first-synthesis-layer row is the most similar (cosine >= ``min_cosine``), paired one to
    one, best pairs first; None where no old channel is left that similar."""
    a = old["g_s.0.weight"].double().flatten(1)
    b = new["g_s.0.weight"].double().flatten(1)
    if a.shape[1] != b.shape[1]:
        raise ValueError("the two hyperpriors' synthesis transforms differ in width")
    cos = (b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ (a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)).T
    src: list[int | None] = [None] * b.shape[0]
    taken: set[int] = set()
    for flat in cos.flatten().argsort(descending=True).tolist():
        i, j = divmod(flat, a.shape[0])
        if cos[i, j] < min_cosine:
            break
        if src[i] is None and j not in taken:
            src[i] = j
            taken.add(j)
    return src


def transfer_context(warm: dict[str, torch.Tensor], src: list[int | None]) -> dict[str, torch.Tensor]:
    """The context networks of the state dict ``warm`` re-indexed to a latent of ``len(src)``
    channels, new channel ``i`` taking old channel ``src[i]`` (None: zero weights)."""
    m_old = warm["context_prediction.weight"].shape[1]
    m_new = len(src)
    pairs = [(i, j) for i, j in enumerate(src) if j is not None]
    new_idx = torch.tensor([i for i, _ in pairs], dtype=torch.long)
    old_idx = torch.tensor([j for _, j in pairs], dtype=torch.long)
    last = max(int(k.split(".")[1]) for k in warm if k.startswith("entropy_parameters.") and k.endswith(".weight"))
    out = {}
    for key, t in warm.items():
        if not key.startswith(CONTEXT_PREFIXES) or key == "context_mask":
            continue
        if key == "context_prediction.weight":          # (C, M, k, k): reads the anchors
            n = t.new_zeros(t.shape[0], m_new, *t.shape[2:])
            n[:, new_idx] = t[:, old_idx]
        elif key == "entropy_parameters.0.weight":       # (H, 2M + C, 1, 1): scales, means, context
            n = t.new_zeros(t.shape[0], 2 * m_new + t.shape[1] - 2 * m_old, *t.shape[2:])
            n[:, new_idx] = t[:, old_idx]
            n[:, m_new + new_idx] = t[:, m_old + old_idx]
            n[:, 2 * m_new:] = t[:, 2 * m_old:]
        elif key in (f"entropy_parameters.{last}.weight", f"entropy_parameters.{last}.bias"):
            n = t.new_zeros(2 * m_new, *t.shape[1:])    # writes scale and mean corrections
            n[new_idx] = t[old_idx]
            n[m_new + new_idx] = t[m_old + old_idx]
        else:
            n = t
        out[key] = n.clone()
    return out

"""Give the latent channels a trained model has shut a fresh start, so training can use them.

Training with rounded latents from the first step shuts some latent channels for good: their
gain at every quality level falls so low (log-gain -3.6 to -4.4 in grouped v9, against about
+0.9 for the channels in use at ``-q 8``) that nothing they would carry survives rounding, and
so no gradient reaches them. Grouped v9 has 44 such channels of its 192 (v10 43, v11 42), and the
top of its rate-distortion curve sits at what the others can carry (docs/model-card.md, "What
was measured"). Raising those gains alone opens nothing: the analysis filters behind them have
learned to give the synthesis nothing it uses.

:func:`shut_channels` finds them from the gains alone: a channel is shut when its log-gain at
the top quality level is below a threshold. :func:`reopen_channels` gives each shut channel the
median gain and inverse gain of the open ones at every level, and draws its analysis output
filter (``g_a.6``: the rows that make the channel) and synthesis input filter (``g_s.0``: the
rows that read it) anew, Gaussian with a fraction of the open channels' weight spread, its
analysis bias at zero. Every other tensor is kept, so the reopened channels start as noise the
synthesis must learn to use and the entropy model must learn to price: the model codes worse
at first (run 76: ``-q 8`` 3.03 bpp against 2.20 after 300 steps) and has to earn the channels
back by training (``lcodec train --init-from W --reopen-below -2``).
"""
from __future__ import annotations

import torch

# The tensors a latent channel's reopening draws anew, and the dimension that indexes the
# channel: the analysis' last convolution (out, in, k, k) makes it; the synthesis' first
# transposed convolution (in, out, k, k) reads it.
_ANALYSIS_OUT = "g_a.6"
_SYNTHESIS_IN = "g_s.0"


def shut_channels(state: dict[str, torch.Tensor], below: float) -> list[int]:
    """The latent channels whose log-gain at the top quality level is below ``below``, in
    increasing order, for a state dict of the hyperprior family (``log_gain``: levels x M)."""
    return (state["log_gain"][-1] < below).nonzero().flatten().tolist()


def reopen_channels(state: dict[str, torch.Tensor], below: float, seed: int = 0,
                    spread: float = 0.5) -> tuple[dict[str, torch.Tensor], list[int]]:
    """``state`` with its shut channels (:func:`shut_channels`) started afresh, and their
    indices.

    A shut channel takes, at every level, the median log-gain and log-inverse-gain of the open
    channels; its analysis output filter and synthesis input filter are drawn from a normal
    distribution with ``spread`` times the standard deviation of the open channels' filters in
    the same tensor (``seed`` makes the draw repeatable), and its analysis bias is zero. The
    input is not modified; with no shut channel it is returned as it is."""
    shut = shut_channels(state, below)
    if not shut:
        return state, []
    if len(shut) == state["log_gain"].shape[1]:
        raise ValueError(f"every latent channel has a top-level log-gain below {below}: "
                         "there are no open channels to start the shut ones from")
    out = dict(state)
    idx = torch.tensor(shut)
    open_ = torch.ones(state["log_gain"].shape[1], dtype=torch.bool)
    open_[idx] = False
    for name in ("log_gain", "log_inv_gain"):
        t = state[name].clone()
        t[:, idx] = t[:, open_].median(dim=1, keepdim=True).values
        out[name] = t
    gen = torch.Generator().manual_seed(seed)
    for name in (f"{_ANALYSIS_OUT}.weight", f"{_SYNTHESIS_IN}.weight"):
        t = state[name].clone()
        std = t[open_].float().std().item()
        t[idx] = (torch.randn(t[idx].shape, generator=gen) * std * spread).to(t.dtype)
        out[name] = t
    bias = state[f"{_ANALYSIS_OUT}.bias"].clone()
    bias[idx] = 0
    out[f"{_ANALYSIS_OUT}.bias"] = bias
    return out, shut

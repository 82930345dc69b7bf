"""Start a wider model from trained weights, losslessly: more latent channels, a wider
encoder or decoder, or wider context or channel-group networks.

The shipped hyperprior's high-rate end is capped by its transforms, not by its bits: with the
latents left unquantized, hyperprior v2 reconstructs the held-out crops at 27.95 dB, and at
``-q 8`` it already reaches 27.87 dB. What each widening brought is measured in
docs/model-card.md.

:func:`widen_hidden` widens the hidden layers of the analysis (``Na``) or synthesis (``Ns``)
transform, a context model's context networks (``context_channels``, ``hidden``), or a grouped
model's group networks (``group_features``, ``group_hidden``), without changing what the model
computes.

:func:`widen_latents` copies a ``M``-channel hyperprior into a model with ``M' > M`` channels
such that the wider model codes every image exactly as before: the new analysis filters start
at zero, so the new latent channels are 0 and cost (almost) no bits, as ``h_s`` predicts mean 0
and the smallest scale for them; they enter ``h_a`` through zero weights, and the new hidden
units of ``h_s`` leave it through zero weights. The new synthesis filters keep their random
init: they multiply zeros, so the output does not change, but the straight-through gradient of
the distortion reaches the new analysis filters through them, so training can open the new
channels where they pay for their bits. (Runs 10 and 11 started the new analysis filters at a
tenth of their random init instead: 79% of the new latents were nonzero at ``-q 8`` from the
first step. Their collapse, and that of the zero-started runs 22 and 23, came from the scale
bound's gradient, fixed in :mod:`lcodec.models.entropy_models`; docs/model-card.md, run 24.)
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..models.entropy_models import SCALE_BOUND
from ..models.layers import GDN
from .levels import LEVEL_BIAS_KEYS, LEVEL_SCALE_KEYS

# The analysis transform ``g_a``: conv, GDN, conv, GDN, conv, GDN, conv (to the latent).
_ANALYSIS_CONVS = ("g_a.0", "g_a.2", "g_a.4", "g_a.6")
_ANALYSIS_GDNS = ("g_a.1", "g_a.3", "g_a.5")
# The synthesis transform ``g_s``: deconv, IGDN, deconv, IGDN, deconv, IGDN, deconv (to pixels).
_SYNTHESIS_CONVS = ("g_s.0", "g_s.2", "g_s.4", "g_s.6")
_SYNTHESIS_GDNS = ("g_s.1", "g_s.3", "g_s.5")
# The context networks of the ``context`` family (all Conv2d, 1x1 but the first): the masked
# 5x5 context convolution, then the merging network, whose first layer takes [hyperprior
# parameters (2M), context features] and whose last one gives 2M parameters.
_CONTEXT_CONVS = ("context_prediction", "entropy_parameters.0", "entropy_parameters.2",
                  "entropy_parameters.4")
# The layers of each channel-group network of the ``grouped`` family (all Conv2d): the 3x3
# convolution of the decoded latents, then the merging network, whose first layer takes
# [base parameters (2M), those features].
_GROUP_CONVS = re.compile(r"(anchor_nets|nonanchor_nets)\.\d+\.(pred|merge\.[024])")
# The two 3x3 convolutions (Conv2d) of a residual block of the analysis or the synthesis, whose
# width is the transform's.
_RESIDUAL_CONVS = re.compile(r"g_[as]_(res|deep)\.\d+\.body\.[02]")


def hidden_widths(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """``(Na, Ns)``: the hidden widths of the analysis and synthesis transforms of a
    hyperprior-family state dict (Conv2d weights are (out, in, k, k), ConvTranspose2d ones
    (in, out, k, k))."""
    return state["g_a.0.weight"].shape[0], state["g_s.0.weight"].shape[1]


def latent_width(state: dict[str, torch.Tensor]) -> int:
    """``M``: the latent channels of a hyperprior-family state dict (its analysis' last Conv2d,
    (out, in, k, k))."""
    return state["g_a.6.weight"].shape[0]


def hyper_widths(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """The two hidden widths of the hyper-synthesis ``h_s`` of a hyperprior-family state dict
    (ConvTranspose2d weights, (in, out, k, k))."""
    return state["h_s.0.weight"].shape[1], state["h_s.2.weight"].shape[1]


def context_widths(state: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    """``(context_channels, hidden)`` of a ``context``-family state dict; None for a plain
    hyperprior."""
    if "context_prediction.weight" not in state:
        return None
    return state["context_prediction.weight"].shape[0], state["entropy_parameters.0.weight"].shape[0]


def group_widths(state: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    """``(group_features, group_hidden)`` of a ``grouped``-family state dict; None for the
    other families."""
    if "anchor_nets.0.pred.weight" not in state:
        return None
    return state["anchor_nets.0.pred.weight"].shape[0], state["anchor_nets.0.merge.0.weight"].shape[0]


def widen_latents(old: dict[str, torch.Tensor], model: nn.Module) -> None:
    """Load the hyperprior state dict ``old`` into ``model``, a hyperprior with a larger ``M``.

    ``model`` keeps its own initialization where ``old`` has nothing to say (the new synthesis
    filters, the new hidden units of ``h_s``); every other new weight is set so that the
    outputs for the old channels are unchanged. Raises ``ValueError`` if the two differ in
    anything but ``M``.
    """
    new = model.state_dict()
    m_old, m_new = latent_width(old), latent_width(new)
    if m_new < m_old:
        raise ValueError(f"cannot narrow the latent from {m_old} to {m_new} channels here "
                         "(lcodec.train.narrow does)")
    (h1_old, h2_old), (h1_new, h2_new) = hyper_widths(old), hyper_widths(new)
    if h1_new < h1_old or h2_new < h2_old:
        raise ValueError("cannot narrow the hyper-synthesis while widening the latent")
    out: dict[str, torch.Tensor] = {}
    for key, target in new.items():
        src = old.get(key)
        if src is None:
            raise ValueError(f"the old weights have no {key!r}")
        if src.shape == target.shape:
            out[key] = src.clone()
            continue
        t = target.clone()
        if key in ("log_gain", "log_inv_gain"):
            # New channels start at each level's mean gain.
            t[:, :m_old] = src
            t[:, m_old:] = src.mean(dim=1, keepdim=True)
        elif key == "g_a.6.weight" or key == "g_a.6.bias":
            t[:m_old] = src
            t[m_old:] = 0                       # new latents start at 0: no bits, no change
        elif key == "g_s.0.weight":             # ConvTranspose2d (M -> N): (in, out, k, k)
            # The new quantized channels are 0 (see above), so their synthesis filters keep
            # their init: the output is unchanged, and the straight-through gradient reaches
            # the new analysis filters through them from the first step.
            t[:m_old] = src
        elif key == "h_a.0.weight":             # Conv2d (M -> N): (out, in, k, k)
            t.zero_()                           # z must not change: new inputs enter at 0
            t[:, :m_old] = src
        elif key == "h_s.0.weight":             # ConvTranspose2d (N -> H1): (in, out, k, k)
            t[:, :h1_old] = src                 # new hidden units keep their init: they are
        elif key == "h_s.0.bias":               # consumed through zero weights below
            t[:h1_old] = src
        elif key == "h_s.2.weight":             # ConvTranspose2d (H1 -> H2): (in, out, k, k)
            t[h1_old:] = 0                      # new hidden inputs enter through zero weights
            t[:h1_old, :h2_old] = src
        elif key == "h_s.2.bias":
            t[:h2_old] = src
        elif key == "h_s.4.weight":             # Conv2d (H2 -> 2M): rows = [scales; means]
            t.zero_()
            t[:m_old, :h2_old] = src[:m_old]
            t[m_new:m_new + m_old, :h2_old] = src[m_old:]
        elif key == "h_s.4.bias":
            t.zero_()
            t[:m_old] = src[:m_old]
            t[m_old:m_new] = SCALE_BOUND         # new channels: smallest scale, mean 0
            t[m_new:m_new + m_old] = src[m_old:]
        else:
            raise ValueError(f"{key!r} differs in shape ({tuple(src.shape)} -> "
                             f"{tuple(target.shape)}) in a way widening does not handle")
        out[key] = t
    model.load_state_dict(out)


def widen_hidden(old: dict[str, torch.Tensor], model: nn.Module) -> None:
    """Load the hyperprior state dict ``old`` into ``model``, whose analysis transform ``g_a``
    and/or synthesis transform ``g_s`` have wider hidden layers (a larger ``Na`` / ``Ns``),
    and, for the ``context`` family, whose context networks may be wider too (more
    ``context_channels``, a larger merging ``hidden``), and, for the ``grouped`` family,
    its group networks (more ``group_features``, a larger ``group_hidden``); everything
    else must match.

    The widened model computes exactly the same function at first: each new hidden unit keeps
    its random input filters (so it carries a signal and gradients from the first step), but
    leaves through zero weights into the next layer's old units, and the old GDN units give
    it zero weight in their normalization pools. The context networks widen the same way: new
    context features and new hidden units keep their random input filters and leave through
    zero weights, so the entropy parameters, and every coded bit, stay as they were; so do the
    group networks. The residual blocks of a widened transform widen like its convolutions (a
    new channel enters the old ones' block through zero weights), and its per-level channel
    scales and offsets (``level_scales_a`` / ``_s``, ``level_bias_a``) give the new channels
    scales of 1 and offsets of 0. Widening the
    analysis changes encoding cost only; widening the synthesis or the group networks changes
    decoding cost.
    Raises ``ValueError`` if ``model`` is narrower or differs in anything but those widths.
    """
    new = model.state_dict()
    pairs = list(zip(("g_a", "g_s"), hidden_widths(old), hidden_widths(new)))
    if context_widths(old) and context_widths(new):
        pairs += zip(("the context features", "the merging network"), context_widths(old),
                     context_widths(new))
    if group_widths(old) and group_widths(new):
        pairs += zip(("the group features", "the group merging networks"), group_widths(old),
                     group_widths(new))
    for name, n_old, n_new in pairs:
        if n_new < n_old:
            raise ValueError(f"cannot narrow {name} from {n_old} to {n_new} channels")
    zero_gamma = GDN._pedestal ** 0.5             # stored square root of a zero gamma entry
    out: dict[str, torch.Tensor] = {}
    for key, target in new.items():
        src = old.get(key)
        if src is None:
            raise ValueError(f"the old weights have no {key!r}")
        layer, _, kind = key.rpartition(".")
        if src.shape == target.shape:
            out[key] = src.clone()
            continue
        t = target.clone()
        conv = (layer in _ANALYSIS_CONVS + _SYNTHESIS_CONVS + _CONTEXT_CONVS
                or _GROUP_CONVS.fullmatch(layer) or _RESIDUAL_CONVS.fullmatch(layer))
        if conv and kind == "weight":
            # Conv2d weights are (out, in, k, k), ConvTranspose2d ones (in, out, k, k).
            transposed = layer in _SYNTHESIS_CONVS
            src_oi = src.transpose(0, 1) if transposed else src
            t_oi = t.transpose(0, 1) if transposed else t   # a view of t
            o, i = src_oi.shape[:2]
            t_oi[:o, :i] = src_oi
            t_oi[:o, i:] = 0                    # the new units do not reach the old ones
        elif conv and kind == "bias":
            t[:src.shape[0]] = src
        elif layer in _ANALYSIS_GDNS + _SYNTHESIS_GDNS and kind == "beta":
            t[:src.shape[0]] = src
        elif layer in _ANALYSIS_GDNS + _SYNTHESIS_GDNS and kind == "gamma":
            n_old = src.shape[0]
            t[:n_old, :] = zero_gamma               # old units: nothing from the new ones
            t[:n_old, :n_old] = src
        elif key in LEVEL_SCALE_KEYS + LEVEL_BIAS_KEYS:  # (levels, positions, channels)
            t[..., :src.shape[-1]] = src
            t[..., src.shape[-1]:] = 0              # the new channels: scale 1, offset 0
        else:
            raise ValueError(f"{key!r} differs in shape ({tuple(src.shape)} -> "
                             f"{tuple(target.shape)}) in a way widening does not handle")
        out[key] = t
    model.load_state_dict(out)

"""The ``grouped`` model family: the checkerboard context plus a channel-group context.

The ``context`` family (:mod:`lcodec.models.context`) codes the anchors of every latent
channel with the hyperprior's parameters alone, and the non-anchors with parameters that
also see the decoded anchors. This family splits the ``M`` latent channels into ``G``
groups (a fixed channel order, cut into consecutive runs of ``groups`` sizes; Minnen &
Singh 2020, He et al. 2022 "ELIC") and codes the latents in ``2G`` passes::

    anchors of group 0, anchors of group 1, ..., anchors of group G-1,
    non-anchors of group 0, ..., non-anchors of group G-1

Every pass after the first of its kind adds a learned correction to the parameters that the
``context`` family would use for those latents, computed from everything decoded so far:

* anchors of group ``g > 0``: ``h_s(z)`` plus ``anchor_nets[g-1](decoded, h_s(z))``, where
  ``decoded`` holds the anchors of groups ``< g`` (the same position and its neighbours);
* non-anchors of group ``g > 0``: the checkerboard's parameters plus
  ``nonanchor_nets[g-1](decoded, those parameters)``, where ``decoded`` holds every anchor
  and the non-anchors of groups ``< g``.

A :class:`GroupPassNetwork` is a 3x3 convolution of ``decoded`` (``M`` channels in the
channel order, zeros where nothing is decoded yet) merged with the base parameters by 1x1
layers. Its last layer starts at zero, so a ``grouped`` model built from ``context`` weights
codes exactly as they do until it is trained; the codec runs the integer twin
(:class:`lcodec.runtime.exact.ExactGroupedContext`).
"""
from __future__ import annotations

import torch
from torch import nn

from .context import CheckerboardContext, anchor_mask
from .entropy_models import SCALE_BOUND, ste_round

GROUP_KERNEL = 3
GROUP_PREFIXES = ("anchor_nets", "nonanchor_nets")  # the parameters the ``context`` family has not


class GroupPassNetwork(nn.Module):
    """Correction to the raw ``(scales, means)`` of one channel group in one pass.

    Args:
        M: latent channels (the input ``decoded`` has them all, in the model's channel order).
        out_channels: ``2 * group size`` (scales then means).
        features: output channels of the 3x3 convolution of ``decoded``.
        hidden: width of the 1x1 merging layers.
    """

    def __init__(self, M: int, out_channels: int, features: int, hidden: int) -> None:
        super().__init__()
        self.pred = nn.Conv2d(M, features, GROUP_KERNEL, padding=GROUP_KERNEL // 2)
        self.merge = nn.Sequential(
            nn.Conv2d(2 * M + features, hidden, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1))
        nn.init.zeros_(self.merge[-1].weight)  # start as the model without this pass's context
        nn.init.zeros_(self.merge[-1].bias)

    def forward(self, decoded: torch.Tensor, base_in: torch.Tensor) -> torch.Tensor:
        return self.merge(torch.cat([base_in, self.pred(decoded)], dim=1))


class ChannelGroupedContext(CheckerboardContext):
    """Checkerboard context with a channel-group context in both checkerboard passes.

    Args:
        N, M, lambdas, Na, Ns, hyper_hidden, res_a, res_s, res_a_deep, res_s_deep,
            level_scales_a, level_scales_s, level_scales_h, context_channels, hidden, scale_floor: as
            :class:`CheckerboardContext`.
        groups: channels per group, in coding order (sums to ``M``).
        channel_order: the latent channels in coding order (a permutation of ``range(M)``);
            default ``0 .. M-1``. Group ``g`` is ``channel_order[sum(groups[:g]) : sum(groups[:g+1])]``.
        group_features, group_hidden: widths of every :class:`GroupPassNetwork`.
    """

    family = "grouped"

    def __init__(self, N: int = 64, M: int = 96, groups: tuple[int, ...] = (16, 16, 32, 32),
                 channel_order: tuple[int, ...] | None = None, group_features: int = 64,
                 group_hidden: int = 128, **kwargs) -> None:
        super().__init__(N=N, M=M, **kwargs)
        order = list(range(M)) if channel_order is None else [int(c) for c in channel_order]
        if sorted(order) != list(range(M)):
            raise ValueError(f"channel_order must be a permutation of 0..{M - 1}")
        if sum(groups) != M or min(groups) < 1:
            raise ValueError(f"groups {list(groups)} must be positive and sum to M={M}")
        self.groups = tuple(int(g) for g in groups)
        self.channel_order = tuple(order)
        self.group_features, self.group_hidden = group_features, group_hidden
        self.register_buffer("order_index", torch.tensor(order), persistent=False)
        self.register_buffer("inverse_index", torch.argsort(torch.tensor(order)), persistent=False)
        self.anchor_nets = nn.ModuleList(
            GroupPassNetwork(M, 2 * g, group_features, group_hidden) for g in self.groups[1:])
        self.nonanchor_nets = nn.ModuleList(
            GroupPassNetwork(M, 2 * g, group_features, group_hidden) for g in self.groups[1:])

    def group_bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every group in the channel order."""
        out, start = [], 0
        for g in self.groups:
            out.append((start, start + g))
            start += g
        return out

    def _ordered(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw ``(scales, means)`` in the original channel order -> the coding order."""
        scales, means = raw.chunk(2, dim=1)
        return torch.cat([scales[:, self.order_index], means[:, self.order_index]], dim=1)

    def _pass(self, y: torch.Tensor, base: torch.Tensor, nets: nn.ModuleList,
              decoded: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Code the latents of ``y`` (coding order) at ``positions``, group after group.

        Returns the means and scales used (coding order, valid at ``positions``) and
        ``decoded`` with those latents added (quantized as the codec does, straight-through).
        """
        base_in = self.merge_input(base)
        base_s, base_m = base.chunk(2, dim=1)
        means, scales = [], []
        for g, (lo, hi) in enumerate(self.group_bounds()):
            raw = torch.cat([base_s[:, lo:hi], base_m[:, lo:hi]], dim=1)
            if g > 0:
                raw = raw + nets[g - 1](decoded, base_in)
            s, m = raw.chunk(2, dim=1)
            s = s.clamp_min(SCALE_BOUND) if g > 0 else s
            y_hat = torch.where(positions, ste_round(y[:, lo:hi] - m) + m, torch.zeros_like(m))
            decoded = torch.cat([decoded[:, :lo], decoded[:, lo:hi] + y_hat, decoded[:, hi:]], dim=1)
            means.append(m)
            scales.append(s)
        return torch.cat(means, dim=1), torch.cat(scales, dim=1), decoded

    def entropy_params(self, y: torch.Tensor, hyper_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(means, scales)`` of every latent of ``y`` as the decoder will have them (original
        channel order), with the earlier passes' latents quantized as the codec does
        (straight-through, so training reaches ``g_a`` through them)."""
        a = anchor_mask(y.shape[2], y.shape[3]).to(y.device)
        yo = y[:, self.order_index]
        decoded = torch.zeros_like(yo)
        m_a, s_a, decoded = self._pass(yo, self._ordered(hyper_raw), self.anchor_nets, decoded, a)
        anchors = decoded[:, self.inverse_index]
        base_n = self._ordered(self.nonanchor_params(anchors, hyper_raw))
        m_n, s_n, _ = self._pass(yo, base_n, self.nonanchor_nets, decoded, ~a)
        means = torch.where(a, m_a, m_n)[:, self.inverse_index]
        scales = torch.where(a, s_a, s_n.clamp_min(SCALE_BOUND))[:, self.inverse_index]
        return means, scales

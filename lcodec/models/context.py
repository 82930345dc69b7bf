"""The ``context`` model family: the hyperprior plus a two-pass checkerboard context (He et al. 2021).

The latents of a tile are split by the parity of their position: *anchors* (``(i + j)`` even,
counted from the tile's top-left latent) are coded first with the hyperprior's parameters
alone; the *non-anchors* are coded second, with parameters that also see the decoded anchors
around them through a 5x5 convolution. Both passes are whole-tensor operations, so decoding
costs two sweeps instead of the one-latent-at-a-time loop of an autoregressive context
(Minnen et al. 2018).

The non-anchor parameters are the hyperprior's plus a learned correction::

    raw_nonanchor = h_s(z) + entropy_parameters(cat(h_s(z), context_prediction(anchors)))

With the correction's last layer at zero the model *is* the hyperprior it extends; the
family has the hyperprior's transforms (``g_a``, ``g_s``, ``h_a``, ``h_s``, gains, the
density of ``z``) plus the context networks, trained either on top of frozen hyperprior
weights (:mod:`lcodec.train.context`) or end to end with the transforms
(:mod:`lcodec.train.loop`, whose training pass gets the non-anchors' parameters from
:meth:`CheckerboardContext.entropy_params`). The codec runs an integer twin of the context
networks (:class:`lcodec.models.exact.ExactContext`) so that encoder and decoder agree bit
for bit.
"""
from __future__ import annotations

import torch
from torch import nn

from ..runtime.exact import anchor_mask as runtime_anchor_mask
from .entropy_models import SCALE_BOUND, ste_round
from .hyperprior import DEFAULT_LAMBDAS, MeanScaleHyperprior

CONTEXT_KERNEL = 5
CONTEXT_PREFIXES = ("context_", "entropy_parameters")  # the parameters the hyperprior has not


def checkerboard_kernel_mask(kernel: int = CONTEXT_KERNEL) -> torch.Tensor:
    """1 where a kernel tap, seen from a non-anchor, lands on an anchor (odd offset sum)."""
    i = torch.arange(kernel).view(-1, 1)
    j = torch.arange(kernel).view(1, -1)
    return ((i + j - 2 * (kernel // 2)) % 2 != 0).float()


def anchor_mask(height: int, width: int) -> torch.Tensor:
    """Boolean ``(height, width)`` map of the anchor positions (``(i + j)`` even), as a tensor
    (the codec's definition: :func:`lcodec.runtime.exact.anchor_mask`)."""
    return torch.from_numpy(runtime_anchor_mask(height, width))


class CheckerboardContext(MeanScaleHyperprior):
    """Mean-scale hyperprior with a checkerboard context for the non-anchor latents.

    Args:
        N, M, lambdas, Na, Ns, hyper_hidden, res_a, res_s, res_a_deep, res_s_deep,
            level_scales_a, level_scales_s, level_scales_h, level_bias_a: as
            :class:`MeanScaleHyperprior`.
        context_channels: output channels of the masked 5x5 context convolution.
        hidden: width of the 1x1 layers that merge context and hyperprior parameters.
        scale_floor: if set, the hyperprior's raw scales enter the merging network as
            ``max(scale, scale_floor)`` (the correction is still added to the raw values).
            Scales below the likelihood's bound all mean the same, but a hyperprior may emit
            them far below it (hyperprior v3: down to -497 at q1), and such inputs made the
            context networks' training diverge. None (context v1) feeds them unchanged.
    """

    family = "context"

    def __init__(self, N: int = 64, M: int = 96, lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
                 context_channels: int = 96, hidden: int = 192,
                 scale_floor: float | None = None, Na: int | None = None,
                 Ns: int | None = None, hyper_hidden: tuple[int, int] | None = None,
                 res_a: int = 0, res_s: int = 0, res_a_deep: int = 0, res_s_deep: int = 0,
                 level_scales_a: bool = False,
                 level_scales_s: bool = False, level_scales_h: bool = False,
                 level_bias_a: bool = False) -> None:
        super().__init__(N=N, M=M, lambdas=lambdas, Na=Na, Ns=Ns, hyper_hidden=hyper_hidden,
                         res_a=res_a, res_s=res_s, res_a_deep=res_a_deep, res_s_deep=res_s_deep,
                         level_scales_a=level_scales_a,
                         level_scales_s=level_scales_s, level_scales_h=level_scales_h,
                         level_bias_a=level_bias_a)
        self.context_channels, self.hidden = context_channels, hidden
        self.scale_floor = scale_floor
        self.context_prediction = nn.Conv2d(M, context_channels, CONTEXT_KERNEL,
                                            padding=CONTEXT_KERNEL // 2)
        self.register_buffer("context_mask", checkerboard_kernel_mask().view(1, 1, CONTEXT_KERNEL, CONTEXT_KERNEL))
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(2 * M + context_channels, hidden, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(hidden, 2 * M, 1))
        nn.init.zeros_(self.entropy_parameters[-1].weight)  # start as the plain hyperprior
        nn.init.zeros_(self.entropy_parameters[-1].bias)

    def load_hyperprior(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load a hyperprior's weights (``state``), leaving the context networks as they are.

        Raises:
            ValueError: ``state`` lacks a parameter of this model's hyperprior part, or has
                one this model does not (another architecture); ``source`` names it.
        """
        keys = self.load_state_dict(state, strict=False)
        if keys.unexpected_keys or any(not k.startswith(CONTEXT_PREFIXES) for k in keys.missing_keys):
            raise ValueError(f"{source} is not a hyperprior of this architecture")

    def context_layers(self) -> tuple[nn.Conv2d, nn.Sequential]:
        """The masked context convolution (mask applied) and the merging network, for export."""
        pred = nn.Conv2d(self.M, self.context_channels, CONTEXT_KERNEL, padding=CONTEXT_KERNEL // 2)
        pred.weight.data = (self.context_prediction.weight * self.context_mask).detach().clone()
        pred.bias.data = self.context_prediction.bias.detach().clone()
        return pred, self.entropy_parameters

    def nonanchor_params(self, anchors: torch.Tensor, hyper_raw: torch.Tensor) -> torch.Tensor:
        """Raw (scales, means) parameters for the non-anchors (float; training and checks).

        ``anchors`` holds the decoded latents at anchor positions and zeros elsewhere;
        ``hyper_raw`` is the output of ``h_s``.
        """
        w = self.context_prediction.weight * self.context_mask.to(anchors.dtype)
        ctx = nn.functional.conv2d(anchors, w, self.context_prediction.bias,
                                   padding=CONTEXT_KERNEL // 2)
        return hyper_raw + self.entropy_parameters(torch.cat([self.merge_input(hyper_raw), ctx], dim=1))

    def entropy_params(self, y: torch.Tensor, hyper_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(means, scales)`` of every latent of ``y`` as the decoder will have them: the
        hyperprior's at the anchors; at the non-anchors, those of :meth:`nonanchor_params`
        given the anchors quantized as the codec does (``round(y - mean) + mean``,
        straight-through, so training reaches ``g_a`` through them).

        The non-anchor scales get a hard floor at the likelihood's bound (no gradient below
        it): where the hyperprior's scale lies far below the bound, the noisy rate proxy
        always asks for a larger scale, and passing that gradient through made the context
        networks' training diverge (docs/model-card.md). The codec's scale table starts at
        the bound, so the floor changes no coded bit.
        """
        means, scales = self.split_params(hyper_raw)
        a = anchor_mask(y.shape[2], y.shape[3]).to(y.device)
        anchors = torch.where(a, ste_round(y - means) + means, torch.zeros_like(y))
        means2, scales2 = self.split_params(self.nonanchor_params(anchors, hyper_raw))
        return torch.where(a, means, means2), torch.where(a, scales, scales2.clamp_min(SCALE_BOUND))

    def merge_input(self, hyper_raw: torch.Tensor) -> torch.Tensor:
        """The hyperprior parameters as the merging network sees them (see ``scale_floor``)."""
        if self.scale_floor is None:
            return hyper_raw
        scales, means = hyper_raw.chunk(2, dim=1)  # the layout of split_params
        return torch.cat([scales.clamp_min(self.scale_floor), means], dim=1)

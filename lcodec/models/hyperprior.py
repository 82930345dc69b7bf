"""The mean-scale hyperprior model family (Ballé et al. 2018; Minnen et al. 2018), variable rate.

One network covers the whole quality range with *gain units* (Cui et al. 2021): quality level
``k`` multiplies the latent ``y`` channel-wise by a learned gain vector before quantization and
by a learned inverse gain after it. A fractional quality interpolates the gains geometrically
between its two neighbouring levels.

Pixels enter centred (``x - 0.5``) and leave re-centred: measured on these crops, this gains
3-4 dB in the first hundred training steps, which the output bias otherwise spends learning
the mean grey level at Adam's step size.

The model is split into the four stages the codec pipeline drives:

``analysis`` (image -> gained latent ``y``), ``hyper_analysis`` (``y`` -> ``z``),
``hyper_synthesis`` (quantized ``z`` -> Gaussian means and scales of ``y``) and ``synthesis``
(quantized ``y`` -> image). Only ``hyper_synthesis`` feeds the entropy coder, so the pipeline
runs an integer copy of ``h_s`` (:mod:`.exact`) instead; the other stages may run on any device
and precision.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..runtime.transforms import (ANALYSIS_BLOCK_AFTER, LEVEL_SCALE_AFTER, MAX_DEEP_BLOCKS,
                                  SYNTHESIS_BLOCK_AFTER, between_levels, block_positions,
                                  check_deep_blocks)
from .entropy_models import FactorizedDensity, gaussian_likelihood, ste_round
from .layers import GDN, ResidualBlock, conv, deconv

# Rate-distortion trade-offs of the quality levels 1..8 (loss = lambda * 255^2 * MSE + bpp).
DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)


def _run(layers: nn.Sequential, blocks: nn.ModuleDict | dict, x: torch.Tensor,
         scales: dict[int, torch.Tensor] | None = None,
         shifts: dict[int, torch.Tensor] | None = None,
         deep: tuple[int, nn.ModuleList] | None = None) -> torch.Tensor:
    """``layers`` with each of ``blocks`` applied after the layer its key names, then, after
    layer ``deep[0]``, each block of ``deep[1]`` in turn; the output of layer ``i`` multiplied
    by ``scales[i]``, then offset by ``shifts[i]`` (channel-wise) first where given."""
    for i, layer in enumerate(layers):
        x = layer(x)
        if scales and i in scales:
            x = x * scales[i].to(x.dtype)
        if shifts and i in shifts:
            x = x + shifts[i].to(x.dtype)
        if str(i) in blocks:
            x = blocks[str(i)](x)
        if deep is not None and i == deep[0]:
            for block in deep[1]:
                x = block(x)
    return x


def default_hyper_hidden(M: int) -> tuple[int, int]:
    """The hidden widths of the hyper-synthesis of a model with ``M`` latent channels unless
    its config sets ``hyper_hidden``."""
    return M, M * 3 // 2


class MeanScaleHyperprior(nn.Module):
    """Mean-scale hyperprior with gain units.

    Args:
        N: channels of the hidden layers of the synthesis and hyper transforms (and of the
            hyper-latent ``z``).
        M: channels of the latent ``y``.
        Na: channels of the hidden layers of the analysis transform ``g_a`` (default ``N``).
            Only the encoder runs ``g_a``, so a wider analysis costs encode time but leaves
            decoding as it is.
        Ns: channels of the hidden layers of the synthesis transform ``g_s`` (default ``N``).
            Only the decoder runs ``g_s`` (and the encoder's latent refinement).
        hyper_hidden: channels of the two hidden layers of the hyper-synthesis ``h_s``
            (default ``(M, 3M/2)``). Set when a model's latent was narrowed but its
            hyper-synthesis kept its width (:mod:`lcodec.train.narrow`).
        lambdas: one rate-distortion trade-off per quality level (level ``k`` is ``-q k``).
        res_a: residual blocks (:class:`.layers.ResidualBlock`) in the analysis, after its GDN
            layers from the deepest (1/8 resolution) outward: 0 to 3.
        res_s: residual blocks in the synthesis, after its inverse GDN layers from the deepest
            (1/8 resolution) outward: 0 to 3. New blocks are identities, so they can be added
            to trained weights (``lcodec train --res-a / --res-s``) without changing them.
        res_a_deep, res_s_deep: further residual blocks at 1/8 resolution in the analysis /
            synthesis, after its first block (which they need): 0 to ``MAX_DEEP_BLOCKS``
            (``g_a_deep`` / ``g_s_deep``). Depth where it is cheapest: a block there costs a
            sixteenth of one at 1/2 resolution. Identities when new, like the others.
        level_scales_a: give every quality level its own channel scales inside the analysis,
            after each of its GDN layers (the ``log_level_scale_a`` parameter, shape
            ``(levels, 3, Na)``, log scale; fractional qualities interpolate it like the gains),
            so that the encoder's features can differ between levels instead of the gains
            alone rescaling one shared latent (as the conditional convolutions of Choi et al.
            2019, with a scale only). They start at 1: added to trained weights, the model
            codes as before. The analysis then depends on the quality; decoding does not.
        level_scales_s: the same inside the synthesis, after each of its inverse GDN layers
            (``log_level_scale_s``, ``(levels, 3, Ns)``): a multiply per channel and layer at
            decoding, so that the decoder too can differ between levels.
        level_scales_h: the same inside the hyper-analysis ``h_a``, after each of its two
            leaky ReLUs (``log_level_scale_h``, ``(levels, 2, N)``), so that the side
            information ``z`` can summarize ``y`` differently per level (encoder only: ``h_s``
            and the entropy tables are as before).
        level_bias_a: with ``level_scales_a``, give every quality level a channel offset too,
            added after each of the analysis' scales (``level_bias_a``, ``(levels, 3, Na)``,
            interpolated like the scales), so that each level can move its features on the
            next GDN's curve as well as stretch them (encoder only; starts at 0).
    """

    family = "hyperprior"
    downsampling = 64  # total stride from the image to z

    def __init__(self, N: int = 64, M: int = 96, lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
                 Na: int | None = None, Ns: int | None = None,
                 hyper_hidden: tuple[int, int] | None = None, res_a: int = 0, res_s: int = 0,
                 res_a_deep: int = 0, res_s_deep: int = 0,
                 level_scales_a: bool = False, level_scales_s: bool = False,
                 level_scales_h: bool = False, level_bias_a: bool = False):
        super().__init__()
        if level_bias_a and not level_scales_a:
            raise ValueError("level_bias_a needs level_scales_a")
        blocks_a, blocks_s = block_positions(res_a, res_s)
        check_deep_blocks(res_a, res_s, res_a_deep, res_s_deep)
        self.res_a, self.res_s = res_a, res_s
        self.res_a_deep, self.res_s_deep = res_a_deep, res_s_deep
        self.N, self.M = N, M
        self.Na = Na = Na or N
        self.Ns = Ns = Ns or N
        self.hyper_hidden = h1, h2 = tuple(hyper_hidden or default_hyper_hidden(M))
        self.register_buffer("lambdas", torch.tensor(lambdas, dtype=torch.float32))
        self.g_a = nn.Sequential(
            conv(3, Na), GDN(Na), conv(Na, Na), GDN(Na), conv(Na, Na), GDN(Na), conv(Na, M))
        self.g_s = nn.Sequential(
            deconv(M, Ns), GDN(Ns, inverse=True), deconv(Ns, Ns), GDN(Ns, inverse=True),
            deconv(Ns, Ns), GDN(Ns, inverse=True), deconv(Ns, 3))
        # Residual blocks, keyed by the index of the g_a / g_s layer (a GDN) they follow.
        self.g_a_res = nn.ModuleDict({str(i): ResidualBlock(Na) for i in blocks_a})
        self.g_s_res = nn.ModuleDict({str(i): ResidualBlock(Ns) for i in blocks_s})
        self.g_a_deep = nn.ModuleList(ResidualBlock(Na) for _ in range(res_a_deep))
        self.g_s_deep = nn.ModuleList(ResidualBlock(Ns) for _ in range(res_s_deep))
        self.h_a = nn.Sequential(
            conv(M, N, 3, 1), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True), conv(N, N))
        self.h_s = nn.Sequential(
            deconv(N, h1), nn.LeakyReLU(inplace=True),
            deconv(h1, h2), nn.LeakyReLU(inplace=True),
            conv(h2, M * 2, 3, 1))
        self.z_density = FactorizedDensity(N)
        # Gain init ~ sqrt(lambda): the optimal quantizer step shrinks like 1/sqrt(lambda).
        mid = math.sqrt(lambdas[len(lambdas) // 2])
        init = torch.tensor([0.5 * math.log(l) - math.log(mid) for l in lambdas])
        self.log_gain = nn.Parameter(init.view(-1, 1).repeat(1, M))
        self.log_inv_gain = nn.Parameter(-init.view(-1, 1).repeat(1, M))
        for side, width, wanted in (("a", Na, level_scales_a), ("s", Ns, level_scales_s),
                                    ("h", N, level_scales_h)):
            setattr(self, f"level_scales_{side}", bool(wanted))
            if wanted:
                shape = (len(lambdas), len(LEVEL_SCALE_AFTER[side]), width)
                setattr(self, f"log_level_scale_{side}", nn.Parameter(torch.zeros(shape)))
        self.has_level_bias_a = bool(level_bias_a)
        if level_bias_a:
            self.level_bias_a = nn.Parameter(torch.zeros(len(lambdas), len(LEVEL_SCALE_AFTER["a"]), Na))

    @property
    def num_levels(self) -> int:
        return int(self.lambdas.numel())

    # -- quality -> gains ------------------------------------------------------------------
    def _between_levels(self, quality: float) -> tuple[int, float]:
        return between_levels(quality, self.num_levels)

    def _at_quality(self, per_level: torch.Tensor, quality: float) -> torch.Tensor:
        """A per-level parameter (log gains or log scales, levels first) at a quality in
        ``[1, L]``: linear between its two neighbouring levels."""
        lo, t = self._between_levels(quality)
        return (1 - t) * per_level[lo] + t * per_level[lo + 1]

    def gains(self, quality: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Gain and inverse gain vectors (shape ``(1, M, 1, 1)``) of a quality in ``[1, L]``."""
        log_g = self._at_quality(self.log_gain, quality)
        log_ig = self._at_quality(self.log_inv_gain, quality)
        return log_g.exp().view(1, -1, 1, 1), log_ig.exp().view(1, -1, 1, 1)

    def rd_lambda(self, quality: float) -> float:
        """The rate-distortion trade-off of a quality, interpolated geometrically between its
        two neighbouring levels like the gains."""
        lo, t = self._between_levels(quality)
        return float(self.lambdas[lo]) ** (1 - t) * float(self.lambdas[lo + 1]) ** t

    # -- the four stages used by the codec pipeline ------------------------------------------
    def analysis(self, x: torch.Tensor, quality: float) -> torch.Tensor:
        gain, _ = self.gains(quality)
        return self.transform_a(x - 0.5, quality=quality) * gain.to(x.dtype)

    def level_scales(self, side: str, quality: float | None = None,
                     level: torch.Tensor | None = None) -> dict[int, torch.Tensor] | None:
        """The channel scales inside the analysis (``side`` ``"a"``), the synthesis (``"s"``)
        or the hyper-analysis (``"h"``) of a quality in ``[1, L]`` (shape ``(1, C, 1, 1)``)
        or of one 0-based ``level`` per image (``(B, C, 1, 1)``), keyed by the layer they
        follow; None for a model without ``level_scales_<side>``."""
        if not getattr(self, f"level_scales_{side}"):
            return None
        param = getattr(self, f"log_level_scale_{side}")
        if level is not None:
            log = param[level]
        elif quality is not None:
            log = self._at_quality(param, quality)[None]
        else:
            name = {"a": "analysis", "s": "synthesis", "h": "hyper-analysis"}[side]
            raise ValueError(f"this model's {name} depends on the quality (level_scales_{side}): "
                             "pass quality or level")
        scales = log.exp()[..., None, None]
        return {layer: scales[:, i] for i, layer in enumerate(LEVEL_SCALE_AFTER[side])}

    def level_shifts(self, quality: float | None = None,
                     level: torch.Tensor | None = None) -> dict[int, torch.Tensor] | None:
        """The analysis' per-level channel offsets (``level_bias_a``), shaped and keyed like
        :meth:`level_scales`; None for a model without them."""
        if not self.has_level_bias_a:
            return None
        if level is not None:
            bias = self.level_bias_a[level]
        elif quality is not None:
            bias = self._at_quality(self.level_bias_a, quality)[None]
        else:
            raise ValueError("this model's analysis depends on the quality (level_bias_a): "
                             "pass quality or level")
        bias = bias[..., None, None]
        return {layer: bias[:, i] for i, layer in enumerate(LEVEL_SCALE_AFTER["a"])}

    def transform_a(self, x: torch.Tensor, quality: float | None = None,
                    level: torch.Tensor | None = None) -> torch.Tensor:
        """The analysis transform (``g_a`` and its residual blocks) of centred pixels, before
        the gains. A model with ``level_scales_a`` needs the ``quality`` (or one ``level`` per
        image, training): see :meth:`level_scales` and :meth:`level_shifts`."""
        return _run(self.g_a, self.g_a_res, x, self.level_scales("a", quality, level),
                    self.level_shifts(quality, level), (ANALYSIS_BLOCK_AFTER[0], self.g_a_deep))

    def transform_s(self, y: torch.Tensor, quality: float | None = None,
                    level: torch.Tensor | None = None) -> torch.Tensor:
        """The synthesis transform (``g_s`` and its residual blocks) of an un-gained latent;
        ``quality`` / ``level`` as for :meth:`transform_a`, needed with ``level_scales_s``."""
        return _run(self.g_s, self.g_s_res, y, self.level_scales("s", quality, level),
                    deep=(SYNTHESIS_BLOCK_AFTER[0], self.g_s_deep))

    def hyper_analysis(self, y: torch.Tensor, quality: float | None = None,
                       level: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` of a gained latent; ``quality`` / ``level`` as for :meth:`transform_a`,
        needed with ``level_scales_h``."""
        return _run(self.h_a, {}, y, self.level_scales("h", quality, level))

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and scales of the Gaussian model of ``y`` (float; training and validation)."""
        return self.split_params(self.h_s(z_hat))

    @staticmethod
    def split_params(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(means, scales)`` from the raw output of ``h_s`` (or of its exact integer twin,
        :mod:`lcodec.models.exact`, which the codec pipeline uses)."""
        scales, means = raw.chunk(2, dim=1)
        return means, scales

    def entropy_params(self, y: torch.Tensor, hyper_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(means, scales)`` of every latent of ``y`` as the decoder will have them, given
        ``hyper_raw``, the output of ``h_s``: here the hyperprior's alone (the ``context``
        family also looks at the decoded neighbours). Training and the probe use it."""
        return self.split_params(hyper_raw)

    def synthesis(self, y_hat: torch.Tensor, quality: float) -> torch.Tensor:
        _, inv_gain = self.gains(quality)
        return self.transform_s(y_hat * inv_gain.to(y_hat.dtype), quality=quality) + 0.5

    # -- training -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, level: torch.Tensor, decoder_noise: bool = False) -> dict[str, torch.Tensor]:
        """Training pass: ``level`` holds one integer quality level (0-based) per image.

        Uses additive uniform noise for the likelihoods. The decoder sees the rounded latent
        (straight-through), matching inference; with ``decoder_noise`` it sees the noisy
        latent instead, which keeps information flowing while the latents are still smaller
        than the quantization step (early training), at a small train/test mismatch.
        """
        gain = self.log_gain[level].exp()[:, :, None, None]
        inv_gain = self.log_inv_gain[level].exp()[:, :, None, None]
        y = self.transform_a(x - 0.5, level=level).float() * gain
        z = self.hyper_analysis(y, level=level).float()
        z_lik = self.z_density.likelihood(z + torch.empty_like(z).uniform_(-0.5, 0.5))
        means, scales = self.entropy_params(y, self.h_s(ste_round(z)).float())
        means, scales = means.float(), scales.float()
        noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        y_lik = gaussian_likelihood(noisy - means, scales)
        y_hat = noisy if decoder_noise else ste_round(y - means) + means
        x_hat = self.transform_s(y_hat * inv_gain, level=level).float() + 0.5
        return {"x_hat": x_hat, "y_likelihoods": y_lik, "z_likelihoods": z_lik}

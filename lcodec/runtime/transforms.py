"""The float pixel transforms of the hyperprior family (and of ``context``, which shares them).

:class:`HyperpriorTransforms` computes what :class:`lcodec.models.hyperprior.MeanScaleHyperprior`
computes for the codec pipeline, from the same weights, with numpy in float32:
``analysis`` (pixels -> gained latent ``y``), ``hyper_analysis`` (``y`` -> ``z``) and
``synthesis`` (quantized ``y`` -> pixels). Results equal the torch model's up to float
rounding; the entropy parameters never come from here (see :mod:`.exact`).

Arrays cross this interface as ``(1, C, H, W)``, like the torch model's tensors; inside they
are channels-last ``(H, W, C)``.
"""
from __future__ import annotations

import math

import numpy as np

from .ops import conv2d, conv_transpose2d, gdn, leaky_relu

# Where residual blocks go: after these layers of g_a / g_s (their GDNs, ``2 * i + 1`` for the
# i-th), deepest first (lcodec.models.hyperprior re-exports them for the training CLI's limits).
ANALYSIS_BLOCK_AFTER = (5, 3, 1)
SYNTHESIS_BLOCK_AFTER = (1, 3, 5)
# Further blocks at the deepest position (``res_a_deep`` / ``res_s_deep``): they follow the
# block there, at 1/8 resolution, where a block costs 1/16 of one at 1/2.
MAX_DEEP_BLOCKS = 4
# Where a model with ``level_scales_<side>`` scales a transform's channels per quality level:
# after these layers of g_a ("a") and g_s ("s"), their GDNs, before any residual block there;
# of h_a ("h"), its two leaky ReLUs.
LEVEL_SCALE_AFTER = {"a": (1, 3, 5), "s": (1, 3, 5), "h": (1, 3)}


def block_positions(res_a: int, res_s: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The g_a and g_s layer indexes that ``res_a`` / ``res_s`` residual blocks follow.

    Raises ``ValueError`` when a count is negative or above the positions there are."""
    if not (0 <= res_a <= len(ANALYSIS_BLOCK_AFTER) and 0 <= res_s <= len(SYNTHESIS_BLOCK_AFTER)):
        raise ValueError(f"res_a must be in 0..{len(ANALYSIS_BLOCK_AFTER)} and res_s in "
                         f"0..{len(SYNTHESIS_BLOCK_AFTER)}, got {res_a} and {res_s}")
    return ANALYSIS_BLOCK_AFTER[:res_a], SYNTHESIS_BLOCK_AFTER[:res_s]


def check_deep_blocks(res_a: int, res_s: int, res_a_deep: int, res_s_deep: int) -> None:
    """Raises ``ValueError`` unless both counts of further blocks at the deepest position are
    in ``0..MAX_DEEP_BLOCKS``, and a transform with any has its first block there."""
    if not (0 <= res_a_deep <= MAX_DEEP_BLOCKS and 0 <= res_s_deep <= MAX_DEEP_BLOCKS):
        raise ValueError(f"res_a_deep and res_s_deep must be in 0..{MAX_DEEP_BLOCKS}, got "
                         f"{res_a_deep} and {res_s_deep}")
    if (res_a_deep and not res_a) or (res_s_deep and not res_s):
        raise ValueError("res_a_deep / res_s_deep follow the transform's first residual block: "
                         "they need res_a / res_s of at least 1")

# Working memory of the transforms per pixel of a tile window: 320 bytes measured with 64
# hidden channels (float32, with temporaries); it grows with the widest hidden layer (numpy
# analysis of a 1280x1280 window: 219 bytes above the baseline at 64 channels, 434 at 128).
BYTES_PER_PIXEL_AT_64 = 320

GDN_PEDESTAL = 2.0 ** -18  # GDN stores sqrt(parameter + pedestal) (lcodec.models.layers.GDN)
GDN_BETA_MIN = 1e-6


def between_levels(quality: float, levels: int) -> tuple[int, float]:
    """``(lo, t)``: a quality in ``[1, levels]`` lies ``t`` of the way from level ``lo``
    (0-based) to ``lo + 1``; fractional qualities interpolate the two levels' gains."""
    if not 1.0 <= quality <= levels:
        raise ValueError(f"quality must be in [1, {levels}], got {quality}")
    pos = quality - 1.0
    lo = min(int(math.floor(pos)), levels - 2)
    return lo, pos - lo


def nearest_level(quality: float, levels: int) -> int:
    """The level (0-based) nearest to a quality in ``[1, levels]``, halves rounding up: whose
    per-level ``z`` tables code it (``docs/format.md``)."""
    if not 1.0 <= quality <= levels:
        raise ValueError(f"quality must be in [1, {levels}], got {quality}")
    return min(int(math.floor(quality + 0.5)), levels) - 1


def _residual(x: np.ndarray, blocks: list) -> np.ndarray:
    """``x + conv(leaky_relu(conv(x)))`` for each residual block in turn, a block being its two
    3x3 convolutions (``x`` unchanged when there is none)."""
    for (w1, b1, _), (w2, b2, _) in blocks:
        x = x + conv2d(leaky_relu(conv2d(x, w1, b1, stride=1, padding=1)), w2, b2, stride=1, padding=1)
    return x


def _gdn_params(beta: np.ndarray, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The effective GDN parameters from the stored (square-root) ones, as the torch layer
    computes them."""
    p = np.float32(GDN_PEDESTAL)
    beta = np.maximum(beta, np.float32(math.sqrt(GDN_BETA_MIN + GDN_PEDESTAL))) ** 2 - p
    gamma = np.maximum(gamma, np.float32(math.sqrt(GDN_PEDESTAL))) ** 2 - p
    return beta.astype(np.float32), gamma.astype(np.float32)


class HyperpriorTransforms:
    """The pixel transforms of a hyperprior-family model.

    Args:
        arrays: the weights (name -> array), as stored in a weights file.
        N, M, Na, Ns, res_a, res_s, res_a_deep, res_s_deep, level_scales_a, level_scales_s,
            level_scales_h: the architecture (``config`` in the manifest); extra config keys
            (e.g. the context family's) are accepted and ignored. ``res_a_deep`` /
            ``res_s_deep`` further residual blocks follow the first block of the analysis /
            synthesis at its deepest position (``g_a_deep.J`` / ``g_s_deep.J``, in order).
            With ``level_scales_a`` the analysis scales its
            channels per quality level after each GDN (``log_level_scale_a``), so that it
            depends on the quality; with ``level_scales_s`` the synthesis likewise
            (``log_level_scale_s``), with ``level_scales_h`` the hyper-analysis after its leaky
            ReLUs (``log_level_scale_h``). With ``level_bias_a`` (which needs
            ``level_scales_a``) the analysis adds a per-level channel offset after each of
            its scales (``level_bias_a``).

    Raises ``ValueError`` when an expected array is missing or has the wrong shape.
    """

    def __init__(self, arrays: dict[str, np.ndarray], N: int = 64, M: int = 96, Na: int | None = None,
                 Ns: int | None = None, res_a: int = 0, res_s: int = 0, res_a_deep: int = 0,
                 res_s_deep: int = 0, level_scales_a: bool = False,
                 level_scales_s: bool = False, level_scales_h: bool = False,
                 level_bias_a: bool = False, **_other) -> None:
        if level_bias_a and not level_scales_a:
            raise ValueError("level_bias_a needs level_scales_a")
        Na, Ns = Na or N, Ns or N
        blocks_a, blocks_s = block_positions(res_a, res_s)
        check_deep_blocks(res_a, res_s, res_a_deep, res_s_deep)
        self.N, self.M, self.Na, self.Ns = N, M, Na, Ns
        self._arrays = arrays

        def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
            if name not in arrays:
                raise ValueError(f"missing {name!r}")
            a = np.asarray(arrays[name])
            if a.shape != shape:
                raise ValueError(f"{name!r} has shape {a.shape}, expected {shape}")
            return np.ascontiguousarray(a, dtype=np.float32)

        def conv_layers(prefix: str, dims: list[tuple[int, int, int]], transposed: bool):
            out = []
            for i, (cin, cout, k) in dims:
                shape = (cin, cout, k, k) if transposed else (cout, cin, k, k)
                out.append((get(f"{prefix}.{i}.weight", shape), get(f"{prefix}.{i}.bias", (cout,)), k))
            return out

        def gdn_layers(prefix: str, indexes: tuple[int, ...], c: int):
            return [_gdn_params(get(f"{prefix}.{i}.beta", (c,)), get(f"{prefix}.{i}.gamma", (c, c)))
                    for i in indexes]

        self.g_a = conv_layers("g_a", [(0, (3, Na, 5)), (2, (Na, Na, 5)), (4, (Na, Na, 5)), (6, (Na, M, 5))], False)
        self.g_a_gdn = gdn_layers("g_a", (1, 3, 5), Na)
        self.g_s = conv_layers("g_s", [(0, (M, Ns, 5)), (2, (Ns, Ns, 5)), (4, (Ns, Ns, 5)), (6, (Ns, 3, 5))], True)
        self.g_s_gdn = gdn_layers("g_s", (1, 3, 5), Ns)

        def block(prefix: str, c: int):
            """A residual block's two 3x3 convolutions."""
            return conv_layers(f"{prefix}.body", [(0, (c, c, 3)), (2, (c, c, 3))], False)

        def res_blocks(side: str, after: tuple[int, ...], deep: int, c: int):
            """{layer index: [its residual blocks, in order]}: one after each of those layers,
            then ``deep`` more after the deepest (the first of ``after``)."""
            out = {i: [block(f"g_{side}_res.{i}", c)] for i in after}
            if deep:
                out[after[0]] += [block(f"g_{side}_deep.{j}", c) for j in range(deep)]
            return out

        self.g_a_res = res_blocks("a", blocks_a, res_a_deep, Na)
        self.g_s_res = res_blocks("s", blocks_s, res_s_deep, Ns)
        self.h_a = conv_layers("h_a", [(0, (M, N, 3)), (2, (N, N, 5)), (4, (N, N, 5))], False)
        lambdas = np.asarray(arrays.get("lambdas", np.zeros(0)))
        levels = len(lambdas)
        if levels < 2:
            raise ValueError("the weights name fewer than two quality levels")
        self.log_gain = get("log_gain", (levels, M))
        self.log_inv_gain = get("log_inv_gain", (levels, M))
        for side, width, wanted in (("a", Na, level_scales_a), ("s", Ns, level_scales_s),
                                    ("h", N, level_scales_h)):
            shape = (levels, len(LEVEL_SCALE_AFTER[side]), width)
            setattr(self, f"log_level_scale_{side}",
                    get(f"log_level_scale_{side}", shape) if wanted else None)
        self.level_bias_a = (get("level_bias_a", (levels, len(LEVEL_SCALE_AFTER["a"]), Na))
                             if level_bias_a else None)

    def bytes_per_pixel(self, encoder: bool) -> int:
        """Peak working memory per pixel of a window: of the analysis (``encoder``), which
        has ``Na`` hidden channels, or of the synthesis (``Ns``)."""
        width = max(self.Na, self.N) if encoder else max(self.Ns, self.N)
        return BYTES_PER_PIXEL_AT_64 * width // 64

    @property
    def num_levels(self) -> int:
        return self.log_gain.shape[0]

    def gains(self, quality: float) -> tuple[np.ndarray, np.ndarray]:
        """Gain and inverse gain vectors ``(M,)`` of a quality in ``[1, L]`` (geometric
        interpolation between the two neighbouring levels)."""
        log_g = self._at_quality(self.log_gain, quality)
        log_ig = self._at_quality(self.log_inv_gain, quality)
        return np.exp(log_g).astype(np.float32), np.exp(log_ig).astype(np.float32)

    def _at_quality(self, per_level: np.ndarray, quality: float) -> np.ndarray:
        """A per-level array (log gains or log scales, levels first) at a quality in ``[1, L]``:
        linear between its two neighbouring levels."""
        lo, t = between_levels(quality, self.num_levels)
        return (1 - t) * per_level[lo] + t * per_level[lo + 1]

    @property
    def analysis_depends_on_quality(self) -> bool:
        """Whether :meth:`analysis_unscaled` differs between qualities (``level_scales_a``);
        otherwise one analysis serves every quality, rescaled by :meth:`apply_gain`."""
        return self.log_level_scale_a is not None

    def level_scales(self, side: str, quality: float) -> dict[int, np.ndarray]:
        """The channel scales inside the analysis (``side`` ``"a"``), the synthesis (``"s"``)
        or the hyper-analysis (``"h"``) at a quality, keyed by the layer they follow
        (:data:`LEVEL_SCALE_AFTER`; interpolated between the quality's two levels like the
        gains); empty for a transform without them."""
        log_scales = getattr(self, f"log_level_scale_{side}")
        if log_scales is None:
            return {}
        scales = np.exp(self._at_quality(log_scales, quality)).astype(np.float32)
        return dict(zip(LEVEL_SCALE_AFTER[side], scales))

    def level_shifts(self, quality: float) -> dict[int, np.ndarray]:
        """The analysis' per-level channel offsets at a quality (``level_bias_a``), keyed by
        layer like :meth:`level_scales`; empty for an analysis without them."""
        if self.level_bias_a is None:
            return {}
        shifts = self._at_quality(self.level_bias_a, quality).astype(np.float32)
        return dict(zip(LEVEL_SCALE_AFTER["a"], shifts))

    def analysis(self, pixels: np.ndarray, quality: float) -> np.ndarray:
        """The gained latent ``(1, M, H/16, W/16)`` of ``(H, W, 3)`` uint8 pixels."""
        return self.apply_gain(self.analysis_unscaled(pixels, quality), quality)

    def analysis_unscaled(self, pixels: np.ndarray, quality: float) -> np.ndarray:
        """The latent before the quality's gain, ``(1, M, H/16, W/16)`` float32: the costly
        part of :meth:`analysis`, the same for every quality unless
        :attr:`analysis_depends_on_quality`."""
        scales, shifts = self.level_scales("a", quality), self.level_shifts(quality)
        x = pixels.astype(np.float32) / np.float32(255) - np.float32(0.5)
        for i, (w, b, k) in enumerate(self.g_a):
            x = conv2d(x, w, b, stride=2, padding=k // 2)
            if i < len(self.g_a_gdn):
                x = gdn(x, *self.g_a_gdn[i], inverse=False)
                if 2 * i + 1 in scales:
                    x *= scales[2 * i + 1]
                if 2 * i + 1 in shifts:
                    x += shifts[2 * i + 1]
                x = _residual(x, self.g_a_res.get(2 * i + 1, []))
        return x.transpose(2, 0, 1)[None]

    def apply_gain(self, unscaled: np.ndarray, quality: float) -> np.ndarray:
        """:meth:`analysis` of a quality from :meth:`analysis_unscaled` (bit for bit)."""
        gain, _ = self.gains(quality)
        return unscaled * gain.reshape(1, -1, 1, 1)

    def hyper_analysis(self, y: np.ndarray, quality: float) -> np.ndarray:
        """``z`` ``(1, N, h/4, w/4)`` of a gained latent ``(1, M, h, w)`` of a quality (which
        matters with ``level_scales_h`` only)."""
        scales = self.level_scales("h", quality)
        x = np.ascontiguousarray(y[0].transpose(1, 2, 0), dtype=np.float32)
        for i, (w, b, k) in enumerate(self.h_a):
            x = conv2d(x, w, b, stride=1 if i == 0 else 2, padding=k // 2)
            if i < len(self.h_a) - 1:
                x = leaky_relu(x)
                if 2 * i + 1 in scales:
                    x *= scales[2 * i + 1]
        return x.transpose(2, 0, 1)[None]

    def synthesis(self, y_hat: np.ndarray, quality: float) -> np.ndarray:
        """Float pixels ``(1, 3, 16h, 16w)`` (nominally in [0, 1]) of a quantized latent.

        A latent no encoder would write (a damaged or crafted stream that still parses) can
        overflow float32 in the inverse GDNs, which grow like the square of their input; the
        result then holds infinities or NaNs, silently (the caller turns them into pixels).
        """
        _, inv_gain = self.gains(quality)
        scales = self.level_scales("s", quality)
        x = np.ascontiguousarray(y_hat[0].transpose(1, 2, 0), dtype=np.float32) * inv_gain
        with np.errstate(over="ignore", invalid="ignore"):
            for i, (w, b, k) in enumerate(self.g_s):
                x = conv_transpose2d(x, w, b, stride=2, padding=k // 2, output_padding=1)
                if i < len(self.g_s_gdn):
                    x = gdn(x, *self.g_s_gdn[i], inverse=True)
                    if 2 * i + 1 in scales:
                        x *= scales[2 * i + 1]
                    x = _residual(x, self.g_s_res.get(2 * i + 1, []))
            return (x + np.float32(0.5)).transpose(2, 0, 1)[None]

"""Integer versions of the networks that feed the entropy coder, bit-exact on every machine.

The entropy parameters (the scale of every latent, via its table index) must be identical in
encoder and decoder, across CPUs, thread counts, BLAS libraries and years. Following Ballé,
Johnston & Minnen (2019, "Integer networks for data compression with latent-variable
models"), the hyper-synthesis (and, for the ``context`` family, the context networks) runs
on integers:

* weights are integers ``W = round(w * 2^g)`` (``|W| < 2^12``, one ``g <= 22`` per layer) and
  biases integers in the accumulator's scale;
* activations are integers with ``ACT_FRAC_BITS`` fractional bits, clamped to ``|a| < 2^23``;
* a layer accumulates ``conv(a, W) + B`` in float64 — every product and partial sum is an
  integer below ``2^48 < 2^53`` (fan-in under ``2^13``), so the result is exact whatever the
  summation order — and rescales by a power of two with ``floor``;
* the leaky ReLU is ``a`` for ``a >= 0`` and ``floor(41 a / 4096)`` (slope ~0.01) otherwise;
* the last layer's accumulator, times ``2^-(f + g)`` (exact), gives scales and means.

The integers are made once, at export (:mod:`lcodec.models.exact`), and stored in the weights
file; :class:`ExactSequential` and :class:`ExactContext` evaluate them with numpy. Arrays are
``(1, C, H, W)`` float64 holding integers (times a power of two).
"""
from __future__ import annotations

import numpy as np

from .ops import conv2d, conv_transpose2d

ACT_FRAC_BITS = 10
WEIGHT_BITS = 12
ACT_LIMIT = float(2 ** 23 - 1)
INPUT_LIMIT = float(2 ** 15)
LEAKY_NUM, LEAKY_SHIFT = 41, 12  # 41 / 4096 = 0.010009...


def to_fixed(x: np.ndarray, frac_bits: int = ACT_FRAC_BITS) -> np.ndarray:
    """``floor(x * 2^frac_bits)``, clamped to the activation range (exact for float64 ``x``)."""
    return np.clip(np.floor(np.asarray(x, dtype=np.float64) * 2.0 ** frac_bits), -ACT_LIMIT, ACT_LIMIT)


def _hwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[0].transpose(1, 2, 0))


def _nchw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None])


def anchor_mask(height: int, width: int) -> np.ndarray:
    """Boolean ``(height, width)`` map of the checkerboard's anchor positions (``(i + j)``
    even), coded first; the others (non-anchors) see them through the context networks."""
    return (np.arange(height)[:, None] + np.arange(width)[None, :]) % 2 == 0


class ExactSequential:
    """Evaluates the integer layers stored under ``prefix`` (``{prefix}.{i}.weight / bias /
    meta``), exactly."""

    def __init__(self, tensors: dict, prefix: str) -> None:
        self.layers = []
        i = 0
        while f"{prefix}.{i}.weight" in tensors:
            meta = [int(v) for v in np.asarray(tensors[f"{prefix}.{i}.meta"])]
            w = np.asarray(tensors[f"{prefix}.{i}.weight"]).astype(np.float64)
            b = np.asarray(tensors[f"{prefix}.{i}.bias"]).astype(np.float64)
            if len(meta) != 6 or w.ndim != 4 or b.shape != (w.shape[1] if meta[0] else w.shape[0],):
                raise ValueError(f"layer {i} of {prefix} has malformed shapes")
            if not (np.abs(w).max() < 2 ** WEIGHT_BITS and np.array_equal(w, np.round(w))
                    and np.array_equal(b, np.round(b)) and np.abs(b).max() < 2 ** 40):
                raise ValueError(f"layer {i} of {prefix} is not a valid integer layer")
            self.layers.append((w, b, *meta))
            i += 1
        if not self.layers:
            raise ValueError(f"no integer layers under {prefix!r}")

    def __call__(self, x, fixed_input: bool = False) -> np.ndarray:
        """Float64 output (exact: an integer times a power of two).

        ``x`` holds integers: plain ones (the hyper-latent, clamped to ``|x| <= 2^15``), or
        with ``fixed_input`` fixed-point activations made by :func:`to_fixed`.
        """
        a = np.asarray(x, dtype=np.float64)
        if not fixed_input:
            a = np.clip(a, -INPUT_LIMIT, INPUT_LIMIT)
        return _nchw(self.run(_hwc(a), activate_last=False))

    def run(self, a: np.ndarray, activate_last: bool) -> np.ndarray:
        """Apply the layers to integer activations ``a`` (``(H, W, C)``; leaky ReLU between
        layers).

        The last layer's accumulator is returned as its exact float64 value, or, with
        ``activate_last``, rescaled to ``ACT_FRAC_BITS`` activations (no nonlinearity).
        """
        last = len(self.layers) - 1
        for i, (w, b, transposed, stride, pad, out_pad, acc_bits, _f_out) in enumerate(self.layers):
            if transposed:
                acc = conv_transpose2d(a, w, b, stride, pad, out_pad)
            else:
                acc = conv2d(a, w, b, stride, pad)
            if i == last and not activate_last:
                return acc * 2.0 ** -acc_bits
            a = np.floor(acc * 2.0 ** (ACT_FRAC_BITS - acc_bits))
            if i != last:
                a = np.where(a >= 0, a, np.floor(a * (LEAKY_NUM * 2.0 ** -LEAKY_SHIFT)))
            a = np.clip(a, -ACT_LIMIT, ACT_LIMIT)
        return a


SUM_FRAC_BITS = 32
SUM_LIMIT = float(2 ** 20)


class ExactContext:
    """The integer twin of the checkerboard context networks (:mod:`lcodec.models.context`).

    ``anchors`` (decoded latents at anchor positions, zeros elsewhere) and the hyperprior's
    raw parameters enter as fixed-point activations (:func:`to_fixed`). The masked 5x5
    convolution's accumulator is rescaled to activations without a nonlinearity and
    concatenated after the hyperprior's parameters; the merging 1x1 layers give a correction.
    The non-anchor parameters are ``(floor(raw * 2^32) + floor(correction * 2^32)) * 2^-32``,
    both terms clamped to ``|v| <= 2^20`` first: an exact float64 sum (integers below
    ``2^53``), equal to ``raw + correction`` whenever both have at most 32 fractional bits, as
    every exported network's outputs do (so a zero correction reproduces the hyperprior).

    Only the non-anchor positions are computed. A non-anchor's 5x5 neighbourhood holds
    anchors on the two anchor sub-lattices ``(even, even)`` and ``(odd, odd)`` only, so the
    masked convolution is evaluated as a 3x3 convolution of those two half-resolution
    sub-lattices, with the 12 used taps of the 5x5 kernel moved (not changed) into a kernel
    that yields both non-anchor sub-lattices ``(even, odd)`` and ``(odd, even)``: a quarter
    of the direct convolution's work, the same integers.
    """

    def __init__(self, tensors: dict, prefix: str = "exact.ctx",
                 scale_floor: float | None = None) -> None:
        self.scale_floor = scale_floor  # see CheckerboardContext: floors the merge input's scales
        self.pred = ExactSequential(tensors, f"{prefix}.pred")
        self.merge = ExactSequential(tensors, f"{prefix}.merge")
        if len(self.pred.layers) != 1 or self.pred.layers[0][2]:
            raise ValueError("the context prediction must be one plain convolution")
        w, b, _, stride, pad, _, acc_bits, _ = self.pred.layers[0]
        if w.shape[2:] != (5, 5) or stride != 1 or pad != 2:
            raise ValueError("the context prediction must be a 5x5 convolution")
        self.pred_bias, self.pred_acc_bits = b, acc_bits
        self.sublattice_kernel = self._sublattice_kernel(w)

    @staticmethod
    def _sublattice_kernel(w: np.ndarray) -> np.ndarray:
        """``(2C, 2M, 3, 3)``: outputs ``(even, odd)`` then ``(odd, even)`` non-anchors, from
        inputs ``(even, even)`` then ``(odd, odd)`` anchors, on the half-resolution grid."""
        c, m = w.shape[:2]
        k = np.zeros((2 * c, 2 * m, 3, 3), dtype=w.dtype)
        for u in range(5):
            for v in range(5):
                di, dj = u - 2, v - 2
                if (di + dj) % 2 == 0:
                    continue  # a non-anchor tap: always zero input
                for out, (ri, rj) in enumerate(((0, 1), (1, 0))):  # the output's row/col parity
                    si, sj = ri + di, rj + dj              # source offset from the grid origin
                    src = si % 2                          # 0: (even, even), 1: (odd, odd)
                    k[out * c:(out + 1) * c, src * m:(src + 1) * m, si // 2 + 1, sj // 2 + 1] = w[:, :, u, v]
        return k

    def __call__(self, anchors, hyper_raw) -> np.ndarray:
        """Raw (scales, means) parameters of the non-anchors, ``(1, 2M, n)``, in the row-major
        order of the non-anchor positions of ``anchors`` (``(1, M, h, w)``, ``h`` and ``w``
        even)."""
        anchors = np.asarray(anchors, dtype=np.float64)
        hyper_raw = np.asarray(hyper_raw, dtype=np.float64)
        h, w = anchors.shape[2:]
        if h % 2 or w % 2:
            raise ValueError("the checkerboard context needs an even latent size")
        a = _hwc(to_fixed(anchors))
        lattices = np.concatenate([a[0::2, 0::2], a[1::2, 1::2]], axis=2)
        acc = conv2d(lattices, self.sublattice_kernel, None, 1, 1)
        c = acc.shape[2] // 2
        full = np.zeros((h, w, c))
        full[0::2, 1::2] = acc[:, :, :c]
        full[1::2, 0::2] = acc[:, :, c:]
        nonanchor = ~anchor_mask(h, w)
        acc = full[nonanchor] + self.pred_bias                       # (n, C)
        ctx = np.clip(np.floor(acc * 2.0 ** (ACT_FRAC_BITS - self.pred_acc_bits)), -ACT_LIMIT, ACT_LIMIT)
        raw = hyper_raw[0][:, nonanchor].T                            # (n, 2M)
        raw_in = floored_input(raw, self.scale_floor)  # float64 max, then fixed point as every input
        merged_in = np.concatenate([to_fixed(raw_in), ctx], axis=1)[:, None, :]   # (n, 1, C)
        correction = self.merge.run(merged_in, activate_last=False)[:, 0, :]
        return exact_sum(raw, correction).T[None]


def exact_sum(raw: np.ndarray, correction: np.ndarray) -> np.ndarray:
    """``(floor(raw * 2^32) + floor(correction * 2^32)) * 2^-32``, both terms clamped to
    ``|v| <= 2^20`` first: an exact float64 sum, equal to ``raw + correction`` whenever both
    have at most 32 fractional bits (so a zero correction leaves ``raw`` as it is)."""
    scale = 2.0 ** SUM_FRAC_BITS

    def fixed(v: np.ndarray) -> np.ndarray:
        return np.floor(np.clip(v, -SUM_LIMIT, SUM_LIMIT) * scale)

    return (fixed(raw) + fixed(correction)) / scale


def floored_input(raw: np.ndarray, scale_floor: float | None) -> np.ndarray:
    """``raw`` (``(n, 2M)``: scales, then means) with the scales raised to ``scale_floor``
    (float64 max), as a merging network sees them; unchanged when there is no floor."""
    if scale_floor is None:
        return raw
    m = raw.shape[1] // 2
    return np.concatenate([np.maximum(raw[:, :m], scale_floor), raw[:, m:]], axis=1)


PATCH_BLOCK = 2048  # positions per block of conv3x3_at (a 192-channel block: 27 MiB of patches)


def conv3x3_at(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, positions: np.ndarray,
               tap_channels=None) -> np.ndarray:
    """A 3x3 convolution (stride 1, zero padding 1) of ``x`` (``(H, W, Cin)``) with a
    torch-layout ``weight`` (``(Cout, Cin, 3, 3)``), evaluated only at ``positions`` (boolean
    ``(H, W)``); returns ``(n, Cout)`` in C-order of the positions. Exact for integer inputs,
    as :func:`lcodec.runtime.ops.conv2d`.

    ``tap_channels`` (3 x 3 counts, row-major taps; default: all ``Cin`` everywhere) says that,
    seen through tap ``(u, v)``, only the first ``tap_channels[u][v]`` channels of ``x`` can be
    nonzero: the other products are zero and are left out, which changes no integer."""
    cout, cin = weight.shape[:2]
    counts = np.full((3, 3), cin) if tap_channels is None else np.minimum(np.asarray(tap_channels), cin)
    taps = [(u, v, int(counts[u, v])) for u in range(3) for v in range(3) if counts[u, v] > 0]
    rows, cols = np.nonzero(positions)
    out = np.empty((len(rows), cout))
    if not taps:
        out[:] = bias
        return out
    padded = np.pad(x[:, :, :max(n for _, _, n in taps)], ((1, 1), (1, 1), (0, 0)))
    wmat = np.concatenate([weight[:, :n, u, v].T for u, v, n in taps]).astype(x.dtype)
    for start in range(0, len(rows), PATCH_BLOCK):  # bounds the patch matrix's memory
        r, c = rows[start:start + PATCH_BLOCK], cols[start:start + PATCH_BLOCK]
        patches = np.concatenate([padded[r + u, c + v, :n] for u, v, n in taps], axis=1)
        np.matmul(patches, wmat, out=out[start:start + len(r)])
        out[start:start + len(r)] += bias
    return out


class ExactGroupPass:
    """The integer twin of one :class:`lcodec.models.grouped_context.GroupPassNetwork`.

    ``pred`` (one 3x3 convolution, stride 1, padding 1) runs on the fixed-point decoded
    latents; its accumulator is rescaled to activations without a nonlinearity and
    concatenated after the (floored) base parameters; the 1x1 ``merge`` layers give the
    correction. The convolution is evaluated at the pass's positions only, and of the input
    channels only those already decoded where each tap looks: the same integers, less work.
    """

    def __init__(self, tensors: dict, prefix: str) -> None:
        pred = ExactSequential(tensors, f"{prefix}.pred")
        self.merge = ExactSequential(tensors, f"{prefix}.merge")
        if len(pred.layers) != 1:
            raise ValueError(f"{prefix}.pred must be one convolution")
        self.w, self.b, transposed, stride, pad, _, self.acc_bits, _ = pred.layers[0]
        if transposed or stride != 1 or pad != 1 or self.w.shape[2:] != (3, 3):
            raise ValueError(f"{prefix}.pred must be a 3x3 convolution with padding 1")

    def __call__(self, decoded_hwc: np.ndarray, own: int, other: int, positions: np.ndarray,
                 base_in: np.ndarray) -> np.ndarray:
        """Correction ``(n, 2 * group size)`` at the ``positions`` (boolean ``(h, w)``, C-order:
        one colour of the checkerboard) from ``decoded_hwc`` (fixed-point ``(h, w, M)``) and
        ``base_in`` (``(n, 2M)``, float64). ``decoded_hwc`` may be nonzero only in its first
        ``own`` channels at positions of the pass's colour and its first ``other`` channels at
        the other colour's (the four orthogonal taps see the other colour)."""
        taps = [[own if (u + v) % 2 == 0 else other for v in range(3)] for u in range(3)]
        acc = conv3x3_at(decoded_hwc, self.w, self.b, positions, taps)
        ctx = np.clip(np.floor(acc * 2.0 ** (ACT_FRAC_BITS - self.acc_bits)), -ACT_LIMIT, ACT_LIMIT)
        merged_in = np.concatenate([to_fixed(base_in), ctx], axis=1)[:, None, :]
        return self.merge.run(merged_in, activate_last=False)[:, 0, :]


class ExactGroupedContext:
    """The integer networks of the ``grouped`` family (:mod:`lcodec.models.grouped_context`):
    the checkerboard context (:class:`ExactContext`, under ``exact.ctx``) and one
    :class:`ExactGroupPass` per group after the first in each checkerboard pass (under
    ``exact.grp.anchor.<g-1>`` and ``exact.grp.nonanchor.<g-1>``).

    Arrays here are in the *coding order* of the channels (``channel_order``), except where
    a method says otherwise.
    """

    def __init__(self, tensors: dict, groups, channel_order, scale_floor: float | None = None) -> None:
        self.groups = [int(g) for g in groups]
        self.order = np.asarray([int(c) for c in channel_order], dtype=np.int64)
        m = len(self.order)
        if sorted(self.order.tolist()) != list(range(m)) or sum(self.groups) != m or min(self.groups) < 1:
            raise ValueError("groups and channel_order do not describe the latent channels")
        self.scale_floor = scale_floor
        self.checkerboard = ExactContext(tensors, scale_floor=scale_floor)
        self.anchor_nets = [ExactGroupPass(tensors, f"exact.grp.anchor.{i}") for i in range(len(groups) - 1)]
        self.nonanchor_nets = [ExactGroupPass(tensors, f"exact.grp.nonanchor.{i}")
                               for i in range(len(groups) - 1)]
        for net in self.anchor_nets + self.nonanchor_nets:
            if net.w.shape[1] != m:
                raise ValueError("a group pass network does not take the M latent channels")

    def bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every group in the coding order."""
        stops = np.cumsum(self.groups).tolist()
        return list(zip([0] + stops[:-1], stops))

    def group_params(self, anchors: bool, g: int, decoded: np.ndarray, base: np.ndarray,
                     positions: np.ndarray) -> np.ndarray:
        """Raw ``(scales, means)`` ``(n, 2 * size)`` of group ``g`` in an anchor or a non-anchor
        pass at ``positions``: ``base`` (``(n, 2M)``, coding order: the pass's parameters
        without the group context), corrected from ``decoded`` (``(1, M, h, w)``, coding
        order, zeros where nothing is decoded yet) for ``g > 0``."""
        lo, hi = self.bounds()[g]
        m = len(self.order)
        raw = np.concatenate([base[:, lo:hi], base[:, m + lo:m + hi]], axis=1)
        if g == 0:
            return raw
        net = (self.anchor_nets if anchors else self.nonanchor_nets)[g - 1]
        # decoded so far: the earlier groups at the pass's own colour; every channel at the
        # anchors in a non-anchor pass, nothing at the non-anchors in an anchor pass
        correction = net(_hwc(to_fixed(decoded[:, :lo if anchors else m])), lo, 0 if anchors else m,
                         positions, floored_input(base, self.scale_floor))
        return exact_sum(raw, correction)

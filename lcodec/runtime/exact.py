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

    SUM_FRAC_BITS = 32
    SUM_LIMIT = float(2 ** 20)

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
        raw_in = raw
        if self.scale_floor is not None:  # float64 max, then the same floor as every input
            m = raw.shape[1] // 2
            raw_in = np.concatenate([np.maximum(raw[:, :m], self.scale_floor), raw[:, m:]], axis=1)
        merged_in = np.concatenate([to_fixed(raw_in), ctx], axis=1)[:, None, :]   # (n, 1, C)
        correction = self.merge.run(merged_in, activate_last=False)[:, 0, :]
        scale = 2.0 ** self.SUM_FRAC_BITS
        lim = self.SUM_LIMIT

        def fixed(v: np.ndarray) -> np.ndarray:
            return np.floor(np.clip(v, -lim, lim) * scale)

        return ((fixed(raw) + fixed(correction)) / scale).T[None]

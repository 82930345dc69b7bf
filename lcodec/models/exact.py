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
  integer below ``2^48 < 2^53`` (fan-in under ``2^13``), so the result is exact whatever the summation order — and
  rescales by a power of two with ``floor``;
* the leaky ReLU is ``a`` for ``a >= 0`` and ``floor(41 a / 4096)`` (slope ~0.01) otherwise;
* the last layer's accumulator, times ``2^-(f + g)`` (exact), gives scales and means.

Quantizing happens once, at export (:func:`quantize_model`); the integers are stored in the
weights file and :class:`ExactSequential` / :class:`ExactContext` evaluate them (on the CPU).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACT_FRAC_BITS = 10
WEIGHT_BITS = 12
ACT_LIMIT = float(2 ** 23 - 1)
INPUT_LIMIT = float(2 ** 15)
LEAKY_NUM, LEAKY_SHIFT = 41, 12  # 41 / 4096 = 0.010009...


MAX_WEIGHT_FRAC_BITS = 22  # keeps every output at most 32 fractional bits (10 + 22)


def _weight_frac_bits(w: torch.Tensor) -> int:
    peak = float(w.abs().max())
    if peak == 0:
        return 0
    return min(MAX_WEIGHT_FRAC_BITS, int(math.floor(math.log2((2 ** WEIGHT_BITS - 1) / peak))))


def _quantize_layer(layer: nn.Module, f_in: int, last: bool) -> tuple[dict[str, torch.Tensor], int]:
    """Integer weight, bias and meta of one conv layer; returns them and the output's frac bits."""
    w = layer.weight.detach().double()
    g = _weight_frac_bits(w)
    f_out = f_in + g if last else ACT_FRAC_BITS
    meta = [int(isinstance(layer, nn.ConvTranspose2d)), layer.stride[0], layer.padding[0],
            getattr(layer, "output_padding", (0,))[0], f_in + g, f_out]
    return {"weight": torch.round(w * 2.0 ** g).to(torch.int16),
            "bias": torch.round(layer.bias.detach().double() * 2.0 ** (f_in + g)).to(torch.int64),
            "meta": torch.tensor(meta, dtype=torch.int64)}, f_out


def quantize_sequential(seq: nn.Module, prefix: str, input_frac_bits: int = 0) -> dict[str, torch.Tensor]:
    """Integer tensors of a Sequential of Conv2d / ConvTranspose2d / LeakyReLU layers (or of
    one conv layer) whose input has ``input_frac_bits`` fractional bits."""
    out: dict[str, torch.Tensor] = {}
    layers = [m for m in (seq if isinstance(seq, nn.Sequential) else [seq])
              if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    f_in = input_frac_bits
    for i, layer in enumerate(layers):
        tensors, f_in = _quantize_layer(layer, f_in, last=i == len(layers) - 1)
        out.update({f"{prefix}.{i}.{k}": v for k, v in tensors.items()})
    return out


def quantize_model(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every integer network a model family needs at coding time, under ``exact.*``."""
    out = quantize_sequential(model.h_s, "exact.h_s")
    if hasattr(model, "context_layers"):
        pred, merge = model.context_layers()
        out.update(quantize_sequential(pred, "exact.ctx.pred", ACT_FRAC_BITS))
        out.update(quantize_sequential(merge, "exact.ctx.merge", ACT_FRAC_BITS))
    return out


def to_fixed(x: torch.Tensor, frac_bits: int = ACT_FRAC_BITS) -> torch.Tensor:
    """``floor(x * 2^frac_bits)``, clamped to the activation range (exact for float64 ``x``)."""
    return torch.floor(x.double() * 2.0 ** frac_bits).clamp(-ACT_LIMIT, ACT_LIMIT)


class ExactSequential:
    """Evaluates integer layers made by :func:`quantize_sequential`, exactly, on the CPU."""

    def __init__(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        self.layers = []
        i = 0
        while f"{prefix}.{i}.weight" in tensors:
            meta = [int(v) for v in tensors[f"{prefix}.{i}.meta"]]
            w = tensors[f"{prefix}.{i}.weight"].double()
            b = tensors[f"{prefix}.{i}.bias"].double()
            if not (w.abs().max() < 2 ** WEIGHT_BITS and torch.equal(w, torch.round(w))
                    and torch.equal(b, torch.round(b)) and b.abs().max() < 2 ** 40):
                raise ValueError(f"layer {i} of {prefix} is not a valid integer layer")
            self.layers.append((w, b, *meta))
            i += 1
        if not self.layers:
            raise ValueError(f"no integer layers under {prefix!r}")

    def __call__(self, x: torch.Tensor, fixed_input: bool = False) -> torch.Tensor:
        """Float64 output (exact: an integer times a power of two).

        ``x`` holds integers: plain ones (the hyper-latent, clamped to ``|x| <= 2^15``), or
        with ``fixed_input`` fixed-point activations made by :func:`to_fixed`.
        """
        a = x.double() if fixed_input else x.double().clamp(-INPUT_LIMIT, INPUT_LIMIT)
        return self.run(a, activate_last=False)

    def run(self, a: torch.Tensor, activate_last: bool) -> torch.Tensor:
        """Apply the layers to integer activations ``a`` (leaky ReLU between layers).

        The last layer's accumulator is returned as its exact float64 value, or, with
        ``activate_last``, rescaled to ``ACT_FRAC_BITS`` activations (no nonlinearity).
        """
        last = len(self.layers) - 1
        for i, (w, b, transposed, stride, pad, out_pad, acc_bits, f_out) in enumerate(self.layers):
            if transposed:
                acc = F.conv_transpose2d(a, w, b, stride=stride, padding=pad, output_padding=out_pad)
            else:
                acc = F.conv2d(a, w, b, stride=stride, padding=pad)
            if i == last and not activate_last:
                return acc * 2.0 ** -acc_bits
            a = torch.floor(acc * 2.0 ** (ACT_FRAC_BITS - acc_bits))
            if i != last:
                a = torch.where(a >= 0, a, torch.floor(a * (LEAKY_NUM * 2.0 ** -LEAKY_SHIFT)))
            a = a.clamp(-ACT_LIMIT, ACT_LIMIT)
        return a


class ExactContext:
    """The integer twin of the checkerboard context networks (:mod:`.context`).

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

    def __init__(self, tensors: dict[str, torch.Tensor], prefix: str = "exact.ctx",
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
    def _sublattice_kernel(w: torch.Tensor) -> torch.Tensor:
        """``(2C, 2M, 3, 3)``: outputs ``(even, odd)`` then ``(odd, even)`` non-anchors, from
        inputs ``(even, even)`` then ``(odd, odd)`` anchors, on the half-resolution grid."""
        c, m = w.shape[:2]
        k = torch.zeros(2 * c, 2 * m, 3, 3, dtype=w.dtype)
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

    def __call__(self, anchors: torch.Tensor, hyper_raw: torch.Tensor) -> torch.Tensor:
        """Raw (scales, means) parameters of the non-anchors, ``(1, 2M, n)``, in the row-major
        order of the non-anchor positions of ``anchors`` (``(1, M, h, w)``, ``h`` and ``w``
        even)."""
        h, w = anchors.shape[2:]
        if h % 2 or w % 2:
            raise ValueError("the checkerboard context needs an even latent size")
        a = to_fixed(anchors)
        lattices = torch.cat([a[:, :, 0::2, 0::2], a[:, :, 1::2, 1::2]], dim=1)
        acc = F.conv2d(lattices, self.sublattice_kernel, padding=1)
        c = acc.shape[1] // 2
        full = torch.zeros(1, c, h, w, dtype=torch.float64)
        full[:, :, 0::2, 1::2] = acc[:, :c]
        full[:, :, 1::2, 0::2] = acc[:, c:]
        nonanchor = (torch.arange(h).view(-1, 1) + torch.arange(w).view(1, -1)) % 2 == 1
        acc = full[:, :, nonanchor] + self.pred_bias.view(1, -1, 1)
        ctx = torch.floor(acc * 2.0 ** (ACT_FRAC_BITS - self.pred_acc_bits)).clamp(-ACT_LIMIT, ACT_LIMIT)
        raw = hyper_raw[:, :, nonanchor]
        raw_in = raw
        if self.scale_floor is not None:  # float64 max, then the same floor as every input
            m = raw.shape[1] // 2
            raw_in = torch.cat([raw[:, :m].clamp_min(self.scale_floor), raw[:, m:]], dim=1)
        merged_in = torch.cat([to_fixed(raw_in), ctx], dim=1).unsqueeze(-1)
        correction = self.merge.run(merged_in, activate_last=False).squeeze(-1)
        scale = 2.0 ** self.SUM_FRAC_BITS
        lim = self.SUM_LIMIT

        def fixed(v: torch.Tensor) -> torch.Tensor:
            return torch.floor(v.clamp(-lim, lim) * scale)

        return (fixed(raw) + fixed(correction)) / scale

"""An integer version of the hyper-synthesis whose outputs are bit-exact on every machine.

The entropy parameters (the scale of every latent, via its table index) must be identical in
encoder and decoder, across CPUs, thread counts, BLAS libraries and years. Following Ballé,
Johnston & Minnen (2019, "Integer networks for data compression with latent-variable
models"), the hyper-synthesis runs on integers:

* weights are integers ``W = round(w * 2^g)`` (``|W| < 2^12``, one ``g`` per layer) and
  biases integers in the accumulator's scale;
* activations are integers with ``ACT_FRAC_BITS`` fractional bits, clamped to ``|a| < 2^23``;
* a layer accumulates ``conv(a, W) + B`` in float64 — every product and partial sum is an
  integer below ``2^46 < 2^53``, so the result is exact whatever the summation order — and
  rescales by a power of two with ``floor``;
* the leaky ReLU is ``a`` for ``a >= 0`` and ``floor(41 a / 4096)`` (slope ~0.01) otherwise;
* the last layer's accumulator, times ``2^-(f + g)`` (exact), gives scales and means.

Quantizing happens once, at export (:func:`quantize_sequential`); the integers are stored in
the weights file and :class:`ExactSequential` evaluates them (on the CPU).
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


def _weight_frac_bits(w: torch.Tensor) -> int:
    peak = float(w.abs().max())
    return 0 if peak == 0 else int(math.floor(math.log2((2 ** WEIGHT_BITS - 1) / peak)))


def quantize_sequential(seq: nn.Sequential, prefix: str) -> dict[str, torch.Tensor]:
    """Integer tensors of a Sequential of Conv2d / ConvTranspose2d / LeakyReLU layers."""
    out: dict[str, torch.Tensor] = {}
    layers = [m for m in seq if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    f_in = 0
    for i, layer in enumerate(layers):
        w = layer.weight.detach().double()
        g = _weight_frac_bits(w)
        last = i == len(layers) - 1
        f_out = f_in + g if last else ACT_FRAC_BITS
        out[f"{prefix}.{i}.weight"] = torch.round(w * 2.0 ** g).to(torch.int16)
        out[f"{prefix}.{i}.bias"] = torch.round(layer.bias.detach().double() * 2.0 ** (f_in + g)).to(torch.int64)
        out[f"{prefix}.{i}.meta"] = torch.tensor(
            [int(isinstance(layer, nn.ConvTranspose2d)), layer.stride[0], layer.padding[0],
             getattr(layer, "output_padding", (0,))[0], f_in + g, f_out], dtype=torch.int64)
        f_in = f_out
    return out


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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Float64 output (exact: an integer times a power of two) for integer input ``x``."""
        a = x.double().clamp(-INPUT_LIMIT, INPUT_LIMIT)
        last = len(self.layers) - 1
        for i, (w, b, transposed, stride, pad, out_pad, acc_bits, f_out) in enumerate(self.layers):
            if transposed:
                acc = F.conv_transpose2d(a, w, b, stride=stride, padding=pad, output_padding=out_pad)
            else:
                acc = F.conv2d(a, w, b, stride=stride, padding=pad)
            if i == last:
                return acc * 2.0 ** -acc_bits
            a = torch.floor(acc * 2.0 ** (f_out - acc_bits))
            a = torch.where(a >= 0, a, torch.floor(a * (LEAKY_NUM * 2.0 ** -LEAKY_SHIFT)))
            a = a.clamp(-ACT_LIMIT, ACT_LIMIT)
        raise AssertionError("unreachable")

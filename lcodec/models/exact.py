"""Quantization of the networks that feed the entropy coder into integer networks, at export.

The integer format and its evaluation are specified in :mod:`lcodec.runtime.exact` (which the
codec runs, with numpy). This module makes the integers from a trained float model: weights
``round(w * 2^g)`` with one ``g`` per layer chosen so that ``|W| < 2^12``, biases in the
accumulator's scale, and a ``meta`` row per layer (transposed, stride, padding, output
padding, accumulator fractional bits, output fractional bits).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..runtime.exact import ACT_FRAC_BITS, WEIGHT_BITS


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
    for kind in ("anchor", "nonanchor"):
        for i, net in enumerate(getattr(model, f"{kind}_nets", ())):
            out.update(quantize_sequential(net.pred, f"exact.grp.{kind}.{i}.pred", ACT_FRAC_BITS))
            out.update(quantize_sequential(net.merge, f"exact.grp.{kind}.{i}.merge", ACT_FRAC_BITS))
    return out

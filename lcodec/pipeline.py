"""The codec pipeline: pixels <-> entropy-coded tile streams, for any model family.

A model family supplies four stages (see :mod:`lcodec.models.hyperprior`): ``analysis`` and
``synthesis`` run on the chosen device in float32 (they only move pixels);
``hyper_analysis`` runs there too (its output ``z`` is transmitted, so it needs no
reproducibility). ``hyper_synthesis`` produces the parameters handed to the entropy coder,
so it runs on the CPU in float64 identically in encoder and decoder; scales become integer
indexes into the scale table by comparison only (no transcendental function at decode).

Symbols: ``z`` is coded as ``round(z)`` with one table per channel; ``y`` as
``round(y - mean)`` with the table of the smallest tabulated scale >= the predicted scale.
Each tile's ``z`` then ``y`` form one range-coded stream.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from .entropy import StreamDecoder, StreamEncoder
from .errors import CorruptStreamError
from .weights import LoadedModel


class CodecPipeline:
    """Encodes and decodes pixel arrays with one loaded model on one device."""

    def __init__(self, loaded: LoadedModel, device: torch.device) -> None:
        self.loaded = loaded
        self.device = device
        # channels-last convolutions measured ~1.6x faster than NCHW on CPU (oneDNN).
        self.model = copy.deepcopy(loaded.model).to(device, memory_format=torch.channels_last).eval()
        self.hyper64 = copy.deepcopy(loaded.model).double().eval()  # CPU, float64
        self.stride = loaded.model.downsampling

    # -- helpers ------------------------------------------------------------------------------
    def _pad(self, pixels: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)[None].float().div_(255)
        h, w = x.shape[2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if ph or pw:  # replicate the borders: cheaper to code than zeros
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x

    def _entropy_params(self, z_symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means (float64) and scale-table indexes of ``y`` from the decoded ``z`` symbols."""
        z = torch.from_numpy(z_symbols.astype(np.float64))
        with torch.inference_mode():
            means, scales = self.hyper64.hyper_synthesis(z)
        table = self.loaded.scale_table
        idx = np.searchsorted(table, scales.numpy(), side="left")
        return means.numpy(), np.minimum(idx, len(table) - 1)

    def _z_table_ids(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.broadcast_to(np.arange(shape[1]).reshape(1, -1, 1, 1), shape)

    def latent_shape(self, height: int, width: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of ``z`` and ``y`` for an image of the given size."""
        m = self.loaded.model
        zh, zw = -(-height // self.stride), -(-width // self.stride)
        return (1, m.N, zh, zw), (1, m.M, zh * 4, zw * 4)

    # -- coding -------------------------------------------------------------------------------
    def encode(self, pixels: np.ndarray, quality: float) -> bytes:
        """One entropy-coded stream for an ``(H, W, 3)`` uint8 array."""
        x = self._pad(pixels).to(self.device, memory_format=torch.channels_last)
        with torch.inference_mode():
            y = self.model.analysis(x, quality)
            z = self.model.hyper_analysis(y)
        y = y.double().cpu().numpy()
        z_sym = np.rint(z.double().cpu().numpy()).astype(np.int64)
        if not (np.isfinite(y).all() and np.isfinite(z.cpu().numpy()).all()):
            raise ValueError("the analysis transform produced non-finite values")
        means, idx = self._entropy_params(z_sym)
        y_sym = np.rint(y - means).astype(np.int64)
        enc = StreamEncoder()
        enc.encode(z_sym, self._z_table_ids(z_sym.shape), self.loaded.z_tables)
        enc.encode(y_sym, idx, self.loaded.y_tables)
        return enc.finish()

    def decode(self, stream: bytes, height: int, width: int, quality: float) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 pixels of one stream."""
        z_shape, y_shape = self.latent_shape(height, width)
        dec = StreamDecoder(stream)
        z_sym = dec.decode(self._z_table_ids(z_shape), self.loaded.z_tables)
        means, idx = self._entropy_params(z_sym)
        if means.shape != y_shape:
            raise CorruptStreamError("latent shape mismatch")
        y_sym = dec.decode(idx, self.loaded.y_tables)
        dec.check_exhausted()
        y_hat = torch.from_numpy((y_sym + means).astype(np.float32))
        y_hat = y_hat.to(self.device, memory_format=torch.channels_last)
        with torch.inference_mode():
            x_hat = self.model.synthesis(y_hat, quality)
            x_hat = x_hat[0, :, :height, :width].clamp(0, 1).mul(255).round()
            return x_hat.to(torch.uint8).permute(1, 2, 0).cpu().numpy()

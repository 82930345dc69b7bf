"""The order and the entropy parameters of one tile's latent symbols, per model family.

Given the exact hyperprior parameters of a tile (the integer hyper-synthesis' output, float64),
a :class:`LatentCoder` writes the tile's latents ``y`` to a range-coded stream and reads them
back:

* ``hyperprior``: one pass; every latent is coded as ``round(y - mean)`` with the table of
  its scale.
* ``context``: two passes over a checkerboard (:mod:`lcodec.models.context`): the anchors
  with the hyperprior's parameters, then the non-anchors with parameters that the integer
  context network (:class:`lcodec.runtime.exact.ExactContext`) computes from the decoded
  anchors. The context sees only the tile's own anchors (zeros beyond its edges), so tiles
  stay independently decodable.

Scales become table indexes by comparison only: the index of the smallest tabulated scale
``>=`` the predicted one. Every value fed to the coder is computed exactly, so the decoder
reproduces the encoder's parameters bit for bit.
"""
from __future__ import annotations

import numpy as np

from .entropy import StreamDecoder, StreamEncoder
from .runtime.exact import anchor_mask
from .weights import LoadedModel


class LatentCoder:
    """Codes the latents of one tile with the tables and integer networks of a loaded model."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.context = loaded.exact_context  # None for the hyperprior family

    def _means_and_indexes(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scales, means = np.split(raw, 2, axis=1)  # the layout of the models' split_params
        table = self.loaded.scale_table
        idx = np.searchsorted(table, scales, side="left")
        return means, np.minimum(idx, len(table) - 1)

    def _nonanchor_params(self, anchors: np.ndarray, hyper_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means and indexes ``(1, M, n)`` of the non-anchors (row-major positions)."""
        raw = self.context(anchors, hyper_raw)
        return self._means_and_indexes(raw)

    def encode(self, enc: StreamEncoder, y: np.ndarray, hyper_raw: np.ndarray) -> np.ndarray:
        """Append the symbols of ``y`` (float64, ``(1, M, h, w)``) to ``enc``; return ``y_hat``."""
        tables = self.loaded.y_tables
        means, idx = self._means_and_indexes(hyper_raw)
        if self.context is None:
            sym = np.rint(y - means)
            enc.encode(sym.astype(np.int64), idx, tables)
            return sym + means
        a = anchor_mask(y.shape[2], y.shape[3])
        y_hat = np.zeros_like(y)
        sym = np.rint(y[:, :, a] - means[:, :, a])
        enc.encode(sym.astype(np.int64), idx[:, :, a], tables)
        y_hat[:, :, a] = sym + means[:, :, a]
        means2, idx2 = self._nonanchor_params(y_hat, hyper_raw)
        sym2 = np.rint(y[:, :, ~a] - means2)
        enc.encode(sym2.astype(np.int64), idx2, tables)
        y_hat[:, :, ~a] = sym2 + means2
        return y_hat

    def decode(self, dec: StreamDecoder, hyper_raw: np.ndarray) -> np.ndarray:
        """Read one tile's symbols from ``dec``; return ``y_hat`` (float64, ``(1, M, h, w)``)."""
        tables = self.loaded.y_tables
        means, idx = self._means_and_indexes(hyper_raw)
        if self.context is None:
            return dec.decode(idx, tables) + means
        a = anchor_mask(means.shape[2], means.shape[3])
        y_hat = np.zeros(means.shape)
        y_hat[:, :, a] = dec.decode(idx[:, :, a], tables) + means[:, :, a]
        means2, idx2 = self._nonanchor_params(y_hat, hyper_raw)
        y_hat[:, :, ~a] = dec.decode(idx2, tables) + means2
        return y_hat

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
* ``grouped``: the checkerboard's two passes, each split into one pass per channel group
  (:mod:`lcodec.models.grouped_context`); a group after the first is coded with parameters
  corrected from everything the tile has decoded so far
  (:class:`lcodec.runtime.exact.ExactGroupedContext`).

Scales become table indexes by comparison only: the index of the smallest tabulated scale
``>=`` the predicted one. Every value fed to the coder is computed exactly, so the decoder
reproduces the encoder's parameters bit for bit. Encoding and decoding walk the same passes
(:meth:`LatentCoder._passes`); only what happens to each pass's symbols differs.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .entropy import StreamDecoder, StreamEncoder
from .runtime.exact import anchor_mask
from .weights import LoadedModel

# code(means, indexes, channels, positions) -> y_hat of one pass, (1, len(channels), n): the
# pass's latents are ``y[0, channels][:, positions]`` (C-order), with these means and tables.
PassCoder = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class LatentCoder:
    """Codes the latents of one tile with the tables and integer networks of a loaded model."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.context = loaded.exact_context  # None for the hyperprior family
        self.grouped = loaded.exact_grouped  # ``grouped`` family only

    def _means_and_indexes(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scales, means = np.split(raw, 2, axis=1)  # the layout of the models' split_params
        table = self.loaded.scale_table
        idx = np.searchsorted(table, scales, side="left")
        return means, np.minimum(idx, len(table) - 1)

    def encode(self, enc: StreamEncoder, y: np.ndarray, hyper_raw: np.ndarray) -> np.ndarray:
        """Append the symbols of ``y`` (float64, ``(1, M, h, w)``) to ``enc``; return ``y_hat``."""
        tables = self.loaded.y_tables

        def code(means, idx, channels, positions):
            sym = np.rint(y[:, channels][:, :, positions] - means)
            enc.encode(sym.astype(np.int64), idx, tables)
            return sym + means

        return self._passes(hyper_raw, code)

    def decode(self, dec: StreamDecoder, hyper_raw: np.ndarray) -> np.ndarray:
        """Read one tile's symbols from ``dec``; return ``y_hat`` (float64, ``(1, M, h, w)``)."""
        tables = self.loaded.y_tables

        def code(means, idx, channels, positions):
            return dec.decode(idx, tables) + means

        return self._passes(hyper_raw, code)

    def _passes(self, hyper_raw: np.ndarray, code: PassCoder) -> np.ndarray:
        """Walk the family's passes over one tile, coding each with ``code``; return ``y_hat``."""
        if self.grouped is not None:
            return self._grouped_passes(hyper_raw, code)
        m, h, w = hyper_raw.shape[1] // 2, hyper_raw.shape[2], hyper_raw.shape[3]
        every = np.arange(m)
        means, idx = self._means_and_indexes(hyper_raw)
        if self.context is None:
            flat = (1, m, h * w)
            return code(means.reshape(flat), idx.reshape(flat), every,
                        np.ones((h, w), dtype=bool)).reshape(1, m, h, w)
        a = anchor_mask(h, w)
        y_hat = np.zeros((1, m, h, w))
        y_hat[:, :, a] = code(means[:, :, a], idx[:, :, a], every, a)
        means2, idx2 = self._means_and_indexes(self.context(y_hat, hyper_raw))
        y_hat[:, :, ~a] = code(means2, idx2, every, ~a)
        return y_hat

    def _grouped_passes(self, hyper_raw: np.ndarray, code: PassCoder) -> np.ndarray:
        """Anchors group by group, then non-anchors group by group (coding channel order)."""
        ctx = self.grouped
        m, h, w = hyper_raw.shape[1] // 2, hyper_raw.shape[2], hyper_raw.shape[3]
        order = ctx.order
        both = np.concatenate([order, order + m])   # raw rows (scales, means) in coding order
        a = anchor_mask(h, w)
        decoded = np.zeros((1, m, h, w))            # coding order, zeros where not decoded yet
        for anchors, positions in ((True, a), (False, ~a)):
            if anchors:
                base = hyper_raw[0][both][:, positions].T                    # (n, 2M)
            else:
                in_model_order = np.zeros_like(decoded)
                in_model_order[0, order] = decoded[0]
                base = ctx.checkerboard(in_model_order, hyper_raw)[0][both].T
            for g, (lo, hi) in enumerate(ctx.bounds()):
                raw = ctx.group_params(anchors, g, decoded, base, positions)
                means, idx = self._means_and_indexes(raw.T[None])
                decoded[0, lo:hi][:, positions] = code(means, idx, order[lo:hi], positions)[0]
        y_hat = np.zeros_like(decoded)
        y_hat[0, order] = decoded[0]
        return y_hat

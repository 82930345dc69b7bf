"""Probability tables counted on training photos: ``z`` per quality level, ``y`` per scale.

The tables built from the model's own densities (:func:`lcodec.train.export.build_tables`)
are what training assumed, not what the codec meets:

* ``z``: the learned density is one density per channel for every quality level, but
  ``z = h_a(gain_k * g_a(x))`` grows with the level's gain: at ``-q 1`` it is narrower than
  the shared density, at ``-q 8`` wider, and each level pays for the other's tails. Tables per
  level (``L x N``, table ``k * N + c`` for channel ``c`` at level ``k``; header flag 0x0001 in
  ``docs/format.md``) fit each level.
* ``y``: a latent is coded as ``round(y - mean)`` with the quantized Gaussian of the first
  tabulated scale at or above its predicted one. Training modelled ``y + noise``, not rounded
  values, and the predicted scales are not exact: the symbols' real frequencies per table
  differ from the Gaussian's. Counted tables (same tables, same ranges, same escapes; only
  the frequencies change) need no format change.

Both are counted by running the codec itself (:class:`lcodec.pipeline.CodecPipeline`, its
integer networks included) on the training photos at every level, and smoothed towards the
model's densities so that a value the photos never produced keeps its probability mass in
proportion. The networks, the symbols and the decoded pixels do not change; only the streams
get shorter. Measured on grouped v3 (session 25): ``docs/model-card.md``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..entropy.tables import TOTAL, TableSet, trimmed_tables
from ..pipeline import CodecPipeline
from ..tiling import image_rect
from ..weights import LoadedModel
from .data import list_images, load_rgb, split_holdout

# The model's density counts as this many samples of each table in the smoothed ones. The
# 230 training photos give ~27,000 samples per channel and level of z, and from a few to
# millions per y table. Measured on grouped v3: for z, 1, 16, 64, 256 and 1024 give the same
# held-out bits within 0.1% of z.
PRIOR_SAMPLES = 64.0


class SymbolCounter:
    """Counts the symbols an encoder would be handed (``encode(symbols, table_ids, tables)``,
    the interface of :class:`lcodec.entropy.StreamEncoder`), per table: ``counts[t]`` has one
    entry per value table ``t`` covers and a last one for its escapes."""

    def __init__(self, tables: TableSet) -> None:
        self.tables = tables
        self._starts = tables.starts
        self.flat = np.zeros(len(tables.freqs), dtype=np.int64)  # laid out as the frequencies

    def encode(self, symbols: np.ndarray, table_ids: np.ndarray, tables: TableSet) -> None:
        if tables is not self.tables:
            raise ValueError("symbols of another table set")
        ids = np.asarray(table_ids, dtype=np.int64).ravel()
        rel = np.asarray(symbols, dtype=np.int64).ravel() - self.tables.offsets[ids]
        lengths = self.tables.lengths[ids].astype(np.int64)
        rel = np.where((rel >= 0) & (rel < lengths), rel, lengths)  # outside: the escape bin
        self.flat += np.bincount(self._starts[ids] + rel, minlength=len(self.flat))

    def counts(self, t: int) -> np.ndarray:
        s = int(self._starts[t])
        return self.flat[s:s + int(self.tables.lengths[t]) + 1]


def count_symbols(loaded: LoadedModel, images: list[np.ndarray], grid: int) -> tuple[np.ndarray, SymbolCounter]:
    """Code ``images`` (whole, one tile each) at every quality level with ``loaded`` and count
    ``round(z)`` per level and channel on ``[-grid, grid]`` (values beyond at its ends:
    ``int64 (L, N, 2 * grid + 1)``) and the ``y`` symbols per table (:class:`SymbolCounter`)."""
    pipe = CodecPipeline(loaded)
    levels, n = loaded.transforms.num_levels, loaded.N
    z_counts = np.zeros((levels, n, 2 * grid + 1), dtype=np.int64)
    y_counter = SymbolCounter(loaded.y_tables)
    for pixels in images:
        h, w = pixels.shape[:2]
        full = image_rect(w, h)
        memo: dict = {}  # the analysis runs once per photo unless it depends on the level
        for k in range(levels):
            y = pipe.analyse(pixels, float(k + 1), full, full, memo)
            z = pipe.hyper_analyse(y[0], float(k + 1), [full], full)
            sym = np.clip(z[0], -grid, grid) + grid
            for c in range(n):
                z_counts[k, c] += np.bincount(sym[c].ravel(), minlength=2 * grid + 1)
            pipe.latents.encode(y_counter, y.astype(np.float64), pipe.hyper_params(z, full, full))
    return z_counts, y_counter


def level_z_tables(counts: np.ndarray, learned_pmf: np.ndarray, grid: int,
                   prior_samples: float = PRIOR_SAMPLES) -> TableSet:
    """``L x N`` tables (level-major) from ``counts`` (:func:`count_symbols`), each the counted
    frequencies plus ``prior_samples`` samples spread as the learned density ``learned_pmf``
    (``(N, 2 * grid + 1)``, its pmf on the same grid), trimmed like the shared tables."""
    levels, channels, width = counts.shape
    if learned_pmf.shape != (channels, width):
        raise ValueError(f"learned pmf of shape {learned_pmf.shape} does not match counts {counts.shape}")
    prior = learned_pmf / learned_pmf.sum(axis=1, keepdims=True)
    smoothed = counts.astype(np.float64) + prior_samples * prior[None]
    return trimmed_tables(smoothed.reshape(levels * channels, width), -grid)


def counted_y_tables(counter: SymbolCounter, prior_samples: float = PRIOR_SAMPLES) -> TableSet:
    """The counter's tables with the counted frequencies, each plus ``prior_samples`` samples
    spread as the table itself (its offsets, ranges and escape bins unchanged)."""
    tables = counter.tables
    pmfs, escapes = [], []
    for t in range(tables.size):
        p = counter.counts(t) + prior_samples * tables.table(t).astype(np.float64) / TOTAL
        p = p / p.sum()
        pmfs.append(p[:-1])
        escapes.append(p[-1])
    return TableSet.from_pmfs(pmfs, [int(o) for o in tables.offsets], escapes)


def photo_counted_tables(loaded: LoadedModel, learned_z_pmf: np.ndarray, data: Path,
                         grid: int) -> dict[str, TableSet]:
    """``{"zl": per-level z tables, "y": counted y tables}`` of ``loaded`` (weights with the
    densities' tables, e.g. being exported) counted on the training part of the photo folder
    ``data`` (the photos that training's validation holds out are left out here too)."""
    train, _ = split_holdout(list_images(data))
    if not train:
        raise ValueError(f"no training photos in {data}")
    z_counts, y_counter = count_symbols(loaded, [load_rgb(p) for p in train], grid)
    return {"zl": level_z_tables(z_counts, learned_z_pmf, grid), "y": counted_y_tables(y_counter)}

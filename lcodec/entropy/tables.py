"""Integer probability tables: how they are built from densities, stored and looked up.

A :class:`TableSet` holds ``T`` discrete distributions. Table ``t`` covers the integers
``offset[t] .. offset[t] + length[t] - 1`` with one frequency each, followed by one *escape*
frequency for every value outside that range (coded further by :mod:`.coder`). All
frequencies are integers >= 1 that sum to ``2 ** PRECISION`` per table, so a table means the
same thing on every machine, whatever floating-point arithmetic produced it.

Builders (``from_pmfs``, ``gaussian_tables``) run only when weights are exported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PRECISION = 16
TOTAL = 1 << PRECISION


def quantize_pmf(pmf: np.ndarray, escape_mass: float) -> np.ndarray:
    """Integer frequencies (>= 1, summing to ``TOTAL``) for ``pmf`` plus a trailing escape bin."""
    p = np.append(np.clip(np.asarray(pmf, dtype=np.float64), 0, None), max(escape_mass, 0.0))
    p = p / p.sum()
    n = len(p)
    if n > TOTAL // 2:
        raise ValueError(f"table of {n} bins does not fit precision {PRECISION}")
    freq = np.maximum(1, np.floor(p * (TOTAL - n)).astype(np.int64) + 1)
    # Hand the remaining mass to the bins whose quantization error is largest, deterministically.
    deficit = TOTAL - int(freq.sum())
    if deficit > 0:
        err = p * TOTAL - freq
        order = np.argsort(-err, kind="stable")
        freq[order[:deficit]] += 1
    elif deficit < 0:
        order = np.argsort(-freq, kind="stable")
        i = 0
        while deficit < 0:
            k = order[i % n]
            if freq[k] > 1:
                freq[k] -= 1
                deficit += 1
            i += 1
    assert int(freq.sum()) == TOTAL and freq.min() >= 1
    return freq.astype(np.uint32)


@dataclass(frozen=True)
class TableSet:
    """``T`` integer distributions with escape bins, stored as flat arrays.

    Attributes:
        offsets: ``int32[T]``, the smallest value each table covers.
        lengths: ``int32[T]``, how many values each table covers (its escape bin excluded).
        freqs: ``uint32[sum(lengths + 1)]``, the frequencies of all tables, concatenated.
    """

    offsets: np.ndarray
    lengths: np.ndarray
    freqs: np.ndarray

    def __post_init__(self) -> None:
        if not (len(self.offsets) == len(self.lengths) and len(self.freqs) == int((self.lengths + 1).sum())):
            raise ValueError("inconsistent table set arrays")

    @property
    def size(self) -> int:
        return len(self.offsets)

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths + 1)[:-1]]).astype(np.int64)

    def table(self, t: int) -> np.ndarray:
        s = int(self.starts[t])
        return self.freqs[s:s + int(self.lengths[t]) + 1]

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.offsets": self.offsets, f"{prefix}.lengths": self.lengths,
                f"{prefix}.freqs": self.freqs}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> "TableSet":
        return cls(np.asarray(arrays[f"{prefix}.offsets"], dtype=np.int32),
                   np.asarray(arrays[f"{prefix}.lengths"], dtype=np.int32),
                   np.asarray(arrays[f"{prefix}.freqs"], dtype=np.uint32))

    @classmethod
    def from_pmfs(cls, pmfs: list[np.ndarray], offsets: list[int], escape_masses: list[float]) -> "TableSet":
        freqs = [quantize_pmf(p, e) for p, e in zip(pmfs, escape_masses)]
        return cls(np.asarray(offsets, dtype=np.int32),
                   np.asarray([len(p) for p in pmfs], dtype=np.int32),
                   np.concatenate(freqs).astype(np.uint32))


# Scales per table set of the weights exported from 2026-12-02 on (earlier weights: 64, kept
# as exported; a weights file carries its own scale table). A latent is coded with the first
# scale >= its own, so each step up the table costs bits: grouped v2's networks on 6 Kodak
# images, whole files, q1 / q2 / q4 / q6 / q8: 128 scales -0.41 / -0.39 / -0.34 / -0.21 /
# -0.14% bytes against 64, 256 scales -0.51 / -0.49 / -0.44 / -0.27 / -0.17% (same symbols,
# same pixels).
SCALE_LEVELS = 256


def default_scale_table(levels: int = SCALE_LEVELS, smin: float = 0.11, smax: float = 256.0) -> np.ndarray:
    """Log-spaced Gaussian scales; a latent with scale ``s`` uses the first entry ``>= s``."""
    return np.exp(np.linspace(math.log(smin), math.log(smax), levels))


def gaussian_tables(scale_table: np.ndarray, tail_sigmas: float = 6.0) -> TableSet:
    """Tables of zero-mean quantized Gaussians, one per scale, covering ``+-tail_sigmas`` sigma."""
    pmfs, offsets, escapes = [], [], []
    for s in scale_table:
        k = int(math.ceil(tail_sigmas * s)) + 1
        v = np.arange(-k, k + 1, dtype=np.float64)
        cdf = np.array([0.5 * math.erfc(-(x + 0.5) / (s * math.sqrt(2))) for x in v])
        cdf_lo = np.array([0.5 * math.erfc(-(x - 0.5) / (s * math.sqrt(2))) for x in v])
        pmf = cdf - cdf_lo
        pmfs.append(pmf)
        offsets.append(-k)
        escapes.append(max(0.0, 1.0 - pmf.sum()))
    return TableSet.from_pmfs(pmfs, offsets, escapes)


def trimmed_tables(pmf_grid: np.ndarray, grid_offset: int, tail_mass: float = 1e-9) -> TableSet:
    """Tables from per-channel pmfs on a common integer grid, trimmed where the tails vanish."""
    pmfs, offsets, escapes = [], [], []
    for row in np.asarray(pmf_grid, dtype=np.float64):
        row = row / max(row.sum(), 1e-300)
        cum = np.cumsum(row)
        lo = int(np.searchsorted(cum, tail_mass / 2))
        hi = int(np.searchsorted(cum, 1 - tail_mass / 2))
        hi = min(max(hi, lo), len(row) - 1)
        kept = row[lo:hi + 1]
        pmfs.append(kept)
        offsets.append(grid_offset + lo)
        escapes.append(max(tail_mass, 1.0 - kept.sum()))
    return TableSet.from_pmfs(pmfs, offsets, escapes)

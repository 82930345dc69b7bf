"""Entropy coding with integer tables: exact round trips, escapes, damage detection."""
from __future__ import annotations

import numpy as np
import pytest

from lcodec.entropy import StreamDecoder, StreamEncoder, TableSet
from lcodec.entropy.tables import SCALE_LEVELS, TOTAL, default_scale_table, gaussian_tables, quantize_pmf, trimmed_tables
from lcodec.errors import CorruptStreamError


def test_quantized_pmf_is_exact_and_positive():
    freq = quantize_pmf(np.array([0.5, 0.25, 1e-12, 0.25]), escape_mass=1e-9)
    assert freq.sum() == TOTAL and freq.min() >= 1 and len(freq) == 5
    assert abs(freq[0] / TOTAL - 0.5) < 1e-3


def test_gaussian_tables_cover_their_scales():
    tables = gaussian_tables(default_scale_table())
    assert tables.size == SCALE_LEVELS
    for t in (0, 20, SCALE_LEVELS - 1):
        assert tables.table(t).sum() == TOTAL
    # wider scales need wider tables
    assert tables.lengths[SCALE_LEVELS - 1] > tables.lengths[0]


def test_table_set_survives_array_round_trip():
    tables = gaussian_tables(default_scale_table(8, 0.2, 4.0))
    again = TableSet.from_arrays(tables.to_arrays("y"), "y")
    assert np.array_equal(again.freqs, tables.freqs) and np.array_equal(again.offsets, tables.offsets)


def test_round_trip_with_escapes_and_two_table_sets():
    rng = np.random.default_rng(1)
    scales = default_scale_table()
    y_tables = gaussian_tables(scales)
    z_tables = trimmed_tables(np.exp(-np.abs(np.arange(-20, 21)))[None].repeat(3, 0), -20)
    idx = rng.integers(0, len(scales), size=5000)
    y = np.rint(rng.normal(size=idx.size) * scales[idx]).astype(np.int64)
    y[[3, 17, 400]] = [10 ** 6, -(2 ** 29), 999]  # far outside every table
    z = rng.integers(-30, 31, size=(1, 3, 4, 5))
    z_ids = np.broadcast_to(np.arange(3).reshape(1, 3, 1, 1), z.shape)
    enc = StreamEncoder()
    enc.encode(z, z_ids, z_tables)
    enc.encode(y, idx, y_tables)
    data = enc.finish()
    dec = StreamDecoder(data)
    assert np.array_equal(dec.decode(z_ids, z_tables), z)
    assert np.array_equal(dec.decode(idx, y_tables), y)
    dec.check_exhausted()


def test_symbols_beyond_the_bound_are_refused():
    tables = gaussian_tables(default_scale_table(4, 0.2, 2.0))
    with pytest.raises(ValueError, match="bound"):
        StreamEncoder().encode(np.array([2 ** 31]), np.array([0]), tables)


def test_garbage_streams_raise_only_corrupt_stream_errors():
    tables = gaussian_tables(default_scale_table(16, 0.11, 8.0))
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 16, size=300)
    for trial in range(50):
        data = rng.integers(0, 256, size=4 * int(rng.integers(0, 20)), dtype=np.uint8).tobytes()
        try:
            dec = StreamDecoder(data)
            dec.decode(ids, tables)
            dec.check_exhausted()
        except CorruptStreamError:
            pass


def test_odd_length_stream_is_rejected():
    with pytest.raises(CorruptStreamError):
        StreamDecoder(b"\x00\x01\x02")

"""Entropy coding with integer tables: exact round trips, escapes, damage detection."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import constriction
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


def test_the_range_coder_is_set_up_at_import_so_an_interrupt_cannot_crash_it():
    """constriction's numpy bindings run Python (a numpy module lookup) on their first call; an
    interrupt there was reported as a Rust panic. lcodec makes that call at import: afterwards
    the lookup is never made again, shown here by making it raise KeyboardInterrupt."""
    code = """
import sys
import numpy as np
from lcodec.entropy import StreamDecoder, StreamEncoder
from lcodec.entropy.tables import default_scale_table, gaussian_tables

tables = gaussian_tables(default_scale_table(8, 0.2, 4.0))
symbols, ids = np.array([0, 3, -2, 40]), np.array([0, 7, 3, 1])

class Interrupt:  # the numpy module the bindings look their C API up in
    def find_spec(self, name, path=None, target=None):
        if name.startswith("numpy") and name.endswith("multiarray"):
            raise KeyboardInterrupt
for name in [n for n in sys.modules if n.startswith("numpy") and n.endswith("multiarray")]:
    del sys.modules[name]
sys.meta_path.insert(0, Interrupt())
enc = StreamEncoder()
enc.encode(symbols, ids, tables)
print(StreamDecoder(enc.finish()).decode(ids, tables).tolist())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["[0,", "3,", "-2,", "40]"], proc.stderr


def _interrupt_the_first_encoder(monkeypatch) -> list[str]:
    """Send SIGINT from inside the first call's encoder; the list returned records a
    KeyboardInterrupt raised there (where the bindings would report a crash)."""
    real = constriction.stream.queue.RangeEncoder
    seen: list[str] = []

    def interrupted_encoder():
        os.kill(os.getpid(), signal.SIGINT)
        try:
            for _ in range(1000):  # the handler would run here
                pass
        except KeyboardInterrupt:
            seen.append("raised inside")
        return real()

    monkeypatch.setattr(constriction.stream.queue, "RangeEncoder", interrupted_encoder)
    return seen


@contextlib.contextmanager
def _sigint_handler(handler):
    """SIGINT handled by ``handler`` inside the block, whatever this process inherited: a test
    run started in the background (`make test &`, some CI runners) starts with SIGINT ignored."""
    inherited = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_signals_during_the_first_call_are_held_back_and_raised_after(monkeypatch):
    from lcodec.entropy import coder

    seen = _interrupt_the_first_encoder(monkeypatch)
    with _sigint_handler(signal.default_int_handler):
        with pytest.raises(KeyboardInterrupt):
            coder._first_call()
        assert seen == [] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored_through_the_first_call(monkeypatch):
    from lcodec.entropy import coder

    seen = _interrupt_the_first_encoder(monkeypatch)
    with _sigint_handler(signal.SIG_IGN):
        coder._first_call()  # held back, then raised into the ignoring disposition: nothing
        assert seen == [] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN

"""Range coding of integer symbols with :class:`~.tables.TableSet` models, via constriction.

A *stream* is the output of one ``constriction.stream.queue.RangeEncoder`` (a FIFO coder) as
little-endian 32-bit words. Calls to :meth:`StreamEncoder.encode` append to it and the
matching :meth:`StreamDecoder.decode` calls read it back in the same order.

Within one call, symbols are coded table by table (tables in increasing index, symbols in
array order within a table), so each table's constriction model is built once and used on a
whole array: the decoder knows every symbol's table before decoding it. A value outside its
table's range is coded as the table's escape bin and then, after all regular bins of the
call, as ``sign`` (uniform over 2) and ``e = distance beyond the range - 1`` in Elias-gamma
form: ``n = bit_length(e + 1) - 1`` (uniform over 32), then the low ``n`` bits of ``e + 1``
in chunks of at most 16 bits (uniform). Values must satisfy ``|v| < 2**30`` (``MAX_ABS``).

Constriction reports failures on malformed input as ``pyo3_runtime.PanicException``, which
is not an ``Exception`` subclass; both are turned into :class:`CorruptStreamError`.

Its numpy bindings set themselves up on their first call, running a little Python (module
lookups) from inside the extension; a Ctrl-C or SIGTERM handled at that moment would surface
there as an error, which the extension reports as a crash (a ``PanicException`` and a Rust
message on stderr). So that first call is made when this module is imported, with those two
signals held back until it returns (:func:`_first_call`).
"""
from __future__ import annotations

import signal
import threading

import constriction
import numpy as np

from ..errors import CorruptStreamError
from .tables import TOTAL, TableSet

MAX_ABS = 1 << 30
_UNIFORM2 = constriction.stream.model.Uniform(2)
_UNIFORM32 = constriction.stream.model.Uniform(32)
_UNIFORM_BITS = {k: constriction.stream.model.Uniform(1 << k) for k in range(1, 17)}
_MODEL_CACHE: dict[int, list] = {}


def _first_call() -> None:
    """One tiny encode and decode, with SIGINT and SIGTERM deferred (main thread only: Python
    runs signal handlers nowhere else) and re-raised once it is done."""
    held: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not None:  # None: a handler Python did not install
                previous[sig] = signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        model = constriction.stream.model.Categorical(np.array([0.25, 0.75]), perfect=False)
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(np.array([1, 0], dtype=np.int32), model)
        constriction.stream.queue.RangeDecoder(enc.get_compressed()).decode(model, 2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in held:
            signal.raise_signal(sig)


_first_call()


def _models(tables: TableSet) -> list:
    """constriction models of a table set, built once per table set object."""
    key = id(tables)
    cached = _MODEL_CACHE.get(key)
    if cached is None or cached[0] is not tables:
        models = [constriction.stream.model.Categorical(tables.table(t).astype(np.float64) / TOTAL,
                                                        perfect=False)
                  for t in range(tables.size)]
        cached = [tables, models]
        _MODEL_CACHE[key] = cached
    return cached[1]


def _order(table_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions grouped by table (stable), the tables present and their group boundaries."""
    order = np.argsort(table_ids, kind="stable")
    used, counts = np.unique(table_ids[order], return_counts=True)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return order, used, bounds


class StreamEncoder:
    """Appends symbol arrays to one range-coded stream."""

    def __init__(self) -> None:
        self._enc = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, table_ids: np.ndarray, tables: TableSet) -> None:
        """Code ``symbols`` (int) where ``symbols[i]`` follows table ``table_ids[i]``."""
        symbols = np.asarray(symbols, dtype=np.int64).ravel()
        table_ids = np.asarray(table_ids, dtype=np.int64).ravel()
        if symbols.shape != table_ids.shape:
            raise ValueError("symbols and table_ids differ in size")
        if symbols.size == 0:
            return
        if np.abs(symbols).max() >= MAX_ABS:
            raise ValueError(f"symbol magnitude beyond the coder's bound 2**30")
        models = _models(tables)
        order, used, bounds = _order(table_ids)
        escaped: list[tuple[int, int]] = []  # (sign, e) in coding order
        for t, a, b in zip(used, bounds[:-1], bounds[1:]):
            v = symbols[order[a:b]]
            off, n = int(tables.offsets[t]), int(tables.lengths[t])
            bins = v - off
            out = (bins < 0) | (bins >= n)
            if out.any():
                for x in v[out]:
                    escaped.append((0, int(x) - off - n) if x >= off + n else (1, off - 1 - int(x)))
                bins = np.where(out, n, bins)
            self._enc.encode(bins.astype(np.int32), models[t])
        for sign, e in escaped:
            self._enc.encode(np.array([sign], dtype=np.int32), _UNIFORM2)
            nbits = (e + 1).bit_length() - 1
            self._enc.encode(np.array([nbits], dtype=np.int32), _UNIFORM32)
            rest = (e + 1) - (1 << nbits)
            while nbits > 0:
                k = min(16, nbits)
                nbits -= k
                self._enc.encode(np.array([(rest >> nbits) & ((1 << k) - 1)], dtype=np.int32),
                                 _UNIFORM_BITS[k])

    def finish(self) -> bytes:
        """The stream's bytes (a whole number of little-endian 32-bit words)."""
        return self._enc.get_compressed().astype("<u4").tobytes()


class StreamDecoder:
    """Reads symbol arrays back from a stream, in the order they were encoded."""

    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise CorruptStreamError("entropy-coded stream length is not a multiple of 4 bytes")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        try:
            self._dec = constriction.stream.queue.RangeDecoder(words)
        except BaseException as exc:  # noqa: BLE001 - pyo3 panics derive from BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise CorruptStreamError(f"invalid entropy-coded stream ({type(exc).__name__})") from None

    def decode(self, table_ids: np.ndarray, tables: TableSet) -> np.ndarray:
        """Symbols (int64, shaped like ``table_ids``) coded with the given tables."""
        try:
            return self._decode(table_ids, tables)
        except CorruptStreamError:
            raise
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, (KeyboardInterrupt, SystemExit, MemoryError)):
                raise
            raise CorruptStreamError(f"entropy-coded stream is damaged ({type(exc).__name__})") from None

    def _decode(self, table_ids: np.ndarray, tables: TableSet) -> np.ndarray:
        shape = np.shape(table_ids)
        table_ids = np.asarray(table_ids, dtype=np.int64).ravel()
        out = np.empty(table_ids.size, dtype=np.int64)
        if table_ids.size == 0:
            return out.reshape(shape)
        models = _models(tables)
        order, used, bounds = _order(table_ids)
        pending: list[tuple[int, int, int]] = []  # (position, offset, length) of escaped values
        for t, a, b in zip(used, bounds[:-1], bounds[1:]):
            bins = self._dec.decode(models[t], int(b - a)).astype(np.int64)
            off, n = int(tables.offsets[t]), int(tables.lengths[t])
            pos = order[a:b]
            out[pos] = bins + off
            for p in pos[bins == n]:
                pending.append((int(p), off, n))
        for p, off, n in pending:
            sign = int(self._dec.decode(_UNIFORM2, 1)[0])
            nbits = int(self._dec.decode(_UNIFORM32, 1)[0])
            if nbits > 30:
                raise CorruptStreamError("escaped symbol out of range")
            value = 1
            while nbits > 0:
                k = min(16, nbits)
                nbits -= k
                value = (value << k) | int(self._dec.decode(_UNIFORM_BITS[k], 1)[0])
            e = value - 1
            out[p] = off + n + e if sign == 0 else off - 1 - e
        return out.reshape(shape)

    def check_exhausted(self) -> None:
        """Raise if the stream holds more data than was decoded (a sign of damage)."""
        try:
            exhausted = self._dec.maybe_exhausted()
        except BaseException as exc:  # noqa: BLE001 - pyo3 panics derive from BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit, MemoryError)):
                raise
            raise CorruptStreamError(f"entropy-coded stream is damaged ({type(exc).__name__})") from None
        if not exhausted:
            raise CorruptStreamError("entropy-coded stream has unexpected trailing data")

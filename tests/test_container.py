"""The .lc container: round trip, and every kind of damage is reported as such."""
from __future__ import annotations

import struct
import zlib

import pytest

from lcodec import container
from lcodec.errors import CorruptStreamError, UnsupportedVersionError

HEADER = container.Header(width=65, height=129, channels=3, quality=3.5, model_name="hyperprior",
                          model_version=2, model_digest=bytes(range(8)))


def sample(ancillary=()) -> bytes:
    return container.serialize(container.Container(HEADER, b"\x09" * 8, [b"\x01\x02\x03\x04" * 5],
                                                   list(ancillary)))


def test_round_trip():
    parsed = container.parse(sample())
    assert parsed.header == HEADER
    assert parsed.tiles == [b"\x01\x02\x03\x04" * 5]
    assert parsed.hyper == b"\x09" * 8
    assert parsed.version == container.FORMAT_VERSION


def test_layout_is_little_endian_and_starts_with_signature():
    data = sample()
    assert data[:8] == container.SIGNATURE
    assert struct.unpack_from("<H", data, 8)[0] == 1
    assert data[10:14] == b"HEAD"
    (length,) = struct.unpack_from("<I", data, 14)
    width, height = struct.unpack_from("<II", data, 18)
    assert (width, height) == (65, 129)
    assert data[-12:-8] == b"END\x00"


@pytest.mark.parametrize("cut", range(0, 160, 1))
def test_every_truncation_is_rejected(cut):
    data = sample()
    if cut >= len(data):
        return
    with pytest.raises(CorruptStreamError):
        container.parse(data[:cut])


def test_every_flipped_byte_is_rejected():
    data = sample()
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x40
        with pytest.raises(CorruptStreamError):
            container.parse(bytes(damaged))


def test_unknown_version_is_refused_clearly():
    data = bytearray(sample())
    data[8:10] = struct.pack("<H", 99)
    with pytest.raises(UnsupportedVersionError, match="version 99"):
        container.parse(bytes(data))


def _with_chunk(kind: bytes, payload: bytes) -> bytes:
    data = sample()
    chunk = struct.pack("<4sI", kind, len(payload)) + payload + struct.pack("<I", zlib.crc32(kind + payload))
    end = len(data) - 12  # before END
    return data[:end] + chunk + data[end:]


def test_unknown_ancillary_chunk_is_skipped():
    parsed = container.parse(_with_chunk(b"xtra", b"hello"))
    assert parsed.tiles == [b"\x01\x02\x03\x04" * 5]
    assert (b"xtra", b"hello") in parsed.ancillary


def test_unknown_critical_chunk_is_refused():
    with pytest.raises(UnsupportedVersionError, match="newer lcodec"):
        container.parse(_with_chunk(b"XTRA", b"hello"))


def test_trailing_garbage_is_rejected():
    with pytest.raises(CorruptStreamError, match="after the end"):
        container.parse(sample() + b"\x00")


def test_not_an_lc_file():
    with pytest.raises(CorruptStreamError, match="not an lcodec file"):
        container.parse(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)


def test_lying_length_is_rejected():
    data = bytearray(sample())
    struct.pack_into("<I", data, 14, 10 ** 9)
    with pytest.raises(CorruptStreamError, match="truncated"):
        container.parse(bytes(data))


def test_zero_size_image_is_rejected():
    bad = container.Header(0, 5, 3, 4.0, "hyperprior", 1, bytes(8))
    data = container.serialize(container.Container(bad, b"", [b""]))
    with pytest.raises(CorruptStreamError, match="image size"):
        container.parse(data)

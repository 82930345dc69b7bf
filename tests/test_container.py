"""The .lc container, both format versions: round trip, and every kind of damage is reported
as such."""
from __future__ import annotations

import struct
import zlib

import pytest

from lcodec import container
from lcodec.errors import CorruptStreamError, UnsupportedVersionError

HEADER = container.Header(width=65, height=129, channels=3, quality=3.5, model_name="hyperprior",
                          model_version=2, model_digest=bytes(range(8)))


def sample(ancillary=(), version: int = container.FORMAT_VERSION) -> bytes:
    return container.serialize(container.Container(HEADER, b"\x09" * 8, [b"\x01\x02\x03\x04" * 5],
                                                   list(ancillary), version))


@pytest.mark.parametrize("version", [1, 2])
def test_round_trip(version):
    data = sample([(b"iccp", b"profile"), (b"exif", b"II*\0")], version)
    parsed = container.parse(data)
    assert parsed.header == HEADER
    assert parsed.tiles == [b"\x01\x02\x03\x04" * 5]
    assert parsed.hyper == b"\x09" * 8
    assert parsed.ancillary == [(b"iccp", b"profile"), (b"exif", b"II*\0")]
    assert parsed.version == version
    assert container.serialize(parsed) == data


def test_new_files_are_version_2_and_58_bytes_smaller_than_version_1():
    assert container.FORMAT_VERSION == 2 and container.parse(sample()).version == 2
    assert len(sample(version=1)) - len(sample()) == 58  # with this header and one tile


def test_version_2_layout():
    data = sample()
    assert data[:8] == container.SIGNATURE and struct.unpack_from("<H", data, 8)[0] == 2
    assert data[10:12] == b"H" + bytes([len(HEADER.pack_v2())])
    assert data[12] == 65 and data[13:15] == bytes([0x81, 0x01])  # 129 as LEB128
    assert data[15] == 3 and struct.unpack_from("<f", data, 16)[0] == 3.5
    assert data[-4:] == struct.pack("<I", zlib.crc32(data[:-4]))


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2 ** 21, 2 ** 32 - 1])
def test_varints_round_trip_in_their_shortest_form(value):
    raw = container._varint(value)
    assert container._read_varint(raw, 0) == (value, len(raw))
    assert len(raw) == max(1, -(-value.bit_length() // 7))


@pytest.mark.parametrize("raw,match", [(b"\x80\x00", "overlong"), (b"\xff\xff\xff\xff\x7f", "too large"),
                                       (b"\x80\x80\x80\x80\x80\x01", "too long"), (b"\x80", "truncated")])
def test_bad_varints_are_refused(raw, match):
    with pytest.raises(CorruptStreamError, match=match):
        container._read_varint(raw, 0)


def _v2_with(record: bytes) -> bytes:
    """The version 2 sample with ``record`` appended after its tiles and the CRC made right."""
    body = sample()[:-4] + record
    return body + struct.pack("<I", zlib.crc32(body))


def test_version_2_unknown_ancillary_record_is_kept_and_skipped():
    parsed = container.parse(sample([(b"x", b"hello")]))
    assert (b"x", b"hello") in parsed.ancillary and parsed.tiles == [b"\x01\x02\x03\x04" * 5]


def test_version_2_unknown_critical_record_is_refused():
    with pytest.raises(UnsupportedVersionError, match="newer lcodec"):
        container.parse(_v2_with(b"X\x05hello"))


@pytest.mark.parametrize("record,match", [(b"T\x09abc", "past the end"), (b"H\x00", "more than one HEAD"),
                                          (b"i\x01a", "after the image data"), (b"A\x01a", "ALPH record")])
def test_version_2_misplaced_or_lying_records_are_refused(record, match):
    with pytest.raises(CorruptStreamError, match=match):
        container.parse(_v2_with(record))


def test_version_2_trailing_garbage_is_rejected():
    with pytest.raises(CorruptStreamError, match="CRC"):
        container.parse(sample() + b"\x00")


def test_layout_is_little_endian_and_starts_with_signature():
    data = sample(version=1)
    assert data[:8] == container.SIGNATURE
    assert struct.unpack_from("<H", data, 8)[0] == 1
    assert data[10:14] == b"HEAD"
    (length,) = struct.unpack_from("<I", data, 14)
    width, height = struct.unpack_from("<II", data, 18)
    assert (width, height) == (65, 129)
    assert data[-12:-8] == b"END\x00"


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("cut", range(0, 160, 1))
def test_every_truncation_is_rejected(cut, version):
    data = sample(version=version)
    if cut >= len(data):
        return
    with pytest.raises(CorruptStreamError):
        container.parse(data[:cut])


@pytest.mark.parametrize("version", [1, 2])
def test_every_flipped_byte_is_rejected(version):
    data = sample(version=version)
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x40
        with pytest.raises(CorruptStreamError):
            container.parse(bytes(damaged))


@pytest.mark.parametrize("version", [1, 2])
def test_unknown_version_is_refused_clearly(version):
    data = bytearray(sample(version=version))
    data[8:10] = struct.pack("<H", 99)
    with pytest.raises(UnsupportedVersionError, match="version 99"):
        container.parse(bytes(data))


def _with_chunk(kind: bytes, payload: bytes) -> bytes:
    data = sample(version=1)
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
        container.parse(sample(version=1) + b"\x00")


def test_not_an_lc_file():
    with pytest.raises(CorruptStreamError, match="not an lcodec file"):
        container.parse(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)


def test_lying_length_is_rejected():
    data = bytearray(sample(version=1))
    struct.pack_into("<I", data, 14, 10 ** 9)
    with pytest.raises(CorruptStreamError, match="truncated"):
        container.parse(bytes(data))


@pytest.mark.parametrize("version", [1, 2])
def test_zero_size_image_is_rejected(version):
    bad = container.Header(0, 5, 3, 4.0, "hyperprior", 1, bytes(8))
    data = container.serialize(container.Container(bad, b"", [b""], version=version))
    with pytest.raises(CorruptStreamError, match="image size"):
        container.parse(data)

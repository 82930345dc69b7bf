"""The ``.lc`` container: bytes in, bytes out (no torch, no numpy, no images).

Specified in ``docs/format.md``, which is the contract; this module follows it. A file is an
8-byte signature, a ``u16`` format version, then its parts; all integers are little-endian.

* Version 2 (written since 2026-12-02): *records*, each a 1-byte ASCII type, a LEB128 payload
  length and the payload, then one CRC-32 of everything before it. 40-50 bytes of a file are
  framing and header (version 1: ~104), which is 1-2% of a small file.
* Version 1 (read only): *chunks*, each a 4-byte ASCII type, a ``u32`` payload length, the
  payload and a CRC-32 of type + payload, ending with an ``END`` chunk.

In both, a type starting with an upper-case letter is *critical* (a reader that does not know
it must refuse the file); lower-case is *ancillary* (unknown ones are skipped).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from .errors import CorruptStreamError, UnsupportedVersionError

SIGNATURE = b"\x89LCD\r\n\x1a\n"
FORMAT_VERSION = 2  # what serialize writes unless told otherwise
SUPPORTED_VERSIONS = (1, 2)
MAX_DIMENSION = (1 << 31) - 1
# HEAD flags (a reader refuses a file with a flag it does not know).
FLAG_Z_PER_LEVEL = 0x0001  # z is coded with the per-quality-level tables of the weights
KNOWN_FLAGS = FLAG_Z_PER_LEVEL

_HEAD = struct.Struct("<IIBBfHIIH")  # width height channels bit_depth quality model_version tile_w tile_h flags
_CHUNK = struct.Struct("<4sI")
_CRC = struct.Struct("<I")
# Version 2 record types and the version 1 chunk types they stand for (the parser reads both
# versions' parts by their version 1 names).
_V2_KINDS = {b"H": b"HEAD", b"A": b"ALPH", b"Z": b"HYPR", b"T": b"TILE", b"i": b"iccp", b"e": b"exif"}
_V2_TYPES = {v: k for k, v in _V2_KINDS.items()}
MAX_VARINT_BYTES = 5  # LEB128 of a value below 2^35; lengths and fields must be below 2^32


@dataclass(frozen=True)
class Header:
    """The ``HEAD`` chunk: what the image is and how it was coded.

    ``tile_width``/``tile_height`` of 0 mean one tile covers the whole image.
    """

    width: int
    height: int
    channels: int                  # 1 = grayscale, 3 = RGB
    quality: float                 # as a float32
    model_name: str
    model_version: int
    model_digest: bytes            # first 8 bytes of the weights file's SHA-256
    tile_width: int = 0
    tile_height: int = 0
    bit_depth: int = 8
    flags: int = 0

    def pack(self) -> bytes:
        name = self.model_name.encode("utf-8")
        if not 0 < len(name) < 256 or len(self.model_digest) != 8:
            raise ValueError("model name must be 1-255 bytes and the digest 8 bytes")
        return (_HEAD.pack(self.width, self.height, self.channels, self.bit_depth, self.quality,
                           self.model_version, self.tile_width, self.tile_height, self.flags)
                + self.model_digest + bytes([len(name)]) + name)

    @classmethod
    def unpack(cls, payload: bytes) -> "Header":
        """The version 1 ``HEAD`` chunk."""
        if len(payload) < _HEAD.size + 9:
            raise CorruptStreamError("HEAD chunk is too short")
        w, h, c, depth, q, mver, tw, th, flags = _HEAD.unpack_from(payload)
        digest = payload[_HEAD.size:_HEAD.size + 8]
        n = payload[_HEAD.size + 8]
        name_bytes = payload[_HEAD.size + 9:_HEAD.size + 9 + n]
        if n == 0 or len(name_bytes) != n or len(payload) != _HEAD.size + 9 + n:
            raise CorruptStreamError("HEAD chunk has a bad model name length")
        return cls._checked(w, h, c, depth, q, _model_name(name_bytes), mver, digest, tw, th, flags)

    def pack_v2(self) -> bytes:
        """The version 2 ``H`` record's payload."""
        name = self.model_name.encode("utf-8")
        if not 0 < len(name) < 256 or len(self.model_digest) != 8:
            raise ValueError("model name must be 1-255 bytes and the digest 8 bytes")
        if self.tile_width != self.tile_height or self.bit_depth != 8:
            raise ValueError("format version 2 codes square tiles of 8-bit samples")
        return (_varint(self.width) + _varint(self.height) + bytes([self.channels])
                + struct.pack("<f", self.quality) + _varint(self.model_version)
                + _varint(self.tile_width) + _varint(self.flags) + self.model_digest + name)

    @classmethod
    def unpack_v2(cls, payload: bytes) -> "Header":
        """The version 2 ``H`` record."""
        try:
            w, pos = _read_varint(payload, 0)
            h, pos = _read_varint(payload, pos)
            c = payload[pos]
            (q,) = struct.unpack_from("<f", payload, pos + 1)
            mver, pos = _read_varint(payload, pos + 5)
            tile, pos = _read_varint(payload, pos)
            flags, pos = _read_varint(payload, pos)
        except (IndexError, struct.error):
            raise CorruptStreamError("HEAD record is too short") from None
        digest, name_bytes = payload[pos:pos + 8], payload[pos + 8:]
        if len(digest) != 8 or not 0 < len(name_bytes) < 256:
            raise CorruptStreamError("HEAD record has a bad model name length")
        if mver > 0xFFFF:
            raise CorruptStreamError(f"invalid model version {mver}")
        return cls._checked(w, h, c, 8, q, _model_name(name_bytes), mver, digest, tile, tile, flags)

    @classmethod
    def _checked(cls, w, h, c, depth, q, name, mver, digest, tw, th, flags) -> "Header":
        if not (1 <= w <= MAX_DIMENSION and 1 <= h <= MAX_DIMENSION):
            raise CorruptStreamError(f"invalid image size {w}x{h}")
        if c not in (1, 3) or depth != 8:
            raise UnsupportedVersionError(f"unsupported pixel layout: {c} channels of {depth} bits")
        if flags & ~KNOWN_FLAGS:
            raise UnsupportedVersionError(f"unknown header flags 0x{flags & ~KNOWN_FLAGS:04x}")
        if not q == q:  # NaN
            raise CorruptStreamError("quality is not a number")
        return cls(w, h, c, q, name, mver, digest, tw, th, depth, flags)


def _model_name(raw: bytes) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptStreamError("HEAD has a model name that is not UTF-8") from None
    if not name.isprintable():  # it ends up in messages: no newlines or terminal escapes
        raise CorruptStreamError("HEAD has a model name with control characters")
    return name


def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, least significant first, high bit = more follow."""
    if not 0 <= value < 1 << 32:
        raise ValueError(f"{value} does not fit a u32 varint")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    """``(value, position after it)`` of the LEB128 at ``pos`` (before ``end``): at most 5
    bytes, below 2^32, in its shortest form (so that every value has one encoding)."""
    end = len(data) if end is None else end
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= end:
            raise CorruptStreamError(f"file is truncated (length field at byte {pos})")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and not byte:
                raise CorruptStreamError(f"overlong length field at byte {pos}")
            if value >= 1 << 32:
                raise CorruptStreamError(f"length field at byte {pos} is too large")
            return value, pos + i + 1
    raise CorruptStreamError(f"length field at byte {pos} is too long")


@dataclass
class Container:
    """A parsed ``.lc`` file: its header, the hyper-latent stream, one latent stream per tile,
    and ancillary chunks."""

    header: Header
    hyper: bytes
    tiles: list[bytes]
    ancillary: list[tuple[bytes, bytes]] = field(default_factory=list)
    version: int = FORMAT_VERSION
    alpha: bytes | None = None     # payload of the ALPH chunk (method byte + data), if any


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return _CHUNK.pack(kind, len(payload)) + payload + struct.pack("<I", zlib.crc32(kind + payload))


def serialize(container: Container) -> bytes:
    """The bytes of a ``.lc`` file in the container's format version (a new
    :class:`Container`'s is the current one; a parsed one's, the file's)."""
    if container.version == 2:
        return _serialize_v2(container)
    if container.version != 1:
        raise ValueError(f"cannot write format version {container.version}")
    parts = [SIGNATURE, struct.pack("<H", 1), _chunk(b"HEAD", container.header.pack())]
    for kind, payload in container.ancillary:
        parts.append(_chunk(kind, payload))
    if container.alpha is not None:
        parts.append(_chunk(b"ALPH", container.alpha))
    parts.append(_chunk(b"HYPR", container.hyper))
    for i, stream in enumerate(container.tiles):
        parts.append(_chunk(b"TILE", struct.pack("<I", i) + stream))
    parts.append(_chunk(b"END\x00", b""))
    return b"".join(parts)


def _record(kind: bytes, payload: bytes) -> bytes:
    return kind + _varint(len(payload)) + payload


def _serialize_v2(container: Container) -> bytes:
    parts = [SIGNATURE, struct.pack("<H", 2), _record(_V2_TYPES[b"HEAD"], container.header.pack_v2())]
    for kind, payload in container.ancillary:
        kind = _V2_TYPES.get(kind, kind)
        if len(kind) != 1 or not kind.islower():
            raise ValueError(f"no version 2 record type for the ancillary chunk {kind!r}")
        parts.append(_record(kind, payload))
    if container.alpha is not None:
        parts.append(_record(_V2_TYPES[b"ALPH"], container.alpha))
    parts.append(_record(_V2_TYPES[b"HYPR"], container.hyper))
    parts.extend(_record(_V2_TYPES[b"TILE"], stream) for stream in container.tiles)
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def _records(data: bytes, pos: int, end: int):
    """Yield ``(type, payload, position)`` of each version 2 record in ``data[pos:end]``."""
    while pos < end:
        kind = data[pos:pos + 1]
        length, start = _read_varint(data, pos + 1, end)
        if start + length > end:
            raise CorruptStreamError(f"record '{_name(kind)}' at byte {pos} declares {length} bytes "
                                     f"past the end of the file")
        yield kind, data[start:start + length], pos
        pos = start + length


def _chunks(data: bytes, pos: int):
    """Yield ``(type, payload)`` of each chunk, checking lengths and CRCs."""
    while True:
        if pos + _CHUNK.size > len(data):
            raise CorruptStreamError(f"file is truncated (chunk header at byte {pos})")
        kind, length = _CHUNK.unpack_from(data, pos)
        start = pos + _CHUNK.size
        end = start + length
        if end + 4 > len(data):
            raise CorruptStreamError(f"file is truncated ({_name(kind)} chunk at byte {pos} "
                                     f"declares {length} bytes)")
        payload = data[start:end]
        (crc,) = struct.unpack_from("<I", data, end)
        if zlib.crc32(kind + payload) != crc:
            raise CorruptStreamError(f"{_name(kind)} chunk at byte {pos} is damaged (CRC mismatch)")
        yield kind, payload, pos
        pos = end + 4
        if kind == b"END\x00":
            if pos != len(data):
                raise CorruptStreamError(f"{len(data) - pos} unexpected bytes after the end chunk")
            return


def _name(kind: bytes) -> str:
    """A chunk type for messages: printable ASCII as is, any other byte as ``\\xNN``."""
    return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in kind.rstrip(b"\x00")) or "?"


def parse(data: bytes) -> Container:
    """Parse and validate a ``.lc`` file. Raises :class:`CorruptStreamError` on any damage."""
    if len(data) < len(SIGNATURE) + 2 or not data.startswith(SIGNATURE):
        raise CorruptStreamError("not an lcodec file (bad signature)")
    (version,) = struct.unpack_from("<H", data, len(SIGNATURE))
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(f"format version {version} is not supported by this lcodec "
                                      f"(supports {', '.join(map(str, SUPPORTED_VERSIONS))})")
    start = len(SIGNATURE) + 2
    if version == 1:
        parts, unit, unpack_head = _chunks(data, start), "chunk", Header.unpack
    else:
        end = len(data) - _CRC.size
        if end < start or zlib.crc32(data[:end]) != _CRC.unpack_from(data, end)[0]:
            raise CorruptStreamError("file is damaged or truncated (CRC mismatch)")
        parts = ((_V2_KINDS.get(kind, kind), payload, pos) for kind, payload, pos in _records(data, start, end))
        unit, unpack_head = "record", Header.unpack_v2
    header: Header | None = None
    hyper: bytes | None = None
    tiles: list[bytes] = []
    ancillary: list[tuple[bytes, bytes]] = []
    alpha: bytes | None = None
    for kind, payload, pos in parts:
        if header is None and kind != b"HEAD":
            raise CorruptStreamError(f"the first {unit} is not HEAD")
        if kind == b"HEAD":
            if header is not None:
                raise CorruptStreamError(f"more than one HEAD {unit}")
            header = unpack_head(payload)
        elif kind == b"HYPR":
            if hyper is not None or tiles:
                raise CorruptStreamError(f"HYPR {unit} repeated or after the tiles")
            hyper = payload
        elif kind == b"TILE":
            if hyper is None:
                raise CorruptStreamError(f"TILE {unit} before the HYPR {unit}")
            if version == 1:  # version 1 numbers its tiles; version 2's are in order by place
                if len(payload) < 4:
                    raise CorruptStreamError(f"TILE chunk at byte {pos} is too short")
                (index,) = struct.unpack_from("<I", payload)
                if index != len(tiles):
                    raise CorruptStreamError(f"tile {index} is out of order (expected {len(tiles)})")
                payload = payload[4:]
            tiles.append(payload)
        elif kind == b"ALPH":
            if alpha is not None or hyper is not None:
                raise CorruptStreamError(f"ALPH {unit} repeated or after the HYPR {unit}")
            if not payload:
                raise CorruptStreamError(f"ALPH {unit} is empty")
            alpha = payload
        elif kind == b"END\x00" and version == 1:
            continue  # the chunk reader checks that nothing follows it
        elif kind[:1].islower():
            if version == 2 and hyper is not None:
                raise CorruptStreamError(f"ancillary record '{_name(kind)}' after the image data")
            ancillary.append((kind, payload))
        else:
            raise UnsupportedVersionError(f"unknown critical {unit} '{_name(kind)}': "
                                          "the file needs a newer lcodec")
    if header is None:
        raise CorruptStreamError(f"file has no HEAD {unit}")
    if hyper is None or not tiles:
        raise CorruptStreamError(f"file has no image data (no HYPR or TILE {unit})")
    return Container(header, hyper, tiles, ancillary, version, alpha)

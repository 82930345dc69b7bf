"""The ``.lc`` container: bytes in, bytes out (no torch, no numpy, no images).

Specified in ``docs/format.md``, which is the contract; this module follows it. A file is an
8-byte signature, a ``u16`` format version, then chunks. Each chunk is a 4-byte ASCII type,
a ``u32`` payload length, the payload and a CRC-32 of type + payload. All integers are
little-endian. A chunk type starting with an upper-case letter is *critical* (a reader that
does not know it must refuse the file); lower-case is *ancillary* (unknown ones are skipped).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from .errors import CorruptStreamError, UnsupportedVersionError

SIGNATURE = b"\x89LCD\r\n\x1a\n"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_DIMENSION = (1 << 31) - 1

_HEAD = struct.Struct("<IIBBfHIIH")  # width height channels bit_depth quality model_version tile_w tile_h flags
_CHUNK = struct.Struct("<4sI")


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
        if len(payload) < _HEAD.size + 9:
            raise CorruptStreamError("HEAD chunk is too short")
        w, h, c, depth, q, mver, tw, th, flags = _HEAD.unpack_from(payload)
        digest = payload[_HEAD.size:_HEAD.size + 8]
        n = payload[_HEAD.size + 8]
        name_bytes = payload[_HEAD.size + 9:_HEAD.size + 9 + n]
        if n == 0 or len(name_bytes) != n or len(payload) != _HEAD.size + 9 + n:
            raise CorruptStreamError("HEAD chunk has a bad model name length")
        try:
            name = name_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptStreamError("HEAD chunk has a model name that is not UTF-8") from None
        if not name.isprintable():  # it ends up in messages: no newlines or terminal escapes
            raise CorruptStreamError("HEAD chunk has a model name with control characters")
        if not (1 <= w <= MAX_DIMENSION and 1 <= h <= MAX_DIMENSION):
            raise CorruptStreamError(f"invalid image size {w}x{h}")
        if c not in (1, 3) or depth != 8:
            raise UnsupportedVersionError(f"unsupported pixel layout: {c} channels of {depth} bits")
        if flags != 0:
            raise UnsupportedVersionError(f"unknown header flags 0x{flags:04x}")
        if not q == q:  # NaN
            raise CorruptStreamError("quality is not a number")
        return cls(w, h, c, q, name, mver, digest, tw, th, depth, flags)


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
    """The bytes of a ``.lc`` file (always written in the current format version)."""
    parts = [SIGNATURE, struct.pack("<H", FORMAT_VERSION), _chunk(b"HEAD", container.header.pack())]
    for kind, payload in container.ancillary:
        parts.append(_chunk(kind, payload))
    if container.alpha is not None:
        parts.append(_chunk(b"ALPH", container.alpha))
    parts.append(_chunk(b"HYPR", container.hyper))
    for i, stream in enumerate(container.tiles):
        parts.append(_chunk(b"TILE", struct.pack("<I", i) + stream))
    parts.append(_chunk(b"END\x00", b""))
    return b"".join(parts)


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
    header: Header | None = None
    hyper: bytes | None = None
    tiles: list[bytes] = []
    ancillary: list[tuple[bytes, bytes]] = []
    alpha: bytes | None = None
    for kind, payload, pos in _chunks(data, len(SIGNATURE) + 2):
        if header is None and kind != b"HEAD":
            raise CorruptStreamError("the first chunk is not HEAD")
        if kind == b"HEAD":
            if header is not None:
                raise CorruptStreamError("more than one HEAD chunk")
            header = Header.unpack(payload)
        elif kind == b"HYPR":
            if hyper is not None or tiles:
                raise CorruptStreamError("HYPR chunk repeated or after the tiles")
            hyper = payload
        elif kind == b"TILE":
            if hyper is None:
                raise CorruptStreamError("TILE chunk before the HYPR chunk")
            if len(payload) < 4:
                raise CorruptStreamError(f"TILE chunk at byte {pos} is too short")
            (index,) = struct.unpack_from("<I", payload)
            if index != len(tiles):
                raise CorruptStreamError(f"tile {index} is out of order (expected {len(tiles)})")
            tiles.append(payload[4:])
        elif kind == b"ALPH":
            if alpha is not None or hyper is not None:
                raise CorruptStreamError("ALPH chunk repeated or after the HYPR chunk")
            if not payload:
                raise CorruptStreamError("ALPH chunk is empty")
            alpha = payload
        elif kind == b"END\x00":
            continue  # the chunk reader checks that nothing follows it
        elif kind[:1].islower():
            ancillary.append((kind, payload))
        else:
            raise UnsupportedVersionError(f"unknown critical chunk '{_name(kind)}': "
                                          "the file needs a newer lcodec")
    assert header is not None
    if hyper is None or not tiles:
        raise CorruptStreamError("file has no image data (no HYPR or TILE chunk)")
    return Container(header, hyper, tiles, ancillary, version, alpha)

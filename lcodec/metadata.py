"""What travels with the pixels: ICC profile, EXIF and the alpha plane.

* ICC and EXIF are kept in the *ancillary* chunks ``iccp`` and ``exif`` (``docs/format.md``;
  the container writes them as format version 2's records ``i`` and ``e``),
  each at most :data:`MAX_METADATA_BYTES`; the encoder refuses bigger ones (``--strip`` drops
  them), the decoder ignores bigger ones. The stored EXIF has no orientation tag: the pixels
  are stored upright (:func:`lcodec.image_io.to_planes` applies it).
* The alpha plane goes losslessly into the *critical* chunk ``ALPH`` (a method byte, 0 =
  zlib, then the zlib stream of the ``H x W`` alpha bytes), so a reader that does not know it
  refuses the file instead of silently dropping the transparency. The container only stores
  the bytes; the (de)compression lives here because it needs numpy.

No torch here.
"""
from __future__ import annotations

import warnings
import zlib

import numpy as np
from PIL import Image

from .errors import CorruptStreamError, UnsupportedImageError

ICC_CHUNK = b"iccp"
EXIF_CHUNK = b"exif"
MAX_METADATA_BYTES = 1 << 20           # per chunk
ALPHA_ZLIB = 0                         # ALPH method byte
EXIF_PREFIX = b"Exif\x00\x00"          # JPEG APP1 prefix; stored EXIF is the bare TIFF structure
_ORIENTATION = 0x0112

# Pillow formats that can carry each kind of data (others drop it).
ALPHA_FORMATS = {"PNG", "TIFF", "WEBP"}
ICC_FORMATS = {"PNG", "JPEG", "TIFF", "WEBP"}
EXIF_FORMATS = {"PNG", "JPEG", "TIFF", "WEBP"}


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def extract(img: Image.Image) -> tuple[bytes | None, bytes | None, list[str]]:
    """``(icc, exif, notices)`` of an opened image, as they will be stored.

    The EXIF comes back as a bare TIFF structure without its orientation tag (the pixels are
    made upright). Damaged EXIF is dropped with a notice; metadata over
    :data:`MAX_METADATA_BYTES` is an :class:`UnsupportedImageError` (use ``strip``).
    """
    notices: list[str] = []
    icc = img.info.get("icc_profile") or None
    if icc is not None and not isinstance(icc, bytes):
        icc = None
    exif = None
    raw = img.info.get("exif")  # JPEG APP1, PNG eXIf, WebP EXIF (a TIFF's own tags are not EXIF)
    if isinstance(raw, bytes) and raw:
        exif = raw
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = Image.Exif()  # a copy: the caller's image keeps its orientation
                parsed.load(raw)
                if parsed.get(_ORIENTATION, 1) != 1:
                    del parsed[_ORIENTATION]
                    exif = parsed.tobytes()
        except Exception:  # noqa: BLE001 - Pillow raises many types on damaged EXIF
            notices.append("damaged EXIF data dropped")
            exif = None
    if exif is not None and exif.startswith(EXIF_PREFIX):
        exif = exif[len(EXIF_PREFIX):] or None
    for what, data in (("ICC profile", icc), ("EXIF data", exif)):
        if data is not None and len(data) > MAX_METADATA_BYTES:
            raise UnsupportedImageError(f"{what} of {_mib(len(data))} exceeds the limit of "
                                        f"{_mib(MAX_METADATA_BYTES)} (use --strip to drop metadata)")
    return icc, exif, notices


def ancillary_chunks(icc: bytes | None, exif: bytes | None) -> list[tuple[bytes, bytes]]:
    """The ancillary chunks for the container."""
    chunks = []
    for kind, data in ((ICC_CHUNK, icc), (EXIF_CHUNK, exif)):
        if data:
            if len(data) > MAX_METADATA_BYTES:
                raise UnsupportedImageError(f"{kind.decode()} data of {_mib(len(data))} exceeds the "
                                            f"limit of {_mib(MAX_METADATA_BYTES)}")
            chunks.append((kind, bytes(data)))
    return chunks


def read_ancillary(chunks: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """``(icc, exif)`` from a parsed container's ancillary chunks: the first of each kind;
    empty or oversized ones are ignored."""
    found: dict[bytes, bytes] = {}
    for kind, payload in chunks:
        if kind in (ICC_CHUNK, EXIF_CHUNK) and kind not in found and 0 < len(payload) <= MAX_METADATA_BYTES:
            found[kind] = payload
    return found.get(ICC_CHUNK), found.get(EXIF_CHUNK)


def pack_alpha(alpha: np.ndarray) -> bytes:
    """The ``ALPH`` payload of an ``(H, W)`` uint8 alpha plane."""
    plane = np.ascontiguousarray(alpha, dtype=np.uint8)
    return bytes([ALPHA_ZLIB]) + zlib.compress(plane.tobytes(), 9)


def unpack_alpha(payload: bytes, width: int, height: int) -> np.ndarray:
    """The ``(H, W)`` alpha plane of an ``ALPH`` payload; damage is a :class:`CorruptStreamError`."""
    if not payload or payload[0] != ALPHA_ZLIB:
        raise CorruptStreamError(f"ALPH chunk uses unknown method {payload[:1].hex() or 'none'}")
    size = width * height
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(payload[1:], size + 1)  # bounded: no decompression bomb
    except zlib.error:
        raise CorruptStreamError("ALPH chunk is damaged (bad zlib stream)") from None
    if len(raw) != size or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        raise CorruptStreamError(f"ALPH chunk does not hold {width}x{height} alpha values")
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, width)


def image_bytes(img: Image.Image, fmt: str, icc: bytes | None = None,
                exif: bytes | None = None) -> tuple[bytes, list[str]]:
    """``(file bytes, notices)`` of ``img`` saved as Pillow format ``fmt`` with the ICC profile
    and EXIF where the format can carry them (dropped silently where not). An alpha plane the
    format cannot hold is dropped with a notice."""
    from .image_io import encode_image

    notices: list[str] = []
    if img.mode in ("RGBA", "LA") and fmt not in ALPHA_FORMATS:
        img = img.convert("RGB" if img.mode == "RGBA" else "L")
        notices.append(f"alpha channel dropped ({fmt} has none)")
    elif img.mode == "LA" and fmt == "WEBP":
        img = img.convert("RGBA")
    options = {}
    if icc and fmt in ICC_FORMATS:
        options["icc_profile"] = icc
    if exif and fmt in EXIF_FORMATS:
        options["exif"] = EXIF_PREFIX + exif
    return encode_image(img, fmt, **options), notices


def exif_for_pillow(exif: bytes | None) -> bytes | None:
    """Stored EXIF as Pillow keeps it in ``Image.info['exif']`` (with the APP1 prefix)."""
    return EXIF_PREFIX + exif if exif else None

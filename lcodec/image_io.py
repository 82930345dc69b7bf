"""Reading and writing pictures with Pillow, and the pixel layouts the codec accepts.

The codec core sees only ``uint8`` arrays of shape ``(H, W, 3)``; this module turns files
and Pillow images into those (applying EXIF orientation, converting modes) and back.
No torch here.
"""
from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, UnsupportedImageError

# Pillow reports damaged files through ``logging`` and ``warnings`` besides its exceptions;
# unconfigured, those reach stderr and break the one-line errors of the command line.
logging.getLogger("PIL").addHandler(logging.NullHandler())

# Output formats by file extension (decode chooses the format from the output's name).
OUTPUT_FORMATS = {".png": "PNG", ".ppm": "PPM", ".pgm": "PPM", ".pnm": "PPM", ".bmp": "BMP",
                  ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_SAVE_OPTIONS = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"lossless": True},
                 "PNG": {"compress_level": 6}}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def open_image(source: str | Path | bytes | BinaryIO, name: str | None = None) -> Image.Image:
    """Open and fully load an image; errors a user can cause become :class:`InputError` s.

    Any failure of Pillow on the file's content means a damaged or hostile file, so it is an
    :class:`UnsupportedImageError` whatever its Python type. Pillow's warnings (damaged EXIF,
    images above its decompression-bomb warning size) are silenced; its bomb *error* (twice
    that size) stays an error.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "input")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _open_image(source, label)


def _open_image(source: str | Path | bytes | BinaryIO, label: str) -> Image.Image:
    try:
        if isinstance(source, bytes):
            if not source:
                raise UnsupportedImageError(f"{label} is empty")
            source = io.BytesIO(source)
        elif isinstance(source, (str, Path)):
            p = Path(source)
            if p.is_dir():
                raise InputError(f"{label} is a directory, not an image")
            if p.is_file() and p.stat().st_size == 0:  # not pipes: /dev/stdin, <(...)
                raise UnsupportedImageError(f"{label} is empty")
        img = Image.open(source)
        if getattr(img, "n_frames", 1) > 1:
            raise UnsupportedImageError(f"{label} is animated ({img.n_frames} frames); "
                                        "lcodec codes still images only")
        img.load()
        if img.width < 1 or img.height < 1:
            raise UnsupportedImageError(f"{label} has no pixels ({img.width}x{img.height})")
        return img
    except FileNotFoundError:
        raise InputError(f"{label}: no such file") from None
    except PermissionError:
        raise InputError(f"{label}: permission denied") from None
    except UnidentifiedImageError:
        raise UnsupportedImageError(f"{label} is not an image (or a format Pillow cannot read)") from None
    except IsADirectoryError:
        raise InputError(f"{label} is a directory, not an image") from None
    except Image.DecompressionBombError as exc:
        raise UnsupportedImageError(f"{label}: {_one_line(exc)}") from None
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on damaged files
        raise UnsupportedImageError(f"{label} could not be read as an image ({_one_line(exc)})") from None


def to_pixels(img: Image.Image) -> tuple[np.ndarray, int, list[str]]:
    """``(pixels HxWx3 uint8, channels 1 or 3, notices)``: :func:`to_planes` for callers that
    cannot keep transparency, so an image that is not fully opaque is refused rather than
    its alpha dropped."""
    pixels, channels, alpha, notices = to_planes(img)
    if alpha is not None:
        raise UnsupportedImageError("images with transparency are not supported here "
                                    "(the alpha channel would be lost)")
    return pixels, channels, notices


def to_planes(img: Image.Image) -> tuple[np.ndarray, int, np.ndarray | None, list[str]]:
    """``(pixels HxWx3 uint8, channels 1 or 3, alpha, notices)`` of an image, upright per its
    EXIF.

    Grayscale images come back with 1 channel recorded (the pixels replicated into three);
    palette, CMYK, 16-bit and other modes are converted with a notice. ``alpha`` is the
    ``(H, W)`` uint8 alpha plane when the image has one that is not fully opaque (including
    a PNG ``tRNS`` colour), else None.
    """
    notices: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - damaged EXIF: keep the stored orientation
        notices.append("damaged EXIF data ignored (orientation not applied)")
    mode = img.mode
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
        notices.append("palette image converted to RGB")
    if img.mode in ("La", "RGBa"):  # premultiplied alpha (in-memory images only)
        img = img.convert(img.mode[:-1] + "A")
    if img.mode in ("L", "RGB") and "transparency" in img.info:  # a tRNS colour
        img = img.convert(img.mode[0] + "A" if img.mode == "L" else "RGBA")
    alpha = None
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        plane = np.asarray(img.getchannel("A"), dtype=np.uint8)
        if plane.min() < 255:  # fully opaque alpha is dropped
            alpha = np.ascontiguousarray(plane)
        img = img.convert("L" if img.mode in ("LA", "La") else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 257.0 if arr.max() > 255 else 1.0
        img = Image.fromarray(np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8), "L")
        notices.append("16-bit image reduced to 8 bits")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        notices.append("floating-point image converted to 8 bits")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode not in ("L", "RGB"):
        notices.append(f"{img.mode} image converted to RGB")
        img = img.convert("RGB")
    if img.mode == "L":
        gray = np.asarray(img, dtype=np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2), 1, alpha, notices
    return np.asarray(img, dtype=np.uint8), 3, alpha, notices


def from_pixels(pixels: np.ndarray, channels: int, alpha: np.ndarray | None = None) -> Image.Image:
    """A Pillow image of decoded pixels; 1-channel images average the three planes. With an
    ``(H, W)`` ``alpha`` plane the image is ``LA`` or ``RGBA``."""
    if channels == 1:
        gray = np.rint(pixels.astype(np.float32).mean(axis=2)).astype(np.uint8)
        if alpha is not None:
            return Image.fromarray(np.stack([gray, alpha], axis=2), "LA")
        return Image.fromarray(gray, "L")
    if alpha is not None:
        return Image.fromarray(np.concatenate([pixels, alpha[:, :, None]], axis=2), "RGBA")
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def output_format(path: str, override: str | None = None) -> str:
    """Pillow format name for an output path (or an explicit ``--format``)."""
    if override:
        key = "." + override.lower().lstrip(".")
    else:
        key = Path(path).suffix.lower()
        if path == "-":
            key = ".png"
    try:
        return OUTPUT_FORMATS[key]
    except KeyError:
        raise InputError(f"cannot tell the output format from {path!r}; use one of "
                         f"{', '.join(sorted(OUTPUT_FORMATS))} (or --format)") from None


def encode_image(img: Image.Image, fmt: str, **options) -> bytes:
    """The bytes of ``img`` saved in Pillow format ``fmt`` (``options``: more save options,
    e.g. ``icc_profile``, ``exif``)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **{**_SAVE_OPTIONS.get(fmt, {}), **options})
    return buf.getvalue()

"""The Python API: images in, ``.lc`` bytes out, and back.

>>> import lcodec
>>> data = lcodec.encode(Image.open("photo.png"), quality=4)
>>> image = lcodec.decode(data)

Transparency (a lossless alpha plane), the ICC profile and EXIF travel with the pixels
(``strip=True`` drops ICC and EXIF). :class:`Codec` keeps loaded models (one per weights
version) for repeated use; the module-level functions share one per device. This layer ties
the parts together: image I/O, metadata, the codec pipeline, the container and the weights.
It never prints.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from . import container, metadata, rate_control
from .errors import CorruptStreamError, LcodecError, WeightsMismatchError
from .image_io import from_pixels, open_image, to_planes
from .rate_control import SIZE, Found, Target
from .tiling import ALIGN, Rect, choose_tile_size, padded

DEFAULT_QUALITY = 4.0
MIN_QUALITY, MAX_QUALITY = 1.0, 8.0
DEFAULT_MAX_PIXELS = 1 << 28  # refuse to decode larger images unless asked (decompression bombs)


MAX_EFFORT = 7


def refinement_steps(effort: int) -> int:
    """Latent refinement steps of an encoder effort: 1 (the default) refines nothing, each
    level above doubles the steps (2: 8, 3: 16, ... 7: 256). Decoding time does not change."""
    if not 1 <= effort <= MAX_EFFORT:
        raise LcodecError(f"effort must be an integer in [1, {MAX_EFFORT}], got {effort}")
    return 0 if effort == 1 else 8 * 2 ** (effort - 2)


def check_quality(quality: float) -> float:
    q = float(quality)
    if not MIN_QUALITY <= q <= MAX_QUALITY:
        raise LcodecError(f"quality must be between {MIN_QUALITY:g} and {MAX_QUALITY:g}, got {quality}")
    return float(np.float32(q))  # what the container stores, so encoder and decoder agree


@dataclass
class Prepared:
    """An image made ready for the encoder: upright ``(H, W, 3)`` uint8 pixels, 1 or 3
    ``channels``, the ``(H, W)`` alpha plane (None when opaque), the ICC profile and EXIF to
    keep, and notices about conversions."""

    pixels: np.ndarray
    channels: int
    alpha: np.ndarray | None = None
    icc: bytes | None = None
    exif: bytes | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def psnr(self, pixels: np.ndarray) -> float:
        """PSNR in dB of decoded ``(H, W, 3)`` uint8 ``pixels`` against these (of the gray
        plane for a grayscale image; alpha aside); ``inf`` when identical."""
        ref = self.pixels.astype(np.float64)
        out = pixels.astype(np.float64)
        if self.channels == 1:
            ref, out = ref[:, :, 0], np.rint(out.astype(np.float32).mean(axis=2))
        mse = float(np.mean((ref - out) ** 2))
        return float("inf") if mse == 0 else 10 * float(np.log10(255.0 ** 2 / mse))


def prepare(image: Image.Image | str | Path | bytes, strip: bool = False) -> Prepared:
    """Planes and metadata of an image (a Pillow image, a path or the bytes of a file).

    ``strip`` drops the ICC profile and EXIF (the EXIF orientation is applied either way).
    """
    if not isinstance(image, Image.Image):
        image = open_image(image)
    icc = exif = None
    notices: list[str] = []
    if not strip:
        icc, exif, notices = metadata.extract(image)
    pixels, channels, alpha, more = to_planes(image)
    return Prepared(pixels, channels, alpha, icc, exif, more + notices)


@dataclass
class Decoded:
    """What a ``.lc`` file decodes to: ``(H, W, 3)`` uint8 pixels (of the region if one was
    asked for), the header, the alpha plane (None when opaque), ICC profile and EXIF."""

    pixels: np.ndarray
    header: container.Header
    alpha: np.ndarray | None = None
    icc: bytes | None = None
    exif: bytes | None = None

    @property
    def mode(self) -> str:
        base = "L" if self.header.channels == 1 else "RGB"
        return base + "A" if self.alpha is not None else base

    def to_image(self, strip: bool = False) -> Image.Image:
        """A Pillow image (``L``, ``LA``, ``RGB`` or ``RGBA``) carrying the ICC profile and
        EXIF in ``info`` (unless ``strip``)."""
        img = from_pixels(self.pixels, self.header.channels, self.alpha)
        if not strip:
            if self.icc:
                img.info["icc_profile"] = self.icc
            if self.exif:
                img.info["exif"] = metadata.exif_for_pillow(self.exif)
        return img


class Codec:
    """Encoder/decoder bound to a device; loads weights lazily and keeps them.

    Args:
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda"``.
        model: the model to encode with, ``NAME`` (its newest version) or ``NAME:vN``
            (default: the manifest's default model).
        tile: tile size in pixels (a multiple of 64; None: chosen from the memory budget).
        max_memory_mb: memory budget of the transforms (None: from the machine).
        effort: encoder effort 1..7 (:func:`refinement_steps`): higher efforts search for
            better latents, for smaller files at the same quality, at more encoding time.
    """

    def __init__(self, device: str = "auto", model: str | None = None, tile: int | None = None,
                 max_memory_mb: int | None = None, effort: int = 1) -> None:
        from .device import memory_budget, select_device
        from .weights import parse_spec

        self.refine_steps = refinement_steps(effort)

        self.device = select_device(device)
        self.model_name, self.model_version = (None, None) if model is None else parse_spec(model)
        if tile is not None and (tile < 0 or tile % ALIGN):
            raise LcodecError(f"tile size must be 0 (automatic) or a multiple of {ALIGN}, got {tile}")
        self.tile = tile or None
        self.budget = memory_budget(self.device, max_memory_mb)
        self._pipelines: dict = {}

    def _pipeline(self, name: str | None, version: int | None = None):
        key = (name, version)
        if key not in self._pipelines:
            from .pipeline import CodecPipeline
            from .weights import load_model

            # CPU: numpy transforms (no torch import); CUDA: the torch model on the GPU.
            device = None if self.device.type == "cpu" else self.device.torch()
            self._pipelines[key] = CodecPipeline(load_model(name, version), device)
        return self._pipelines[key]

    def _encoding_pipeline(self):
        return self._pipeline(self.model_name, self.model_version)

    def encoding_model(self) -> str:
        """The label (``NAME vN``) of the weights this codec encodes with (loading them)."""
        return self._encoding_pipeline().loaded.entry.label

    def encode_pixels(self, pixels: np.ndarray, channels: int, quality: float = DEFAULT_QUALITY, *,
                      alpha: np.ndarray | None = None, icc: bytes | None = None,
                      exif: bytes | None = None) -> bytes:
        """``.lc`` bytes of an ``(H, W, 3)`` uint8 array (``channels`` 1 marks grayscale), with
        an optional ``(H, W)`` uint8 ``alpha`` plane (coded losslessly), ICC profile and EXIF."""
        return self._encode_pixels(pixels, channels, quality, alpha, icc, exif)

    def _encode_pixels(self, pixels: np.ndarray, channels: int, quality: float,
                       alpha: np.ndarray | None, icc: bytes | None, exif: bytes | None,
                       memo: dict | None = None) -> bytes:
        """:meth:`encode_pixels`, with the pipeline's analysis ``memo`` for repeated encodes."""
        q = check_quality(quality)
        if alpha is not None and tuple(alpha.shape) != tuple(pixels.shape[:2]):
            raise LcodecError(f"alpha plane of shape {alpha.shape} does not match the "
                              f"{pixels.shape[1]}x{pixels.shape[0]} image")
        ancillary = metadata.ancillary_chunks(icc, exif)
        pipe = self._encoding_pipeline()
        entry = pipe.loaded.entry
        height, width = pixels.shape[:2]
        tile = self.tile_size(width, height)
        hyper, streams = pipe.encode(pixels, q, tile, self.refine_steps, memo)
        flags = container.FLAG_Z_PER_LEVEL if pipe.z_per_level else 0
        header = container.Header(width, height, channels, q, entry.name, entry.version, entry.digest,
                                  tile_width=tile, tile_height=tile, flags=flags)
        alpha_payload = metadata.pack_alpha(alpha) if alpha is not None else None
        return container.serialize(container.Container(header, hyper, streams, ancillary,
                                                       alpha=alpha_payload))

    def tile_size(self, width: int, height: int) -> int:
        """The tile size used for an image: ``--tile``, else the memory budget's choice
        (0 when the image fits in one tile)."""
        if self.tile:
            return 0 if max(padded(width), padded(height)) <= self.tile else self.tile
        per_pixel = self._encoding_pipeline().loaded.transforms.bytes_per_pixel(encoder=True)
        return choose_tile_size(width, height, self.budget, per_pixel)

    def encode(self, image: Image.Image | str | Path, quality: float = DEFAULT_QUALITY,
               strip: bool = False) -> bytes:
        """``.lc`` bytes of a Pillow image or an image file (conversions are warned about).

        Transparency is kept losslessly, and the ICC profile and EXIF unless ``strip``."""
        prep = prepare(image, strip)
        for note in prep.notices:
            warnings.warn(note, stacklevel=2)
        return self.encode_prepared(prep, quality)

    def encode_prepared(self, prep: Prepared, quality: float = DEFAULT_QUALITY) -> bytes:
        """``.lc`` bytes of a :func:`prepare` d image."""
        return self.encode_pixels(prep.pixels, prep.channels, quality, alpha=prep.alpha,
                                  icc=prep.icc, exif=prep.exif)

    def encode_for_target(self, prep: Prepared, target: Target) -> Found:
        """The ``.lc`` file of a :func:`prepare` d image whose quality best meets ``target``: the
        highest quality that fits a size, or the lowest that reaches a PSNR (a few complete
        encodes, plus a decode each for a PSNR; :mod:`lcodec.rate_control`). ``met`` is False
        when no quality in [1, 8] meets it; the file is then the closest one. The analysis
        transform runs once: the encodes share its output before the quality's gain."""
        memo: dict = {}

        def encode(q: float) -> bytes:
            return self._encode_pixels(prep.pixels, prep.channels, check_quality(q), prep.alpha,
                                       prep.icc, prep.exif, memo)

        def measure(data: bytes) -> float:
            return len(data) if target.kind == SIZE else prep.psnr(self.decode_full(data).pixels)

        found = rate_control.search(encode, measure, target, MIN_QUALITY, MAX_QUALITY)
        return replace(found, quality=check_quality(found.quality))

    def decode_pixels(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                      region: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, container.Header]:
        """Decoded ``(H, W, 3)`` uint8 pixels (of ``region = (x, y, w, h)`` if given) and header."""
        decoded = self.decode_full(data, max_pixels, region)
        return decoded.pixels, decoded.header

    def decode_full(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                    region: tuple[int, int, int, int] | None = None) -> Decoded:
        """Everything a ``.lc`` file holds, decoded (pixels, alpha, ICC, EXIF; of ``region =
        (x, y, w, h)`` if given)."""
        parsed = container.parse(data)
        h = parsed.header
        if h.width * h.height > max_pixels:
            raise CorruptStreamError(f"image of {h.width}x{h.height} exceeds the limit of "
                                     f"{max_pixels} pixels (raise it with --max-pixels)")
        if padded(h.width) * padded(h.height) > max(max_pixels, padded(1) ** 2):
            # the codec works on 64-pixel multiples: 2^28 x 1 would mean 64 x 2^28 of latents
            raise CorruptStreamError(f"image of {h.width}x{h.height} (coded as {padded(h.width)}x"
                                     f"{padded(h.height)}) exceeds the limit of {max_pixels} pixels "
                                     "(raise it with --max-pixels)")
        if not MIN_QUALITY <= h.quality <= MAX_QUALITY:
            raise CorruptStreamError(f"quality {h.quality} is out of range")
        if h.tile_width != h.tile_height or h.tile_width % ALIGN:
            raise CorruptStreamError(f"invalid tile size {h.tile_width}x{h.tile_height}")
        rect = None
        if region is not None:
            x, y, w, hh = region
            if w <= 0 or hh <= 0 or x < 0 or y < 0 or x + w > h.width or y + hh > h.height:
                raise LcodecError(f"region {x},{y},{w},{hh} is not inside the {h.width}x{h.height} image")
            rect = Rect(x, y, x + w, y + hh)
        pipe = self._pipeline(h.model_name, h.model_version)
        if pipe.loaded.entry.digest != h.model_digest:
            raise WeightsMismatchError(
                f"the file was encoded with weights {h.model_name} v{h.model_version} "
                f"#{h.model_digest.hex()}, but the installed ones are #{pipe.loaded.entry.digest.hex()}")
        out_w, out_h = (rect.width, rect.height) if rect else (h.width, h.height)
        synthesis_tile = self.tile or choose_tile_size(
            out_w, out_h, self.budget, pipe.loaded.transforms.bytes_per_pixel(encoder=False))
        alpha = None
        if parsed.alpha is not None:
            alpha = metadata.unpack_alpha(parsed.alpha, h.width, h.height)
            if rect is not None:
                alpha = np.ascontiguousarray(alpha[rect.y0:rect.y1, rect.x0:rect.x1])
        pixels = pipe.decode(parsed.hyper, parsed.tiles, h.height, h.width, h.quality, h.tile_width, rect,
                             synthesis_tile, z_per_level=bool(h.flags & container.FLAG_Z_PER_LEVEL))
        icc, exif = metadata.read_ancillary(parsed.ancillary)
        return Decoded(pixels, h, alpha, icc, exif)

    def decode(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
               region: tuple[int, int, int, int] | None = None, strip: bool = False) -> Image.Image:
        """The Pillow image (``L``, ``LA``, ``RGB`` or ``RGBA``) of ``.lc`` bytes (or of a
        region of it), with the ICC profile and EXIF in ``info`` unless ``strip``."""
        return self.decode_full(data, max_pixels, region).to_image(strip)


def info(data: bytes) -> dict:
    """What a ``.lc`` file holds, without decoding it."""
    parsed = container.parse(data)
    h = parsed.header
    icc, exif = metadata.read_ancillary(parsed.ancillary)
    mode = ("L" if h.channels == 1 else "RGB") + ("A" if parsed.alpha is not None else "")
    return {"format_version": parsed.version, "model": h.model_name, "model_version": h.model_version,
            "model_digest": h.model_digest.hex(), "width": h.width, "height": h.height,
            "mode": mode, "quality": round(h.quality, 4),
            "alpha": parsed.alpha is not None, "icc_bytes": len(icc or b""), "exif_bytes": len(exif or b""),
            "bytes": len(data), "bpp": round(8 * len(data) / (h.width * h.height), 5),
            "tiles": len(parsed.tiles),
            "tile_size": [h.tile_width, h.tile_height] if h.tile_width else None}


_DEFAULT_CODECS: dict[str, Codec] = {}


def _default_codec(device: str) -> Codec:
    if device not in _DEFAULT_CODECS:
        _DEFAULT_CODECS[device] = Codec(device)
    return _DEFAULT_CODECS[device]


def encode(image: Image.Image | str | Path, quality: float = DEFAULT_QUALITY, device: str = "auto",
           strip: bool = False) -> bytes:
    """``.lc`` bytes of an image (see :meth:`Codec.encode`)."""
    return _default_codec(device).encode(image, quality, strip=strip)


def decode(data: bytes, device: str = "auto", strip: bool = False) -> Image.Image:
    """The image of ``.lc`` bytes (see :meth:`Codec.decode`)."""
    return _default_codec(device).decode(data, strip=strip)

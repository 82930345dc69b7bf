"""Codecs the evaluation can run: classical ones (JPEG, WebP, AVIF, JPEG XL) and lcodec.

Every codec is a small object with ``name``, ``settings`` (a dict written into
reports), ``qualities`` (default sweep), ``quality_range`` and
``quality_is_float`` (used by ``compare`` to search for a target bpp), and
``encode(img, quality) -> bytes`` / ``decode(data) -> PIL.Image`` (RGB).

lcodec appears as ``lcodec`` (the manifest's default model) or ``lcodec-<model>``
(a named model of ``weights/manifest.json``, e.g. ``lcodec-hyperprior``,
``lcodec-context``).

Depends on numpy and Pillow; JPEG XL needs the optional ``imagecodecs``
package. lcodec is reached only through ``lcodec.api`` and the manifest reader
``lcodec.weights`` (both imported lazily; neither import pulls in torch before a
model is loaded, so importing this module never imports torch). Encoders run single-threaded so
timings are comparable and runs are reproducible.
"""

from __future__ import annotations

import importlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image, features


@runtime_checkable
class EvalCodec(Protocol):
    """What ``run_eval`` and ``compare`` need from a codec."""

    name: str
    settings: dict[str, Any]
    qualities: list[float]
    quality_range: tuple[float, float]
    quality_is_float: bool

    def encode(self, img: Image.Image, quality: float) -> bytes: ...

    def decode(self, data: bytes) -> Image.Image: ...


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def _pillow_decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return _rgb(im)


@dataclass
class JpegCodec:
    """Baseline JPEG via Pillow/libjpeg, 4:2:0 chroma subsampling, optimised Huffman tables."""

    name: str = "jpeg"
    qualities: list[float] = field(default_factory=lambda: [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95])
    quality_range: tuple[float, float] = (1, 95)
    quality_is_float: bool = False

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "library": "Pillow " + Image.__version__,
            "libjpeg": features.version("jpg"),
            "subsampling": "4:2:0",
            "optimize": True,
            "progressive": False,
            "quality": "Pillow quality 1-95",
        }

    def encode(self, img: Image.Image, quality: float) -> bytes:
        buf = io.BytesIO()
        _rgb(img).save(buf, format="JPEG", quality=int(quality), subsampling=2, optimize=True)
        return buf.getvalue()

    def decode(self, data: bytes) -> Image.Image:
        return _pillow_decode(data)


@dataclass
class WebpCodec:
    """Lossy WebP via Pillow/libwebp, slowest/best method 6."""

    name: str = "webp"
    qualities: list[float] = field(default_factory=lambda: [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95])
    quality_range: tuple[float, float] = (0, 100)
    quality_is_float: bool = False

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "library": "Pillow " + Image.__version__,
            "libwebp": features.version("webp"),
            "lossless": False,
            "method": 6,
            "quality": "Pillow quality 0-100",
        }

    def encode(self, img: Image.Image, quality: float) -> bytes:
        buf = io.BytesIO()
        _rgb(img).save(buf, format="WEBP", quality=int(quality), method=6, lossless=False)
        return buf.getvalue()

    def decode(self, data: bytes) -> Image.Image:
        return _pillow_decode(data)


AVIF_SWEEP = [10, 20, 30, 40, 50, 60, 70, 80, 90]


@dataclass
class AvifCodec:
    """AVIF via Pillow's libavif plugin (aom encoder), 4:4:4, one encoder thread."""

    speed: int = 6
    name: str = ""
    qualities: list[float] = field(default_factory=lambda: list(AVIF_SWEEP))
    quality_range: tuple[float, float] = (0, 100)
    quality_is_float: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"avif-s{self.speed}"
        if self.speed <= 3 and self.qualities == AVIF_SWEEP:
            # slow speeds take ~5-10 s per Kodak image on one core: a shorter sweep
            self.qualities = [10, 25, 40, 55, 70, 85]

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "library": "Pillow " + Image.__version__,
            "libavif": features.version("avif"),
            "encoder": _avif_encoder_version(),
            "speed": self.speed,
            "subsampling": "4:4:4",
            "range": "full",
            "max_threads": 1,
            "quality": "Pillow quality 0-100",
        }

    def encode(self, img: Image.Image, quality: float) -> bytes:
        buf = io.BytesIO()
        _rgb(img).save(
            buf,
            format="AVIF",
            quality=int(quality),
            speed=self.speed,
            subsampling="4:4:4",
            max_threads=1,
        )
        return buf.getvalue()

    def decode(self, data: bytes) -> Image.Image:
        return _pillow_decode(data)


def _avif_encoder_version() -> str | None:
    try:
        from PIL.AvifImagePlugin import _avif  # type: ignore[attr-defined]

        versions = str(_avif.codec_versions())
    except Exception:  # pragma: no cover - only without AVIF support
        return None
    encoders = [v for v in versions.split(", ") if "enc" in v]
    return ", ".join(encoders) or versions


@dataclass
class JxlCodec:
    """JPEG XL via imagecodecs/libjxl: ``level`` is the libjxl quality (0-100), effort 7."""

    name: str = "jxl"
    effort: int = 7
    qualities: list[float] = field(default_factory=lambda: [10, 20, 30, 40, 50, 60, 70, 80, 90, 95])
    quality_range: tuple[float, float] = (1, 99)
    quality_is_float: bool = False

    @property
    def settings(self) -> dict[str, Any]:
        import imagecodecs

        return {
            "library": "imagecodecs " + imagecodecs.__version__,
            "libjxl": _imagecodecs_version("jpegxl"),
            "effort": self.effort,
            "numthreads": 1,
            "quality": "libjxl quality 1-99 (mapped to butteraugli distance)",
        }

    def encode(self, img: Image.Image, quality: float) -> bytes:
        import imagecodecs

        arr = np.asarray(_rgb(img))
        return bytes(imagecodecs.jpegxl_encode(arr, level=int(quality), effort=self.effort, numthreads=1))

    def decode(self, data: bytes) -> Image.Image:
        import imagecodecs

        arr = imagecodecs.jpegxl_decode(data, numthreads=1)
        if arr.dtype != np.uint8:  # pragma: no cover - we only write 8-bit
            raise ValueError(f"unexpected JPEG XL sample type {arr.dtype}")
        return _rgb(Image.fromarray(arr))


def _imagecodecs_version(lib: str) -> str | None:
    try:
        import imagecodecs

        return str(getattr(imagecodecs, lib + "_version")())
    except Exception:  # pragma: no cover
        return None


class LcodecCodec:
    """lcodec itself, through ``lcodec.api.Codec`` (model loaded once, lazily).

    ``model`` names a manifest entry (its newest version) and makes the eval name
    ``lcodec-<model>``; without it the manifest's default model is used under the name
    ``lcodec``.
    """

    quality_range: tuple[float, float] = (1.0, 8.0)
    quality_is_float = True

    def __init__(self, device: str = "cpu", qualities: Sequence[float] | None = None,
                 model: str | None = None, effort: int = 1) -> None:
        self.device = device
        self.model = model or None
        self.effort = effort
        self.name = lcodec_name(self.model, effort)
        self.qualities: list[float] = list(qualities) if qualities else [1, 2, 3, 4, 5, 6, 7, 8]
        self._codec: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # never pickle a loaded model into a worker process; workers load their own
        return {"device": self.device, "model": self.model, "effort": self.effort,
                "name": self.name, "qualities": self.qualities, "_codec": None}

    def warmup(self) -> None:
        """Load the model and run one tiny encode/decode, so that neither the model load
        nor torch's first-call overhead is counted in the first measured image."""
        if self._codec is None:
            tiny = Image.new("RGB", (64, 64), (128, 128, 128))
            self.codec.decode(self.codec.encode(tiny, quality=4.0))

    @property
    def codec(self) -> Any:
        if self._codec is None:
            from lcodec.api import Codec

            self._codec = Codec(device=self.device, model=self.model, effort=self.effort)
        return self._codec

    @property
    def settings(self) -> dict[str, Any]:
        info: dict[str, Any] = {"device": self.device, "quality": "float in [1, 8]",
                                "effort": self.effort}
        try:
            from lcodec.weights import find_entry

            entry = find_entry(self.model)
            info["model"] = entry.label
            info["weights_sha256"] = entry.sha256[:16]
        except Exception:  # noqa: BLE001 - settings are informative only
            info["model"] = self.model or "default"
        try:
            import lcodec

            version = getattr(lcodec, "__version__", None)
            if version:
                info["version"] = version
        except Exception:  # pragma: no cover
            pass
        return info

    def encode(self, img: Image.Image, quality: float) -> bytes:
        return bytes(self.codec.encode(_rgb(img), quality=float(quality)))

    def decode(self, data: bytes) -> Image.Image:
        return _rgb(self.codec.decode(data))


LCODEC_PREFIX = "lcodec-"
_MODEL_NAME = re.compile(r"[A-Za-z0-9_.+]+(?:-[A-Za-z0-9_.+]+)*")


EFFORT_SUFFIX = re.compile(r"@e([0-9]+)$")


def lcodec_name(model: str | None, effort: int = 1) -> str:
    """Eval name of an lcodec model: ``lcodec-<model>``, or ``lcodec`` for the default one,
    with ``@e<effort>`` appended for an encoder effort above 1."""
    base = LCODEC_PREFIX + model if model else "lcodec"
    return base + (f"@e{effort}" if effort > 1 else "")


def lcodec_effort(name: str) -> int:
    """The encoder effort of an lcodec eval name (1 without an ``@e<effort>`` suffix)."""
    match = EFFORT_SUFFIX.search(name)
    return int(match.group(1)) if match else 1


def is_lcodec_name(key: str) -> bool:
    """Whether a (lower-case) eval name names lcodec: ``lcodec``, ``lcodec-<model>``,
    ``lcodec@e<effort>`` or ``lcodec-<model>@e<effort>``."""
    return key == "lcodec" or key.startswith((LCODEC_PREFIX, "lcodec@"))


def lcodec_model(name: str) -> str | None:
    """The model named by a canonical lcodec eval name (None for ``lcodec``, the default)."""
    name = EFFORT_SUFFIX.sub("", name)
    return name[len(LCODEC_PREFIX):] if name.startswith(LCODEC_PREFIX) else None


ALL_CODECS: tuple[str, ...] = ("lcodec", "jpeg", "webp", "avif-s6", "avif-s2", "jxl")
ALIASES: dict[str, str] = {"avif": "avif-s6", "jpegxl": "jxl", "jpg": "jpeg"}


def canonical_name(name: str) -> str:
    """Resolve an alias ("avif" -> "avif-s6"); raises ValueError for unknown names.

    ``lcodec-<model>`` is accepted for any model name (whether it is installed is
    :func:`missing_reason`'s business); the model part keeps its case, as manifest names
    are matched exactly.
    """
    raw = name.strip()
    if is_lcodec_name(raw.lower()):
        effort = lcodec_effort(raw)
        base = EFFORT_SUFFIX.sub("", raw)
        if base.lower() == "lcodec":
            return lcodec_name(None, effort)
        model = base[len(LCODEC_PREFIX):]
        if not base.lower().startswith(LCODEC_PREFIX) or not _MODEL_NAME.fullmatch(model):
            raise ValueError(f"unknown codec {name!r}: expected lcodec-<model name>[@e<effort>]")
        return lcodec_name(model, effort)
    key = raw.lower()
    key = ALIASES.get(key, key)
    if key not in ALL_CODECS:
        raise ValueError(f"unknown codec {name!r} (choose from {', '.join(ALL_CODECS)}, avif, "
                         "lcodec-<model>)")
    return key


def missing_reason(name: str) -> str | None:
    """Why codec ``name`` cannot run here, or None when it can."""
    key = canonical_name(name)
    if key in ("jpeg", "webp"):
        feature = "jpg" if key == "jpeg" else "webp"
        return None if features.check(feature) else f"Pillow was built without {feature} support"
    if key.startswith("avif"):
        return None if features.check("avif") else "Pillow was built without AVIF support"
    if key == "jxl":
        try:
            imagecodecs = importlib.import_module("imagecodecs")
        except ImportError:
            return "imagecodecs is not installed (pip install imagecodecs)"
        codec = getattr(imagecodecs, "JPEGXL", None)
        if codec is None or not getattr(codec, "available", False):
            return "this imagecodecs build has no JPEG XL support"
        return None
    if is_lcodec_name(key):
        try:
            api = importlib.import_module("lcodec.api")
        except ImportError as exc:
            return f"lcodec.api cannot be imported ({exc})"
        if not hasattr(api, "Codec"):
            return "lcodec.api has no Codec class"
        if not 1 <= lcodec_effort(key) <= api.MAX_EFFORT:
            return f"effort must be in [1, {api.MAX_EFFORT}]"
        model = lcodec_model(key)
        if model is None:
            return None
        try:
            from lcodec.weights import read_manifest  # no torch at import time

            entries = read_manifest()
        except Exception as exc:  # noqa: BLE001 - WeightsError or a broken install
            return f"cannot read the weights manifest ({exc})"
        if not any(e.name == model for e in entries):
            installed = ", ".join(sorted({e.label for e in entries})) or "none"
            return f"weights {model} are not installed (installed: {installed})"
        return None
    raise AssertionError(key)  # pragma: no cover


def available_codecs(names: Sequence[str] = ALL_CODECS) -> tuple[list[str], dict[str, str]]:
    """Split ``names`` into (usable canonical names, {missing name: reason})."""
    usable: list[str] = []
    missing: dict[str, str] = {}
    for name in names:
        key = canonical_name(name)
        if key in usable or key in missing:
            continue
        reason = missing_reason(key)
        if reason is None:
            usable.append(key)
        else:
            missing[key] = reason
    return usable, missing


def make_codec(name: str, qualities: Sequence[float] | None = None, device: str = "cpu") -> EvalCodec:
    """Create codec ``name``; ``qualities`` replaces its default sweep."""
    key = canonical_name(name)
    codec: EvalCodec
    if is_lcodec_name(key):
        codec = LcodecCodec(device=device, model=lcodec_model(key), effort=lcodec_effort(key))
    elif key == "jpeg":
        codec = JpegCodec()
    elif key == "webp":
        codec = WebpCodec()
    elif key == "avif-s6":
        codec = AvifCodec(speed=6)
    elif key == "avif-s2":
        codec = AvifCodec(speed=2)
    else:
        codec = JxlCodec()
    if qualities:
        codec.qualities = list(qualities)
    return codec

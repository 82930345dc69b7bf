"""Image-folder helpers and the evaluation error type.

Depends on Pillow and numpy only; must not import torch or lcodec's codec code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})


class EvalError(Exception):
    """A user-facing evaluation error (bad folder, unreadable image, bad option)."""


def list_images(images_dir: str | Path, limit: int | None = None) -> list[Path]:
    """Image files directly inside ``images_dir``, sorted by name."""
    folder = Path(images_dir)
    if not folder.is_dir():
        raise EvalError(f"not a directory: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EvalError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files[:limit] if limit else files


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as an 8-bit RGB PIL image (alpha is dropped)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                raise EvalError(f"{path}: only 8-bit images are supported (mode {im.mode})")
            return im.convert("RGB")
    except FileNotFoundError:
        raise EvalError(f"no such file: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise EvalError(f"cannot read image {path}: {exc}") from None


def as_array(img: Image.Image) -> NDArray[np.uint8]:
    """HxWx3 uint8 array of a PIL image (converted to RGB if needed)."""
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)

"""Side-by-side crops of several codecs at (about) one bitrate, for people to look at.

For each codec the setting whose whole-file bpp is closest to the target is found (bisection
for lcodec's float quality, a scan of the integer range for the others); the same crop of the
original and of every decoded image is laid out in one labelled picture. No torch here:
lcodec is reached through :mod:`lcodec.eval.classical`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .classical import EvalCodec, make_codec
from .images import as_array, load_rgb
from .metrics import psnr


def _bpp(codec: EvalCodec, img: Image.Image, quality: float) -> tuple[float, bytes]:
    data = codec.encode(img, quality)
    return 8 * len(data) / (img.width * img.height), data


def closest_setting(codec: EvalCodec, img: Image.Image, target_bpp: float) -> tuple[float, bytes]:
    """The quality whose bpp is closest to ``target_bpp`` (bpp grows with quality)."""
    lo, hi = codec.quality_range
    tried: dict[float, tuple[float, bytes]] = {}

    def probe(q: float) -> float:
        if q not in tried:
            tried[q] = _bpp(codec, img, q)
        return tried[q][0]

    if codec.quality_is_float:
        for _ in range(12):
            mid = (lo + hi) / 2
            if probe(mid) < target_bpp:
                lo = mid
            else:
                hi = mid
        probe(lo), probe(hi)
    else:
        a, b = int(lo), int(hi)
        while b - a > 1:
            mid = (a + b) // 2
            if probe(mid) < target_bpp:
                a = mid
            else:
                b = mid
        probe(a), probe(b)
    best = min(tried, key=lambda q: abs(tried[q][0] - target_bpp))
    return best, tried[best][1]


def compare(image_path: str | Path, bpp: float, out_path: str | Path,
            codecs: Sequence[str] = ("lcodec", "jpeg", "webp", "avif-s6"),
            crop: tuple[int, int, int, int] | None = None, device: str = "cpu") -> list[dict[str, Any]]:
    """Write the comparison picture; return one row (codec, quality, bpp, PSNR) per codec."""
    img = load_rgb(image_path)
    original = as_array(img)
    if crop is None:
        size = min(256, img.width, img.height)
        crop = ((img.width - size) // 2, (img.height - size) // 2, size, size)
    x, y, w, h = crop
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > img.width or y + h > img.height:
        raise ValueError(f"crop {crop} is not inside the {img.width}x{img.height} image")
    panels = [("original", None, None, original)]
    rows = []
    for name in codecs:
        codec = make_codec(name, device=device)
        quality, data = closest_setting(codec, img, bpp)
        decoded = as_array(codec.decode(data))
        real_bpp = 8 * len(data) / (img.width * img.height)
        value = psnr(original, decoded)
        rows.append({"codec": codec.name, "quality": quality, "bpp": real_bpp, "psnr": value})
        panels.append((f"{codec.name} q{quality:g}", real_bpp, value, decoded))
    scale = max(1, 256 // max(w, h))
    pw, ph, label = w * scale, h * scale, 30
    sheet = Image.new("RGB", (len(panels) * (pw + 6) - 6, ph + label), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (title, b, p, pixels) in enumerate(panels):
        part = Image.fromarray(np.ascontiguousarray(pixels[y:y + h, x:x + w])).resize((pw, ph), Image.NEAREST)
        left = i * (pw + 6)
        sheet.paste(part, (left, label))
        draw.text((left + 2, 2), title, fill="black")
        if b is not None:
            draw.text((left + 2, 15), f"{b:.3f} bpp, {p:.2f} dB", fill="black")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path)
    return rows

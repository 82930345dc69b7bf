"""Tile geometry: which pixels and latents each tile covers, and the halos around them.

Pure arithmetic on integers (no torch, no numpy). Coordinates are in pixels of the *padded*
image (the image extended by edge replication to a multiple of ``ALIGN`` in each direction).
Tiles are ``size x size`` squares in raster order; the last column and row may be narrower.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIGN = 64         # tile sizes and padded image sizes are multiples of the model's total stride
LATENT_STRIDE = 16  # pixels per latent position of y
# Halo of the analysis transform (receptive field 61 px) and, in latent positions, of the
# synthesis transform (receptive field under 2 latents each side): both rounded up generously.
PIXEL_HALO = 64
LATENT_HALO = 4
# Halos of the hyper transforms: h_a (receptive field +-7 latents of y) and h_s (under +-2
# positions of z), so that tiled hyper-latents and entropy parameters equal whole-image ones.
HYPER_ANALYSIS_HALO = 16   # in positions of y
HYPER_SYNTHESIS_HALO = 3   # in positions of z
Z_STRIDE = 4               # positions of y per position of z


def padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class Rect:
    """A half-open rectangle ``[x0, x1) x [y0, y1)``."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def intersects(self, other: "Rect") -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1

    def grow(self, margin: int, limit: "Rect") -> "Rect":
        """This rectangle grown by ``margin`` on every side, clipped to ``limit``."""
        return Rect(max(limit.x0, self.x0 - margin), max(limit.y0, self.y0 - margin),
                    min(limit.x1, self.x1 + margin), min(limit.y1, self.y1 + margin))

    def scaled(self, factor: int) -> "Rect":
        """Exact division of every coordinate by ``factor`` (pixels -> latents)."""
        assert all(v % factor == 0 for v in (self.x0, self.y0, self.x1, self.y1))
        return Rect(self.x0 // factor, self.y0 // factor, self.x1 // factor, self.y1 // factor)

    def shifted(self, dx: int, dy: int) -> "Rect":
        return Rect(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)


def tile_grid(width: int, height: int, size: int) -> list[Rect]:
    """Tiles of the padded image in raster order (``size`` 0 means one tile)."""
    pw, ph = padded(width), padded(height)
    if size <= 0:
        return [Rect(0, 0, pw, ph)]
    if size % ALIGN:
        raise ValueError(f"tile size must be a multiple of {ALIGN}, got {size}")
    return [Rect(x, y, min(x + size, pw), min(y + size, ph))
            for y in range(0, ph, size) for x in range(0, pw, size)]


def image_rect(width: int, height: int) -> Rect:
    return Rect(0, 0, padded(width), padded(height))


def choose_tile_size(width: int, height: int, budget_bytes: int, bytes_per_pixel: int = 320,
                     largest: int = 2048) -> int:
    """Largest tile (multiple of ``ALIGN``) whose working set fits ``budget_bytes``; 0 if the
    whole image fits (then the image is coded as one tile).

    ``bytes_per_pixel`` is the measured peak activation memory of the transforms per pixel of
    a tile window (hidden channels at half resolution, float32, with temporaries).
    """
    pw, ph = padded(width), padded(height)
    if pw * ph * bytes_per_pixel <= budget_bytes and max(pw, ph) <= largest:
        return 0
    size = largest
    while size > ALIGN and (size + 2 * PIXEL_HALO) ** 2 * bytes_per_pixel > budget_bytes:
        size -= ALIGN
    return size

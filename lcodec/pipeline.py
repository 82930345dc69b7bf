"""The codec pipeline: pixels <-> entropy-coded tile streams, for any model family.

A model family supplies four stages (see :mod:`lcodec.models.hyperprior`). The float pixel
transforms, ``analysis``, ``synthesis`` and ``hyper_analysis`` (its output ``z`` is
transmitted, so it needs no reproducibility), run with numpy on the CPU
(:mod:`lcodec.runtime.transforms`, no torch import) or with torch on a given torch device
(:mod:`lcodec.models.device_transforms`: CUDA, float64 for tests, and latent refinement,
which needs gradients). On the CPU, the encoder of an image of :data:`TORCH_CPU_MIN_PIXELS`
pixels or more runs them with torch too, whose convolutions are about twice as fast as the
numpy runtime's once its import is paid. The hyper-synthesis produces the parameters handed
to the entropy coder, so it runs as an integer network (:mod:`lcodec.runtime.exact`) whose
results are bit-identical on every machine.

Symbols: ``z`` is coded as ``round(z)`` with one table per channel (or, with weights that
have them, per channel and quality level: :attr:`CodecPipeline.z_per_level`), in one stream
for the whole image; ``y`` in one stream per tile, in the order and with the parameters of the model
family (:mod:`lcodec.latent_coding`).

Large images are processed in tiles (:mod:`lcodec.tiling`) so that the transforms' memory
depends on the tile size, not the image size (only the latents, 1/256 of the pixels times M
channels, are held whole). Every transform of a tile sees a halo of its neighbours and keeps
only the tile's part, so tiled latents, hyper-latents and entropy parameters equal the
whole-image ones up to float rounding and the reconstruction shows no seams. A tile's latent
stream depends only on the (small, global) hyper-latent, so a region decodes from its own
tiles. The synthesis works on tiles of the decoder's choosing (its memory budget).
"""
from __future__ import annotations

import numpy as np

from .entropy import StreamDecoder, StreamEncoder
from .errors import CorruptStreamError
from .latent_coding import LatentCoder
from .runtime.transforms import nearest_level
from .tiling import (ALIGN, HYPER_ANALYSIS_HALO, HYPER_SYNTHESIS_HALO, LATENT_HALO, LATENT_STRIDE,
                     PIXEL_HALO, Z_STRIDE, Rect, image_rect, tile_grid)
from .weights import LoadedModel

# From this many pixels the CPU pipeline encodes with torch's CPU convolutions (oneDNN)
# instead of the numpy runtime: the analysis ~2.2x faster per pixel (grouped v24, 1 thread),
# which pays back torch's import (~1.5 s) from about 1 megapixel on, for ~210 MiB more peak
# memory (a 6-megapixel encode: 658 -> 869 MiB). Decoding stays on numpy: its synthesis
# gained only ~10% of a 6-megapixel decode.
TORCH_CPU_MIN_PIXELS = 2_000_000


class CodecPipeline:
    """Encodes and decodes pixel arrays with one loaded model.

    Args:
        loaded: the model.
        device: None runs the transforms on the CPU with numpy, except the encoder's for
            images of ``torch_from_pixels`` pixels or more, which run with torch (None: never);
            a ``torch.device`` runs them all with torch there, in ``dtype`` (default float32).
    """

    def __init__(self, loaded: LoadedModel, device=None, dtype=None,
                 torch_from_pixels: int | None = TORCH_CPU_MIN_PIXELS) -> None:
        self.loaded = loaded
        self.device = device
        self.torch_from_pixels = torch_from_pixels
        if device is None:
            self.transforms = loaded.transforms
        else:
            from .models.device_transforms import TorchTransforms

            self.transforms = TorchTransforms(loaded.model, device, dtype)
        self._cpu_torch = None
        self.latents = LatentCoder(loaded)

    def transforms_for(self, area: Rect):
        """The float transforms that encode an image of ``area``: this pipeline's own, or on
        the CPU from ``torch_from_pixels`` pixels on, torch's."""
        if (self.device is None and self.torch_from_pixels is not None
                and area.width * area.height >= self.torch_from_pixels):
            return self._cpu_torch_transforms()
        return self.transforms

    def _cpu_torch_transforms(self):
        """A CPU float32 copy of the torch model, made on first use."""
        if self._cpu_torch is None:
            import torch

            from .models.device_transforms import TorchTransforms

            self._cpu_torch = TorchTransforms(self.loaded.model, torch.device("cpu"))
        return self._cpu_torch

    # -- pixels <-> latents ---------------------------------------------------------------------
    @staticmethod
    def _window(pixels: np.ndarray, rect: Rect) -> np.ndarray:
        """Pixels of ``rect`` of the padded image (edge-replicated beyond the image)."""
        h, w = pixels.shape[:2]
        part = pixels[rect.y0:min(rect.y1, h), rect.x0:min(rect.x1, w)]
        ph, pw = rect.height - part.shape[0], rect.width - part.shape[1]
        if ph or pw:  # replicate the borders: cheaper to code than zeros
            part = np.pad(part, ((0, ph), (0, pw), (0, 0)), mode="edge")
        return np.ascontiguousarray(part, dtype=np.uint8)

    def analyse(self, pixels: np.ndarray, quality: float, tile: Rect, full: Rect,
                memo: dict | None = None) -> np.ndarray:
        """The latent ``y`` of one tile (float32 ``(1, M, h, w)``), computed with a halo of
        surrounding pixels.

        ``memo``, a dict kept by the caller across encodes of the same pixels and tiles, keeps
        each tile's latent before the quality's gain: coding the image again at another quality
        (a ``--target-size`` search) then skips the analysis transform, for the same bytes. It
        holds ``M`` float32 numbers per 16x16 pixels (3 bytes per pixel with M = 192). A model
        whose analysis depends on the quality (``level_scales_a``) keeps one per quality, and
        each new quality runs the analysis.
        """
        transforms = self.transforms_for(full)
        key = (tile.x0, tile.y0, tile.x1, tile.y1)
        if transforms.analysis_depends_on_quality:
            key += (float(quality),)
        unscaled = None if memo is None else memo.get(key)
        if unscaled is None:
            window = tile.grow(PIXEL_HALO, full) if tile != full else tile
            y = transforms.analysis_unscaled(self._window(pixels, window), quality)
            inner = tile.shifted(-window.x0, -window.y0).scaled(LATENT_STRIDE)
            unscaled = y[:, :, inner.y0:inner.y1, inner.x0:inner.x1]
            if memo is not None:  # a copy: a view would keep the whole window, halo included
                unscaled = memo[key] = np.ascontiguousarray(unscaled)
        return transforms.apply_gain(unscaled, quality)

    def _refine_transforms(self):
        """Torch transforms for latent refinement (it needs gradients): this pipeline's own
        when they are torch's, else the CPU copy of the torch model."""
        return self.transforms if self.device is not None else self._cpu_torch_transforms()

    def refine(self, pixels: np.ndarray, quality: float, tile: Rect, y_full: np.ndarray,
               hyper_raw: np.ndarray, steps: int) -> None:
        """Replace the latents of ``tile`` in ``y_full`` by refined ones
        (:func:`lcodec.models.refine.refine_latents`), given the tile's exact raw hyperprior
        parameters (a context model adds its own for the non-anchors). Each tile is refined
        on its own pixels (the synthesis of the tile alone), so memory stays bounded by the
        tile size."""
        lat = tile.scaled(LATENT_STRIDE)
        h, w = pixels.shape[:2]
        valid = None
        if tile.y1 > h or tile.x1 > w:  # padding beyond the image does not count
            valid = (min(tile.y1, h) - tile.y0, min(tile.x1, w) - tile.x0)
        y = y_full[None, :, lat.y0:lat.y1, lat.x0:lat.x1]
        refined = self._refine_transforms().refine(self._window(pixels, tile), y, hyper_raw,
                                                   quality, steps, valid)
        y_full[:, lat.y0:lat.y1, lat.x0:lat.x1] = refined[0]

    # -- latents <-> streams ----------------------------------------------------------------------
    def hyper_analyse(self, y_full: np.ndarray, quality: float, tiles: list[Rect], full: Rect) -> np.ndarray:
        """``round(h_a(y))`` (int64, ``(1, N, H/64, W/64)``) of the latent of a quality, tile
        by tile with a halo of ``y``."""
        full_y = full.scaled(LATENT_STRIDE)
        m = self.loaded
        transforms = self.transforms_for(full)
        z_sym = np.zeros((1, m.N, full_y.height // Z_STRIDE, full_y.width // Z_STRIDE), dtype=np.int64)
        for tile in tiles:
            inner = tile.scaled(LATENT_STRIDE)
            win = inner.grow(HYPER_ANALYSIS_HALO, full_y) if tile != full else inner
            z = transforms.hyper_analysis(y_full[None, :, win.y0:win.y1, win.x0:win.x1], quality)
            z = z.astype(np.float64)
            if not np.isfinite(z).all():
                raise ValueError("the hyper-analysis transform produced non-finite values")
            zin = inner.shifted(-win.x0, -win.y0).scaled(Z_STRIDE)
            zt = inner.scaled(Z_STRIDE)
            z_sym[:, :, zt.y0:zt.y1, zt.x0:zt.x1] = np.rint(z[:, :, zin.y0:zin.y1, zin.x0:zin.x1])
        return z_sym

    def hyper_params(self, z_sym: np.ndarray, tile: Rect, full: Rect) -> np.ndarray:
        """The raw hyperprior parameters (scales, means; float64) of the ``y`` of ``tile``,
        from the decoded hyper-latent (with a halo of ``z``), computed exactly by the integer
        hyper-synthesis."""
        full_z = full.scaled(ALIGN)
        inner = tile.scaled(ALIGN)
        win = inner.grow(HYPER_SYNTHESIS_HALO, full_z) if tile != full else inner
        raw = self.loaded.exact_hyper(z_sym[:, :, win.y0:win.y1, win.x0:win.x1].astype(np.float64))
        crop = inner.shifted(-win.x0, -win.y0)
        return np.ascontiguousarray(raw[:, :, crop.y0 * Z_STRIDE:crop.y1 * Z_STRIDE,
                                        crop.x0 * Z_STRIDE:crop.x1 * Z_STRIDE])

    @property
    def z_per_level(self) -> bool:
        """Whether :meth:`encode` codes ``z`` with the tables of the quality's nearest level
        (the model has them); its files then carry header flag 0x0001."""
        return self.loaded.z_level_tables is not None

    def _z_tables(self, shape: tuple[int, ...], quality: float, per_level: bool):
        """The table of every symbol of a ``z`` of ``shape``, and the table set."""
        ids = np.arange(shape[1])
        tables = self.loaded.z_tables
        if per_level:
            tables = self.loaded.z_level_tables
            if tables is None:
                raise CorruptStreamError(f"the file codes z with per-level tables, which weights "
                                         f"{self.loaded.entry.label} do not have")
            ids = ids + nearest_level(quality, self.loaded.transforms.num_levels) * shape[1]
        return np.broadcast_to(ids.reshape(1, -1, 1, 1), shape), tables

    # -- whole images -------------------------------------------------------------------------------
    def encode(self, pixels: np.ndarray, quality: float, tile_size: int = 0,
               refine_steps: int = 0, memo: dict | None = None) -> tuple[bytes, list[bytes]]:
        """The hyper-latent stream and one latent stream per tile (raster order) of an
        ``(H, W, 3)`` uint8 array; ``refine_steps`` > 0 refines each tile's latents (:meth:`refine`)
        after the hyper-latent is fixed; ``memo`` as in :meth:`analyse`."""
        h, w = pixels.shape[:2]
        full = image_rect(w, h)
        tiles = tile_grid(w, h, tile_size)
        full_y = full.scaled(LATENT_STRIDE)
        y_full = np.zeros((self.loaded.M, full_y.height, full_y.width), dtype=np.float32)
        for tile in tiles:
            lat = tile.scaled(LATENT_STRIDE)
            y_full[:, lat.y0:lat.y1, lat.x0:lat.x1] = self.analyse(pixels, quality, tile, full, memo)[0]
        if not np.isfinite(y_full).all():
            raise ValueError("the analysis transform produced non-finite values")
        z_sym = self.hyper_analyse(y_full, quality, tiles, full)
        enc = StreamEncoder()
        enc.encode(z_sym, *self._z_tables(z_sym.shape, quality, self.z_per_level))
        hyper = enc.finish()
        streams = []
        for tile in tiles:
            lat = tile.scaled(LATENT_STRIDE)
            hyper_raw = self.hyper_params(z_sym, tile, full)
            if refine_steps > 0:
                self.refine(pixels, quality, tile, y_full, hyper_raw, refine_steps)
            y = y_full[None, :, lat.y0:lat.y1, lat.x0:lat.x1].astype(np.float64)
            enc = StreamEncoder()
            self.latents.encode(enc, y, hyper_raw)
            streams.append(enc.finish())
        return hyper, streams

    def decode(self, hyper: bytes, streams: list[bytes], height: int, width: int, quality: float,
               tile_size: int = 0, region: Rect | None = None, synthesis_tile: int = 0,
               z_per_level: bool | None = None) -> np.ndarray:
        """The uint8 pixels of ``region`` (default: the whole image); ``z_per_level``: whether
        the file's ``z`` was coded with per-level tables (header flag 0x0001; default: as
        :meth:`encode` codes it with this model).

        Only the tiles whose latents the region's synthesis needs are entropy-decoded.
        ``synthesis_tile`` bounds the synthesis working set (0: one pass over the region).
        """
        full = image_rect(width, height)
        tiles = tile_grid(width, height, tile_size)
        if len(streams) != len(tiles):
            raise CorruptStreamError(f"file has {len(streams)} tile(s) where its size and tiling "
                                     f"need {len(tiles)}")
        m = self.loaded
        full_z = full.scaled(ALIGN)
        dec = StreamDecoder(hyper)
        per_level = self.z_per_level if z_per_level is None else z_per_level
        z_sym = dec.decode(*self._z_tables((1, m.N, full_z.height, full_z.width), quality, per_level))
        dec.check_exhausted()
        region = region or Rect(0, 0, width, height)
        full_y = full.scaled(LATENT_STRIDE)
        # Output tiles of the synthesis covering the region, each with its latent window.
        jobs = []
        for out in tile_grid(width, height, synthesis_tile):
            out = Rect(max(out.x0, region.x0), max(out.y0, region.y0),
                       min(out.x1, region.x1), min(out.y1, region.y1))
            if out.width <= 0 or out.height <= 0:
                continue
            s = LATENT_STRIDE
            snapped = Rect(out.x0 // s * s, out.y0 // s * s, -(-out.x1 // s) * s, -(-out.y1 // s) * s)
            jobs.append((out, snapped.scaled(s).grow(LATENT_HALO, full_y)))
        y_hat = np.zeros((m.M, full_y.height, full_y.width), dtype=np.float32)
        for i, tile in enumerate(tiles):
            lat = tile.scaled(LATENT_STRIDE)
            if not any(lat.intersects(win) for _, win in jobs):
                continue
            try:
                dec = StreamDecoder(streams[i])
                tile_y = self.latents.decode(dec, self.hyper_params(z_sym, tile, full))
                dec.check_exhausted()
            except CorruptStreamError as exc:
                raise CorruptStreamError(f"tile {i}: {exc}" if len(tiles) > 1 else str(exc)) from None
            y_hat[:, lat.y0:lat.y1, lat.x0:lat.x1] = tile_y[0]
        result = np.empty((region.height, region.width, 3), dtype=np.uint8)
        for out, win in jobs:
            x = self.transforms.synthesis(y_hat[None, :, win.y0:win.y1, win.x0:win.x1], quality)
            ox, oy = out.x0 - win.x0 * LATENT_STRIDE, out.y0 - win.y0 * LATENT_STRIDE
            x = x[0, :, oy:oy + out.height, ox:ox + out.width]
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)  # see synthesis: bad latents
            pix = np.rint(np.clip(x, 0, 1) * x.dtype.type(255)).astype(np.uint8).transpose(1, 2, 0)
            result[out.y0 - region.y0:out.y1 - region.y0, out.x0 - region.x0:out.x1 - region.x0] = pix
        return result

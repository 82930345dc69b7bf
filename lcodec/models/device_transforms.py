"""The torch model's pixel transforms on a torch device, behind the numpy interface of
:class:`lcodec.runtime.transforms.HyperpriorTransforms`.

The codec pipeline runs its transforms with numpy on the CPU; it uses this adapter on CUDA,
in float64 (tests), and for latent refinement (``lcodec encode -e 2`` and up), which needs
torch's gradients. Arrays go in and come out as numpy ``(1, C, H, W)``; inside, tensors are
channels-last (measured ~1.6x faster than NCHW on CPU with oneDNN).
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..device import apply_torch_threads
from .refine import refine_latents


class TorchTransforms:
    """``analysis`` / ``hyper_analysis`` / ``synthesis`` (and ``refine``) of a hyperprior-family
    torch model on ``device`` in ``dtype``."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> None:
        self.device, self.dtype = device, dtype or torch.float32
        apply_torch_threads()
        self.model = copy.deepcopy(model).to(device, self.dtype, memory_format=torch.channels_last).eval()
        self.model.requires_grad_(False)  # refinement differentiates w.r.t. the latent only

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.device, self.dtype)
        return t.contiguous(memory_format=torch.channels_last)

    def _pixels(self, pixels: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)[None]  # a writable copy
        return x.to(self.dtype).div(255).to(self.device, memory_format=torch.channels_last)

    @staticmethod
    def _numpy(t: torch.Tensor) -> np.ndarray:
        return t.float().cpu().numpy() if t.dtype != torch.float64 else t.cpu().numpy()

    @property
    def analysis_depends_on_quality(self) -> bool:
        return self.model.level_scales_a

    def analysis(self, pixels: np.ndarray, quality: float) -> np.ndarray:
        return self.apply_gain(self.analysis_unscaled(pixels, quality), quality)

    def analysis_unscaled(self, pixels: np.ndarray, quality: float) -> np.ndarray:
        with torch.inference_mode():
            return self._numpy(self.model.transform_a(self._pixels(pixels) - 0.5, quality=quality))

    def apply_gain(self, unscaled: np.ndarray, quality: float) -> np.ndarray:
        with torch.inference_mode():
            gain, _ = self.model.gains(quality)
        return unscaled * self._numpy(gain.to(self.dtype))

    def hyper_analysis(self, y: np.ndarray, quality: float) -> np.ndarray:
        with torch.inference_mode():
            return self._numpy(self.model.hyper_analysis(self._tensor(y), quality=quality))

    def synthesis(self, y_hat: np.ndarray, quality: float) -> np.ndarray:
        with torch.inference_mode():
            return self._numpy(self.model.synthesis(self._tensor(y_hat), quality))

    def refine(self, pixels: np.ndarray, y: np.ndarray, hyper_raw: np.ndarray,
               quality: float, steps: int, valid: tuple[int, int] | None = None) -> np.ndarray:
        """:func:`lcodec.models.refine.refine_latents` on numpy arrays: a better latent for the
        ``(H, W, 3)`` uint8 ``pixels`` of one tile; ``valid = (h, w)`` limits the pixels
        that count to the top-left ``h x w`` (the image inside a padded tile)."""
        x = self._pixels(pixels)
        weight = None
        if valid is not None:
            weight = torch.zeros((1, 1, *pixels.shape[:2]), dtype=self.dtype, device=self.device)
            weight[..., :valid[0], :valid[1]] = 1
        refined = refine_latents(self.model, x, self._tensor(y), self._tensor(hyper_raw),
                                 quality, steps, weight)
        return self._numpy(refined)

"""Training data: photos held in memory as uint8 arrays and sampled as random crops."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def split_holdout(paths: list[Path], every: int = 30) -> tuple[list[Path], list[Path]]:
    """Every ``every``-th image (in sorted order) is held out for validation."""
    held = paths[::every]
    return [p for p in paths if p not in held], held


def training_photos(data: Path, extra: Iterable[Path] = ()) -> tuple[list[Path], list[Path]]:
    """The photos a run trains on and those it holds out: ``data``'s split by
    :func:`split_holdout`, with every photo in the ``extra`` folders added to the training side
    only, so that the held-out set (and its figures) stay comparable across runs."""
    train, held = split_holdout(list_images(data))
    for folder in extra:
        found = list_images(folder)
        if not found:
            raise ValueError(f"no images in {folder}")
        train += found
    return train, held


class CropSampler:
    """Random ``crop x crop`` patches with random flips, as a float NCHW batch in [0, 1]."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: int = 0) -> None:
        self.images = [im for im in images if min(im.shape[:2]) >= crop]
        if not self.images:
            raise ValueError(f"no training image is at least {crop}x{crop}")
        self.crop = crop
        self.rng = np.random.default_rng(seed)
        sizes = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.weights = sizes / sizes.sum()  # sample images by area: every pixel equally likely

    def batch(self, size: int) -> torch.Tensor:
        c = self.crop
        out = np.empty((size, c, c, 3), dtype=np.uint8)
        for i, k in enumerate(self.rng.choice(len(self.images), size=size, p=self.weights)):
            im = self.images[k]
            top = self.rng.integers(0, im.shape[0] - c + 1)
            left = self.rng.integers(0, im.shape[1] - c + 1)
            patch = im[top:top + c, left:left + c]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            if self.rng.random() < 0.5:
                patch = patch[::-1]
            out[i] = patch
        x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
        return x.contiguous(memory_format=torch.channels_last)


def weights_fingerprint(weights: dict[str, torch.Tensor]) -> int:
    """A number below 2**31 taken from a SHA-256 of ``weights``' tensor names and bytes: the
    same weights give the same number, other weights almost surely another. A run started from
    trained weights adds it to its data seed, so that it does not draw the crops, in the same
    order, that the run which made those weights drew from its own step 0."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(digest.digest()[:4], "big") >> 1


def data_seed(seed: int, state: dict) -> int:
    """The seed of a run's crop, quality-level and noise draws: ``seed`` + the folder's
    ``data_offset`` + its step. A new folder started from trained weights stores their
    :func:`weights_fingerprint` as ``data_offset`` (0 when absent: a run from scratch, or a
    folder older than the offset), so it does not replay the draws of the run that made them;
    a resumed folder keeps its offset and goes on from its step."""
    return seed + state.get("data_offset", 0) + state["step"]


def center_crops(images: list[np.ndarray], size: int) -> list[torch.Tensor]:
    """Centre crops (at most ``size`` wide and high, multiple of 64) for validation."""
    crops = []
    for im in images:
        h, w = (min(size, d) // 64 * 64 for d in im.shape[:2])
        top, left = (im.shape[0] - h) // 2, (im.shape[1] - w) // 2
        crops.append(torch.from_numpy(im[top:top + h, left:left + w].copy()))
    return crops

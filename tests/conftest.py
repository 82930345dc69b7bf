"""Shared fixtures: small generated photos-like images and a CPU codec."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import pytest
from PIL import Image


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful image with some texture (uint8, HxWx3), deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 90 * np.sin(xx / 11.0 + seed) * np.cos(yy / 17.0)
    g = 100 + 0.4 * xx * 160 / max(width, 1) + 40 * np.sin((xx + yy) / 9.0)
    b = 60 + 120 * (yy / max(height, 1)) + 20 * np.cos(xx / 5.0)
    img = np.stack([r, g, b], axis=2) + rng.normal(0, 6, (height, width, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A model whose weights are not at their (symmetric) initialization."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p += 0.05 * torch.randn(p.shape, generator=gen)
    return model.eval()


def weights_copy(tmp_path: Path) -> tuple[Path, dict, Path]:
    """A weights folder for a test that damages weights: ``(folder, its manifest, the default
    model's file)``. The manifest and the default file (what ``lcodec encode`` loads) are copies
    the test may overwrite; every other file is a link to the shipped one, only ever read.
    (Copying the whole folder, 1.3 GB, in each such test wrote ~14 GB per test session.)"""
    from lcodec.weights import find_entry, weights_dir

    src, copy = weights_dir(), tmp_path / "weights"
    copy.mkdir()
    manifest = json.loads((src / "manifest.json").read_text())
    default = find_entry(folder=src).file
    for path in src.iterdir():
        if path.name in ("manifest.json", default):
            shutil.copy2(path, copy / path.name)
        else:
            (copy / path.name).symlink_to(path.resolve())
    return copy, manifest, copy / default


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of four small synthetic training photos."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(4):
        Image.fromarray(synthetic_photo(192, 160, seed=i)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="session")
def codec():
    from lcodec.api import Codec

    return Codec(device="cpu")


@pytest.fixture
def photo_png(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(synthetic_photo(96, 64)).save(path)
    return path

"""Encode -> decode through the Python API with the shipped weights."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import lcodec
from lcodec.errors import LcodecError, WeightsMismatchError
from lcodec.weights import find_entry
from lcodec import container

from .conftest import psnr, synthetic_photo


@pytest.mark.parametrize("width,height", [(1, 1), (7, 13), (65, 129), (129, 65), (64, 64), (200, 3)])
def test_any_size_round_trips_to_the_exact_size(codec, width, height):
    pixels = synthetic_photo(width, height, seed=width)
    data = codec.encode(Image.fromarray(pixels), quality=6)
    out = codec.decode(data)
    assert out.size == (width, height) and out.mode == "RGB"
    if width * height > 1000:
        assert psnr(pixels, np.asarray(out)) > 20


def test_grayscale_decodes_to_grayscale(codec):
    gray = synthetic_photo(40, 30)[:, :, 1]
    data = codec.encode(Image.fromarray(gray, "L"), quality=5)
    out = codec.decode(data)
    assert out.mode == "L" and out.size == (40, 30)
    assert psnr(gray, np.asarray(out)) > 20


def test_encoding_is_deterministic(codec):
    img = Image.fromarray(synthetic_photo(70, 50, seed=3))
    assert codec.encode(img, quality=3.3) == codec.encode(img, quality=3.3)


def test_quality_trades_size_for_fidelity(codec):
    pixels = synthetic_photo(128, 96, seed=5)
    sizes, psnrs = [], []
    for q in (1, 4, 8):
        data = codec.encode(Image.fromarray(pixels), quality=q)
        sizes.append(len(data))
        psnrs.append(psnr(pixels, np.asarray(codec.decode(data))))
    assert sizes[0] < sizes[1] < sizes[2]
    assert psnrs[0] < psnrs[1] < psnrs[2]


def test_fractional_quality_lies_between_its_neighbours(codec):
    img = Image.fromarray(synthetic_photo(128, 96, seed=6))
    lo, mid, hi = (len(codec.encode(img, quality=q)) for q in (3, 3.5, 4))
    assert lo < mid < hi


@pytest.mark.parametrize("quality", [0.5, 8.5, float("nan")])
def test_quality_out_of_range_is_an_error(codec, quality):
    with pytest.raises(LcodecError, match="quality"):
        codec.encode(Image.fromarray(synthetic_photo(8, 8)), quality=quality)


def test_module_level_api(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(synthetic_photo(33, 21)).save(path)
    data = lcodec.encode(path, quality=4, device="cpu")
    assert lcodec.info(data)["width"] == 33
    assert lcodec.decode(data, device="cpu").size == (33, 21)


def test_info_reports_the_header(codec):
    data = codec.encode(Image.fromarray(synthetic_photo(20, 10)), quality=2.5)
    meta = lcodec.info(data)
    assert meta["width"] == 20 and meta["height"] == 10 and meta["quality"] == 2.5
    assert meta["bytes"] == len(data) and meta["format_version"] == 2
    assert meta["model"] == find_entry(None).name  # the manifest's default model


def test_file_from_other_weights_is_refused(codec):
    data = codec.encode(Image.fromarray(synthetic_photo(20, 10)), quality=4)
    parsed = container.parse(data)
    h = parsed.header
    other = container.Header(h.width, h.height, h.channels, h.quality, h.model_name,
                             h.model_version, b"\xff" * 8)
    forged = container.serialize(container.Container(other, parsed.hyper, parsed.tiles))
    with pytest.raises(WeightsMismatchError, match="encoded with weights"):
        codec.decode(forged)


def test_unknown_model_version_is_refused(codec):
    data = codec.encode(Image.fromarray(synthetic_photo(20, 10)), quality=4)
    parsed = container.parse(data)
    h = parsed.header
    other = container.Header(h.width, h.height, h.channels, h.quality, h.model_name, 999, h.model_digest)
    with pytest.raises(LcodecError, match="not installed"):
        codec.decode(container.serialize(container.Container(other, parsed.hyper, parsed.tiles)))

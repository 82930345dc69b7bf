"""Which float transforms the CPU pipeline runs: numpy, except the encoder of images of
``TORCH_CPU_MIN_PIXELS`` or more, which uses torch's CPU convolutions; and the torch thread
count they get."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lcodec.device import cpu_count, set_torch_threads
from lcodec.models.device_transforms import TorchTransforms
from lcodec.pipeline import CodecPipeline
from lcodec.tiling import Rect, image_rect
from lcodec.weights import load_model

from .conftest import psnr, synthetic_photo

W, H = 160, 96


@pytest.fixture(scope="module")
def loaded():
    return load_model()


def _forbid(monkeypatch, transforms, *names):
    """Make ``transforms``' methods ``names`` fail the test if called."""
    def refuse(*args, **kwargs):
        raise AssertionError("the wrong transforms ran")

    for name in names:
        monkeypatch.setattr(transforms, name, refuse)


def test_transforms_switch_to_torch_at_the_threshold(loaded):
    pipe = CodecPipeline(loaded, torch_from_pixels=W * H)
    assert pipe.transforms_for(Rect(0, 0, W, H - 1)) is loaded.transforms
    chosen = pipe.transforms_for(image_rect(W, H))
    assert isinstance(chosen, TorchTransforms) and chosen.device.type == "cpu"
    assert pipe.transforms_for(Rect(0, 0, 4 * W, 4 * H)) is chosen  # made once
    never = CodecPipeline(loaded, torch_from_pixels=None)
    assert never.transforms_for(Rect(0, 0, 1 << 14, 1 << 14)) is loaded.transforms


def test_a_pipeline_on_a_torch_device_keeps_its_own_transforms(loaded):
    pipe = CodecPipeline(loaded, torch.device("cpu"), torch.float64, torch_from_pixels=1)
    assert pipe.transforms_for(image_rect(W, H)) is pipe.transforms
    assert pipe.transforms.dtype == torch.float64


def test_an_image_over_the_threshold_is_encoded_with_torch_and_decoded_with_numpy(loaded, monkeypatch):
    """Encoding an image over the threshold never calls the numpy transforms, decoding it never
    calls torch's, and its file decodes as well as the numpy encoder's."""
    pixels = synthetic_photo(W, H, seed=5)
    numpy_pipe = CodecPipeline(loaded, torch_from_pixels=None)
    expected = numpy_pipe.decode(*numpy_pipe.encode(pixels, 4.0), H, W, 4.0)
    pipe = CodecPipeline(loaded, torch_from_pixels=W * H)
    with monkeypatch.context() as m:
        _forbid(m, loaded.transforms, "analysis", "analysis_unscaled", "hyper_analysis", "synthesis")
        hyper, tiles = pipe.encode(pixels, 4.0)
    with monkeypatch.context() as m:
        _forbid(m, pipe.transforms_for(image_rect(W, H)), "synthesis")
        out = pipe.decode(hyper, tiles, H, W, 4.0)
    assert abs(psnr(out, pixels) - psnr(expected, pixels)) < 0.05


def test_torch_transforms_keep_the_thread_count_set_for_the_process(loaded):
    """A batch worker's share of the cores survives the transforms' first use of torch."""
    before = torch.get_num_threads()
    try:
        set_torch_threads(1)
        TorchTransforms(loaded.model, torch.device("cpu"))
        assert torch.get_num_threads() == 1
        set_torch_threads(None)
        TorchTransforms(loaded.model, torch.device("cpu"))
        assert torch.get_num_threads() == cpu_count()
    finally:
        set_torch_threads(None)
        torch.set_num_threads(before)

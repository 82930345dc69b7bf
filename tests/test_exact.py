"""The entropy parameters are bit-exact: threads, oneDNN, float precision, devices.

A one-ULP difference in a scale can flip a table index and desynchronize the range decoder,
so everything between decoded symbols and table indexes is an integer network evaluated in
float64 with integer values below 2^53 (lcodec.models.exact).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lcodec import container
from lcodec.api import Codec
from lcodec.entropy import StreamDecoder
from lcodec.runtime import ops
from lcodec.runtime.exact import ACT_LIMIT, INPUT_LIMIT, LEAKY_NUM, LEAKY_SHIFT, ExactSequential
from lcodec.pipeline import CodecPipeline
from lcodec.tiling import image_rect, tile_grid
from lcodec.weights import load_model

from .conftest import synthetic_photo


def _reference(tensors, prefix, x: np.ndarray) -> np.ndarray:
    """The integer network in exact int64 numpy arithmetic, written independently."""
    a = np.clip(x.astype(np.int64), -int(INPUT_LIMIT), int(INPUT_LIMIT))
    i = 0
    while f"{prefix}.{i}.weight" in tensors:
        w = np.asarray(tensors[f"{prefix}.{i}.weight"]).astype(np.int64)
        b = np.asarray(tensors[f"{prefix}.{i}.bias"]).astype(np.int64)
        transposed, stride, pad, out_pad, acc_bits, f_out = (int(v) for v in tensors[f"{prefix}.{i}.meta"])
        n, c, h, wd = a.shape
        k = w.shape[-1]
        if transposed:  # w: (cin, cout, k, k); out = (in - 1) * s - 2p + k + op
            ho, wo = (h - 1) * stride - 2 * pad + k + out_pad, (wd - 1) * stride - 2 * pad + k + out_pad
            full = np.zeros((n, w.shape[1], (h - 1) * stride + k + out_pad, (wd - 1) * stride + k + out_pad), np.int64)
            for ky in range(k):
                for kx in range(k):
                    contrib = np.einsum("nchw,co->nohw", a, w[:, :, ky, kx])
                    full[:, :, ky:ky + (h - 1) * stride + 1:stride, kx:kx + (wd - 1) * stride + 1:stride] += contrib
            acc = full[:, :, pad:pad + ho, pad:pad + wo]
        else:  # w: (cout, cin, k, k)
            ap = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
            ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
            acc = np.zeros((n, w.shape[0], ho, wo), np.int64)
            for ky in range(k):
                for kx in range(k):
                    patch = ap[:, :, ky:ky + (ho - 1) * stride + 1:stride, kx:kx + (wo - 1) * stride + 1:stride]
                    acc += np.einsum("nchw,oc->nohw", patch, w[:, :, ky, kx])
        acc = acc + b.reshape(1, -1, 1, 1)
        i += 1
        if f"{prefix}.{i}.weight" not in tensors:
            return acc.astype(np.float64) * 2.0 ** -acc_bits
        a = acc >> (acc_bits - f_out)  # arithmetic shift = floor division
        a = np.where(a >= 0, a, (a * LEAKY_NUM) >> LEAKY_SHIFT)
        a = np.clip(a, -int(ACT_LIMIT), int(ACT_LIMIT))
    raise AssertionError


@pytest.fixture(scope="module")
def loaded():
    return load_model()


def _weights_tensors(loaded):
    from lcodec.weights import read_verified
    return read_verified(loaded.entry)


def test_integer_network_matches_exact_int64_arithmetic(loaded):
    tensors = _weights_tensors(loaded)
    rng = np.random.default_rng(3)
    z = rng.integers(-40, 41, size=(1, loaded.N, 3, 5))
    z[0, 0, 0, 0] = 10 ** 6  # beyond the input clamp
    got = ExactSequential(tensors, "exact.h_s")(z.astype(np.float64))
    assert np.array_equal(got, _reference(tensors, "exact.h_s", z))


@pytest.fixture(scope="module")
def sample():
    pixels = synthetic_photo(160, 96, seed=21)
    return pixels, Codec("cpu").encode_pixels(pixels, 3, 3.7)


def _params(loaded, data):
    parsed = container.parse(data)
    h = parsed.header
    full = image_rect(h.width, h.height)
    pipe = CodecPipeline(loaded)
    per_level = bool(h.flags & container.FLAG_Z_PER_LEVEL)
    z = StreamDecoder(parsed.hyper).decode(
        *pipe._z_tables((1, loaded.N, full.height // 64, full.width // 64), h.quality, per_level))
    raw = pipe.hyper_params(z, tile_grid(h.width, h.height, 0)[0], full)
    return z, (raw, pipe.latents.decode(StreamDecoder(parsed.tiles[0]), raw))


def test_parameters_identical_whatever_the_summation_blocking(loaded, sample, monkeypatch):
    """The integer networks run as float64 matrix products; their blocking (and so the BLAS's
    summation order) follows the chunk size, and must not change a single value."""
    _, data = sample
    z1, (m1, i1) = _params(loaded, data)
    monkeypatch.setattr(ops, "CHUNK_ELEMENTS", 1 << 9)
    z2, (m2, i2) = _params(loaded, data)
    assert np.array_equal(z1, z2) and np.array_equal(i1, i2) and np.array_equal(m1, m2)


def test_numpy_and_torch_transforms_agree(loaded, sample):
    """The CPU path (numpy) and the torch path code the same symbols and pixels, up to float
    rounding: each decodes the other's streams."""
    pixels, data = sample
    parsed = container.parse(data)
    h = parsed.header
    np_pipe, torch_pipe = CodecPipeline(loaded), CodecPipeline(loaded, torch.device("cpu"), torch.float64)
    out_np = np_pipe.decode(parsed.hyper, parsed.tiles, h.height, h.width, h.quality)
    out_torch = torch_pipe.decode(parsed.hyper, parsed.tiles, h.height, h.width, h.quality)
    assert np.abs(out_np.astype(int) - out_torch.astype(int)).max() <= 1
    y_np = np_pipe.analyse(pixels, 3.7, image_rect(160, 96), image_rect(160, 96))
    y_torch = torch_pipe.analyse(pixels, 3.7, image_rect(160, 96), image_rect(160, 96))
    assert np.allclose(y_np, y_torch, rtol=1e-4, atol=1e-4)
    hyper, tiles = torch_pipe.encode(pixels, 3.7)
    assert np_pipe.decode(hyper, tiles, 96, 160, 3.7).shape == pixels.shape


def test_float64_pixel_transforms_decode_the_same_symbols(loaded, sample):
    pixels, data = sample
    parsed = container.parse(data)
    h = parsed.header
    out32 = CodecPipeline(loaded, torch.device("cpu")).decode(parsed.hyper, parsed.tiles, h.height, h.width, h.quality)
    out64 = CodecPipeline(loaded, torch.device("cpu"), torch.float64).decode(
        parsed.hyper, parsed.tiles, h.height, h.width, h.quality)
    assert np.abs(out32.astype(int) - out64.astype(int)).max() <= 1


def test_encoder_in_float64_writes_a_stream_the_float32_decoder_reads(loaded, sample):
    pixels, _ = sample
    pipe64 = CodecPipeline(loaded, torch.device("cpu"), torch.float64)
    hyper, tiles = pipe64.encode(pixels, 3.7)
    out = CodecPipeline(loaded, torch.device("cpu")).decode(hyper, tiles, 96, 160, 3.7)
    assert out.shape == pixels.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_encoded_file_decodes_on_cpu(sample):
    pixels, _ = sample
    data = Codec("cuda").encode_pixels(pixels, 3, 3.7)
    cpu, _ = Codec("cpu").decode_pixels(data)
    gpu, _ = Codec("cuda").decode_pixels(data)
    assert np.abs(cpu.astype(int) - gpu.astype(int)).max() <= 2

"""The torch-free CPU path (lcodec.runtime): weights reader, layers, transforms, no torch import.

Every part is checked against torch itself, which stays the reference implementation.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lcodec import device as device_mod
from lcodec.models import build_model
from lcodec.runtime import ops
from lcodec.runtime.ptfile import PtFileError, load_tensors
from lcodec.runtime.transforms import HyperpriorTransforms
from lcodec.weights import find_entry, weights_dir

from .conftest import synthetic_photo


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_weights_reader_returns_what_torch_load_returns():
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    tensors = {
        "f32": torch.randn(2, 3), "f64": torch.randn(4, dtype=torch.float64),
        "i16": torch.tensor([-3, 7, 4095], dtype=torch.int16), "i64": torch.tensor([2 ** 40, -1]),
        "u8": torch.tensor([0, 255], dtype=torch.uint8), "flag": torch.tensor([True, False]),
        "u32": torch.tensor([1, 2 ** 31 + 5], dtype=torch.uint32),
        "scalar": torch.tensor(2.5), "transposed": base.permute(2, 0, 1), "sliced": base[1:, 2],
    }
    got = load_tensors(_saved(tensors))
    assert got.keys() == tensors.keys()
    for name, t in tensors.items():
        assert got[name].dtype == t.numpy().dtype, name
        assert got[name].shape == tuple(t.shape) and np.array_equal(got[name], t.numpy()), name


def test_weights_reader_reads_every_shipped_file_like_torch():
    for entry_file in sorted(p.name for p in weights_dir().glob("*.pt")):
        path = weights_dir() / entry_file
        got = load_tensors(path.read_bytes())
        ref = torch.load(path, map_location="cpu", weights_only=True)
        assert got.keys() == ref.keys()
        assert all(np.array_equal(got[k], ref[k].numpy()) for k in ref)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("obj", [{"x": _Payload()}, {"x": torch.nn.Linear(2, 2)}, [torch.zeros(2)]])
def test_weights_reader_refuses_anything_but_a_dict_of_tensors(obj):
    with pytest.raises(PtFileError):
        load_tensors(_saved(obj))


@pytest.mark.parametrize("data", [b"", b"not a zip file", _saved({"x": torch.zeros(3)})[:200]])
def test_weights_reader_refuses_broken_files(data):
    with pytest.raises(PtFileError):
        load_tensors(data)


@pytest.mark.parametrize("cin,cout,k,stride,h,w", [(3, 8, 5, 2, 19, 26), (12, 6, 5, 2, 7, 5),
                                                   (5, 7, 3, 1, 6, 9), (10, 4, 1, 1, 3, 2)])
@pytest.mark.parametrize("chunk", [1 << 22, 40])
def test_conv2d_matches_torch(cin, cout, k, stride, h, w, chunk, monkeypatch):
    # both gathering routes (planar for few input channels, patch rows), whole and chunked
    monkeypatch.setattr(ops, "CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(cin * 100 + k)
    x = rng.standard_normal((h, w, cin))
    wt = rng.standard_normal((cout, cin, k, k))
    b = rng.standard_normal(cout)
    got = ops.conv2d(x, wt, b, stride, k // 2)
    ref = F.conv2d(torch.from_numpy(x).permute(2, 0, 1)[None], torch.from_numpy(wt), torch.from_numpy(b),
                   stride=stride, padding=k // 2)[0].permute(1, 2, 0).numpy()
    assert got.shape == ref.shape and np.allclose(got, ref, atol=1e-10)


@pytest.mark.parametrize("cin,cout,k,h,w", [(6, 3, 5, 7, 9), (3, 12, 5, 1, 1), (4, 10, 3, 4, 3),
                                            (9, 2, 5, 6, 5)])
@pytest.mark.parametrize("chunk", [1 << 22, 50])
def test_transposed_conv_matches_torch(cin, cout, k, h, w, chunk, monkeypatch):
    monkeypatch.setattr(ops, "CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(cin * 10 + h)
    x = rng.standard_normal((h, w, cin))
    wt = rng.standard_normal((cin, cout, k, k))
    b = rng.standard_normal(cout)
    got = ops.conv_transpose2d(x, wt, b, 2, k // 2, 1)
    ref = F.conv_transpose2d(torch.from_numpy(x).permute(2, 0, 1)[None], torch.from_numpy(wt),
                             torch.from_numpy(b), stride=2, padding=k // 2,
                             output_padding=1)[0].permute(1, 2, 0).numpy()
    assert got.shape == ref.shape == (2 * h, 2 * w, cout) and np.allclose(got, ref, atol=1e-10)
    with pytest.raises(ValueError, match="output size"):
        ops.conv_transpose2d(x, wt, b, 2, k // 2, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_relu_is_torchs_to_the_bit(dtype):
    x = np.random.default_rng(4).standard_normal((6, 5, 7)).astype(dtype) * 1e3
    x[0, 0, :4] = [0.0, -0.0, np.nan, -np.inf]
    got = ops.leaky_relu(x)
    ref = F.leaky_relu(torch.from_numpy(x), 0.01).numpy()
    assert got.dtype == x.dtype and np.array_equal(got, ref, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(ref))


@pytest.mark.parametrize("config", [{"N": 8, "M": 12}, {"N": 8, "M": 12, "Na": 16},
                                    {"N": 8, "M": 12, "Ns": 16},
                                    {"N": 8, "M": 12, "Na": 16, "res_a": 3, "res_s": 2},
                                    {"N": 8, "M": 12, "Na": 16, "res_a": 1, "res_s": 2,
                                     "res_a_deep": 2, "res_s_deep": 1},
                                    {"N": 8, "M": 12, "Na": 16, "res_a": 2, "level_scales_a": True},
                                    {"N": 8, "M": 12, "Ns": 16, "res_s": 1, "level_scales_s": True},
                                    {"N": 8, "M": 12, "level_scales_h": True},
                                    {"N": 8, "M": 12, "Na": 16, "level_scales_a": True,
                                     "level_bias_a": True}])
@torch.no_grad()
def test_numpy_transforms_compute_what_the_torch_model_computes(config):
    model = build_model("hyperprior", **config).double().eval()
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p += 0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
    arrays = {k: v.float().numpy() for k, v in model.state_dict().items()}
    t = HyperpriorTransforms(arrays, **config)
    model = model.float()
    pixels = synthetic_photo(64, 48, seed=1)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    assert t.analysis_depends_on_quality == config.get("level_scales_a", False)
    for q in (1.0, 3.3, 8.0):
        y = t.analysis(pixels, q)
        assert np.allclose(y, model.analysis(x, q).numpy(), rtol=1e-4, atol=1e-5)
        z = t.hyper_analysis(y, q)
        assert np.allclose(z, model.hyper_analysis(torch.from_numpy(y), q).numpy(), rtol=1e-4, atol=1e-5)
        y_hat = np.round(y)
        assert np.allclose(t.synthesis(y_hat, q), model.synthesis(torch.from_numpy(y_hat), q).numpy(),
                           rtol=1e-4, atol=1e-5)


def test_numpy_transforms_refuse_weights_of_another_shape():
    arrays = {k: v.numpy() for k, v in build_model("hyperprior", N=8, M=12).state_dict().items()}
    with pytest.raises(ValueError, match="g_a.0.weight"):
        HyperpriorTransforms(arrays, N=8, M=12, Na=16)
    with pytest.raises(ValueError, match="g_s.0.weight"):
        HyperpriorTransforms(arrays, N=8, M=12, Ns=16)
    del arrays["g_s.2.bias"]
    with pytest.raises(ValueError, match="missing 'g_s.2.bias'"):
        HyperpriorTransforms(arrays, N=8, M=12)
    # residual blocks the config names must be in the weights
    arrays = {k: v.numpy() for k, v in build_model("hyperprior", N=8, M=12, res_s=1).state_dict().items()}
    with pytest.raises(ValueError, match="missing 'g_s_res.3.body.0.weight'"):
        HyperpriorTransforms(arrays, N=8, M=12, res_s=2)
    with pytest.raises(ValueError, match=r"res_a must be in 0\.\.3 and res_s in 0\.\.3, got 4"):
        HyperpriorTransforms(arrays, N=8, M=12, res_a=4)
    with pytest.raises(ValueError, match=r"got 0 and -1"):
        build_model("hyperprior", N=8, M=12, res_s=-1)
    # so must the further blocks at the deepest position, which follow the first block there
    with pytest.raises(ValueError, match="missing 'g_s_deep.0.body.0.weight'"):
        HyperpriorTransforms(arrays, N=8, M=12, res_s=1, res_s_deep=1)
    with pytest.raises(ValueError, match="need res_a / res_s of at least 1"):
        HyperpriorTransforms(arrays, N=8, M=12, res_s=1, res_a_deep=1)
    with pytest.raises(ValueError, match="need res_a / res_s of at least 1"):
        build_model("hyperprior", N=8, M=12, res_s_deep=1)
    with pytest.raises(ValueError, match=r"must be in 0\.\.4, got 0 and 5"):
        build_model("hyperprior", N=8, M=12, res_s=1, res_s_deep=5)
    # so must the analysis' level scales
    with pytest.raises(ValueError, match="missing 'log_level_scale_a'"):
        HyperpriorTransforms(arrays, N=8, M=12, res_s=1, level_scales_a=True)
    with pytest.raises(ValueError, match="missing 'log_level_scale_s'"):
        HyperpriorTransforms(arrays, N=8, M=12, res_s=1, level_scales_s=True)
    with pytest.raises(ValueError, match="missing 'log_level_scale_h'"):
        HyperpriorTransforms(arrays, N=8, M=12, res_s=1, level_scales_h=True)
    # and the analysis' level offsets, which only come with its scales
    arrays = {k: v.numpy() for k, v in build_model("hyperprior", N=8, M=12, level_scales_a=True).state_dict().items()}
    with pytest.raises(ValueError, match="missing 'level_bias_a'"):
        HyperpriorTransforms(arrays, N=8, M=12, level_scales_a=True, level_bias_a=True)
    with pytest.raises(ValueError, match="level_bias_a needs level_scales_a"):
        HyperpriorTransforms(arrays, N=8, M=12, level_bias_a=True)
    with pytest.raises(ValueError, match="level_bias_a needs level_scales_a"):
        build_model("hyperprior", N=8, M=12, level_bias_a=True)


def test_auto_device_without_an_nvidia_driver_does_not_consult_torch(monkeypatch):
    monkeypatch.setattr(device_mod, "nvidia_driver_present", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("torch was consulted"))
    assert device_mod.select_device("auto") == device_mod.CPU
    assert device_mod.select_device("cpu").type == "cpu"
    monkeypatch.setattr(device_mod, "nvidia_driver_present", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_mod.select_device("auto") == device_mod.CPU


def test_cpu_encode_and_decode_never_import_torch(tmp_path):
    from PIL import Image

    src = tmp_path / "in.png"
    Image.fromarray(synthetic_photo(80, 48, seed=2)).save(src)
    script = (
        "import sys\n"
        "from lcodec.cli import main\n"
        "for args in (['encode', sys.argv[1], sys.argv[2], '--device', 'auto', '--quiet'],\n"
        "             ['decode', sys.argv[2], sys.argv[3], '--quiet'], ['info', sys.argv[2]]):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
        "print('torch' in sys.modules)\n")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-c", script, str(src), str(tmp_path / "a.lc"), str(tmp_path / "b.png")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    if device_mod.nvidia_driver_present():
        pytest.skip("with an NVIDIA driver, --device auto asks torch for CUDA")
    assert r.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "b.png").exists()


def test_synthesis_of_a_latent_no_encoder_writes_overflows_silently():
    """A damaged stream that still parses can carry huge latents; the inverse GDNs then
    overflow float32. That must not print warnings (the decoder turns the result into pixels)."""
    model = build_model("hyperprior", N=8, M=12)
    arrays = {k: v.numpy() for k, v in model.state_dict().items()}
    t = HyperpriorTransforms(arrays, N=8, M=12)
    y_hat = np.full((1, 12, 2, 3), 1e30, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = t.synthesis(y_hat, 8.0)
    assert x.shape == (1, 3, 32, 48) and not np.isfinite(x).all()

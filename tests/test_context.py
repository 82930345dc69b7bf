"""The ``context`` family: checkerboard context on top of the hyperprior, exact and tiled.

These tests build context models from the shipped hyperprior plus seeded random context
networks, export them to a temporary weights folder with the real export code, and code
images with them; the shipped context weights are covered by the golden files.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lcodec import container
from lcodec.api import Codec
from lcodec.models import build_model
from lcodec.models.context import anchor_mask, checkerboard_kernel_mask
from lcodec.models.exact import quantize_model
from lcodec.runtime.exact import ACT_FRAC_BITS, ACT_LIMIT, LEAKY_NUM, LEAKY_SHIFT, ExactContext
from lcodec.train.export import export_checkpoint, reexport
from lcodec.train.kodak_probe import probe
from lcodec.weights import find_entry, load_state_dict, weights_dir

from .conftest import psnr, synthetic_photo


def _context_model(correction_scale: float, seed: int = 0):
    """A context model with the shipped hyperprior's transforms and seeded context networks."""
    hp = find_entry("hyperprior")
    base = torch.load(weights_dir() / hp.file, map_location="cpu", weights_only=True)
    base = {k: v for k, v in base.items() if not k.startswith(("tables.", "exact."))}
    model = build_model("context", **hp.config)
    model.load_state_dict(base, strict=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(model.context_prediction.parameters()) + list(model.entropy_parameters.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        last = model.entropy_parameters[-1]
        last.weight.mul_(correction_scale / 0.05)
        last.bias.mul_(correction_scale / 0.05)
    return model.eval(), hp


def _install(model, hp, folder, name="context"):
    """Copy the shipped hyperprior into ``folder`` and export ``model`` beside it."""
    folder.mkdir(exist_ok=True)
    shutil.copy(weights_dir() / hp.file, folder / hp.file)
    manifest = json.loads((weights_dir() / "manifest.json").read_text())
    manifest["models"] = [m for m in manifest["models"] if m["name"] == "hyperprior"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    ckpt = folder / "ckpt.pt"
    config = {"family": "context", **hp.config, "context_channels": model.context_channels,
              "hidden": model.hidden}
    torch.save({"model": model.state_dict(), "config_json": json.dumps(config)}, ckpt)
    return export_checkpoint(ckpt, name, make_default=False, folder=folder)


@pytest.fixture(scope="module")
def ctx_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    model, hp = _context_model(0.02, seed=1)
    _install(model, hp, folder)
    return folder


@pytest.fixture
def ctx_codec(ctx_dir, monkeypatch):
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(ctx_dir))
    return Codec("cpu", model="context")


# -- the integer context network ---------------------------------------------------------------

def _reference(tensors: dict, anchors: np.ndarray, raw: np.ndarray, scale_floor: float | None = None) -> np.ndarray:
    """Non-anchor parameters in int64 numpy arithmetic, direct 5x5 convolution (independent
    of the sub-lattice evaluation used by the codec)."""
    def shift(acc, bits_from, bits_to):
        d = bits_from - bits_to
        return acc >> d if d >= 0 else acc << -d

    def fixed(x):
        return np.clip(np.floor(x * 2.0 ** ACT_FRAC_BITS).astype(np.int64), -int(ACT_LIMIT), int(ACT_LIMIT))

    w = tensors["exact.ctx.pred.0.weight"].numpy().astype(np.int64)
    b = tensors["exact.ctx.pred.0.bias"].numpy().astype(np.int64)
    acc_bits = int(tensors["exact.ctx.pred.0.meta"][4])
    a = np.pad(fixed(anchors), ((0, 0), (0, 0), (2, 2), (2, 2)))
    _, _, h, wd = anchors.shape
    acc = np.zeros((1, w.shape[0], h, wd), np.int64)
    for ky in range(5):
        for kx in range(5):
            acc += np.einsum("nchw,oc->nohw", a[:, :, ky:ky + h, kx:kx + wd], w[:, :, ky, kx])
    na = (np.add.outer(np.arange(h), np.arange(wd)) % 2) == 1
    ctx = np.clip(shift(acc[:, :, na] + b[None, :, None], acc_bits, ACT_FRAC_BITS), -int(ACT_LIMIT), int(ACT_LIMIT))
    raw_in = raw[:, :, na].copy()
    if scale_floor is not None:
        m = raw.shape[1] // 2
        raw_in[:, :m] = np.maximum(raw_in[:, :m], scale_floor)
    x = np.concatenate([fixed(raw_in), ctx], axis=1)
    i = 0
    while f"exact.ctx.merge.{i}.weight" in tensors:
        w = tensors[f"exact.ctx.merge.{i}.weight"].numpy().astype(np.int64)[:, :, 0, 0]
        b = tensors[f"exact.ctx.merge.{i}.bias"].numpy().astype(np.int64)
        acc_bits = int(tensors[f"exact.ctx.merge.{i}.meta"][4])
        acc = np.einsum("ncp,oc->nop", x, w) + b[None, :, None]
        i += 1
        if f"exact.ctx.merge.{i}.weight" not in tensors:
            corr = shift(np.clip(acc, -(2 ** 20 << acc_bits), 2 ** 20 << acc_bits), acc_bits, 32)
            base = np.floor(np.clip(raw[:, :, na], -2.0 ** 20, 2.0 ** 20) * 2.0 ** 32).astype(np.int64)
            return (base + corr).astype(np.float64) * 2.0 ** -32
        x = shift(acc, acc_bits, ACT_FRAC_BITS)
        x = np.where(x >= 0, x, (x * LEAKY_NUM) >> LEAKY_SHIFT)
        x = np.clip(x, -int(ACT_LIMIT), int(ACT_LIMIT))
    raise AssertionError


def test_integer_context_matches_int64_reference():
    model, _ = _context_model(0.5, seed=2)
    tensors = quantize_model(model)
    rng = np.random.default_rng(0)
    h, w = 6, 10
    anchors = np.where(anchor_mask(h, w).numpy(), rng.integers(-30, 30, (1, model.M, h, w)) + rng.random((1, model.M, h, w)).round(3), 0.0)
    raw = rng.normal(0, 4, (1, 2 * model.M, h, w)).round(6)
    got = ExactContext(tensors)(anchors, raw)
    assert np.array_equal(got, _reference(tensors, anchors, raw))


def test_scale_floor_bounds_what_the_merging_network_sees():
    model, _ = _context_model(0.5, seed=4)
    tensors = quantize_model(model)
    rng = np.random.default_rng(2)
    h, w = 4, 6
    anchors = np.where(anchor_mask(h, w).numpy(), rng.normal(0, 5, (1, model.M, h, w)).round(3), 0.0)
    raw = rng.normal(0, 4, (1, 2 * model.M, h, w)).round(6)
    raw[:, :model.M] -= 200.0  # scales far below the likelihood's bound, as hyperprior v3 emits
    floored = ExactContext(tensors, scale_floor=0.11)(anchors, raw)
    assert np.array_equal(floored, _reference(tensors, anchors, raw, scale_floor=0.11))
    plain = ExactContext(tensors)(anchors, raw)
    assert not np.array_equal(floored, plain)
    # the float model applies the same floor
    model.scale_floor = 0.11
    seen = model.merge_input(torch.from_numpy(raw).float())
    assert float(seen[:, :model.M].min()) == pytest.approx(0.11)
    assert torch.equal(seen[:, model.M:], torch.from_numpy(raw).float()[:, model.M:])


def test_context_sees_only_anchors():
    mask = checkerboard_kernel_mask()
    assert mask.sum() == 12 and mask[2, 2] == 0 and mask[1, 2] == 1 and mask[1, 1] == 0
    model, _ = _context_model(0.5, seed=3)
    ex = ExactContext(quantize_model(model))
    rng = np.random.default_rng(1)
    a = anchor_mask(8, 8).numpy()
    anchors = np.where(a, rng.normal(0, 5, (1, model.M, 8, 8)), 0.0)
    raw = rng.normal(0, 4, (1, 2 * model.M, 8, 8))
    base = ex(anchors, raw)
    far = anchors.copy()
    far[:, :, 7, 7] += 50.0  # an anchor; the non-anchor at (0, 1) is out of its reach
    changed = ex(far, raw)
    na_positions = [(i, j) for i in range(8) for j in range(8) if not a[i, j]]
    k = na_positions.index((0, 1))
    assert np.array_equal(base[:, :, k], changed[:, :, k])
    assert not np.array_equal(base, changed)  # but its neighbours' parameters do change


def test_zero_correction_reproduces_the_hyperprior(tmp_path, monkeypatch):
    model, hp = _context_model(0.0, seed=4)
    _install(model, hp, tmp_path)
    reexport("hyperprior", "hyperprior", folder=tmp_path)  # the tables the context export has
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(tmp_path))
    pixels = synthetic_photo(150, 90, seed=5)
    ours = Codec("cpu", model="context").encode_pixels(pixels, 3, 4.5)
    theirs = Codec("cpu", model="hyperprior").encode_pixels(pixels, 3, 4.5)
    out_ctx, _ = Codec("cpu").decode_pixels(ours)
    out_hp, _ = Codec("cpu").decode_pixels(theirs)
    assert np.array_equal(out_ctx, out_hp)
    assert abs(len(ours) - len(theirs)) <= 8  # same symbols and tables, another order


# -- coding with the context family --------------------------------------------------------------

@pytest.mark.parametrize("size", [(1, 1), (13, 7), (129, 65), (64, 192)])
def test_round_trip_any_size(ctx_codec, size):
    w, h = size
    pixels = synthetic_photo(w, h, seed=w + h)
    data = ctx_codec.encode_pixels(pixels, 3, 6.0)
    assert container.parse(data).header.model_name == "context"
    out, header = ctx_codec.decode_pixels(data)
    assert out.shape == pixels.shape and header.channels == 3
    if w * h > 1000:
        assert psnr(out, pixels) > 24


def test_tiled_file_decodes_and_regions_match(ctx_dir, monkeypatch):
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(ctx_dir))
    pixels = synthetic_photo(300, 200, seed=9)
    tiled = Codec("cpu", model="context", tile=128)
    data = tiled.encode_pixels(pixels, 3, 5.0)
    assert len(container.parse(data).tiles) == 6
    full, _ = tiled.decode_pixels(data)
    assert psnr(full, pixels) > 24
    whole = Codec("cpu", model="context").decode_pixels(Codec("cpu", model="context").encode_pixels(pixels, 3, 5.0))[0]
    assert abs(psnr(full, pixels) - psnr(whole, pixels)) < 0.2
    region, _ = Codec("cpu").decode_pixels(data, region=(130, 70, 120, 120))
    # the same symbols; the synthesis of a smaller window may round a pixel the other way
    diff = np.abs(region.astype(int) - full[70:190, 130:250].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_context_files_are_deterministic_across_runs_and_threads(ctx_codec):
    pixels = synthetic_photo(256, 192, seed=11)
    a = ctx_codec.encode_pixels(pixels, 3, 4.0)
    b = ctx_codec.encode_pixels(pixels, 3, 4.0)
    assert a == b
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = Codec("cpu").decode_pixels(a)
        torch.set_num_threads(2)
        two, _ = Codec("cpu").decode_pixels(a)
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(one, two)


# -- training the context family end to end ------------------------------------------------------

def _small_pair(correction_scale: float):
    """A small perturbed hyperprior and a context model with its transforms and seeded
    context networks whose last layer is scaled to ``correction_scale``."""
    gen = torch.Generator().manual_seed(0)
    hp = build_model("hyperprior", N=8, M=6)
    ctx = build_model("context", N=8, M=6, context_channels=5, hidden=12, scale_floor=0.11)
    with torch.no_grad():
        for p in hp.parameters():
            p += 0.05 * torch.randn(p.shape, generator=gen)
        ctx.load_state_dict(hp.state_dict(), strict=False)
        for p in list(ctx.context_prediction.parameters()) + list(ctx.entropy_parameters.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        for p in ctx.entropy_parameters[-1].parameters():
            p.mul_(correction_scale / 0.05)
    return hp, ctx


def _training_pass(model, x, level):
    torch.manual_seed(1)  # the same quantization noise for both models
    return model(x, level)


def test_training_pass_with_zero_correction_is_the_hyperprior_pass():
    hp, ctx = _small_pair(0.0)
    x, level = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 7])
    want, got = _training_pass(hp, x, level), _training_pass(ctx, x, level)
    for key in ("x_hat", "y_likelihoods", "z_likelihoods"):
        assert torch.allclose(got[key], want[key], atol=1e-6), key


def test_training_pass_codes_the_non_anchors_with_the_context_and_reaches_the_transforms():
    hp, ctx = _small_pair(0.5)
    x, level = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2)), torch.tensor([3, 5])
    want, got = _training_pass(hp, x, level), _training_pass(ctx, x, level)
    a = anchor_mask(*got["y_likelihoods"].shape[2:])
    assert torch.allclose(got["y_likelihoods"][:, :, a], want["y_likelihoods"][:, :, a])
    assert not torch.allclose(got["y_likelihoods"][:, :, ~a], want["y_likelihoods"][:, :, ~a])
    # the non-anchors' bits train the context networks and, through the anchors, the analysis
    (-got["y_likelihoods"][:, :, ~a].log2().sum()).backward()
    for p in (ctx.context_prediction.weight, ctx.entropy_parameters[0].weight, ctx.g_a[0].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_probe_counts_the_bits_the_context_codec_writes():
    entry = find_entry("context")
    model = build_model("context", **entry.config)
    model.load_state_dict(load_state_dict(weights_dir() / entry.file))
    pixels = synthetic_photo(384, 256, seed=6)
    (point,) = probe(model, [pixels], levels=(6,))
    data = Codec("cpu", model="context").encode_pixels(pixels, 3, 6.0)
    coded = 8 * len(data) / pixels[:, :, 0].size
    assert abs(point["bpp"] - coded) < 0.03 * coded
    # the same transforms without the context networks: the hyperprior's estimate, higher
    plain = build_model("hyperprior", **{k: v for k, v in entry.config.items()
                                         if k not in ("context_channels", "hidden", "scale_floor")})
    plain.load_state_dict(load_state_dict(weights_dir() / entry.file), strict=False)
    (hyper,) = probe(plain, [pixels], levels=(6,))
    assert hyper["psnr"] != point["psnr"] and hyper["bpp"] > point["bpp"]

"""Encoder effort: latent refinement lowers the rate-distortion loss, and the files stay valid."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lcodec.api import Codec, refinement_steps
from lcodec.cli import main
from lcodec.errors import LcodecError
from lcodec.models.entropy_models import gaussian_likelihood
from lcodec.models.refine import STEP_PER_GAIN, TOP_STEP_END, TOP_STEP_START, refine_latents, step_per_gain
from lcodec.weights import load_model

from .conftest import psnr, synthetic_photo


def _rd_loss(model, x, y, hyper_raw, quality):
    """The loss refinement minimizes, with the parameters the decoder will have."""
    with torch.no_grad():
        means, scales = model.entropy_params(y, hyper_raw)
        sym = torch.round(y - means)
        mse = (model.synthesis(sym + means, quality) - x).pow(2).mean()
        bits = -gaussian_likelihood(sym, scales).log2().sum()
    return float(model.rd_lambda(quality) * 255 ** 2 * mse + bits / (x.shape[2] * x.shape[3]))


@pytest.mark.parametrize("family", ["hyperprior", "context"])
@pytest.mark.parametrize("quality", [1.0, 6.0, 8.0])
def test_refined_latents_have_a_lower_loss_than_the_analysis_output(family, quality):
    model = load_model(family).model
    x = torch.from_numpy(synthetic_photo(128, 128, seed=3)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = model.analysis(x, quality)
        hyper_raw = model.h_s(torch.round(model.hyper_analysis(y, quality=quality)))
    refined = refine_latents(model, x, y, hyper_raw, quality, iterations=8)
    assert refined.shape == y.shape
    before = _rd_loss(model, x, y, hyper_raw, quality)
    after = _rd_loss(model, x, refined, hyper_raw, quality)
    assert after < before
    assert refine_latents(model, x, y, hyper_raw, quality, iterations=0) is y
    assert all(p.grad is None for p in model.parameters())


def test_the_step_decays_only_at_the_top_levels_and_moves_smoothly_with_quality():
    n = 16
    assert [step_per_gain(q, s, n) for q in (1.0, 4.5, 7.0) for s in (0, 8, 15)] == [STEP_PER_GAIN] * 9
    top = [step_per_gain(8.0, s, n) for s in range(n + 1)]
    assert top[0] == pytest.approx(TOP_STEP_START) and top[-1] == pytest.approx(TOP_STEP_END)
    assert all(a > b for a, b in zip(top, top[1:]))
    for s in (0, 5, 15):  # halfway between the levels' steps at 7.5, and no jump near 7 or 8
        assert step_per_gain(7.5, s, n) == pytest.approx((STEP_PER_GAIN + step_per_gain(8.0, s, n)) / 2)
        assert step_per_gain(7.001, s, n) == pytest.approx(STEP_PER_GAIN, abs=1e-4)
        assert step_per_gain(7.999, s, n) == pytest.approx(step_per_gain(8.0, s, n), abs=1e-4)


def test_lambda_of_a_fractional_quality_lies_between_its_levels():
    model = load_model("hyperprior").model
    assert model.rd_lambda(3.0) == pytest.approx(float(model.lambdas[2]))
    assert float(model.lambdas[2]) < model.rd_lambda(3.5) < float(model.lambdas[3])
    with pytest.raises(ValueError):
        model.rd_lambda(8.5)


def _rd(codec_bytes: bytes, original: np.ndarray, quality: float, decoder: Codec) -> float:
    decoded = np.asarray(decoder.decode(codec_bytes).convert("RGB"))
    mse = np.mean((decoded.astype(np.float64) - original) ** 2)
    bpp = 8 * len(codec_bytes) / (original.shape[0] * original.shape[1])
    lam = load_model("hyperprior").model.rd_lambda(quality)
    return lam * mse + bpp


@pytest.mark.parametrize("model", ["hyperprior", "context"])
def test_higher_effort_gives_a_better_file_that_decodes_anywhere(model):
    pixels = synthetic_photo(200, 136, seed=5)  # not a multiple of 64: padding is masked
    image = Image.fromarray(pixels)
    fast = Codec("cpu", model=model).encode(image, quality=6.0)
    slow_codec = Codec("cpu", model=model, effort=3)
    slow = slow_codec.encode(image, quality=6.0)
    assert slow != fast
    assert slow_codec.encode(image, quality=6.0) == slow  # deterministic
    decoder = Codec("cpu")  # a decoder that knows nothing of the effort
    assert _rd(slow, pixels, 6.0, decoder) < _rd(fast, pixels, 6.0, decoder)
    assert psnr(np.asarray(decoder.decode(slow).convert("RGB")), pixels) > 25


def test_refinement_works_tile_by_tile():
    pixels = synthetic_photo(200, 150, seed=6)
    image = Image.fromarray(pixels)
    tiled = Codec("cpu", model="hyperprior", tile=128, effort=2)
    data = tiled.encode(image, quality=4.0)
    whole = Codec("cpu", model="hyperprior", tile=128).encode(image, quality=4.0)
    decoder = Codec("cpu")
    assert _rd(data, pixels, 4.0, decoder) < _rd(whole, pixels, 4.0, decoder)


def test_effort_levels_and_their_limits(tmp_path):
    assert [refinement_steps(e) for e in range(1, 8)] == [0, 8, 16, 32, 64, 128, 256]
    for bad in (0, 8):
        with pytest.raises(LcodecError, match="effort"):
            refinement_steps(bad)
    src = tmp_path / "a.png"
    Image.fromarray(synthetic_photo(64, 64)).save(src)
    result = CliRunner().invoke(main, ["encode", str(src), str(tmp_path / "a.lc"), "-e", "8"])
    assert result.exit_code == 2 and "effort" in result.output.lower()
    assert not (tmp_path / "a.lc").exists()
    result = CliRunner().invoke(main, ["encode", str(src), str(tmp_path / "a.lc"), "-e", "2", "--quiet"])
    assert result.exit_code == 0 and (tmp_path / "a.lc").stat().st_size > 0

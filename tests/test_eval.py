"""Evaluation tools: BD-rate, metrics, the eval report and the compare picture."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lcodec.cli import main
from lcodec.eval.bdrate import bd_rate
from lcodec.eval.metrics import ms_ssim, psnr
from lcodec.eval.runner import run_eval

from .conftest import synthetic_photo

RATES = [0.1, 0.25, 0.5, 0.9, 1.4]
PSNRS = [27.0, 29.5, 32.0, 34.8, 37.1]


def test_bd_rate_of_a_curve_against_itself_is_zero():
    assert abs(bd_rate(RATES, PSNRS, RATES, PSNRS)) < 1e-9


def test_bd_rate_with_rates_times_0_9_is_minus_10_percent():
    assert bd_rate(RATES, PSNRS, [r * 0.9 for r in RATES], PSNRS) == pytest.approx(-10.0, abs=1e-6)
    assert bd_rate(RATES, PSNRS, [r * 1.2 for r in RATES], PSNRS) == pytest.approx(20.0, abs=1e-6)


def test_bd_rate_without_overlap_is_not_a_number():
    try:
        value = bd_rate(RATES, PSNRS, RATES, [p + 20 for p in PSNRS])
    except ValueError:
        return
    assert math.isnan(value)


def test_psnr_known_values():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255 ** 2), abs=1e-9)  # MSE 1: 48.13 dB
    b = a.copy()
    b[0, 0, 0] += 16  # MSE = 256 / 192
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 * 192 / 256), abs=1e-9)


def test_ms_ssim_is_one_for_identical_images_and_drops_with_noise():
    img = synthetic_photo(192, 192)
    rng = np.random.default_rng(0)
    light = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(img + rng.normal(0, 30, img.shape), 0, 255).astype(np.uint8)
    assert ms_ssim(img, img) == pytest.approx(1.0, abs=1e-9)
    assert 1.0 > ms_ssim(img, light) > ms_ssim(img, heavy) > 0.2


def test_eval_writes_a_report_and_plots(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_photo(96, 64, seed=i)).save(images / f"im{i}.png")
    out = tmp_path / "report"
    data = run_eval(images, ["jpeg", "lcodec"], {"lcodec": [2, 6], "jpeg": [20, 60, 90]}, out,
                    progress=False)
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["average"]) == {"jpeg", "lcodec"}
    assert len(saved["per_image"]) == 2 * (2 + 3)
    for rec in saved["per_image"]:
        assert rec["bpp"] > 0 and 5 < rec["psnr"] < 100 and 0 < rec["ms_ssim"] <= 1
    assert "lcodec" in data["bd_rate"]["psnr"]["jpeg"]
    pytest.importorskip("matplotlib")
    for name in ("rd_psnr.png", "rd_msssim.png"):
        assert Image.open(out / name).size[0] > 300


def test_compare_command_writes_a_labelled_picture(tmp_path):
    src = tmp_path / "p.png"
    Image.fromarray(synthetic_photo(128, 96, seed=4)).save(src)
    out = tmp_path / "cmp.png"
    r = CliRunner().invoke(main, ["compare", str(src), "--bpp", "1.0", "--out", str(out),
                                  "--codecs", "lcodec,jpeg"])
    assert r.exit_code == 0, r.output
    assert "lcodec" in r.stdout and "jpeg" in r.stdout
    assert Image.open(out).size[0] > 3 * 96

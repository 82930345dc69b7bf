"""Quality search for a file size or PSNR target (``--target-size`` / ``--target-psnr``)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lcodec.api import prepare
from lcodec.cli import main
from lcodec.rate_control import MAX_ENCODES, PSNR, SIZE, Target, parse_size, search

from .conftest import psnr, synthetic_photo


def _size_of(q: float) -> int:
    """A file size that grows about log-linearly with the quality, with a little wobble."""
    return int(800 * math.exp(0.45 * q) * (1 + 0.004 * math.sin(37 * q)))


def _fake_encode(calls):
    def encode(q):
        calls.append(q)
        return bytes(_size_of(q))
    return encode


@pytest.mark.parametrize("wanted", [1400, 5000, 17000])
def test_size_target_finds_the_highest_quality_that_fits(wanted):
    calls = []
    found = search(_fake_encode(calls), len, Target(SIZE, wanted))
    assert found.met and len(found.data) <= wanted
    assert len(found.data) >= 0.99 * wanted  # within the slack, not just "some file that fits"
    assert found.encodes == len(calls) <= MAX_ENCODES
    # no quality tried that fits is better than the one kept
    assert all(_size_of(q) <= len(found.data) for q in calls if _size_of(q) <= wanted)


def test_size_target_uses_few_encodes():
    counts = []
    for wanted in range(1500, 25000, 700):
        calls = []
        search(_fake_encode(calls), len, Target(SIZE, wanted))
        counts.append(len(calls))
    assert max(counts) <= 8 and np.mean(counts) <= 6, counts


def test_psnr_target_finds_the_lowest_quality_that_reaches_it():
    def quality_db(data):  # the fake "file" carries its quality
        return 24 + 1.6 * float(data.decode())

    found = search(lambda q: f"{q:.4f}".encode(), quality_db, Target(PSNR, 31.0))
    assert found.met and 31.0 <= found.measure <= 31.05
    assert found.quality == pytest.approx((31.0 - 24) / 1.6, abs=0.04)


def test_targets_already_met_at_the_best_end_take_one_encode():
    calls = []
    found = search(_fake_encode(calls), len, Target(SIZE, 10 ** 6))
    assert found.met and found.quality == 8.0 and calls == [8.0]
    found = search(lambda q: b"x", lambda d: 40.0, Target(PSNR, 30.0))
    assert found.met and found.quality == 1.0 and found.encodes == 1


def test_unreachable_targets_keep_the_closest_file():
    calls = []
    found = search(_fake_encode(calls), len, Target(SIZE, 100))
    assert not found.met and found.quality == 1.0 and calls == [8.0, 1.0]
    found = search(lambda q: f"{q}".encode(), lambda d: 20 + float(d.decode()), Target(PSNR, 60.0))
    assert not found.met and found.quality == 8.0 and found.encodes == 2


@pytest.mark.parametrize("text, size", [("50000", 50000), ("48K", 48 * 1024), ("48kib", 48 * 1024),
                                        ("50KB", 50000), ("1.5M", 1536 * 1024), ("2MB", 2000000),
                                        (" 7 b ", 7)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "K", "12X", "-5", "1e3", "0", "0.2K5"])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("kind, value", [("bytes", 10), (SIZE, 0), (PSNR, -1.0), (PSNR, float("inf")),
                                         (PSNR, float("nan"))])
def test_target_refuses_nonsense(kind, value):
    with pytest.raises(ValueError):
        Target(kind, value)


@pytest.fixture(scope="module")
def prepared():
    return prepare(Image.fromarray(synthetic_photo(96, 80, seed=3)))


def test_codec_meets_a_size_target_with_real_files(codec, prepared):
    low, high = (len(codec.encode_prepared(prepared, q)) for q in (2.0, 6.0))
    wanted = (low + high) // 2
    found = codec.encode_for_target(prepared, Target(SIZE, wanted))
    assert found.met and len(found.data) <= wanted
    assert 2.0 < found.quality < 6.0
    assert codec.encode_prepared(prepared, found.quality) == found.data  # the file of that quality
    # a clearly higher quality would not have fitted
    assert len(codec.encode_prepared(prepared, min(8.0, found.quality + 0.3))) > wanted


def test_codec_meets_a_psnr_target_with_real_files(codec, prepared):
    mid = prepared.psnr(codec.decode_full(codec.encode_prepared(prepared, 4.0)).pixels)
    found = codec.encode_for_target(prepared, Target(PSNR, mid))
    decoded = codec.decode_full(found.data).pixels
    assert found.met and psnr(decoded, prepared.pixels) >= mid
    assert found.quality == pytest.approx(4.0, abs=0.3)
    lower = codec.decode_full(codec.encode_prepared(prepared, found.quality - 0.3)).pixels
    assert psnr(lower, prepared.pixels) < mid


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("target") / "photo.png"
    Image.fromarray(synthetic_photo(96, 80, seed=3)).save(path)
    return path


def test_cli_target_size_writes_a_file_that_fits(tmp_path, photo_file):
    out = tmp_path / "a.lc"
    res = _invoke("encode", photo_file, out, "--target-size", "1K", "--json")
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert out.stat().st_size == line["bytes"] <= 1024
    assert 1.0 <= line["quality"] < 8.0
    assert _invoke("info", out).stdout.count(f"quality {line['quality']:g}") == 1


def test_cli_unreachable_target_warns_and_keeps_the_closest(tmp_path, photo_file):
    out = tmp_path / "a.lc"
    res = _invoke("encode", photo_file, out, "--target-size", "10")
    assert res.exit_code == 0 and out.exists()
    assert "out of reach" in res.stderr and "quality 1" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["--target-size", "2K", "--target-psnr", "30"], "exclude each other"),
    (["-q", "5", "--target-size", "2K"], "exclude each other"),
    (["--target-size", "12X"], "not a size"),
    (["--target-psnr", "0"], "between 0 and 100"),
])
def test_cli_refuses_conflicting_or_bad_targets(tmp_path, photo_file, args, message):
    out = tmp_path / "a.lc"
    res = _invoke("encode", photo_file, out, *args)
    assert res.exit_code == 2 and message in res.output
    assert not out.exists()


@pytest.mark.parametrize("tile", [0, 64])
def test_analysis_memo_gives_the_same_files_without_rerunning_the_analysis(tile):
    from lcodec.api import Codec
    from lcodec.tiling import tile_grid

    pixels = synthetic_photo(150, 100, seed=5)
    # a model whose analysis is the same at every quality (grouped v17's is not: test_train
    # checks its memo, one latent per tile and quality)
    pipe = Codec("cpu")._pipeline("context")
    assert not pipe.transforms.analysis_depends_on_quality
    plain = {q: pipe.encode(pixels, q, tile) for q in (2.5, 6.0)}
    calls = []
    real = pipe.transforms.analysis_unscaled

    def counting(window, quality):
        calls.append(window.shape)
        return real(window, quality)

    pipe.transforms.analysis_unscaled = counting
    try:
        memo: dict = {}
        remembered = {q: pipe.encode(pixels, q, tile, memo=memo) for q in (2.5, 6.0)}
    finally:
        del pipe.transforms.analysis_unscaled
    assert remembered == plain
    assert len(calls) == len(tile_grid(150, 100, tile)) == len(memo)  # once per tile, not per quality
    for (x0, y0, x1, y1), kept in memo.items():  # each tile's latent alone, not its window
        assert kept.shape[2:] == ((y1 - y0) // 16, (x1 - x0) // 16) and kept.flags["C_CONTIGUOUS"]

"""run_eval, the codec registry and the report/plot outputs of lcodec.eval."""
from __future__ import annotations

import io
import json
import math
import pickle

import numpy as np
import pytest
from PIL import Image

from lcodec.eval.classical import available_codecs, canonical_name, make_codec, missing_reason
from lcodec.eval.images import EvalError
from lcodec.eval.metrics import ms_ssim, psnr
from lcodec.eval.runner import bd_rate_table, format_bd_table, format_rd_table, quality_gap_table, run_eval

from .conftest import synthetic_photo

TIMING = ("encode_s", "decode_s")


def _has_lcodec() -> bool:
    usable, _ = available_codecs(["lcodec"])
    return usable == ["lcodec"]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(synthetic_photo(80, 48, seed=1)).save(folder / "a.png")
    Image.fromarray(synthetic_photo(64, 64, seed=2)).convert("RGBA").save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _strict_json(text: str):
    def reject(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=reject)


def test_registry_aliases_and_availability():
    assert canonical_name("AVIF") == "avif-s6"
    assert canonical_name("jpegxl") == "jxl"
    with pytest.raises(ValueError):
        canonical_name("gif")
    usable, missing = available_codecs(["jpeg", "jpg", "webp"])
    assert usable == ["jpeg", "webp"] and missing == {}
    usable, missing = available_codecs()
    assert set(usable) | set(missing) == {"lcodec", "jpeg", "webp", "avif-s6", "avif-s2", "jxl"}
    assert all(isinstance(why, str) and why for why in missing.values())


def test_lcodec_model_names():
    assert canonical_name("lcodec") == "lcodec"
    assert canonical_name("lcodec-hyperprior") == "lcodec-hyperprior"
    assert canonical_name(" LCODEC-context ") == "lcodec-context"
    assert canonical_name("lcodec-my_model-2") == "lcodec-my_model-2"
    for bad in ("lcodec-", "lcodec-a b", "lcodec--x", "lcodecx"):
        with pytest.raises(ValueError):
            canonical_name(bad)
    codec = make_codec("lcodec-context")  # not necessarily installed: nothing is loaded yet
    assert codec.name == "lcodec-context" and codec.model == "context"
    assert make_codec("lcodec").name == "lcodec" and make_codec("lcodec").model is None


def test_lcodec_names_carry_the_encoder_effort():
    assert canonical_name("LCODEC-context@e3") == "lcodec-context@e3"
    assert canonical_name("lcodec@e2") == "lcodec@e2"
    assert canonical_name("lcodec-context@e1") == "lcodec-context"  # effort 1 is the plain name
    codec = make_codec("lcodec-context@e3")
    assert (codec.name, codec.model, codec.effort) == ("lcodec-context@e3", "context", 3)
    assert make_codec("lcodec").effort == 1
    assert missing_reason("lcodec-context@e9") == "effort must be in [1, 7]"
    with pytest.raises(ValueError):
        canonical_name("lcodec-a b@e2")


def test_unknown_lcodec_model_has_a_clear_missing_reason():
    why = missing_reason("lcodec-nosuchmodel")
    assert why is not None and why.startswith("weights nosuchmodel are not installed (installed: ")
    usable, missing = available_codecs(["jpeg", "lcodec-nosuchmodel"])
    assert usable == ["jpeg"] and set(missing) == {"lcodec-nosuchmodel"}


def test_lcodec_model_codec_round_trip_and_pickle():
    if not _has_lcodec() or missing_reason("lcodec-hyperprior") is not None:
        pytest.skip("the hyperprior model is not installed")
    codec = make_codec("lcodec-hyperprior", [2.0, 6.0])
    assert codec.name == "lcodec-hyperprior" and codec.qualities == [2.0, 6.0]
    settings = codec.settings
    assert settings["model"].startswith("hyperprior v") and json.dumps(settings)
    img = Image.fromarray(synthetic_photo(64, 48, seed=7))
    small, big = codec.encode(img, 2.0), codec.encode(img, 6.0)
    assert 0 < len(small) < len(big)
    out = codec.decode(big)
    assert out.mode == "RGB" and out.size == img.size
    assert psnr(np.asarray(img), np.asarray(out)) > 25
    from lcodec.api import info

    assert info(big)["model"] == "hyperprior"
    clone = pickle.loads(pickle.dumps(codec))  # what a worker process receives
    assert (clone.name, clone.model, clone.qualities, clone._codec) == ("lcodec-hyperprior", "hyperprior",
                                                                        [2.0, 6.0], None)


@pytest.mark.parametrize("name", ["jpeg", "webp", "avif-s6", "jxl"])
def test_classical_codecs_round_trip(name):
    usable, missing = available_codecs([name])
    if not usable:
        pytest.skip(missing[name])
    codec = make_codec(name)
    img = Image.fromarray(synthetic_photo(64, 48, seed=5))
    low, high = codec.qualities[0], codec.qualities[-1]
    small, big = codec.encode(img, low), codec.encode(img, high)
    assert 0 < len(small) < len(big)
    out = codec.decode(big)
    assert out.mode == "RGB" and out.size == img.size
    assert psnr(np.asarray(img), np.asarray(out)) > 30
    assert json.dumps(codec.settings)


def test_jpeg_settings_are_the_documented_ones():
    img = Image.fromarray(synthetic_photo(64, 48, seed=6))
    data = make_codec("jpeg").encode(img, 50)
    ref = io.BytesIO()
    img.save(ref, format="JPEG", quality=50, subsampling=2, optimize=True)
    assert data == ref.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        from PIL import JpegImagePlugin

        assert JpegImagePlugin.get_sampling(im) == 2  # 4:2:0


def test_run_eval_writes_well_formed_results(images, tmp_path):
    out = tmp_path / "report"
    q = {"jpeg": [20, 60, 90], "webp": [30, 80]}
    data = run_eval(images, ["jpeg", "webp"], q, out, progress=False, image_set="tiny")
    saved = _strict_json((out / "results.json").read_text())
    assert saved["schema"] == "lcodec-eval/1" and saved["image_set"] == "tiny"
    assert [i["name"] for i in saved["images"]] == ["a.png", "b.png"]
    assert {(i["width"], i["height"]) for i in saved["images"]} == {(80, 48), (64, 64)}
    assert list(saved["average"]) == ["jpeg", "webp"]
    assert len(saved["per_image"]) == 2 * 3 + 2 * 2
    assert saved["codecs"]["jpeg"]["settings"]["subsampling"] == "4:2:0"
    assert saved["codecs"]["webp"]["qualities"] == [30, 80]

    originals = {p.name: Image.open(p).convert("RGB") for p in images.glob("*.png")}
    jpeg = make_codec("jpeg")
    for rec in saved["per_image"]:
        w, h = rec["width"], rec["height"]
        assert rec["bpp"] == pytest.approx(8 * rec["bytes"] / (w * h))
        assert 0 < rec["ms_ssim"] <= 1 and 10 < rec["psnr"] < 100
        assert rec["encode_s"] >= 0 and rec["decode_s"] >= 0
        if rec["codec"] == "jpeg":  # whole-file bytes and metrics, recomputed independently
            img = originals[rec["image"]]
            encoded = jpeg.encode(img, rec["quality"])
            assert rec["bytes"] == len(encoded)
            dec = np.asarray(jpeg.decode(encoded))
            assert rec["psnr"] == pytest.approx(psnr(np.asarray(img), dec), abs=1e-9)
            assert rec["ms_ssim"] == pytest.approx(ms_ssim(np.asarray(img), dec), abs=1e-12)

    for codec, points in saved["average"].items():
        assert [p["quality"] for p in points] == q[codec]
        for p in points:
            recs = [r for r in saved["per_image"] if r["codec"] == codec and r["quality"] == p["quality"]]
            assert p["n_images"] == len(recs) == 2
            for key in ("bpp", "psnr", "ms_ssim", "bytes"):
                assert p[key] == pytest.approx(sum(r[key] for r in recs) / 2)
            assert p["ms_ssim_db"] == pytest.approx(-10 * math.log10(1 - p["ms_ssim"]))
        bpps = [p["bpp"] for p in points]
        assert bpps == sorted(bpps)

    bd = saved["bd_rate"]
    assert set(bd) == {"psnr", "ms_ssim_db"}
    assert list(bd["psnr"]) == ["jpeg"] and "webp" in bd["psnr"]["jpeg"]
    value = data["bd_rate"]["psnr"]["jpeg"]["webp"]
    assert saved["bd_rate"]["psnr"]["jpeg"]["webp"] == (None if math.isnan(value) else value)
    text = format_bd_table(data["bd_rate"], list(data["average"]))
    assert "vs jpeg PSNR" in text and "webp" in text.splitlines()[-1]
    assert "webp" in format_rd_table(data["average"])

    pytest.importorskip("matplotlib")
    assert saved["plots"] == ["rd_psnr.png", "rd_msssim.png"]
    for name in saved["plots"]:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] >= 400


def test_bd_rate_table_against_a_scaled_copy():
    base = [{"bpp": b, "psnr": p, "ms_ssim_db": p / 2} for b, p in [(0.2, 28), (0.5, 31), (1.0, 34), (2.0, 37)]]
    cheaper = [dict(p, bpp=p["bpp"] * 0.9) for p in base]
    table = bd_rate_table({"jpeg": base, "x": cheaper, "lcodec": base}, anchors=("jpeg", "lcodec", "webp"))
    assert list(table["psnr"]) == ["jpeg", "lcodec"]  # webp was not run
    assert table["psnr"]["jpeg"]["x"] == pytest.approx(-10.0, abs=1e-6)
    assert table["ms_ssim_db"]["lcodec"]["x"] == pytest.approx(-10.0, abs=1e-6)
    assert table["psnr"]["jpeg"]["lcodec"] == pytest.approx(0.0, abs=1e-9)
    assert "jpeg" not in table["psnr"]["jpeg"]


def test_quality_gap_table_shows_which_end_of_the_curve_differs():
    anchor = [{"quality": q, "bpp": b, "psnr": p} for q, b, p in [(10, 0.2, 28), (50, 0.5, 31), (90, 1.0, 34), (95, 2.0, 37)]]
    # better than the anchor by 0.5 dB at low rates, worse by 2 dB at the top, one point beyond its range
    mine = [{"quality": 1, "bpp": 0.2, "psnr": 28.5}, {"quality": 4, "bpp": 1.0, "psnr": 32.0},
            {"quality": 8, "bpp": 3.0, "psnr": 38.0}]
    rows = quality_gap_table({"lcodec-x": mine, "avif": anchor}, "lcodec-x", ["avif", "lcodec-x", "webp"])
    assert [r["quality"] for r in rows] == [1, 4, 8]
    assert list(rows[0]["gaps"]) == ["avif"]  # itself and codecs that were not run are left out
    assert rows[0]["gaps"]["avif"] == pytest.approx(0.5, abs=1e-9)
    assert rows[1]["gaps"]["avif"] == pytest.approx(-2.0, abs=1e-9)
    assert math.isnan(rows[2]["gaps"]["avif"])


def test_parallel_run_equals_sequential(images):
    codecs = ["jpeg", "lcodec"] if _has_lcodec() else ["jpeg", "webp"]
    q = {"jpeg": [30, 85], "webp": [50], "lcodec": [2.0, 6.5]}
    seq = run_eval(images, codecs, q, None, jobs=1, progress=False)
    par = run_eval(images, codecs, q, None, jobs=2, progress=False)

    def strip(recs):
        return [{k: v for k, v in r.items() if k not in TIMING} for r in recs]

    assert strip(seq["per_image"]) == strip(par["per_image"])
    assert json.dumps(seq["bd_rate"]) == json.dumps(par["bd_rate"])


def test_run_eval_with_lcodec(images, tmp_path):
    if not _has_lcodec():
        pytest.skip("lcodec.api is not available")
    data = run_eval(images, ["lcodec", "jpeg"], {"lcodec": [1.5, 4.0, 8.0], "jpeg": [10, 50, 90]},
                    tmp_path / "r", progress=False)
    points = data["average"]["lcodec"]
    assert [p["quality"] for p in points] == [1.5, 4.0, 8.0]
    assert points[0]["bpp"] < points[1]["bpp"] < points[2]["bpp"]
    assert points[0]["psnr"] < points[2]["psnr"]
    assert set(data["bd_rate"]["psnr"]) == {"jpeg", "lcodec"}
    assert "jpeg" in data["bd_rate"]["psnr"]["lcodec"]
    _strict_json((tmp_path / "r" / "results.json").read_text())


def test_user_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvalError, match="no images"):
        run_eval(empty, ["jpeg"], progress=False)
    with pytest.raises(EvalError, match="not a directory"):
        run_eval(tmp_path / "missing", ["jpeg"], progress=False)
    Image.fromarray(synthetic_photo(16, 16)).save(empty / "x.png")
    with pytest.raises(EvalError, match="twice"):
        run_eval(empty, ["avif", "avif-s6"], progress=False)
    with pytest.raises(ValueError, match="unknown codec"):
        run_eval(empty, ["gif"], progress=False)

"""``lcodec.eval.benchmark`` and ``lcodec eval`` with several lcodec models (``lcodec-<model>``).

Runs with only the hyperprior installed (the checkout's ``weights/``); the two-model reports
are rendered from small fake result dicts, and ``installed_models`` reads a fake manifest.
"""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from PIL import Image

from lcodec.cli import main
from lcodec.eval import benchmark
from lcodec.eval.classical import missing_reason

from .conftest import synthetic_photo


def _entry(name, version, family, default=False):
    return {"name": name, "version": version, "family": family, "file": f"{name}-v{version}.pt",
            "sha256": f"{version:02d}" * 32, "config": {}, "default": default}


def test_installed_models_takes_the_newest_of_each_family_default_first(tmp_path, monkeypatch):
    manifest = {"models": [_entry("context", 1, "context"), _entry("hyperprior", 1, "hyperprior", True),
                           _entry("context", 2, "context"), _entry("hyperprior", 2, "hyperprior", True)]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(tmp_path))
    models = benchmark.installed_models()
    assert [e.label for e in models] == ["hyperprior v2", "context v2"]
    assert [benchmark.eval_name(e) for e in models] == ["lcodec-hyperprior", "lcodec-context"]
    assert benchmark.rd_anchors(models) == ("jpeg", "lcodec-hyperprior", "webp", "avif-s6", "avif-s2")
    assert missing_reason("lcodec-context") is None
    assert "weights nope are not installed" in missing_reason("lcodec-nope")


def test_installed_models_of_the_checkout_include_the_default():
    models = benchmark.installed_models()
    assert models and models[0].default
    assert len({e.family for e in models}) == len(models)


def _points(scale):
    return [{"quality": q, "bpp": b * scale, "psnr": p, "ms_ssim": m, "ms_ssim_db": -10 * math.log10(1 - m),
             "encode_s": 0.1, "decode_s": 0.2}
            for q, b, p, m in [(1, 0.2, 27.0, 0.90), (4, 0.6, 31.0, 0.96), (8, 1.5, 36.0, 0.99)]]


def test_rd_markdown_shows_two_models_and_their_bd_rate():
    from lcodec.eval.runner import bd_rate_table

    average = {"lcodec-hyperprior": _points(1.0), "lcodec-context": _points(0.9), "jpeg": _points(1.5)}
    data = {"average": average, "images": [{"name": "a.png"}, {"name": "b.png"}],
            "baseline": "lcodec-hyperprior",
            "bd_rate": bd_rate_table(average, ("jpeg", "lcodec-hyperprior", "webp", "avif-s6", "avif-s2")),
            "codecs": {n: {"settings": {"model": n}} for n in average}}
    text = benchmark.rd_markdown(data)
    assert "## Rate-distortion on Kodak (2 images)" in text
    assert "| lcodec-context | 4 | 0.5400 |" in text
    assert "| codec | vs jpeg | vs lcodec-hyperprior |" in text
    assert "- lcodec-context vs lcodec-hyperprior: PSNR -10.0%, MS-SSIM -10.0% (target <= -5%)" in text
    assert "| lcodec-context | -40.0% | -10.0% |" in text
    assert "| lcodec-hyperprior | -33.3% | - |" in text
    assert "Re-used" not in text
    # where the difference is: the default model (first) against the classical codecs only
    assert "### Where the difference is: lcodec-hyperprior's PSNR minus" in text
    assert "| setting | bpp | PSNR (dB) | vs jpeg |" in text
    assert "| 1 | 0.2000 | 27.00 | n/a |" in text  # below jpeg's cheapest point (0.3 bpp)
    assert "| 4 | 0.6000 | 31.00 | +1.69 dB |" in text  # jpeg needs 1.5x the bits: sharper at 0.6 bpp
    data["reused"] = {"lcodec-hyperprior": "2026-12-02"}
    assert "earlier `make bench`" in benchmark.rd_markdown(data)
    assert "lcodec-hyperprior (2026-12-02)" in benchmark.rd_markdown(data)


def _speed(models):
    return {"quality": 4.0, "images": 24, "model": "hyperprior", "encode_s": 0.1, "decode_s": 0.12,
            "encode_mp_per_s": 4.0, "decode_mp_per_s": 3.3, "command_encode_s": 1.7, "command_decode_s": 1.9,
            "command_encode_rss_mb": 360.0, "command_decode_rss_mb": 392.0, "help_s": 0.1,
            "command_image": "kodim01.png", "command_model": "hyperprior v1", "baseline": "hyperprior",
            "models": models}


def test_speed_markdown_two_models_and_the_ratio_lines():
    models = {"hyperprior": {"label": "hyperprior v1", "encode_s": 0.1, "decode_s": 0.12,
                             "encode_mp_per_s": 4.0, "decode_mp_per_s": 3.3},
              "context": {"label": "context v1", "encode_s": 0.13, "decode_s": 0.15,
                          "encode_mp_per_s": 3.0, "decode_mp_per_s": 2.6}}
    text = benchmark.speed_markdown(_speed(models))
    for name in ("lcodec-hyperprior (hyperprior v1)", "lcodec-context (context v1)"):
        assert f"| {name}: in-process encode" in text and f"| {name}: in-process decode" in text
    assert "| lcodec-context (context v1): in-process decode, median per image (model loaded) | 0.150 s (2.60 MP/s) |" in text
    assert "context decode time / hyperprior decode time: 1.25x (target <= 1.5x)" in text
    assert "context encode time / hyperprior encode time: 1.30x" in text
    assert "`lcodec encode` command (default model, hyperprior v1), kodim01.png" in text
    assert "a Python process of their own" not in text
    assert "a Python process of their own" in benchmark.speed_markdown({**_speed(models), "fresh_process": True})


def test_speed_markdown_one_model_and_an_old_speed_json():
    one = benchmark.speed_markdown(_speed({"hyperprior": {"label": "hyperprior v1", "encode_s": 0.1,
                                                          "decode_s": 0.12, "encode_mp_per_s": 4.0,
                                                          "decode_mp_per_s": 3.3}}))
    assert "lcodec-hyperprior (hyperprior v1): in-process decode" in one and "time /" not in one
    old = {k: v for k, v in _speed({}).items() if k not in ("models", "model", "baseline", "command_model")}
    text = benchmark.speed_markdown(old)
    assert "| lcodec: in-process encode, median per image (model loaded) | 0.100 s (4.00 MP/s) |" in text


def test_plots_with_lcodec_model_names(tmp_path):
    pytest.importorskip("matplotlib")
    from lcodec.eval.plots import write_plots

    average = {"lcodec-hyperprior": _points(1.0), "lcodec-context": _points(0.9), "jpeg": _points(1.5)}
    written = write_plots({"average": average, "image_set": "fake", "images": [{}]}, tmp_path, quiet=True)
    assert [p.name for p in written] == ["rd_psnr.png", "rd_msssim.png"]


def test_eval_command_takes_lcodec_model_names(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(synthetic_photo(64, 48, seed=3)).save(images / "a.png")
    out = tmp_path / "report"
    r = CliRunner().invoke(main, ["eval", str(images), "--codecs", "lcodec-nosuchmodel,jpeg", "--out", str(out),
                                  "--quiet"])
    assert r.exit_code == 0, r.output
    assert "skipping lcodec-nosuchmodel: weights nosuchmodel are not installed" in r.stderr
    if missing_reason("lcodec-hyperprior") is not None:
        pytest.skip("the hyperprior model is not installed")
    r = CliRunner().invoke(main, ["eval", str(images), "--codecs", "lcodec-hyperprior,jpeg", "-q", "2,6",
                                  "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["average"]) == ["lcodec-hyperprior", "jpeg"]
    assert [p["quality"] for p in saved["average"]["lcodec-hyperprior"]] == [2.0, 6.0]
    assert list(saved["bd_rate"]["psnr"]) == ["jpeg", "lcodec-hyperprior"]
    assert "vs lcodec-hyperprior PSNR" in r.stdout


def test_campaign_section_lists_every_checkpoint(tmp_path):
    from lcodec.eval.benchmark import campaign_markdown

    entries = [{"label": "v1", "date": "2026-11-22", "steps": 100, "cpu_hours": 1.0,
                "bd_rate_pct": {"jpeg": 80.0, "webp": 180.0}},
               {"label": "arm", "date": "2026-11-22", "steps": 200, "cpu_hours": 2.0, "side_branch": True,
                "bd_rate_pct": {"jpeg": 50.0, "webp": 120.0}},
               {"label": "v2", "date": "2026-11-23", "steps": 300, "cpu_hours": 2.0,
                "bd_rate_pct": {"jpeg": 40.0}}]
    md = campaign_markdown(entries, tmp_path)
    assert "| v1 | 2026-11-22 | 100 | 1.00 | +80.0% | +180.0% |" in md
    assert "| v2 | 2026-11-23 | 300 | 2.00 | +40.0% | - |" in md
    assert "vs avif-s6" not in md  # no entry has it


def test_machine_line_names_the_cpu_simd():
    """The report says which SIMD the CPU has: speed differs by ~2x between the same-named
    "AMD EPYC" machines with and without AVX-512."""
    assert benchmark.vector_extensions({"avx2", "avx512f", "avx512_bf16"}) == "AVX-512 with BF16"
    assert benchmark.vector_extensions({"avx2", "avx512f"}) == "AVX-512"
    assert benchmark.vector_extensions({"avx2", "fma"}) == "AVX2"
    assert benchmark.vector_extensions({"sse4_2"}) == "no AVX2"
    line = benchmark.machine()
    assert "cores" in line and "torch" in line


def test_sources_digest_follows_coding_sources_only(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "eval").mkdir()
    (tmp_path / "train").mkdir()
    for rel in ("pipeline.py", "models/net.py", "eval/bench.py", "train/loop.py"):
        (tmp_path / rel).write_text("x = 1\n")
    first = benchmark.sources_digest(tmp_path)
    (tmp_path / "eval/bench.py").write_text("x = 2\n")
    (tmp_path / "train/loop.py").write_text("x = 2\n")
    assert benchmark.sources_digest(tmp_path) == first
    (tmp_path / "models/net.py").write_text("x = 2\n")
    assert benchmark.sources_digest(tmp_path) != first


def test_model_results_reuse_matching_records_and_remeasure_otherwise(tmp_path, monkeypatch):
    from lcodec.eval import classical, runner

    kodak = tmp_path / "kodak"
    kodak.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_photo(40, 32, seed=i)).save(kodak / f"k{i}.png")
    bench = tmp_path / "bench"
    bench.mkdir()
    calls = []
    real_run_eval, real_make_codec = runner.run_eval, classical.make_codec

    def counting_run_eval(images, codecs, *args, **kwargs):
        calls.append([c.name for c in codecs])
        return real_run_eval(images, codecs, *args, **kwargs)

    monkeypatch.setattr(runner, "run_eval", counting_run_eval)
    # a two-point sweep keeps the test quick
    monkeypatch.setattr(classical, "make_codec", lambda name: real_make_codec(name, [2, 6]))
    names = ["lcodec-hyperprior", "lcodec-context"]
    records, codecs, reused = benchmark.model_results(kodak, bench, names, 1, refresh=False)
    assert calls == [names] and reused == {}
    assert sorted({r["codec"] for r in records}) == sorted(names) and len(records) == 2 * 2 * 2
    assert list(codecs) == names and codecs[names[0]]["qualities"] == [2, 6]

    again, _, reused = benchmark.model_results(kodak, bench, names, 1, refresh=False)
    assert len(calls) == 1 and list(reused) == names
    assert again == records

    # another sweep of one model: only that one is measured again
    monkeypatch.setattr(classical, "make_codec",
                        lambda name: real_make_codec(name, [2, 6] if name == names[0] else [3]))
    _, _, reused = benchmark.model_results(kodak, bench, names, 1, refresh=False)
    assert calls[-1] == names[1:] and list(reused) == names[:1]
    # another build of the coding path: every model is measured again
    real_fp = benchmark.coding_fingerprint()
    monkeypatch.setattr(benchmark, "coding_fingerprint", lambda: {**real_fp, "torch": "other"})
    benchmark.model_results(kodak, bench, names, 1, refresh=False)
    assert calls[-1] == names
    # --refresh-models measures them even when the key matches
    benchmark.model_results(kodak, bench, names[:1], 1, refresh=True)
    assert calls[-1] == names[:1]


def test_rate_distortion_adds_the_effort_sweep_only_when_asked(tmp_path, monkeypatch):
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    Image.fromarray(synthetic_photo(32, 32)).save(kodak / "k.png")
    seen = []

    def fake_models(kodak, bench, names, jobs, refresh):
        seen.append(list(names))
        records = [{"codec": n, "quality": q, "image": "k.png", "width": 32, "height": 32,
                    "bytes": 13 * q, "bpp": 0.1 * q, "mse": 10.0 / q, "psnr": 25 + q, "ms_ssim": 0.9,
                    "encode_s": 0.1, "decode_s": 0.1}
                   for n in names for q in (1, 2, 3, 4)]
        return records, {n: {"settings": {}, "qualities": [1, 2, 3, 4]} for n in names}, {}

    monkeypatch.setattr(benchmark, "classical_results", lambda *a: ([], {}, {}))
    monkeypatch.setattr(benchmark, "model_results", fake_models)
    models = benchmark.installed_models()
    benchmark.rate_distortion(kodak, tmp_path, 1, False, models)
    assert seen[-1] == [benchmark.eval_name(e) for e in models]
    benchmark.rate_distortion(kodak, tmp_path, 1, False, models, effort=3)
    assert seen[-1][-1] == f"{benchmark.eval_name(models[0])}@e3" and len(seen[-1]) == len(models) + 1

"""The command line: files, pipes, errors (one line, exit code, no output left)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lcodec.cli import main
from lcodec.weights import weights_dir

from .conftest import psnr, synthetic_photo, weights_copy


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def lcodec_process(*args, input=None, env=None):
    """Run the real console entry point as a process (for pipes and tracebacks)."""
    return subprocess.run([sys.executable, "-m", "lcodec", *map(str, args)], input=input,
                          capture_output=True, env={**os.environ, **(env or {})}, timeout=120)


def assert_one_line_error(result_stderr: str):
    lines = [l for l in result_stderr.strip().splitlines() if l]
    assert len(lines) == 1, result_stderr
    assert lines[0].startswith("lcodec: error:")
    assert "Traceback" not in result_stderr


def test_encode_decode_info(tmp_path, photo_png):
    lc, png = tmp_path / "p.lc", tmp_path / "p.png"
    r = run("encode", photo_png, lc, "-q", "5")
    assert r.exit_code == 0, r.output
    assert "bpp" in r.stderr
    r = run("decode", lc, "-o", png)
    assert r.exit_code == 0, r.output
    original = np.asarray(Image.open(photo_png))
    assert psnr(original, np.asarray(Image.open(png))) > 22
    r = run("info", lc, "--json")
    meta = json.loads(r.stdout)
    assert meta["width"] == 96 and meta["height"] == 64 and meta["bytes"] == lc.stat().st_size


@pytest.mark.parametrize("ext,fmt", [("png", "PNG"), ("ppm", "PPM"), ("bmp", "BMP"), ("tiff", "TIFF"),
                                     ("jpg", "JPEG"), ("webp", "WEBP")])
def test_decode_format_follows_extension(tmp_path, photo_png, ext, fmt):
    lc = tmp_path / "p.lc"
    assert run("encode", photo_png, lc, "--quiet").exit_code == 0
    out = tmp_path / f"out.{ext}"
    assert run("decode", lc, out, "--quiet").exit_code == 0
    assert Image.open(out).format == fmt


def test_unknown_output_extension_is_an_error(tmp_path, photo_png):
    lc = tmp_path / "p.lc"
    run("encode", photo_png, lc, "--quiet")
    r = run("decode", lc, tmp_path / "out.xyz")
    assert r.exit_code == 1 and "output format" in r.stderr
    assert not (tmp_path / "out.xyz").exists()


def test_pipes_through_the_real_command(photo_png):
    enc = lcodec_process("encode", "-", "-", "--quiet", input=photo_png.read_bytes())
    assert enc.returncode == 0, enc.stderr
    assert enc.stdout[:4] == b"\x89LCD" and enc.stderr == b""
    dec = lcodec_process("decode", "-", "-", "--quiet", input=enc.stdout)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_does_not_import_torch():
    code = "import sys; from lcodec.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("False"), out.stdout


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_damaged_file_one_line_error_no_output(tmp_path, photo_png, damage):
    lc = tmp_path / "p.lc"
    run("encode", photo_png, lc, "--quiet")
    data = bytearray(lc.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "truncate":
        data = data[: len(data) - 7]
    elif damage == "garbage":
        data = bytearray(os.urandom(300))
    else:
        data = bytearray()
    bad = tmp_path / "bad.lc"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.png"
    proc = lcodec_process("decode", bad, out)
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr.decode())
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_non_image_input(tmp_path):
    junk = tmp_path / "notes.png"
    junk.write_text("this is not an image")
    proc = lcodec_process("encode", junk, tmp_path / "x.lc")
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr.decode())
    assert "not an image" in proc.stderr.decode()
    assert not (tmp_path / "x.lc").exists()


def test_missing_input(tmp_path):
    r = run("encode", tmp_path / "nope.png", tmp_path / "x.lc")
    assert r.exit_code == 1 and "no such file" in r.stderr
    r = run("decode", tmp_path / "nope.lc", tmp_path / "x.png")
    assert r.exit_code == 1 and "no such file" in r.stderr


def test_unwritable_output_leaves_nothing(tmp_path, photo_png):
    target = tmp_path / "missing-dir" / "x.lc"
    r = run("encode", photo_png, target)
    assert r.exit_code == 1 and "cannot write" in r.stderr
    assert not target.parent.exists()


def test_usage_errors_exit_2(tmp_path, photo_png):
    assert run("encode", photo_png).exit_code == 2          # no output
    assert run("encode", photo_png, tmp_path / "a.lc", "-q", "x").exit_code == 2
    assert run("encode", photo_png, tmp_path / "a.lc", "--device", "tpu").exit_code == 2


def test_quality_out_of_range_exit_1(tmp_path, photo_png):
    r = run("encode", photo_png, tmp_path / "a.lc", "-q", "9")
    assert r.exit_code == 1 and "quality" in r.stderr


def test_cuda_request_without_gpu_is_clear(tmp_path, photo_png):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = run("encode", photo_png, tmp_path / "a.lc", "--device", "cuda")
    assert r.exit_code == 1 and "--device cuda" in r.stderr and "cpu" in r.stderr


def test_tampered_weights_are_refused(tmp_path, photo_png):
    copy, _, target = weights_copy(tmp_path)  # target: what encode loads
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1
    target.write_bytes(bytes(data))
    proc = lcodec_process("encode", photo_png, tmp_path / "x.lc", env={"LCODEC_WEIGHTS_DIR": str(copy)})
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr.decode())
    assert "SHA-256" in proc.stderr.decode()
    assert not (tmp_path / "x.lc").exists()


def test_model_version_spec_encodes_with_that_version(tmp_path, photo_png):
    """``--model NAME:vN`` picks an older installed version, which the file then names."""
    manifest = json.loads((weights_dir() / "manifest.json").read_text())
    versions = sorted(m["version"] for m in manifest["models"] if m["name"] == "hyperprior")
    assert len(versions) >= 2
    older = versions[-2]
    lc, png = tmp_path / "old.lc", tmp_path / "old.png"
    r = run("encode", photo_png, lc, "--model", f"hyperprior:v{older}", "--quiet")
    assert r.exit_code == 0, r.output
    meta = json.loads(run("info", lc, "--json").stdout)
    assert (meta["model"], meta["model_version"]) == ("hyperprior", older)
    newest = tmp_path / "new.lc"
    assert run("encode", photo_png, newest, "--model", "hyperprior", "--quiet").exit_code == 0
    assert json.loads(run("info", newest, "--json").stdout)["model_version"] == versions[-1]
    assert run("decode", lc, png, "--quiet").exit_code == 0
    assert psnr(np.asarray(Image.open(photo_png)), np.asarray(Image.open(png))) > 22


@pytest.mark.parametrize("spec", ["hyperprior:v999", "hyperprior:vx", ":v1"])
def test_bad_model_spec_is_one_line_error(tmp_path, photo_png, spec):
    out = tmp_path / "a.lc"
    r = run("encode", photo_png, out, "--model", spec)
    assert r.exit_code == 1
    assert_one_line_error(r.stderr)
    assert not out.exists()

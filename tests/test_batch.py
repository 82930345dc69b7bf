"""Many files: argument forms, folders, --jobs, --json, exit codes, overwrite policies,
--verify, interrupts, and the Python batch API. Tiny images keep it fast."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import lcodec
from lcodec import batch, container
from lcodec.cli import main

from .conftest import synthetic_photo

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def make_images(folder: Path, names, size=(24, 16)) -> list[Path]:
    paths = []
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_photo(size[0] + i, size[1], seed=i)).save(path)
        paths.append(path)
    return paths


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lcodec: error:")]


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".part")]


def is_lc(path: Path) -> bool:
    container.parse(path.read_bytes())
    return True


# --------------------------------------------------------------------------- argument forms

def test_many_files_into_an_output_folder_and_back(tmp_path):
    pngs = make_images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    r = run("encode", *pngs, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    lcs = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in lcs] == ["a.lc", "b.lc", "c.lc"] and all(is_lc(p) for p in lcs)
    r = run("decode", *lcs, "-o", tmp_path / "restored")
    assert r.exit_code == 0, r.output
    for png in pngs:
        back = Image.open(tmp_path / "restored" / png.name)
        assert back.format == "PNG" and back.size == Image.open(png).size
    r = run("decode", *lcs, "-o", tmp_path / "as-ppm", "--format", "ppm")
    assert r.exit_code == 0 and sorted(p.name for p in (tmp_path / "as-ppm").iterdir()) == ["a.ppm", "b.ppm", "c.ppm"]


def test_recursive_folders_keep_their_layout(tmp_path):
    src = tmp_path / "photos"
    make_images(src, ["top.png", "2024/jan/x.jpg", "2024/y.png", ".hidden/h.png"])
    (src / "notes.txt").write_text("not an image, not taken from a folder")
    r = run("encode", src, "-o", tmp_path / "flat")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "flat").rglob("*")) == ["top.lc"]
    r = run("encode", "-r", src, "-o", tmp_path / "tree")
    assert r.exit_code == 0, r.output
    found = sorted(str(p.relative_to(tmp_path / "tree")) for p in (tmp_path / "tree").rglob("*.lc"))
    assert found == ["2024/jan/x.lc", "2024/y.lc", "top.lc"]
    r = run("decode", "-r", tmp_path / "tree", "-o", tmp_path / "back")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "back/2024/jan/x.png").is_file() and (tmp_path / "back/top.png").is_file()


def test_output_folder_inside_the_input_folder_is_not_reread(tmp_path):
    src = tmp_path / "in"
    make_images(src, ["a.png"])
    r = run("encode", "-r", src, "-o", src / "out")
    assert r.exit_code == 0, r.output
    r = run("encode", "-r", src, "-o", src / "out", "--skip-existing", "--json")
    assert r.exit_code == 0 and [json.loads(l)["input"] for l in r.stdout.splitlines()] == [str(src / "a.png")]


def test_single_file_forms_still_work(tmp_path, photo_png):
    assert run("encode", photo_png, tmp_path / "a.lc", "--quiet").exit_code == 0
    assert run("encode", photo_png, "-o", tmp_path / "b.lc", "--quiet").exit_code == 0
    # a name that does not exist and is no image is an output, as before
    assert run("encode", photo_png, tmp_path / "c.bin", "--quiet").exit_code == 0
    assert run("decode", tmp_path / "a.lc", tmp_path / "a.png", "--quiet").exit_code == 0
    assert run("decode", tmp_path / "a.lc", "-o", tmp_path / "b.webp", "--quiet").exit_code == 0
    assert Image.open(tmp_path / "b.webp").format == "WEBP"
    # -o naming an existing folder puts the file inside it
    (tmp_path / "dir").mkdir()
    assert run("encode", photo_png, "-o", tmp_path / "dir", "--quiet").exit_code == 0
    assert is_lc(tmp_path / "dir" / "photo.lc")


@pytest.mark.parametrize("args", [
    ["encode", "{png}"],                                    # no output
    ["encode", "{png}", "{png2}"],                          # two existing images: needs -o DIR
    ["encode", "{dir}", "{tmp}/x"],                         # a folder needs -o DIR
    ["encode", "{png}", "{tmp}/b.lc", "-o", "{tmp}/c.lc"],  # output twice
    ["encode", "{png}", "{png2}", "-o", "{tmp}/x.lc"],      # -o looks like a file
    ["encode", "{png}", "{png2}", "-o", "-"],               # stdout for many
    ["encode", "-", "{png}", "-o", "{tmp}/d"],              # stdin among many
    ["encode", "{png}", "{tmp}/a.lc", "--force", "--skip-existing"],
    ["encode", "{png}", "-", "--json"],                     # stdout taken twice
    ["encode", "{dir}/x/same.png", "{dir}/y/same.png", "-o", "{tmp}/o"],  # same output twice
    ["encode", "{png}", "{tmp}/a.lc", "--jobs", "-1"],
    ["decode", "{tmp}/a.lc", "{tmp}/b.lc"],                 # two inputs, no -o
    ["decode", "{tmp}/a.lc", "-o", "{tmp}/o", "--format", "xyz"],
])
def test_usage_errors_exit_2(tmp_path, args):
    src = tmp_path / "src"
    png, png2 = make_images(src, ["p.png", "q.png"])
    make_images(src, ["x/same.png", "y/same.png"])
    (tmp_path / "a.lc").write_bytes(b"")
    (tmp_path / "b.lc").write_bytes(b"")
    fmt = {"png": png, "png2": png2, "dir": src, "tmp": tmp_path}
    r = run(*[a.format(**fmt) for a in args])
    assert r.exit_code == 2, (args, r.output)
    assert "Traceback" not in r.output
    assert not list(tmp_path.glob("*/*.lc")) and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- exit codes, failures

def test_one_bad_file_exit_1_and_the_rest_done(tmp_path):
    good = make_images(tmp_path / "in", ["a.png", "c.png"])
    bad = tmp_path / "in" / "b.png"
    bad.write_text("not an image")
    r = run("encode", good[0], bad, good[1], "-o", tmp_path / "out")
    assert r.exit_code == 1
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and str(bad) in errors[0] and "not an image" in errors[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.lc", "c.lc"]
    assert "Traceback" not in r.output
    # decoding: a damaged file among good ones
    damaged = tmp_path / "out" / "b.lc"
    damaged.write_bytes((tmp_path / "out" / "a.lc").read_bytes()[:-9])
    r = run("decode", tmp_path / "out", "-o", tmp_path / "back")
    assert r.exit_code == 1
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and str(damaged) in errors[0] and "truncated" in errors[0]
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["a.png", "c.png"]


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    bad = tmp_path / "in" / "0-bad.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    make_images(tmp_path / "in", ["1.png", "2.png"])
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out", "--fail-fast")
    assert r.exit_code == 1 and len(error_lines(r.stderr)) == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert "not started" in r.stderr


def test_missing_input_among_many(tmp_path):
    (good,) = make_images(tmp_path, ["a.png"])
    r = run("encode", good, tmp_path / "gone.png", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "gone.png: no such file" in r.stderr
    assert (tmp_path / "out" / "a.lc").is_file()


def test_json_lines(tmp_path):
    good = make_images(tmp_path / "in", ["a.png", "b.png"])
    (tmp_path / "in" / "c.png").write_text("junk")
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out", "--json", "--quiet")
    assert r.exit_code == 1
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 3
    by_name = {Path(d["input"]).name: d for d in lines}
    for name in ("a.png", "b.png"):
        d = by_name[name]
        assert d["status"] == "ok" and d["error"] is None
        assert d["bytes"] == (tmp_path / "out" / name.replace(".png", ".lc")).stat().st_size
        assert d["bpp"] == pytest.approx(8 * d["bytes"] / (d["width"] * d["height"]), rel=1e-3)
        assert d["seconds"] >= 0 and d["output"].endswith(".lc")
    assert by_name["c.png"]["status"] == "failed" and "not an image" in by_name["c.png"]["error"]
    assert {"input", "output", "status", "bytes", "bpp", "seconds"} <= set(lines[0])
    assert error_lines(r.stderr)  # --quiet still reports errors
    # the single-file form prints one line too
    r = run("encode", good[0], tmp_path / "one.lc", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["status"] == "ok"


def test_quiet_batch_prints_nothing_but_errors(tmp_path):
    make_images(tmp_path / "in", ["a.png", "b.png"])
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out", "--quiet")
    assert r.exit_code == 0 and r.output == ""


def test_progress_bar_on_a_terminal(tmp_path, monkeypatch):
    make_images(tmp_path / "in", ["a.png", "b.png"])
    monkeypatch.setattr("lcodec.cli.stderr_is_terminal", lambda: True)
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out")
    assert r.exit_code == 0 and "2/2" in r.stderr and "MB/s" in r.stderr
    r = run("encode", tmp_path / "in", "-o", tmp_path / "out2", "--quiet")
    assert r.stderr == ""


# --------------------------------------------------------------------------- never lose data

def test_existing_outputs_are_not_overwritten_by_default(tmp_path, photo_png):
    target = tmp_path / "p.lc"
    target.write_bytes(b"precious")
    r = run("encode", photo_png, target)
    assert r.exit_code == 1 and "already exists" in r.stderr and "--force" in r.stderr
    assert target.read_bytes() == b"precious"
    r = run("encode", photo_png, target, "--skip-existing")
    assert r.exit_code == 0 and target.read_bytes() == b"precious"
    r = run("encode", photo_png, target, "--force", "--quiet")
    assert r.exit_code == 0 and is_lc(target)
    png = tmp_path / "p.png"
    png.write_bytes(b"precious")
    assert run("decode", target, png).exit_code == 1 and png.read_bytes() == b"precious"
    assert no_temp_files(tmp_path)


def test_overwrite_policies_in_a_batch(tmp_path):
    make_images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.lc").write_bytes(b"precious")
    r = run("encode", tmp_path / "in", "-o", out)
    assert r.exit_code == 1 and len(error_lines(r.stderr)) == 1 and "a.lc already exists" in r.stderr
    assert (out / "a.lc").read_bytes() == b"precious" and is_lc(out / "b.lc")
    r = run("encode", tmp_path / "in", "-o", out, "--skip-existing", "--json")
    assert r.exit_code == 0
    assert {json.loads(l)["status"] for l in r.stdout.splitlines()} == {"skipped"}
    assert (out / "a.lc").read_bytes() == b"precious"
    r = run("encode", tmp_path / "in", "-o", out, "--force")
    assert r.exit_code == 0 and is_lc(out / "a.lc")
    assert no_temp_files(tmp_path)


def test_output_may_not_replace_its_input(tmp_path, photo_png):
    lc = tmp_path / "p.lc"
    assert run("encode", photo_png, lc, "--quiet").exit_code == 0
    r = run("encode", lc, lc, "--force")
    assert r.exit_code == 2 and "input itself" in r.stderr and is_lc(lc)
    r = run("encode", lc, "-o", tmp_path, "--force")  # tmp/p.lc -> tmp/p.lc
    assert r.exit_code == 2 and "its own output" in r.stderr and is_lc(lc)


def test_write_file_is_atomic_and_no_clobber(tmp_path):
    target = tmp_path / "f.bin"
    assert batch.write_file(str(target), b"one", overwrite="error")
    mode = stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(lcodec.errors.OutputError, match="already exists"):
        batch.write_file(str(target), b"two", overwrite="error")
    assert not batch.write_file(str(target), b"two", overwrite="skip")
    assert target.read_bytes() == b"one"
    assert batch.write_file(str(target), b"three", overwrite="force") and target.read_bytes() == b"three"
    assert batch.write_file(str(tmp_path / "new" / "deep" / "g.bin"), b"x", make_dirs=True)
    with pytest.raises(lcodec.errors.OutputError, match="cannot write"):
        batch.write_file(str(tmp_path / "missing" / "h.bin"), b"x")
    assert no_temp_files(tmp_path)


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def boom(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        batch.write_file(str(tmp_path / "f.bin"), b"data")
    assert list(tmp_path.iterdir()) == []


def test_verify(tmp_path, monkeypatch):
    pngs = make_images(tmp_path / "in", ["a.png", "b.png"])
    r = run("encode", *pngs, "-o", tmp_path / "ok", "--verify", "--json")
    assert r.exit_code == 0, r.output
    assert all(json.loads(l)["status"] == "ok" for l in r.stdout.splitlines())

    from lcodec.api import Codec

    real = Codec.decode_full

    def broken(self, data, *args, **kwargs):  # a decoder that disagrees with the encoder
        decoded = real(self, data, *args, **kwargs)
        decoded.pixels = np.where(decoded.pixels < 128, 255, 0).astype(np.uint8)  # < 6 dB
        return decoded

    monkeypatch.setattr(Codec, "decode_full", broken)
    r = run("encode", *pngs, "-o", tmp_path / "bad", "--verify")
    assert r.exit_code == 1 and len(error_lines(r.stderr)) == 2
    assert "verification failed" in r.stderr and "PSNR" in r.stderr
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


# --------------------------------------------------------------------------- parallel

def test_jobs_give_the_same_bytes_as_a_sequential_run(tmp_path):
    make_images(tmp_path / "in", [f"{i}.png" for i in range(4)] + ["sub/4.png"])
    (tmp_path / "in" / "bad.png").write_text("junk")
    r = run("encode", "-r", tmp_path / "in", "-o", tmp_path / "seq", "-q", "3.5")
    assert r.exit_code == 1 and len(error_lines(r.stderr)) == 1, r.output
    r = run("encode", "-r", tmp_path / "in", "-o", tmp_path / "par", "-q", "3.5", "--jobs", "2", "--json")
    assert r.exit_code == 1 and len(error_lines(r.stderr)) == 1 and "bad.png" in r.stderr, r.output
    statuses = sorted(json.loads(line)["status"] for line in r.stdout.splitlines())
    assert statuses == ["failed"] + ["ok"] * 5
    seq = {p.relative_to(tmp_path / "seq"): p.read_bytes() for p in (tmp_path / "seq").rglob("*.lc")}
    par = {p.relative_to(tmp_path / "par"): p.read_bytes() for p in (tmp_path / "par").rglob("*.lc")}
    assert len(seq) == 5 and seq == par


def _processes_marked(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and POSIX signals")
def test_ctrl_c_leaves_no_partial_files_and_no_workers(tmp_path):
    # Enough work that the run is still going when the first output appears (the numpy CPU
    # path codes a small file in a few milliseconds); it is interrupted long before the end.
    make_images(tmp_path / "in", [f"{i:03d}.png" for i in range(400)], size=(128, 128))
    out = tmp_path / "out"
    marker = f"LCODEC_TEST_{uuid.uuid4().hex}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", marker: "1"}
    # A shell without job control starts background commands with SIGINT ignored, and the
    # child would inherit that: give it the default disposition, as a terminal would.
    proc = subprocess.Popen([sys.executable, "-m", "lcodec", "encode", str(tmp_path / "in"), "-o", str(out),
                             "--jobs", "2"], stderr=subprocess.PIPE, env=env, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 90
    while not list(out.glob("*.lc")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert "lcodec: error: interrupted" in err.decode() and "Traceback" not in err.decode()
    written = list(out.glob("*.lc"))
    assert 1 <= len(written) < 400
    assert all(is_lc(p) for p in written)
    assert no_temp_files(out)
    time.sleep(0.2)
    assert _processes_marked(marker) == []


def assert_terminated_worker_leaves_nothing(tmp_path, patch: str) -> None:
    """Run one encode task in a pool worker's setting, with ``patch`` (Python code) applied
    first to make the worker send itself SIGTERM somewhere; it must exit with 128 + SIGTERM,
    print nothing and leave no file behind."""
    (png,) = make_images(tmp_path, ["a.png"])
    code = f"""
import os, signal
from lcodec import batch
batch._init_worker(1)
{patch}
batch.run_task(batch.Task("encode", {str(png)!r}, {str(tmp_path / "a.lc")!r}))
print("not reached")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")
def test_a_terminated_worker_removes_the_file_it_was_writing(tmp_path):
    """What the pool's SIGTERM does to a worker in the middle of writing (deterministically:
    the worker signals itself from inside the write)."""
    assert_terminated_worker_leaves_nothing(tmp_path, """
real_fsync = os.fsync
def fsync(fd):
    os.kill(os.getpid(), signal.SIGTERM)
    real_fsync(fd)
os.fsync = fsync
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")
def test_a_worker_terminated_as_its_temporary_file_is_created_removes_it(tmp_path):
    """The window the Ctrl-C test once hit under load (a ``.part`` file left behind): SIGTERM
    after mkstemp has created the file but before write_file holds its name."""
    assert_terminated_worker_leaves_nothing(tmp_path, """
import tempfile
real_mkstemp = tempfile.mkstemp
def mkstemp(*args, **kwargs):
    made = real_mkstemp(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):
        pass
    return made
tempfile.mkstemp = mkstemp
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")
def test_a_terminated_worker_stops_coding_without_raising_into_it(tmp_path):
    """Before the write there is nothing to clean up: SIGTERM ends the worker at once instead of
    raising into the coding code, where the exception could surface inside the range coder's
    native extension and be reported as a crash (seen under load in the Ctrl-C test)."""
    assert_terminated_worker_leaves_nothing(tmp_path, """
real_codec = batch._codec
def codec(opts):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    except BaseException as exc:
        print("raised", type(exc).__name__)
    return real_codec(opts)
batch._codec = codec
""")


# --------------------------------------------------------------------------- Python API

def test_batch_api_on_a_thread_pool(tmp_path):
    pngs = make_images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    (tmp_path / "in" / "d.png").write_text("junk")
    with ThreadPoolExecutor(2) as pool:
        results = lcodec.encode_batch([tmp_path / "in"], tmp_path / "out", quality=3, executor=pool)
    assert [Path(r.input).name for r in results] == ["a.png", "b.png", "c.png", "d.png"]  # input order
    assert [r.status for r in results] == ["ok", "ok", "ok", "failed"]
    assert results[0].bytes == (tmp_path / "out" / "a.lc").stat().st_size
    assert lcodec.info((tmp_path / "out" / "a.lc").read_bytes())["quality"] == 3
    back = lcodec.decode_batch([tmp_path / "out"], tmp_path / "back", format="bmp", executor=None)
    assert [r.status for r in back] == ["ok"] * 3
    assert Image.open(tmp_path / "back" / "a.bmp").size == Image.open(pngs[0]).size


def test_map_files_with_fail_fast_and_custom_tasks(tmp_path):
    (png,) = make_images(tmp_path, ["a.png"])
    tasks = [batch.Task("encode", str(tmp_path / "missing.png"), str(tmp_path / "m.lc")),
             batch.Task("encode", str(png), str(tmp_path / "a.lc"))]
    results = list(batch.map_files(tasks, fail_fast=True))
    assert len(results) == 1 and results[0].status == "failed" and "no such file" in results[0].error
    with ThreadPoolExecutor(1) as pool:
        results = list(batch.map_files(tasks, pool))
    assert sorted(r.status for r in results) == ["failed", "ok"]

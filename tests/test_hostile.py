"""Hostile and broken inputs: one clear error line, no crash, no hang, nothing lost.

Decoding: limits before allocation, garbage streams behind a valid header, unbounded inputs.
Encoding: non-images, decompression bombs, damaged metadata, unreadable or unwritable paths,
a full disk. Weights: tampered, truncated, or a pickle that would run code. Outputs: only the
path named on the command line, written whole or not at all, never over the input.
"""
from __future__ import annotations

import ast
import dataclasses
import errno
import hashlib
import io
import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import lcodec
from lcodec import container
from lcodec.api import Codec
from lcodec.cli import main
from lcodec.entropy.coder import StreamDecoder
from lcodec.entropy.tables import TableSet
from lcodec.errors import CorruptStreamError, LcodecError, UnsupportedImageError
from lcodec.image_io import open_image, to_pixels
from lcodec.weights import find_entry

from .conftest import synthetic_photo, weights_copy
from .make_corpus import CORPUS, chunk, head, lc, rec, refix_crcs, replace_streams, spans

ROOT = Path(__file__).resolve().parent.parent
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def lcodec_process(*args, input=None, env=None, cwd=None, stdout=subprocess.PIPE, timeout=120,
                   memory_limit=None):
    """The real ``python -m lcodec`` (real stderr: warnings, log lines and tracebacks show)."""
    def limit():  # runs in the child
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    environment = {**os.environ, "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   **(env or {})}
    return subprocess.run([sys.executable, "-m", "lcodec", *map(str, args)], input=input,
                          stdout=stdout, stderr=subprocess.PIPE, env=environment, cwd=cwd,
                          timeout=timeout, preexec_fn=limit if memory_limit else None)


def assert_one_line_error(stderr: str | bytes, *fragments: str):
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    lines = [line for line in stderr.strip().splitlines() if line]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("lcodec: error:") and lines[0].isprintable(), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


def leftovers(folder: Path, *expected: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in expected)


@pytest.fixture(scope="module")
def small_lc(codec) -> bytes:
    """A small real file, rewritten in format version 1, whose chunks these tests cut and
    splice (lcodec reads version 1 files for good; version 2's records: test_version_2_*)."""
    data = codec.encode_pixels(synthetic_photo(40, 24), 3, 4.0)
    return container.serialize(dataclasses.replace(container.parse(data), version=1))


@pytest.fixture(scope="module")
def small_lc2(codec) -> bytes:
    return codec.encode_pixels(synthetic_photo(40, 24), 3, 4.0)


def test_version_2_unknown_critical_record_says_newer_lcodec(tmp_path, small_lc2):
    assert container.parse(small_lc2).version == 2
    head_end = spans(small_lc2)[0][1]
    extra = refix_crcs(small_lc2[:head_end] + rec(b"X", b"?") + small_lc2[head_end:])
    (tmp_path / "x.lc").write_bytes(extra)
    r = run("decode", tmp_path / "x.lc", tmp_path / "x.png")
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, "newer lcodec")
    assert leftovers(tmp_path, "x.lc") == []


def test_version_2_damage_anywhere_is_one_clean_error(codec, small_lc2):
    """Every byte flipped, and every cut, of a real version 2 file: refused by the file's CRC."""
    for i in range(len(small_lc2)):
        damaged = bytearray(small_lc2)
        damaged[i] ^= 0x10
        with pytest.raises(CorruptStreamError):
            codec.decode_pixels(bytes(damaged))
    for cut in range(0, len(small_lc2), 7):
        with pytest.raises(CorruptStreamError):
            codec.decode_pixels(small_lc2[:cut])


def test_version_2_garbage_streams_behind_a_valid_header(codec, small_lc2):
    for garbage in (bytes(64), b"\xff" * 64, bytes(range(256))):
        bad = replace_streams(small_lc2, garbage)
        assert container.parse(bad).version == 2
        try:
            codec.decode_pixels(bad)
        except LcodecError as exc:
            assert str(exc).isprintable() and "\n" not in str(exc)


def real_header(width: int, height: int, **fields) -> bytes:
    """A ``HEAD`` payload naming the installed default weights (so only the size can fail)."""
    entry = find_entry()
    return head(width, height, model_version=entry.version, digest=entry.digest,
                name=entry.name.encode(), **fields)


# -- decoding ------------------------------------------------------------------------------------
# Streams after a header (HYPR, one TILE, END): garbage, but well-formed chunks.
STREAMS = (chunk(b"HYPR", bytes(64)), chunk(b"TILE", struct.pack("<I", 0) + bytes(64)), chunk(b"END\x00", b""))


@pytest.fixture
def no_model(monkeypatch):
    """Make loading weights or decoding pixels fail loudly: a limit must refuse first."""
    def boom(*args, **kwargs):
        raise AssertionError("the model was loaded or run before the size limits were checked")

    monkeypatch.setattr("lcodec.weights.load_model", boom)
    monkeypatch.setattr("lcodec.pipeline.CodecPipeline.decode", boom, raising=False)


@pytest.mark.parametrize("width,height", [(10**9, 10**9), ((1 << 31) - 1, 1), (1 << 15, 1 << 15)])
def test_size_limit_refuses_before_loading_anything(no_model, width, height):
    data = lc(chunk(b"HEAD", real_header(width, height)), *STREAMS)
    with pytest.raises(CorruptStreamError, match="exceeds the limit"):
        Codec(device="cpu").decode_pixels(data)


def test_size_limit_counts_the_padded_image(no_model):
    """A 2^28 x 1 image is within 2^28 pixels, but the codec works on 64-pixel multiples: the
    decoder would build 64 x 2^28 pixels of latents (tens of GB) from a 100-byte file."""
    data = lc(chunk(b"HEAD", real_header(1 << 28, 1)), *STREAMS)
    with pytest.raises(CorruptStreamError, match="exceeds the limit"):
        Codec(device="cpu").decode_pixels(data)


def test_max_pixels_option_refuses_with_one_line(tmp_path, small_lc):
    src, out = tmp_path / "a.lc", tmp_path / "a.png"
    src.write_bytes(small_lc)
    r = run("decode", src, out, "--max-pixels", 100)
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, "exceeds the limit of 100 pixels")
    assert leftovers(tmp_path, "a.lc") == []


def test_garbage_streams_behind_a_valid_header(tmp_path, small_lc):
    """CRC-correct header and chunks over garbage streams, through the real command: either
    some image of the right size or one error line, never a traceback or a stray file."""
    rng = np.random.default_rng(7)
    cases = {"empty": b"", "one_word": b"\xff\xff\xff\xff", "random": rng.bytes(1000)}
    for name, garbage in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "in.lc").write_bytes(replace_streams(small_lc, garbage))
        proc = lcodec_process("decode", "in.lc", "out.png", "--quiet", "--device", "cpu", cwd=folder)
        if proc.returncode == 0:
            assert Image.open(folder / "out.png").size == (40, 24)
            assert proc.stderr == b"", (name, proc.stderr)
        else:
            assert proc.returncode == 1, (name, proc.stderr)
            assert_one_line_error(proc.stderr)
            assert leftovers(folder, "in.lc") == [], name


def _panic_type() -> type:
    """pyo3's PanicException (a BaseException, not an Exception), from a real panic."""
    import constriction

    try:
        constriction.stream.model.Uniform(0)
    except BaseException as exc:  # noqa: BLE001
        return type(exc)
    pytest.skip("constriction no longer panics here")


def test_range_coder_panics_become_corrupt_stream_errors():
    panic = _panic_type()
    assert not issubclass(panic, Exception)

    class Exploding:
        def decode(self, *args):
            raise panic("assertion failed")

        def maybe_exhausted(self):
            raise panic("assertion failed")

    tables = TableSet(np.array([0], dtype=np.int32), np.array([2], dtype=np.int32),
                      np.array([32768, 32767, 1], dtype=np.uint32))
    decoder = StreamDecoder(bytes(8))
    decoder._dec = Exploding()
    with pytest.raises(CorruptStreamError):
        decoder.decode(np.zeros(3, dtype=np.int64), tables)
    with pytest.raises(CorruptStreamError):
        decoder.check_exhausted()
    with pytest.raises(CorruptStreamError):
        StreamDecoder(bytes(7))


def test_info_on_every_corpus_file_is_one_line():
    for path in sorted(CORPUS.glob("*.lc")):
        r = run("info", path)
        if r.exit_code == 0:  # info does not check what only decoding needs (weights, limits)
            assert r.exception is None
            continue
        assert r.exit_code == 1, (path.name, r.output)
        assert_one_line_error(r.stderr)


def test_endless_input_is_refused_in_bounded_memory(tmp_path):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    proc = lcodec_process("decode", "/dev/zero", tmp_path / "out.png", timeout=60,
                          memory_limit=3 << 30)
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "more than")
    assert leftovers(tmp_path) == []


def test_unknown_version_and_critical_chunk_say_newer_lcodec(tmp_path, small_lc):
    data = bytearray(small_lc)
    struct.pack_into("<H", data, 8, 99)
    (tmp_path / "v.lc").write_bytes(bytes(data))
    r = run("decode", tmp_path / "v.lc", tmp_path / "v.png")
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, "format version 99")
    first_end = spans(small_lc)[0][1]
    extra = small_lc[:first_end] + chunk(b"XTRA", b"?") + small_lc[first_end:]
    (tmp_path / "x.lc").write_bytes(extra)
    r = run("decode", tmp_path / "x.lc", tmp_path / "x.png")
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, "newer lcodec")
    assert leftovers(tmp_path, "v.lc", "x.lc") == []


def test_control_characters_never_reach_the_terminal():
    for kind in (b"\x1b[2J", b"A\nB\x07"):
        bad = lc(chunk(b"HEAD", head()), chunk(kind, b"x"), chunk(b"END\x00", b""))
        with pytest.raises(LcodecError) as info:
            container.parse(bad)
        assert str(info.value).isprintable()
    with pytest.raises(CorruptStreamError, match="control characters"):
        container.parse(lc(chunk(b"HEAD", head(name=b"a\nb\x1b[31m")), chunk(b"END\x00", b"")))


# -- output paths and writing --------------------------------------------------------------------
def test_only_the_named_output_is_written(tmp_path, small_lc):
    """Nothing in a file (model name, ancillary chunks) turns into a path that gets written."""
    first_end = spans(small_lc)[0][1]
    evil = tmp_path / "evil"
    data = (small_lc[:first_end] + chunk(b"path", str(evil).encode()) + chunk(b"name", b"../x.png")
            + small_lc[first_end:])
    work = tmp_path / "work"
    work.mkdir()
    (work / "in.lc").write_bytes(data)
    proc = lcodec_process("decode", "in.lc", "out.png", "--quiet", "--device", "cpu", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert leftovers(work, "in.lc", "out.png") == [] and leftovers(tmp_path, "work") == []


@pytest.mark.parametrize("fault", ["fsync", "replace", "write"])
def test_full_disk_leaves_no_partial_output_and_keeps_the_old_file(tmp_path, photo_png, monkeypatch, fault):
    target = tmp_path / "photo.lc"
    target.write_bytes(b"precious")
    real_fdopen = os.fdopen

    def enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    class FullFile(io.BufferedWriter):
        def write(self, data):
            enospc()

    if fault == "write":
        monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k:
                            FullFile(io.FileIO(fd, "w")) if "w" in mode else real_fdopen(fd, mode, *a, **k))
    else:
        monkeypatch.setattr(os, fault, enospc)
    r = run("encode", photo_png, target, "--quiet", "--force")
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, "No space left on device")
    assert target.read_bytes() == b"precious"
    assert leftovers(tmp_path, "photo.png", "photo.lc") == []


def test_full_stdout_is_one_line(small_lc, tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    src = tmp_path / "a.lc"
    src.write_bytes(small_lc)
    with open("/dev/full", "wb") as full:
        proc = lcodec_process("decode", src, "-", "--quiet", "--device", "cpu", stdout=full)
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "standard output")


def test_unwritable_output_directory(tmp_path, photo_png):
    if IS_ROOT:  # modes do not stop root: use a file system that refuses new files
        target = Path("/sys/lcodec-test.lc")
        if not Path("/sys").is_dir() or _can_create("/sys"):
            pytest.skip("running as root without a read-only file system at hand")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "x.lc"
    r = run("encode", photo_png, target, "--quiet")
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, "cannot write")
    assert not target.exists()


def _can_create(folder: str) -> bool:
    try:
        path = Path(folder) / ".lcodec-probe"
        path.write_bytes(b"")
        path.unlink()
        return True
    except OSError:
        return False


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode")
def test_unreadable_input(tmp_path, photo_png):
    photo_png.chmod(0)
    r = run("encode", photo_png, tmp_path / "x.lc")
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, "permission denied")


def test_output_never_replaces_the_input(tmp_path, photo_png, small_lc):
    """``lcodec encode a.png a.png`` (a typo) must not turn the photo into a .lc file."""
    before = photo_png.read_bytes()
    for extra in ([], ["--force"]):
        r = run("encode", photo_png, "-o", photo_png, *extra)
        assert r.exit_code in (1, 2) and "input" in r.stderr, r.stderr
        assert photo_png.read_bytes() == before
    lc_path = tmp_path / "a.lc"
    lc_path.write_bytes(small_lc)
    link = tmp_path / "same.png"
    link.symlink_to(lc_path)
    r = run("decode", lc_path, link, "--format", "png", "--force")
    assert r.exit_code in (1, 2), r.stderr
    assert lc_path.read_bytes() == small_lc


def test_outputs_get_ordinary_permissions(tmp_path, photo_png):
    mask = os.umask(0o022)
    try:
        assert run("encode", photo_png, tmp_path / "x.lc", "--quiet").exit_code == 0
    finally:
        os.umask(mask)
    assert (tmp_path / "x.lc").stat().st_mode & 0o777 == 0o644


# -- encoding ------------------------------------------------------------------------------------
def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a size its (tiny) pixel data does not hold."""
    def png_chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(bytes(1000))) + png_chunk(b"IEND", b""))


def tiff_with_bad_next_ifd() -> bytes:
    """A TIFF whose next-IFD pointer leads into the pixels (Pillow raised TypeError)."""
    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (10, 20, 30)).save(buf, format="TIFF")
    data = bytearray(buf.getvalue())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    struct.pack_into("<I", data, ifd + 2 + 12 * entries, 1)
    return bytes(data)


HOSTILE_IMAGES = {
    "empty.png": (b"", "empty"),
    "notes.png": (b"this is not an image\n", "not an image"),
    "truncated.png": (png_claiming(100, 100), "could not be read"),
    "bomb.png": (png_claiming(100_000, 100_000), "decompression bomb"),
    "bomb-warning-size.png": (png_claiming(10_000, 10_000), "could not be read"),
    "u32-size.png": (png_claiming(2**31 - 1, 2**31 - 1), ""),
    "bad-ifd.tiff": (tiff_with_bad_next_ifd(), "could not be read"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_IMAGES))
def test_hostile_images_are_one_line_errors(tmp_path, name):
    data, fragment = HOSTILE_IMAGES[name]
    (tmp_path / name).write_bytes(data)
    proc = lcodec_process("encode", name, "out.lc", cwd=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, fragment)
    assert leftovers(tmp_path, name) == []


def test_device_and_empty_inputs(tmp_path):
    r = run("encode", os.devnull, tmp_path / "x.lc")
    assert r.exit_code == 1
    assert_one_line_error(r.stderr)
    r = run("encode", "-", tmp_path / "x.lc", input=b"")
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, "empty")
    assert leftovers(tmp_path) == []


def test_pipe_paths_are_not_taken_for_empty_files(tmp_path, photo_png):
    """``lcodec encode /dev/stdin`` (or ``<(...)``): a pipe has size 0 but is not empty."""
    if not Path("/dev/stdin").exists():
        pytest.skip("no /dev/stdin")
    proc = lcodec_process("encode", "/dev/stdin", tmp_path / "x.lc", "--quiet", "--device", "cpu",
                          input=photo_png.read_bytes())
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "x.lc").read_bytes()[:4] == b"\x89LCD"


def test_damaged_exif_is_ignored_with_a_notice():
    """An EXIF block that is not TIFF data made Pillow's exif_transpose raise SyntaxError."""
    buf = io.BytesIO()
    Image.fromarray(synthetic_photo(8, 6)).save(buf, format="PNG", exif=b"Exif\x00\x00MM\xdc*\x00\x00\x00\x08")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels, channels, notices = to_pixels(open_image(buf.getvalue()))
    assert pixels.shape == (6, 8, 3) and channels == 3
    assert any("EXIF" in n for n in notices)


@pytest.mark.parametrize("mode", ["La", "RGBa", "LA", "RGBA", "PA", "I", "F", "CMYK", "YCbCr", "LAB", "HSV", "1"])
def test_every_pillow_mode_converts_or_is_refused_clearly(mode):
    img = Image.new(mode, (5, 4))
    try:
        pixels, channels, _ = to_pixels(img)
    except UnsupportedImageError as exc:
        assert "transparency" in str(exc)
        return
    assert pixels.shape == (4, 5, 3) and pixels.dtype == np.uint8 and channels in (1, 3)


def test_image_without_pixels_is_refused():
    with pytest.raises(UnsupportedImageError):
        open_image(b"P6 0 0 255\n")


# -- weights -------------------------------------------------------------------------------------
def _default_entry(manifest: dict) -> dict:
    """The manifest entry that ``lcodec encode`` loads without ``--model``."""
    return next(m for m in manifest["models"] if m.get("default"))


class _CreatesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_weights_with_a_pickle_payload_are_never_unpickled(tmp_path, photo_png, kind):
    """Even with its true SHA-256 in the manifest, a weights file that holds code is refused."""
    import torch

    copy, manifest, target = weights_copy(tmp_path)
    marker = tmp_path / "MARKER-code-ran"
    payload = {"tables.z.offsets": _CreatesMarker(marker)}
    if kind == "pickle":
        target.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        buf = io.BytesIO()
        torch.save(payload, buf)
        target.write_bytes(buf.getvalue())
    _default_entry(manifest)["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = lcodec_process("encode", photo_png, tmp_path / "x.lc", env={"LCODEC_WEIGHTS_DIR": str(copy)})
    assert not marker.exists(), "unpickling ran code from the weights file"
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "weights")
    # torch's own text (a page long) tells the reader to retry with weights_only=False
    assert b"weights_only" not in proc.stderr and len(proc.stderr) < 400, proc.stderr
    assert not (tmp_path / "x.lc").exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "missing", "manifest"])
def test_damaged_weights_are_refused_before_loading(tmp_path, photo_png, damage):
    copy, manifest, target = weights_copy(tmp_path)
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "missing":
        target.unlink()
    else:
        (copy / "manifest.json").write_text('{"models": [{"name": "hyperprior"')
    proc = lcodec_process("encode", photo_png, tmp_path / "x.lc", env={"LCODEC_WEIGHTS_DIR": str(copy)})
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "SHA-256" if damage in ("truncated", "empty") else "weights")
    assert not (tmp_path / "x.lc").exists()


def test_weights_with_a_config_key_this_lcodec_lacks_are_refused(tmp_path, photo_png):
    """Weights made by a newer lcodec for a part of the model this one lacks (a new config
    key) are refused in one line, not used without that part."""
    copy, manifest, _ = weights_copy(tmp_path)
    _default_entry(manifest)["config"]["future_stage"] = 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = lcodec_process("encode", photo_png, tmp_path / "x.lc", env={"LCODEC_WEIGHTS_DIR": str(copy)})
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "use future_stage, which this lcodec does not know; upgrade lcodec")
    assert not (tmp_path / "x.lc").exists()


def test_known_config_keys_are_the_model_families_arguments():
    import inspect

    from lcodec.models import FAMILIES
    from lcodec.weights import CONFIG_KEYS

    arguments = set()
    for cls in FAMILIES.values():
        arguments |= set(inspect.signature(cls).parameters) - {"kwargs"}
    assert arguments == CONFIG_KEYS


def test_every_torch_load_is_weights_only():
    """Static guard: no ``torch.load`` in the package may unpickle arbitrary objects."""
    package = Path(lcodec.__file__).parent
    calls = 0
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" \
                    and getattr(node.func, "value", None) is not None \
                    and getattr(node.func.value, "id", None) == "torch":
                calls += 1
                flags = {k.arg: k.value for k in node.keywords}
                assert isinstance(flags.get("weights_only"), ast.Constant) \
                    and flags["weights_only"].value is True, f"{source}:{node.lineno}"
    assert calls >= 1

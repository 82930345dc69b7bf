"""Fuzzing: damaged ``.lc`` files and images only ever raise ``LcodecError`` (one clear line).

Hypothesis mutates valid files (bit flips, byte changes, truncations, insertions, deletions,
splices from other files, inserted/duplicated/dropped chunks, header fields and garbage
streams with their CRCs made correct) and feeds them to ``container.parse``, to the whole
decoder and to the command line; any other exception, a message of several lines, a hang or a
file left behind is a bug. The examples are derandomized (the same every run, no database);
``LCODEC_FUZZ_EXAMPLES=5000 LCODEC_FUZZ_RANDOM=1 pytest tests/test_fuzz.py`` fuzzes further,
and ``tests/fuzz_decode.py`` runs for as long as asked. ``tests/corpus/`` (written by
``tests/make_corpus.py``) goes through the real ``lcodec decode`` process.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import struct
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from lcodec import container
from lcodec.api import Codec, prepare
from lcodec.cli import main
from lcodec.errors import LcodecError
from lcodec.weights import read_manifest

from .conftest import synthetic_photo
from .make_corpus import (CORPUS, build, chunk, payload_start, refix_crcs, replace_streams, spans,
                          version_of)

EXAMPLES = int(os.environ.get("LCODEC_FUZZ_EXAMPLES", "400"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=10), database=None,
                derandomize=not os.environ.get("LCODEC_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck))
HANG_S = 20           # one example taking this long is a hang
MAX_PIXELS = 1 << 15  # mutated sizes stay small enough to decode quickly
ROOT = Path(__file__).resolve().parent.parent


# -- valid files to start from --------------------------------------------------------------------
@pytest.fixture(scope="module")
def valid_files(codec) -> list[bytes]:
    """Small real files, each at another quality: RGB, grayscale, 1x1, 2x2 tiles, one with
    an alpha plane, an ICC profile and EXIF, and a tiled file of every installed model family;
    the grayscale and the 2x2-tile files in format version 1, the others in version 2."""
    gray = synthetic_photo(70, 9, seed=1)
    gray[:] = gray.mean(axis=2, keepdims=True).astype(np.uint8)
    alpha = np.tile(np.arange(30, dtype=np.uint8) * 8, (20, 1))
    exif = Image.Exif()
    exif[0x010F] = "lcodec"
    exif_bytes = exif.tobytes()
    exif_bytes = exif_bytes[6:] if exif_bytes.startswith(b"Exif\x00\x00") else exif_bytes
    def v1(data: bytes) -> bytes:  # the same file in format version 1 (chunks, a CRC each)
        return container.serialize(dataclasses.replace(container.parse(data), version=1))

    # The first five are the mutations' starting points: both format versions among them.
    return [codec.encode_pixels(synthetic_photo(40, 24), 3, 4.0),
            v1(codec.encode_pixels(gray, 1, 1.5)),
            codec.encode_pixels(synthetic_photo(1, 1, seed=2), 3, 8.0),
            v1(Codec(device="cpu", tile=64).encode_pixels(synthetic_photo(100, 70, seed=4), 3, 6.0)),
            codec.encode_pixels(synthetic_photo(30, 20, seed=5), 3, 3.0, alpha=alpha,
                                icc=b"not really an ICC profile", exif=exif_bytes)] + [
            Codec(device="cpu", model=name, tile=64).encode_pixels(synthetic_photo(90, 66, seed=6), 3, 5.0)
            for name in sorted({e.name for e in read_manifest()})]


# -- mutations -------------------------------------------------------------------------------------
CHUNK_KINDS = [b"HEAD", b"TILE", b"HYPR", b"ALPH", b"END\x00", b"XTRA", b"iccp", b"exif", b"tEXt",
               b"\x00\x00\x00\x00"]
# Positions are scrambled so that Hypothesis's liking for small numbers does not keep hitting the
# signature; they are taken modulo the size of what they index.
_pos = st.integers(0, (1 << 32) - 1).map(lambda x: (x * 2654435761) % (1 << 32))
DEEP = st.one_of(   # damage that leaves the chunk structure readable: reaches the decoder
    st.tuples(st.just("streamflip"), _pos, st.integers(0, 7)),
    st.tuples(st.just("stream"), st.binary(max_size=256)),
    st.tuples(st.just("field"), st.integers(0, 44), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("u32"), st.sampled_from([0, 4, 18, 22]),
              st.sampled_from([0, 1, 63, 64, 65, 4096, 10**9, 2**31 - 1, 2**32 - 1])),
    st.tuples(st.just("chunk"), _pos, st.sampled_from(CHUNK_KINDS), st.binary(max_size=64)),
)
MUTATION = st.one_of(
    st.tuples(st.just("flip"), _pos, st.integers(0, 7)),
    st.tuples(st.just("byte"), _pos, st.integers(0, 255)),
    st.tuples(st.just("truncate"), _pos),
    st.tuples(st.just("insert"), _pos, st.binary(min_size=1, max_size=48)),
    st.tuples(st.just("delete"), _pos, st.integers(1, 64)),
    st.tuples(st.just("splice"), _pos, st.integers(0, 4), _pos, st.integers(1, 300)),
    st.tuples(st.just("chunk"), _pos, st.sampled_from(CHUNK_KINDS), st.binary(max_size=64)),
    st.tuples(st.just("dup"), _pos),
    st.tuples(st.just("drop"), _pos),
    st.tuples(st.just("swap"), _pos, _pos),
    DEEP,
)


def mutate(data: bytes, ops: list[tuple], refix: bool, others: list[bytes]) -> bytes:
    """Apply mutations (positions taken modulo the current size), then maybe fix the CRCs."""
    d = bytearray(data)
    for op in ops:
        kind, n = op[0], max(len(d), 1)
        whole = spans(bytes(d))
        if kind == "flip" and d:
            d[op[1] % n] ^= 1 << op[2]
        elif kind == "byte" and d:
            d[op[1] % n] = op[2]
        elif kind == "truncate":
            del d[op[1] % n:]
        elif kind == "insert":
            d[op[1] % (n + 1):op[1] % (n + 1)] = op[2]
        elif kind == "delete":
            i = op[1] % n
            del d[i:i + op[2]]
        elif kind == "splice":
            other = others[op[2] % len(others)]
            j = op[3] % len(other)
            d[op[1] % (n + 1):op[1] % (n + 1)] = other[j:j + op[4]]
        elif kind == "chunk":
            bounds = [10] + [end for _, end in whole]
            i = bounds[op[1] % len(bounds)] if len(d) >= 10 else len(d)
            d[i:i] = chunk(op[2], op[3])
        elif kind in ("dup", "drop") and whole:
            a, b = whole[op[1] % len(whole)]
            d[a:b] = d[a:b] * 2 if kind == "dup" else b""
        elif kind == "swap" and len(whole) > 1:
            (a, b), (c, e) = sorted([whole[op[1] % len(whole)], whole[op[2] % len(whole)]])
            if b <= c:
                d[a:e] = d[c:e] + d[b:c] + d[a:b]
        elif kind == "field" and len(d) >= 18 + 45:  # inside the HEAD payload
            i = 18 + op[1]
            d[i:i + len(op[2])] = op[2]
        elif kind == "u32" and len(d) >= 18 + 26:    # width, height, tile width, tile height
            struct.pack_into("<I", d, 18 + op[1], op[2])
        elif kind == "stream":
            d = bytearray(replace_streams(bytes(d), op[1]))
        elif kind == "streamflip":  # inside an entropy-coded stream (after the tile index)
            if version_of(bytes(d)) == 2:
                streams = [(payload_start(bytes(d), a), b) for a, b in whole if d[a:a + 1] in (b"T", b"Z", b"A")]
            else:
                streams = [(a + 12, b - 4) for a, b in whole if d[a:a + 4] in (b"TILE", b"HYPR", b"ALPH")]
            if streams:
                a, b = streams[op[1] % len(streams)]
                if b > a:
                    d[a + op[1] % (b - a)] ^= 1 << op[2]
    return refix_crcs(bytes(d)) if refix else bytes(d)


# CRCs are mostly made correct again, so that damage reaches the header checks and the decoder.
mutated = st.one_of(
    st.tuples(st.integers(0, 4), st.lists(MUTATION, min_size=1, max_size=4),
              st.sampled_from([True, True, True, False])),
    st.tuples(st.integers(0, 4), st.lists(DEEP, min_size=1, max_size=3), st.just(True)))


# -- checks ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail (instead of hanging the suite) when the body runs longer than ``seconds``."""
    def alarm(signum, frame):
        raise TimeoutError(f"hang: still running after {seconds} s")

    if not hasattr(signal, "setitimer"):
        yield
        return
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check_error(exc: LcodecError) -> None:
    """What the command line prints must be one line without control characters."""
    text = str(exc)
    event(f"{type(exc).__name__}: {text.split('(')[0][:40]}")
    assert text and text.isprintable(), repr(text)


def test_mutation_helpers_are_deterministic(valid_files):
    ops = [("flip", 100, 3), ("chunk", 1, b"XTRA", b"x"), ("stream", b"\x01" * 9)]
    assert mutate(valid_files[0], ops, True, valid_files) == mutate(valid_files[0], ops, True, valid_files)
    assert container.parse(refix_crcs(valid_files[0])).header  # fixing good CRCs changes nothing
    assert refix_crcs(valid_files[0]) == valid_files[0]


@FUZZ
@given(st.one_of(st.binary(max_size=600), mutated), st.data())
def test_parse_raises_only_lcodec_errors(valid_files, case, data):
    if not isinstance(case, bytes):
        which, ops, refix = case
        case = mutate(valid_files[which], ops, refix, valid_files)
    elif data.draw(st.booleans()):
        case = container.SIGNATURE + b"\x01\x00" + case
    with time_limit(HANG_S):
        try:
            parsed = container.parse(case)
        except LcodecError as exc:
            check_error(exc)
            return
    h = parsed.header
    assert 1 <= h.width and 1 <= h.height and h.channels in (1, 3) and h.model_name.isprintable()


@FUZZ
@given(mutated)
def test_decode_raises_only_lcodec_errors(codec, valid_files, case):
    """Whole decoding of mutated files: an image of the header's size, or an LcodecError.

    Warnings count as failures too: on the command line they would add lines to stderr.
    """
    which, ops, refix = case
    data = mutate(valid_files[which], ops, refix, valid_files)
    with time_limit(HANG_S), warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            pixels, header = codec.decode_pixels(data, MAX_PIXELS)
        except LcodecError as exc:
            check_error(exc)
            return
    event("decoded to an image")
    assert pixels.dtype == np.uint8 and pixels.shape == (header.height, header.width, 3)


@settings(FUZZ, max_examples=max(EXAMPLES // 8, 20))
@given(mutated)
def test_cli_decode_leaves_nothing_behind(valid_files, tmp_path_factory, case):
    """Through the command line: exit 0 with an image, or exit 1, one line, no file at all."""
    which, ops, refix = case
    folder = tmp_path_factory.mktemp("cli")
    src = folder / "in.lc"
    src.write_bytes(mutate(valid_files[which], ops, refix, valid_files))
    out = folder / "out.png"
    with time_limit(HANG_S):
        r = CliRunner().invoke(main, ["decode", str(src), str(out), "--quiet", "--device", "cpu",
                                      "--max-pixels", str(MAX_PIXELS)])
    if r.exit_code == 0:
        header = container.parse(src.read_bytes()).header
        assert Image.open(out).size == (header.width, header.height)
    else:
        assert r.exit_code == 1, (r.exit_code, r.output, r.exception)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lcodec: error:"), r.stderr
    assert sorted(p.name for p in folder.iterdir()) == (["in.lc", "out.png"] if r.exit_code == 0
                                                       else ["in.lc"])


# -- images for the encoder ------------------------------------------------------------------------
def _image_seeds() -> list[bytes]:
    im = Image.fromarray(synthetic_photo(12, 9, seed=3))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    seeds = []
    for fmt, options in [("PNG", {"exif": exif}), ("JPEG", {"exif": exif}), ("TIFF", {}),
                         ("WEBP", {"exif": exif}), ("GIF", {}), ("BMP", {}), ("PPM", {})]:
        buf = io.BytesIO()
        im.save(buf, format=fmt, **options)
        seeds.append(buf.getvalue())
    return seeds


IMAGE_SEEDS = _image_seeds()
image_mutations = st.lists(st.one_of(
    st.tuples(st.just("byte"), _pos, st.integers(0, 255)),
    st.tuples(st.just("truncate"), _pos),
    st.tuples(st.just("insert"), _pos, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("u32"), _pos, st.sampled_from([0, 1, 255, 65535, 2**31 - 1, 2**32 - 1]))),
    min_size=1, max_size=4)


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 50))
@given(st.integers(0, len(IMAGE_SEEDS) - 1), image_mutations)
def test_damaged_images_raise_only_lcodec_errors(which, ops):
    """The encoder's input side (open, EXIF/ICC, orientation, modes): Pillow's many exception
    types all become one clear error, and its warnings stay quiet."""
    d = bytearray(IMAGE_SEEDS[which])
    for op in ops:
        if not d:
            break
        i = op[1] % len(d)
        if op[0] == "byte":
            d[i] = op[2]
        elif op[0] == "truncate":
            del d[i:]
        elif op[0] == "insert":
            d[i:i] = op[2]
        elif len(d) >= i + 4:
            struct.pack_into("<I", d, i, op[2])
    with time_limit(HANG_S), warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            prep = prepare(bytes(d))
        except LcodecError as exc:
            check_error(exc)
            return
    assert prep.pixels.dtype == np.uint8 and prep.pixels.shape[2:] == (3,) and prep.channels in (1, 3)


# -- the checked-in corpus through the real command ------------------------------------------------
def test_corpus_is_what_make_corpus_writes():
    files = build()
    assert sorted(p.name for p in CORPUS.glob("*.lc")) == sorted(files), \
        "tests/corpus is stale: run python tests/make_corpus.py"
    for name, data in files.items():
        assert (CORPUS / name).read_bytes() == data, f"{name} differs: run python tests/make_corpus.py"


def _decode_process(path: Path, out: Path) -> tuple[Path, subprocess.CompletedProcess | str, float]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "lcodec", "decode", str(path), str(out)],
                              capture_output=True, timeout=120, cwd=out.parent,
                              env={**os.environ, "OMP_NUM_THREADS": "1",
                                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    except subprocess.TimeoutExpired:
        return path, "timed out after 120 s", time.perf_counter() - t0
    return path, proc, time.perf_counter() - t0


def test_corpus_through_the_real_command(tmp_path):
    """Every corpus file: exit 1, one ``lcodec: error:`` line, no traceback, nothing written."""
    files = sorted(CORPUS.glob("*.lc"))
    assert len(files) >= 30
    jobs = []
    for f in files:
        (tmp_path / f.stem).mkdir()
        jobs.append((f, tmp_path / f.stem / "out.png"))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = list(pool.map(lambda job: _decode_process(*job), jobs))
    failures = []
    for path, proc, seconds in results:
        if isinstance(proc, str):
            failures.append(f"{path.name}: {proc}")
            continue
        err = proc.stderr.decode("utf-8", "replace")
        lines = err.strip().splitlines()
        leftovers = sorted(p.name for p in (tmp_path / path.stem).iterdir())
        if (proc.returncode != 1 or len(lines) != 1 or not lines[0].startswith("lcodec: error:")
                or "Traceback" in err or not lines[0].isprintable() or leftovers or proc.stdout):
            failures.append(f"{path.name}: exit {proc.returncode}, files {leftovers}, stderr {err!r}")
        elif seconds > 60:
            failures.append(f"{path.name}: took {seconds:.0f} s")
    assert not failures, "\n".join(failures)

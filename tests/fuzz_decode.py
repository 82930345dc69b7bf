"""Long fuzzing of the decoder (not collected by pytest; ``make fuzz`` runs it).

    python tests/fuzz_decode.py -max_total_time=600          # atheris (libFuzzer) if installed
    python tests/fuzz_decode.py -max_total_time=600 -seed=7   # else a built-in mutation loop

Every input goes through ``container.parse`` and a whole decode (``Codec("cpu")``, at most
``MAX_PIXELS`` pixels); an exception that is not an ``LcodecError``, an error message of
several lines or with control characters, a warning, or an input running past ``-timeout``
seconds is a crash. With atheris, libFuzzer mutates the bytes (seeded with real files and
``tests/corpus``) and writes crashing inputs as ``crash-*`` files; without it, the loop below
mutates like ``tests/test_fuzz.py`` and writes them to ``fuzz-crashes/``. A crashing input
belongs in ``tests/make_corpus.py`` (if it fails cleanly once fixed) or in a regression test.
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from make_corpus import CORPUS, chunk, refix_crcs, replace_streams, spans  # noqa: E402

MAX_PIXELS = 1 << 16
CRASH_DIR = Path("fuzz-crashes")


def seeds(codec) -> tuple[list[bytes], list[bytes]]:
    """Real files (RGB, gray, 1x1, several tiles), and the checked-in corpus."""
    import numpy as np

    from conftest import synthetic_photo

    gray = synthetic_photo(70, 9, seed=1)
    gray[:] = gray.mean(axis=2, keepdims=True).astype(np.uint8)
    files = [codec.encode_pixels(synthetic_photo(40, 24), 3, 4.0),
             codec.encode_pixels(gray, 1, 1.5),
             codec.encode_pixels(synthetic_photo(1, 1, seed=2), 3, 8.0)]
    try:  # features an older Codec may lack: tiles, alpha, ICC, EXIF
        from lcodec.api import Codec

        files.append(Codec("cpu", tile=64).encode_pixels(synthetic_photo(150, 70, seed=4), 3, 6.0))
        alpha = np.tile(np.arange(30, dtype=np.uint8) * 8, (20, 1))
        files.append(codec.encode_pixels(synthetic_photo(30, 20, seed=5), 3, 3.0, alpha=alpha,
                                         icc=b"not really an ICC profile", exif=b"MM\x00*\x00\x00\x00\x08\x00\x00"))
    except TypeError:
        pass
    return files, [p.read_bytes() for p in sorted(CORPUS.glob("*.lc"))]


def check(codec, data: bytes) -> str:
    """What became of ``data`` (``decoded`` or the error's class); raises AssertionError (or the
    unexpected exception) when it shows a bug."""
    from lcodec import container
    from lcodec.errors import LcodecError

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in ("parse", "decode"):
            try:
                if step == "parse":
                    container.parse(data)
                else:
                    pixels, header = codec.decode_pixels(data, MAX_PIXELS)
                    assert pixels.shape == (header.height, header.width, 3), pixels.shape
            except LcodecError as exc:
                text = str(exc)
                assert text and text.isprintable(), f"error message not one printable line: {text!r}"
                return f"{step}: {type(exc).__name__}"
    return "decoded"


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One to four random mutations (as in test_fuzz.py), CRCs fixed most of the time; half
    the time only those that keep the chunks readable (header fields, streams, new chunks)."""
    d = bytearray(data)
    deep = rng.random() < 0.5
    for _ in range(rng.randint(1, 4)):
        n = max(len(d), 1)
        op = rng.choice([6, 8, 9, 10, 11, 11]) if deep else rng.randrange(12)
        whole = spans(bytes(d))
        if op == 0 and d:
            d[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and d:
            d[rng.randrange(n)] = rng.randrange(256)
        elif op == 2:
            del d[rng.randrange(n):]
        elif op == 3:
            i = rng.randrange(n + 1)
            d[i:i] = rng.randbytes(rng.randint(1, 48))
        elif op == 4:
            i = rng.randrange(n)
            del d[i:i + rng.randint(1, 64)]
        elif op == 5:
            other = rng.choice(pool)
            j = rng.randrange(max(len(other), 1))
            i = rng.randrange(n + 1)
            d[i:i] = other[j:j + rng.randint(1, 300)]
        elif op == 6:
            bounds = [10] + [end for _, end in whole]
            i = rng.choice(bounds) if len(d) >= 10 else len(d)
            kind = rng.choice([b"HEAD", b"TILE", b"HYPR", b"ALPH", b"END\x00", b"XTRA", b"meta", b"iccp", b"exif"])
            d[i:i] = chunk(kind, rng.randbytes(rng.randint(0, 64)))
        elif op == 7 and whole:
            a, b = rng.choice(whole)
            d[a:b] = d[a:b] * 2 if rng.random() < 0.5 else b""
        elif op == 8 and len(d) >= 63:
            i = 18 + rng.randrange(45)
            d[i:i + 4] = rng.randbytes(rng.randint(1, 4))
        elif op == 9 and len(d) >= 44:
            struct.pack_into("<I", d, 18 + rng.choice([0, 4, 18, 22]),
                             rng.choice([0, 1, 63, 64, 65, 128, 4096, 10**9, 2**31 - 1, 2**32 - 1]))
        elif op == 10:
            d = bytearray(replace_streams(bytes(d), rng.randbytes(rng.randint(0, 512))))
        else:
            streams = [(a + 12, b - 4) for a, b in whole if d[a:a + 4] in (b"TILE", b"HYPR", b"ALPH")]
            if streams:
                a, b = rng.choice(streams)
                if b > a:
                    d[rng.randrange(a, b)] ^= 1 << rng.randrange(8)
    return refix_crcs(bytes(d)) if deep or rng.random() < 0.7 else bytes(d)


def _options(argv: list[str]) -> dict[str, str]:
    return dict(a[1:].split("=", 1) for a in argv if a.startswith("-") and "=" in a)


def _save_crash(data: bytes, why: str) -> Path:
    CRASH_DIR.mkdir(exist_ok=True)
    path = CRASH_DIR / f"crash-{hashlib.sha1(data).hexdigest()[:16]}.lc"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(why)
    return path


def builtin_loop(codec, argv: list[str]) -> int:
    opts = _options(argv)
    total = float(opts.get("max_total_time", 60))
    runs = int(opts.get("runs", 0)) or None
    timeout = float(opts.get("timeout", 30))
    rng = random.Random(int(opts.get("seed", time.time_ns() % 2**32)))
    real, corpus = seeds(codec)
    pool = real + corpus
    start, count, crashes = time.monotonic(), 0, 0
    outcomes: dict[str, int] = {}

    def alarm(signum, frame):
        raise TimeoutError(f"input ran longer than {timeout} s")

    signal.signal(signal.SIGALRM, alarm)
    while time.monotonic() - start < total and (runs is None or count < runs):
        data = mutate(rng, rng.choice(real if rng.random() < 0.8 else corpus), pool)
        count += 1
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            outcome = check(codec, data)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        except KeyboardInterrupt:
            break
        except BaseException:  # noqa: BLE001 - everything else is a finding
            crashes += 1
            why = traceback.format_exc()
            print(f"CRASH {_save_crash(data, why)}: {why.strip().splitlines()[-1]}", flush=True)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if count % 500 == 0:
            print(f"#{count} {time.monotonic() - start:.0f} s, {crashes} crash(es)", flush=True)
    print(f"done: {count} inputs in {time.monotonic() - start:.0f} s, {crashes} crash(es); "
          + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1])))
    return 1 if crashes else 0


def atheris_main(atheris, codec, argv: list[str]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="lcodec-fuzz-seeds-"))
    real, corpus = seeds(codec)
    for i, data in enumerate(real + corpus):
        (folder / f"seed-{i:03d}.lc").write_bytes(data)
    extra = [a for a in ("-timeout=30", "-rss_limit_mb=4096")
             if not any(x.startswith(a.split("=")[0] + "=") for x in argv)]

    def one_input(data: bytes) -> None:
        check(codec, data)

    atheris.Setup(argv + extra + [str(folder)], one_input)
    atheris.Fuzz()


def main(argv: list[str]) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is None:
        from lcodec.api import Codec
    else:
        with atheris.instrument_imports(include=["lcodec"]):  # coverage feedback for libFuzzer
            import lcodec.container  # noqa: F401
            import lcodec.entropy.coder  # noqa: F401
            from lcodec.api import Codec
    codec = Codec(device="cpu")
    if atheris is None:
        print("atheris is not installed: using the built-in mutation loop", flush=True)
        return builtin_loop(codec, argv)
    atheris_main(atheris, codec, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

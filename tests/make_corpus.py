"""Regenerate ``tests/corpus/``: malformed ``.lc`` files that every lcodec must refuse.

    python tests/make_corpus.py            # rewrites tests/corpus/*.lc (deterministic)

Every file is broken at the container level or names weights that are not installed (an
all-zero model digest), so none of them can become valid when the shipped weights change.
The bytes are packed here by hand from ``docs/format.md`` (not with ``lcodec.container``) so
that the corpus also catches a reader that drifts from the spec. ``test_fuzz.py`` runs each
file through the real ``lcodec decode`` and expects exit code 1 with one error line.
"""
from __future__ import annotations

import random
import struct
import sys
import zlib
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
SIGNATURE = b"\x89LCD\r\n\x1a\n"
OTHER_DIGEST = bytes(8)  # no installed weights file has this SHA-256 prefix


def chunk(kind: bytes, payload: bytes, length: int | None = None, crc: int | None = None) -> bytes:
    """A chunk; ``length``/``crc`` override the true values (lying chunks)."""
    n = len(payload) if length is None else length
    c = zlib.crc32(kind + payload) if crc is None else crc
    return kind + struct.pack("<I", n) + payload + struct.pack("<I", c)


def head(width: int = 64, height: int = 48, channels: int = 3, depth: int = 8, quality: float = 4.0,
         model_version: int = 1, tile: tuple[int, int] = (0, 0), flags: int = 0,
         digest: bytes = OTHER_DIGEST, name: bytes = b"hyperprior", name_len: int | None = None) -> bytes:
    """A ``HEAD`` payload (any field may be out of range)."""
    return (struct.pack("<IIBBfHIIH", width, height, channels, depth, quality, model_version,
                        tile[0], tile[1], flags)
            + digest + bytes([len(name) if name_len is None else name_len]) + name)


def lc(*chunks: bytes, version: int = 1) -> bytes:
    return SIGNATURE + struct.pack("<H", version) + b"".join(chunks)


def spans(data: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of each whole chunk of a file, read leniently (CRCs not checked)."""
    out, pos = [], len(SIGNATURE) + 2
    while pos + 12 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos + 4)
        if pos + 12 + n > len(data):
            break
        out.append((pos, pos + 12 + n))
        pos += 12 + n
    return out


def refix_crcs(data: bytes) -> bytes:
    """The file with the CRC of every readable chunk made correct (damage goes deeper)."""
    out = bytearray(data)
    for start, end in spans(data):
        struct.pack_into("<I", out, end - 4, zlib.crc32(out[start:start + 4] + out[start + 8:end - 4]))
    return bytes(out)


def replace_streams(data: bytes, garbage: bytes) -> bytes:
    """The file with each entropy-coded stream (``TILE`` after its index, ``HYPR``) replaced by
    ``garbage`` cut to whole words, every CRC correct: a valid header over garbage streams."""
    words = garbage[:len(garbage) // 4 * 4]
    parts = [data[:len(SIGNATURE) + 2]]
    for start, end in spans(data):
        kind, payload = data[start:start + 4], data[start + 8:end - 4]
        if kind == b"TILE":
            payload = payload[:4] + words
        elif kind == b"HYPR":
            payload = words
        parts.append(chunk(kind, payload))
    return b"".join(parts)


def build() -> dict[str, bytes]:
    """File name -> content; the same on every run (seeded generator, no clock)."""
    rng = random.Random(20240601)
    stream = rng.randbytes(4 * 61)                      # garbage "entropy-coded" words
    hyper = chunk(b"HYPR", rng.randbytes(4 * 9))
    tile_payload = struct.pack("<I", 0) + stream
    tile = hyper + chunk(b"TILE", tile_payload)   # the streams after the header and ancillaries
    end = chunk(b"END\x00", b"")
    good_head = chunk(b"HEAD", head())
    base = lc(good_head, tile, end)
    files: dict[str, bytes] = {
        # not an .lc file at all
        "empty.lc": b"",
        "signature_only.lc": SIGNATURE,
        "newline_mangled.lc": base.replace(b"\r\n", b"\n"),
        "random_bytes.lc": rng.randbytes(4096),
        "signature_then_random.lc": SIGNATURE + b"\x01\x00" + rng.randbytes(2048),
        # versions this reader does not know
        "version_99.lc": lc(good_head, tile, end, version=99),
        # truncations: inside the version, chunk headers, payloads, CRCs; the END chunk missing
        "truncated_in_head_payload.lc": base[:30],
        "truncated_in_tile.lc": base[:len(base) // 2],
        "truncated_before_end.lc": base[:-len(end)],
        # chunk lengths that lie
        "lying_length_4gib.lc": lc(good_head, hyper, chunk(b"TILE", tile_payload,
                                                    length=0xFFFFFFFF), end),
        "lying_length_short.lc": lc(good_head, hyper, chunk(b"TILE", tile_payload,
                                                     length=100), end),
        "lying_length_short_crc_ok.lc": lc(good_head, hyper, chunk(b"TILE", tile_payload[:100])
                                           + tile_payload[100:], end),
        # damaged CRCs
        "tile_crc_bad.lc": lc(good_head, hyper, chunk(b"TILE", tile_payload, crc=0), end),
        # sizes: absurd, zero, beyond the format, beyond the pixel limit
        "size_1e9_x_1e9.lc": lc(chunk(b"HEAD", head(10**9, 10**9)), tile, end),
        "size_u32_max.lc": lc(chunk(b"HEAD", head(0xFFFFFFFF, 0xFFFFFFFF)), tile, end),
        "size_zero.lc": lc(chunk(b"HEAD", head(0, 0)), tile, end),
        "size_268435456_x_1.lc": lc(chunk(b"HEAD", head(1 << 28, 1)), tile, end),
        # chunk order and counts
        "unknown_critical_chunk.lc": lc(good_head, chunk(b"XTRA", b"needs a newer lcodec"), tile, end),
        "unknown_critical_chunk_escapes.lc": lc(good_head, chunk(b"\x1b[2J", b"\x1b]0;pwned\x07"), tile, end),
        "chunk_type_newline_crc_bad.lc": lc(good_head, chunk(b"\nEND", b"", crc=7), tile, end),
        "head_only.lc": lc(good_head),
        "no_tile.lc": lc(good_head, chunk(b"meta", b"ancillary only"), end),
        "end_only.lc": lc(end),
        "two_heads.lc": lc(good_head, good_head, tile, end),
        "tile_out_of_order.lc": lc(good_head, hyper, chunk(b"TILE", struct.pack("<I", 1) + stream), end),
        "trailing_garbage.lc": base + b"garbage",
        "two_files_concatenated.lc": base + base,
        "many_tiles.lc": lc(good_head, hyper, *(chunk(b"TILE", struct.pack("<I", i) + stream[:8])
                                          for i in range(2000)), end),
        # HEAD fields out of range
        "head_too_short.lc": lc(chunk(b"HEAD", head()[:20]), tile, end),
        "flags_set.lc": lc(chunk(b"HEAD", head(flags=1)), tile, end),
        "bit_depth_16.lc": lc(chunk(b"HEAD", head(depth=16)), tile, end),
        "quality_nan.lc": lc(chunk(b"HEAD", head(quality=float("nan"))), tile, end),
        "quality_99.lc": lc(chunk(b"HEAD", head(quality=99.0)), tile, end),
        "tile_size_odd.lc": lc(chunk(b"HEAD", head(tile=(63, 63))), tile, end),
        "tile_size_4g.lc": lc(chunk(b"HEAD", head(tile=(0xFFFFFFC0, 0xFFFFFFC0))), tile, end),
        # model names: unknown, hostile, malformed
        "model_name_path_traversal.lc": lc(chunk(b"HEAD", head(name=b"../../../../etc/passwd")), tile, end),
        "model_name_control_chars.lc": lc(chunk(b"HEAD", head(name=b"hyper\nprior\x1b[31m")), tile, end),
        "model_name_empty.lc": lc(chunk(b"HEAD", head(name=b"")), tile, end),
        # a CRC-correct file naming other weights, whose streams are garbage
        "garbage_stream_other_weights.lc": base,
    }
    return files


def main(argv: list[str]) -> int:
    CORPUS.mkdir(exist_ok=True)
    files = build()
    for old in CORPUS.glob("*.lc"):
        if old.name not in files:
            old.unlink()
    for name, data in files.items():
        (CORPUS / name).write_bytes(data)
    print(f"wrote {len(files)} files to {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

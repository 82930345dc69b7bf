"""Regenerate ``tests/corpus/``: malformed ``.lc`` files that every lcodec must refuse.

    python tests/make_corpus.py            # rewrites tests/corpus/*.lc (deterministic)

Every file is broken at the container level or names weights that are not installed (an
all-zero model digest), so none of them can become valid when the shipped weights change.
Files of format version 1 (chunks) are named as they were; those of version 2 (records and one
CRC) start with ``v2_``.
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


def rec(kind: bytes, payload: bytes, length: int | None = None) -> bytes:
    """A version 2 record; ``length`` overrides the true payload length (a lying record)."""
    n = len(payload) if length is None else length
    out = bytearray(kind)
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out) + payload


def head2(width: int = 64, height: int = 48, channels: int = 3, quality: float = 4.0,
          model_version: int = 1, tile: int = 0, flags: int = 0, digest: bytes = OTHER_DIGEST,
          name: bytes = b"hyperprior") -> bytes:
    """A version 2 ``H`` record's payload (any field may be out of range)."""
    def varint(n: int) -> bytes:
        return rec(b"", b"", n)
    return (varint(width) + varint(height) + bytes([channels]) + struct.pack("<f", quality)
            + varint(model_version) + varint(tile) + varint(flags) + digest + name)


def lc2(*records: bytes, version: int = 2, crc: int | None = None) -> bytes:
    """A version 2 file of ``records``, with its CRC (or ``crc``)."""
    body = SIGNATURE + struct.pack("<H", version) + b"".join(records)
    return body + struct.pack("<I", zlib.crc32(body) if crc is None else crc)


def version_of(data: bytes) -> int:
    return struct.unpack_from("<H", data, len(SIGNATURE))[0] if len(data) >= len(SIGNATURE) + 2 else 0


def payload_start(data: bytes, start: int) -> int:
    """Where the payload of the chunk or record at ``start`` begins."""
    if version_of(data) != 2:
        return start + 8
    i = start + 1
    while i < len(data) and data[i] & 0x80:
        i += 1
    return i + 1


def spans(data: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of each whole chunk (version 2: record) of a file, read leniently (CRCs
    not checked)."""
    if version_of(data) == 2:
        return _record_spans(data)
    out, pos = [], len(SIGNATURE) + 2
    while pos + 12 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos + 4)
        if pos + 12 + n > len(data):
            break
        out.append((pos, pos + 12 + n))
        pos += 12 + n
    return out


def _record_spans(data: bytes) -> list[tuple[int, int]]:
    out, pos, end = [], len(SIGNATURE) + 2, len(data) - 4
    while pos + 2 <= end:
        i, n, shift = pos + 1, 0, 0
        while i < end and data[i] & 0x80 and shift < 35:
            n |= (data[i] & 0x7F) << shift
            shift, i = shift + 7, i + 1
        if i >= end:
            break
        n |= data[i] << shift
        if i + 1 + n > end:
            break
        out.append((pos, i + 1 + n))
        pos = i + 1 + n
    return out


def refix_crcs(data: bytes) -> bytes:
    """The file with the CRC of every readable chunk (version 2: the file's CRC) made correct
    (damage goes deeper)."""
    if version_of(data) == 2 and len(data) >= len(SIGNATURE) + 6:
        return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))
    out = bytearray(data)
    for start, end in spans(data):
        struct.pack_into("<I", out, end - 4, zlib.crc32(out[start:start + 4] + out[start + 8:end - 4]))
    return bytes(out)


def replace_streams(data: bytes, garbage: bytes) -> bytes:
    """The file with each entropy-coded stream (``TILE`` after its index, ``HYPR``) replaced by
    ``garbage`` cut to whole words, every CRC correct: a valid header over garbage streams."""
    words = garbage[:len(garbage) // 4 * 4]
    if version_of(data) == 2:
        records = []
        for start, end in spans(data):
            kind, payload = data[start:start + 1], data[payload_start(data, start):end]
            records.append(rec(kind, words if kind in (b"Z", b"T") else payload))
        return lc2(*records)
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
        "flags_unknown.lc": lc(chunk(b"HEAD", head(flags=0xFFFE)), tile, end),  # 0x0001 is known
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
    # Format version 2: records, one CRC at the end.
    head_rec = rec(b"H", head2())
    streams2 = rec(b"Z", rng.randbytes(4 * 9)) + rec(b"T", stream)
    base2 = lc2(head_rec, streams2)
    files.update({
        "v2_garbage_stream_other_weights.lc": base2,
        "v2_crc_bad.lc": lc2(head_rec, streams2, crc=0),
        "v2_truncated_in_tile.lc": base2[:len(base2) // 2],
        "v2_truncated_crc.lc": base2[:-1],
        "v2_trailing_garbage.lc": base2 + b"garbage",
        "v2_two_files_concatenated.lc": base2 + base2,
        "v2_crc_only.lc": lc2(),
        "v2_lying_length_4gib.lc": lc2(head_rec, rec(b"Z", b"", length=0xFFFFFFFF)),
        "v2_length_overlong_varint.lc": lc2(head_rec, b"Z\x80\x80\x00", streams2),
        "v2_length_varint_too_long.lc": lc2(head_rec, b"Z\xff\xff\xff\xff\xff\x01"),
        "v2_unknown_critical_record.lc": lc2(head_rec, rec(b"X", b"needs a newer lcodec"), streams2),
        "v2_unknown_critical_record_escape.lc": lc2(head_rec, rec(b"\x1b", b"\x1b]0;pwned\x07"), streams2),
        "v2_head_only.lc": lc2(head_rec),
        "v2_no_head.lc": lc2(streams2),
        "v2_two_heads.lc": lc2(head_rec, head_rec, streams2),
        "v2_tile_before_hyper.lc": lc2(head_rec, rec(b"T", stream), rec(b"Z", stream)),
        "v2_head_too_short.lc": lc2(rec(b"H", head2()[:6]), streams2),
        "v2_flags_unknown.lc": lc2(rec(b"H", head2(flags=0xFFFE)), streams2),
        "v2_size_1e9_x_1e9.lc": lc2(rec(b"H", head2(10**9, 10**9)), streams2),
        "v2_size_zero.lc": lc2(rec(b"H", head2(0, 0)), streams2),
        "v2_size_268435456_x_1.lc": lc2(rec(b"H", head2(1 << 28, 1)), streams2),
        "v2_quality_nan.lc": lc2(rec(b"H", head2(quality=float("nan"))), streams2),
        "v2_tile_size_odd.lc": lc2(rec(b"H", head2(tile=63)), streams2),
        "v2_channels_2.lc": lc2(rec(b"H", head2(channels=2)), streams2),
        "v2_model_version_70000.lc": lc2(rec(b"H", head2(model_version=70000)), streams2),
        "v2_model_name_control_chars.lc": lc2(rec(b"H", head2(name=b"hyper\nprior\x1b[31m")), streams2),
        "v2_model_name_empty.lc": lc2(rec(b"H", head2(name=b"")), streams2),
        "v2_many_tiles.lc": lc2(head_rec, rec(b"Z", stream[:8]), *(rec(b"T", stream[:8]) for _ in range(2000))),
    })
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

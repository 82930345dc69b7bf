"""ICC profile, EXIF and alpha: kept in the container, restored on decode, --strip drops them."""
from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageCms

import lcodec
from lcodec import container, metadata
from lcodec.cli import main
from lcodec.errors import CorruptStreamError, UnsupportedImageError, UnsupportedVersionError

from .conftest import synthetic_photo

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
MAKE, ORIENTATION = 0x010F, 0x0112


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def exif_bytes(orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    exif[MAKE] = "lcodec test camera"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    return exif.tobytes()


def alpha_plane(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    alpha = ((xx * 37 + yy * 11) % 256).astype(np.uint8)
    alpha[: height // 3] = 0          # fully transparent band
    alpha[-2:] = 255
    return alpha


def info_of(path) -> dict:
    r = run("info", path, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture
def tagged_png(tmp_path):
    path = tmp_path / "tagged.png"
    Image.fromarray(synthetic_photo(40, 24)).save(path, icc_profile=ICC, exif=exif_bytes())
    return path


def test_icc_and_exif_round_trip(tmp_path, tagged_png):
    lc = tmp_path / "t.lc"
    assert run("encode", tagged_png, lc, "--quiet").exit_code == 0
    meta = info_of(lc)
    assert meta["icc_bytes"] == len(ICC) and meta["exif_bytes"] > 0 and meta["alpha"] is False
    for ext in ("png", "jpg", "webp", "tiff"):
        out = tmp_path / f"t.{ext}"
        assert run("decode", lc, out, "--quiet").exit_code == 0
        back = Image.open(out)
        assert back.info.get("icc_profile") == ICC, ext
        assert back.getexif().get(MAKE) == "lcodec test camera", ext
    # formats that cannot carry them: dropped silently
    r = run("decode", lc, tmp_path / "t.ppm")
    assert r.exit_code == 0 and "note" not in r.stderr
    # Python API
    img = lcodec.decode(lc.read_bytes(), device="cpu")
    assert img.info["icc_profile"] == ICC and img.getexif()[MAKE] == "lcodec test camera"


def test_strip(tmp_path, tagged_png):
    stripped = tmp_path / "s.lc"
    assert run("encode", tagged_png, stripped, "--strip", "--quiet").exit_code == 0
    meta = info_of(stripped)
    assert meta["icc_bytes"] == 0 and meta["exif_bytes"] == 0
    kept = tmp_path / "k.lc"
    assert run("encode", tagged_png, kept, "--quiet").exit_code == 0
    assert run("decode", kept, tmp_path / "k.png", "--strip", "--quiet").exit_code == 0
    back = Image.open(tmp_path / "k.png")
    assert "icc_profile" not in back.info and MAKE not in back.getexif()
    assert lcodec.info(lcodec.encode(Image.open(tagged_png), device="cpu", strip=True))["icc_bytes"] == 0


def test_exif_orientation_is_applied_and_removed_from_the_stored_exif(tmp_path):
    pixels = synthetic_photo(40, 24)
    src = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(src, exif=exif_bytes(orientation=6), quality=95)
    lc = tmp_path / "r.lc"
    assert run("encode", src, lc, "--quiet").exit_code == 0
    assert (info_of(lc)["width"], info_of(lc)["height"]) == (24, 40)
    assert run("decode", lc, tmp_path / "r.png", "--quiet").exit_code == 0
    back = Image.open(tmp_path / "r.png")
    exif = back.getexif()
    assert back.size == (24, 40) and exif.get(MAKE) == "lcodec test camera"
    assert exif.get(ORIENTATION, 1) == 1  # a viewer must not rotate it a second time
    assert Image.open(src).getexif()[ORIENTATION] == 6


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_round_trips_exactly(tmp_path, mode):
    color = synthetic_photo(37, 21, seed=4)
    alpha = alpha_plane(37, 21)
    planes = color if mode == "RGBA" else color[:, :, :1]
    src = tmp_path / "src.png"
    Image.fromarray(np.concatenate([planes, alpha[:, :, None]], axis=2), mode).save(src)
    lc = tmp_path / "a.lc"
    r = run("encode", src, lc, "--verify", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mode"] == mode
    assert info_of(lc)["mode"] == mode and info_of(lc)["alpha"] is True
    for ext in ("png", "tiff", "webp"):
        out = tmp_path / f"a.{ext}"
        assert run("decode", lc, out, "--quiet").exit_code == 0
        back = Image.open(out)
        assert back.mode in (mode, "RGBA"), ext
        assert np.array_equal(np.asarray(back.getchannel("A")), alpha), ext
    decoded = lcodec.decode(lc.read_bytes(), device="cpu")
    assert decoded.mode == mode and np.array_equal(np.asarray(decoded.getchannel("A")), alpha)
    # a region keeps the matching part of the alpha plane
    region = lcodec.Codec("cpu").decode(lc.read_bytes(), region=(5, 3, 20, 10))
    assert np.array_equal(np.asarray(region.getchannel("A")), alpha[3:13, 5:25])


def test_alpha_to_a_format_without_alpha_is_dropped_with_a_note(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(np.concatenate([synthetic_photo(16, 16), alpha_plane(16, 16)[:, :, None]], axis=2),
                    "RGBA").save(src)
    assert run("encode", src, tmp_path / "a.lc", "--quiet").exit_code == 0
    r = run("decode", tmp_path / "a.lc", tmp_path / "a.jpg")
    assert r.exit_code == 0 and "alpha channel dropped" in r.stderr
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"


def test_opaque_alpha_and_transparency_colour(tmp_path):
    opaque = tmp_path / "opaque.png"
    Image.fromarray(synthetic_photo(16, 16)).convert("RGBA").save(opaque)
    assert run("encode", opaque, tmp_path / "o.lc", "--quiet").exit_code == 0
    assert info_of(tmp_path / "o.lc")["mode"] == "RGB"
    assert b"ALPH" not in (tmp_path / "o.lc").read_bytes()
    # a palette image with a transparent entry
    pal = Image.fromarray(synthetic_photo(16, 16)).quantize(8)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    expected = np.asarray(Image.open(tmp_path / "pal.png").convert("RGBA").getchannel("A"))
    assert expected.min() == 0
    r = run("encode", tmp_path / "pal.png", tmp_path / "p.lc")
    assert r.exit_code == 0 and "palette" in r.stderr
    decoded = lcodec.decode((tmp_path / "p.lc").read_bytes(), device="cpu")
    assert decoded.mode == "RGBA" and np.array_equal(np.asarray(decoded.getchannel("A")), expected)


def test_oversized_metadata_is_refused_unless_stripped(codec):
    img = Image.fromarray(synthetic_photo(16, 16))
    img.info["icc_profile"] = b"\0" * (metadata.MAX_METADATA_BYTES + 1)
    with pytest.raises(UnsupportedImageError, match="exceeds the limit.*--strip"):
        codec.encode(img)
    assert lcodec.info(codec.encode(img, strip=True))["icc_bytes"] == 0


def _with_chunks(data: bytes, ancillary=None, alpha=None, keep_alpha=True, version=None) -> bytes:
    parsed = container.parse(data)
    return container.serialize(container.Container(
        parsed.header, parsed.hyper, parsed.tiles,
        parsed.ancillary if ancillary is None else ancillary, version or parsed.version,
        alpha=parsed.alpha if keep_alpha else alpha))


@pytest.mark.parametrize("version,unknown", [(1, b"zzzz"), (2, b"z")])
def test_decoder_ignores_oversized_or_unknown_ancillary_chunks(codec, version, unknown):
    data = codec.encode(Image.fromarray(synthetic_photo(16, 16)))
    big = _with_chunks(data, [(b"iccp", b"\1" * (metadata.MAX_METADATA_BYTES + 1)), (unknown, b"future")],
                       version=version)
    assert container.parse(big).version == version
    img = codec.decode(big)
    assert "icc_profile" not in img.info and img.size == (16, 16)


def test_alph_chunk_in_the_container(codec):
    alpha = alpha_plane(16, 16)
    data = codec.encode_pixels(synthetic_photo(16, 16), 3, 4, alpha=alpha)
    assert container.parse(data).version == 2  # (version 2's A record; this test splices chunks)
    data = _with_chunks(data, version=1)
    parsed = container.parse(data)
    assert parsed.alpha is not None and parsed.alpha[0] == metadata.ALPHA_ZLIB
    assert np.array_equal(metadata.unpack_alpha(parsed.alpha, 16, 16), alpha)
    # its place: after HEAD and the ancillary chunks, before HYPR
    assert data.index(b"ALPH") < data.index(b"HYPR")
    # damaged or mis-sized alpha is a clear error
    for payload in (b"\x00" + b"junk", b"\x07" + zlib.compress(alpha.tobytes()),
                    b"\x00" + zlib.compress(alpha.tobytes()[:-1]),
                    b"\x00" + zlib.compress(alpha.tobytes() + b"x")):
        with pytest.raises(CorruptStreamError, match="ALPH"):
            codec.decode(_with_chunks(data, alpha=payload, keep_alpha=False))
    # an ALPH after HYPR, or twice, is refused by the parser
    start = data.index(b"ALPH")  # a chunk: type, length, payload, CRC
    (length,) = struct.unpack_from("<I", data, start + 4)
    alph = data[start:start + 12 + length]
    without = data[:start] + data[start + len(alph):]
    end = without.index(b"END\x00")
    with pytest.raises(CorruptStreamError, match="ALPH"):
        container.parse(without[:end] + alph + without[end:])
    with pytest.raises(CorruptStreamError, match="ALPH"):
        container.parse(data[:start] + alph + data[start:])


def test_an_unknown_critical_chunk_is_still_refused():
    header = container.Header(16, 16, 3, 4.0, "hyperprior", 1, bytes(8))
    data = container.serialize(container.Container(header, b"\0" * 4, [b"\0" * 4], version=1))
    pos = data.index(b"HYPR")
    chunk = struct.pack("<4sI", b"ALPX", 1) + b"\0" + struct.pack("<I", zlib.crc32(b"ALPX\0"))
    with pytest.raises(UnsupportedVersionError, match="newer lcodec"):
        container.parse(data[:pos] + chunk + data[pos:])


def test_image_bytes_keeps_metadata_where_the_format_can():
    img = Image.fromarray(synthetic_photo(8, 8))
    for fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        data, notes = metadata.image_bytes(img, fmt, ICC, exif_bytes()[6:])
        back = Image.open(io.BytesIO(data))
        assert back.info.get("icc_profile") == ICC and back.getexif()[MAKE] == "lcodec test camera"
        assert notes == []
    data, notes = metadata.image_bytes(img, "BMP", ICC, exif_bytes()[6:])
    assert Image.open(io.BytesIO(data)).size == (8, 8) and notes == []

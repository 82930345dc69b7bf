"""Extra training photos: .deb unpacking, pin checks, halving, and their use by a training run."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from lcodec.train import registry_photos as rp
from lcodec.train.data import split_holdout, list_images, training_photos
from lcodec.train.loop import TrainConfig, train

from .conftest import synthetic_photo


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, blob in members.items():
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(blob):<10}`\n".encode("ascii")
        out += blob + (b"\n" if len(blob) % 2 else b"")
    return bytes(out)


def _deb(files: dict[str, bytes]) -> bytes:
    """A minimal .deb: debian-binary, an empty control archive, and ``files`` in data.tar.xz."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for path, blob in files.items():
            info = tarfile.TarInfo("./" + path)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode="w:xz"):
        pass
    return _ar({"debian-binary": b"2.0\n", "control.tar.xz": control.getvalue(),
                "data.tar.xz": data.getvalue()})


PHOTO = "usr/share/backgrounds/mate/nature/Aqua.jpg"
WALLPAPER = "usr/share/wallpapers/Kite/contents/images/2560x1600.jpg"


def test_deb_files_reads_only_the_wanted_files_and_names_the_missing_ones():
    deb = _deb({PHOTO: b"a" * 7, "usr/share/doc/copyright": b"GPL", WALLPAPER: b"bb"})
    assert rp.deb_files(deb, (PHOTO, WALLPAPER)) == {PHOTO: b"a" * 7, WALLPAPER: b"bb"}
    with pytest.raises(rp.RegistryError, match="Storm.jpg"):
        rp.deb_files(deb, (PHOTO, "usr/share/backgrounds/mate/nature/Storm.jpg"))
    with pytest.raises(rp.RegistryError, match="not an ar archive"):
        rp.deb_files(b"PK\x03\x04 a zip file", (PHOTO,))
    with pytest.raises(rp.RegistryError, match="no data.tar"):
        rp.deb_files(_ar({"debian-binary": b"2.0\n"}), (PHOTO,))


def test_ar_members_keep_odd_sized_members_apart():
    members = {"one": b"x", "two": b"yyy", "three": b""}
    assert rp.ar_members(_ar(members)) == members


def test_halve_averages_2x2_blocks_and_drops_an_odd_edge():
    pixels = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(3, 5, 3) * 4
    half = np.asarray(rp.halve(_png(pixels)))
    assert half.shape == (1, 2, 3)
    expected = pixels[:2, :4].reshape(1, 2, 2, 2, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(half - expected).max() <= 0.5
    grey = np.full((4, 4), 77, np.uint8)
    assert np.asarray(rp.halve(_png(grey))).shape == (2, 2, 3)  # always RGB


def _package(deb: bytes, photos: tuple[str, ...]) -> rp.DebPackage:
    return rp.DebPackage("mate-backgrounds", "9.9-1", len(deb), hashlib.sha256(deb).hexdigest(),
                         "GPL-2+", photos)


def _serve(monkeypatch, blobs: dict[str, bytes], calls: list[str]):
    def urlopen(url, timeout=None):
        calls.append(url)
        if url not in blobs:
            raise OSError("connection refused")
        return io.BytesIO(blobs[url])

    monkeypatch.setattr(rp.urllib.request, "urlopen", urlopen)


def test_fetch_checks_the_pin_and_reuses_a_matching_copy(monkeypatch, tmp_path):
    deb = _deb({PHOTO: b"jpeg"})
    package = _package(deb, (PHOTO,))
    calls: list[str] = []
    _serve(monkeypatch, {package.url: deb}, calls)
    path = rp.fetch(package, tmp_path / "cache")
    assert path.read_bytes() == deb and calls == [package.url]
    assert rp.fetch(package, tmp_path / "cache") == path and len(calls) == 1  # no second download
    assert package.url == ("https://deb.debian.org/debian/pool/main/m/mate-backgrounds/"
                           "mate-backgrounds_9.9-1_all.deb")

    _serve(monkeypatch, {package.url: deb + b"tampered"}, calls)
    path.unlink()
    with pytest.raises(rp.RegistryError, match="pinned"):
        rp.fetch(package, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # nothing kept of a file that failed its pin
    _serve(monkeypatch, {}, calls)
    with pytest.raises(rp.RegistryError, match="cannot fetch"):
        rp.fetch(package, tmp_path / "cache")


def test_write_photos_writes_halved_pngs_with_their_sources_or_nothing(monkeypatch, tmp_path):
    big = synthetic_photo(64, 48, seed=3)
    jpeg = io.BytesIO()
    Image.fromarray(big).save(jpeg, format="JPEG", quality=95)
    wall = rp.DebPackage("plasma-workspace-wallpapers", "1.0-1", 0, "", "LGPL-3", (WALLPAPER,))
    deb_a = _deb({PHOTO: jpeg.getvalue()})
    deb_b = _deb({WALLPAPER: _png(big)})
    a = _package(deb_a, (PHOTO,))
    b = rp.DebPackage(wall.name, wall.version, len(deb_b), hashlib.sha256(deb_b).hexdigest(),
                      wall.licence, wall.photos)
    _serve(monkeypatch, {a.url: deb_a, b.url: deb_b}, [])
    out = tmp_path / "photos"
    written = rp.write_photos(out, tmp_path / "cache", (a, b))
    assert [p.name for p in written] == ["mate-Aqua.png", "plasma-Kite.png"]
    assert all(Image.open(p).size == (32, 24) for p in written)
    assert "mate-Aqua.png <- " + PHOTO in (out / "SOURCES.txt").read_text()
    assert [p.name for p in list_images(out)] == ["mate-Aqua.png", "plasma-Kite.png"]

    missing = _package(deb_a, ("usr/share/backgrounds/mate/nature/Storm.jpg",))
    with pytest.raises(rp.RegistryError):
        rp.write_photos(tmp_path / "other", tmp_path / "cache", (missing,))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "photos"]  # no "other", no "other.tmp"


def test_the_pinned_packages_name_23_distinct_photos():
    names = [rp.photo_name(p, path) for p in rp.PACKAGES for path in p.photos]
    assert len(names) == len(set(names)) == 23
    assert all(len(p.sha256) == 64 and p.size > 0 for p in rp.PACKAGES)


def test_extra_photos_are_trained_on_and_never_held_out(tmp_path):
    data, extra = tmp_path / "data", tmp_path / "extra"
    data.mkdir(), extra.mkdir()
    for i in range(3):  # p0 is held out; the two photos left to train on are small
        Image.fromarray(synthetic_photo(96 if i == 0 else 48, 80 if i == 0 else 40, seed=i)).save(
            data / f"p{i}.png")
    Image.fromarray(synthetic_photo(96, 80, seed=9)).save(extra / "x.png")
    train_paths, held = training_photos(data, [extra])
    assert (train_paths, held) == (split_holdout(list_images(data))[0] + [extra / "x.png"],
                                   split_holdout(list_images(data))[1])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        training_photos(data, [empty])

    # data's training photos are smaller than the crop: only the extra folder makes a run possible
    cfg = dict(data=str(data), minutes=1.0, max_steps=1, crop=64, batch=1, threads="1",
               compile="off", N=8, M=8, validate_every=1000)
    before = torch.get_num_threads()
    try:
        with pytest.raises(ValueError, match="at least 64x64"):
            train(TrainConfig(**cfg, run_dir=str(tmp_path / "without")))
        ckpt = train(TrainConfig(**cfg, run_dir=str(tmp_path / "with"), extra_data=(str(extra),)))
    finally:
        torch.set_num_threads(before)
    state = json.loads(torch.load(ckpt, weights_only=True)["state_json"])
    assert state["step"] == 1
    assert state["runs"][0]["config"]["extra_data"] == [str(extra)]  # recorded with the run

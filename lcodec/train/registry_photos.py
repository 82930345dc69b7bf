"""Extra training photos from Debian packages: pinned ``.deb`` files, checked, unpacked, halved.

``../shared/data/train`` (238 photos) is the only photo set beside the checkout, and the model has
seen it hundreds of times over. The package registries hold a few more photographs under free
licences (model card, "more training photos"): 12 nature photos in Debian 12's
``mate-backgrounds`` and 11 in ``plasma-workspace-wallpapers`` (the rest of both packages are
renders and drawings, left out). This module fetches the two packages from the Debian archive
by URL, checks each against its pinned size and SHA-256 (a changed file is refused, not used),
reads the photos out of the package's data archive (``ar`` and ``tar``: no ``dpkg`` needed),
and writes each at half its width and height (2x2 averages, which wash out the JPEG blocks the
packages ship them with) as PNG::

    python -m lcodec.train.registry_photos runs/registry-photos   # or: make runs/registry-photos

A training run adds the folder to its crops with ``lcodec train --extra-data DIR``; the
held-out photos stay those of ``--data``. Nothing here runs when encoding or decoding.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

DEBIAN_POOL = "https://deb.debian.org/debian/pool/main"


@dataclass(frozen=True)
class DebPackage:
    """One pinned Debian package and the photos taken from it (paths inside its data archive)."""

    name: str
    version: str      # the pool file's version (no epoch)
    size: int         # bytes of the .deb
    sha256: str
    licence: str
    photos: tuple[str, ...]

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version}_all.deb"

    @property
    def url(self) -> str:
        return f"{DEBIAN_POOL}/{self.name[0]}/{self.name}/{self.filename}"


_MATE = ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
         "Storm", "TwoWings", "Wood", "YellowFlower")
_PLASMA = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
           "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")

PACKAGES = (
    DebPackage("mate-backgrounds", "1.26.0-1", 46638500,
               "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04",
               "GPL-2+ (debian/copyright)",
               tuple(f"usr/share/backgrounds/mate/nature/{n}.jpg" for n in _MATE)),
    DebPackage("plasma-workspace-wallpapers", "5.27.5-2", 94047772,
               "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b",
               "LGPL-3 (each wallpaper's metadata.json)",
               tuple(f"usr/share/wallpapers/{n}/contents/images/2560x1600.jpg" for n in _PLASMA)),
)


class RegistryError(Exception):
    """A package could not be fetched, did not match its pin, or lacks a listed photo."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(package: DebPackage, cache: Path) -> Path:
    """``package``'s .deb in ``cache``, downloaded unless a copy matching its pin is there."""
    path = cache / package.filename
    if path.exists() and path.stat().st_size == package.size and sha256_of(path) == package.sha256:
        return path
    cache.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(package.url, timeout=60) as response, part.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise RegistryError(f"cannot fetch {package.url}: {exc}") from None
    size, digest = part.stat().st_size, sha256_of(part)
    if size != package.size or digest != package.sha256:
        part.unlink()
        raise RegistryError(f"{package.url}: {size} bytes, sha256 {digest}; pinned {package.size} "
                            f"bytes, sha256 {package.sha256}")
    part.replace(path)
    return path


def ar_members(blob: bytes) -> dict[str, bytes]:
    """The members of a Unix ``ar`` archive (a .deb is one): name -> bytes."""
    if not blob.startswith(b"!<arch>\n"):
        raise RegistryError("not an ar archive (a .deb starts with '!<arch>')")
    members, pos = {}, 8
    while pos + 60 <= len(blob):
        header = blob[pos:pos + 60]
        if header[58:60] != b"`\n":
            raise RegistryError(f"bad ar member header at byte {pos}")
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = blob[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)  # members start at even offsets
    return members


def deb_files(deb: bytes, wanted: tuple[str, ...]) -> dict[str, bytes]:
    """The files ``wanted`` (paths without a leading ``./``) from a .deb's data archive."""
    data = [blob for name, blob in ar_members(deb).items() if name.startswith("data.tar")]
    if not data:
        raise RegistryError("no data.tar member in the package")
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data[0]), mode="r:*") as tar:
        for member in tar:
            path = member.name.removeprefix("./")
            if path in wanted and member.isfile():
                found[path] = tar.extractfile(member).read()
    missing = [p for p in wanted if p not in found]
    if missing:
        raise RegistryError(f"not in the package: {', '.join(missing)}")
    return found


def halve(blob: bytes) -> Image.Image:
    """An image file's pixels as RGB at half the width and height (each output pixel is the
    mean of a 2x2 block; an odd last row or column is dropped)."""
    with Image.open(io.BytesIO(blob)) as im:
        rgb = im.convert("RGB")
    return rgb.crop((0, 0, rgb.width // 2 * 2, rgb.height // 2 * 2)).reduce(2)


def photo_name(package: DebPackage, path: str) -> str:
    """``mate-Aqua.png`` for ``usr/share/backgrounds/mate/nature/Aqua.jpg``, ``plasma-Kite.png``
    for ``usr/share/wallpapers/Kite/contents/images/2560x1600.jpg``."""
    parts = path.split("/")
    stem = parts[3] if parts[2] == "wallpapers" else Path(path).stem
    return f"{package.name.split('-')[0]}-{stem}.png"


def write_photos(out: Path, cache: Path, packages: tuple[DebPackage, ...] = PACKAGES) -> list[Path]:
    """Fetch ``packages`` (into ``cache``) and write their photos, halved, as PNG files in
    ``out`` with a SOURCES.txt saying where each came from. ``out`` appears whole or not at all."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sources = []
    try:
        for package in packages:
            files = deb_files(fetch(package, cache).read_bytes(), package.photos)
            sources.append(f"{package.url}\n  sha256 {package.sha256}, licence {package.licence}")
            for path in package.photos:
                name = photo_name(package, path)
                halve(files[path]).save(tmp / name, optimize=False)
                sources.append(f"  {name} <- {path}, halved")
        (tmp / "SOURCES.txt").write_text("\n".join(sources) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return sorted(out.glob("*.png"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lcodec.train.registry_photos",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the PNG photos into (replaced)")
    parser.add_argument("--cache", type=Path, default=Path("runs/debs"),
                        help="where the downloaded .deb files are kept (default: runs/debs)")
    args = parser.parse_args(argv)
    try:
        photos = write_photos(args.out, args.cache)
    except RegistryError as exc:
        print(f"registry_photos: error: {exc}", file=sys.stderr)
        return 1
    pixels = 0
    for path in photos:
        with Image.open(path) as im:
            pixels += im.width * im.height
    print(f"{len(photos)} photos, {pixels / 1e6:.1f} MP, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Large-image benchmark: peak memory and time against megapixels, and tiled vs whole coding.

* Big test photos are made from the Kodak images themselves: a mosaic of the 24 pictures
  (every other one mirrored, so neighbours do not repeat) cropped to the wanted size.
* Each ``lcodec encode`` / ``lcodec decode`` runs as its own process under a small Python
  wrapper that reports the child's peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``) and wall
  time, so the numbers are what a user's shell sees (interpreter and torch import included).
* Tiled vs whole: every Kodak image is coded once whole and once with 256-pixel tiles (6 tiles
  for 768x512), comparing mean PSNR and bpp; a crop across a tile corner at the lowest quality
  is saved so a person can look for seams.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .images import list_images
from .metrics import psnr

_WRAPPER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "rc = subprocess.run(sys.argv[1:]).returncode; "
            "print(rc, time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")


def measure(cmd: list[str]) -> dict:
    """Wall seconds and peak RSS (bytes) of one command run as a child process."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, check=True)
    rc, seconds, rss = out.stdout.split()
    if int(rc) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return {"seconds": round(float(seconds), 2), "peak_rss_mb": round(int(rss) / 2 ** 20, 1)}


def make_mosaic(images: list[Path], megapixels: float, out: Path) -> tuple[int, int]:
    """A 3:2 photo of about ``megapixels`` tiled from ``images``; returns its size."""
    width = int(round(math.sqrt(megapixels * 1e6 * 1.5)))
    height = int(round(megapixels * 1e6 / width))
    canvas = Image.new("RGB", (width, height))
    pictures = [Image.open(p).convert("RGB") for p in images]
    i = 0
    for top in range(0, height, 512):
        for left in range(0, width, 768):
            pic = pictures[i % len(pictures)].resize((768, 512))
            if i % 2:
                pic = pic.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            canvas.paste(pic, (left, top))
            i += 1
    canvas.save(out, compress_level=1)
    return width, height


def memory_curve(kodak: Path, work: Path, sizes=(4, 16, 50), quality: float = 4.0) -> list[dict]:
    """Peak RSS and seconds of encode and decode for mosaics of the given megapixels."""
    images = list_images(kodak)
    lcodec = [sys.executable, "-m", "lcodec"]
    rows = []
    for mp in sizes:
        src, lc, back = work / f"mosaic-{mp}mp.png", work / f"mosaic-{mp}mp.lc", work / f"mosaic-{mp}mp.dec.png"
        w, h = make_mosaic(images, mp, src)
        for p in (lc, back):
            p.unlink(missing_ok=True)
        enc = measure(lcodec + ["encode", str(src), str(lc), "-q", str(quality), "--quiet"])
        dec = measure(lcodec + ["decode", str(lc), str(back), "--quiet"])
        meta = json.loads(subprocess.run(lcodec + ["info", str(lc), "--json"], capture_output=True,
                                         text=True, check=True).stdout)
        rows.append({"megapixels": round(w * h / 1e6, 2), "size": f"{w}x{h}", "tiles": meta["tiles"],
                     "tile_size": meta["tile_size"], "bpp": meta["bpp"],
                     "encode": enc, "decode": dec})
        for p in (src, lc, back):
            p.unlink(missing_ok=True)
    return rows


def tiled_vs_whole(kodak: Path, out_dir: Path, qualities=(1.0, 4.0, 8.0), tile: int = 256) -> dict:
    """Mean PSNR / bpp on Kodak, whole-image vs tiled coding, and a seam crop picture."""
    from ..api import Codec

    whole, tiled = Codec("cpu", tile=4096), Codec("cpu", tile=tile)
    result = {}
    files = list_images(kodak)
    for q in qualities:
        acc = {"whole": [[], []], "tiled": [[], []]}
        for path in files:
            pixels = np.asarray(Image.open(path).convert("RGB"))
            n = pixels.shape[0] * pixels.shape[1]
            for name, codec in (("whole", whole), ("tiled", tiled)):
                data = codec.encode_pixels(pixels, 3, q)
                decoded, _ = codec.decode_pixels(data)
                acc[name][0].append(8 * len(data) / n)
                acc[name][1].append(psnr(pixels, decoded))
        row = {k: {"bpp": float(np.mean(v[0])), "psnr": float(np.mean(v[1]))} for k, v in acc.items()}
        row["bpp_change_percent"] = 100 * (row["tiled"]["bpp"] / row["whole"]["bpp"] - 1)
        row["psnr_change_db"] = row["tiled"]["psnr"] - row["whole"]["psnr"]
        result[f"{q:g}"] = row
    # A crop across the corner of four tiles, lowest quality, whole vs tiled, 3x enlarged.
    pixels = np.asarray(Image.open(files[0]).convert("RGB"))
    crops = []
    for codec in (whole, tiled):
        decoded, _ = codec.decode_pixels(codec.encode_pixels(pixels, 3, min(qualities)))
        crops.append(Image.fromarray(decoded[tile - 48:tile + 48, tile - 48:tile + 48]).resize((288, 288), Image.NEAREST))
    sheet = Image.new("RGB", (288 * 2 + 8, 288), "white")
    sheet.paste(crops[0], (0, 0))
    sheet.paste(crops[1], (296, 0))
    out_dir.mkdir(parents=True, exist_ok=True)
    sheet.save(out_dir / "seam_crop.png")
    result["seam_crop"] = "seam_crop.png"
    return result


def plot_memory(rows: list[dict], out: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    mp = [r["megapixels"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("encode", "decode"):
        a.plot(mp, [r[key]["peak_rss_mb"] for r in rows], "o-", label=key)
        b.plot(mp, [r[key]["seconds"] for r in rows], "o-", label=key)
    a.axhline(1536, color="red", ls="--", lw=1, label="1.5 GB target")
    a.set(xlabel="megapixels", ylabel="peak RSS (MiB)", title="Peak memory of the lcodec command")
    b.set(xlabel="megapixels", ylabel="seconds", title="Wall time of the lcodec command")
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def markdown(rows: list[dict], tiles: dict) -> str:
    lines = ["## Large images: memory and time (tiled coding)", "",
             "Mosaics of the 24 Kodak images (alternate ones mirrored), 3:2, quality 4; each command "
             "is a separate process (interpreter, torch import and weights load included); peak RSS "
             "from `getrusage(RUSAGE_CHILDREN)`.", "",
             "| megapixels | size | tiles | bpp | encode s | encode peak RSS | decode s | decode peak RSS |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['megapixels']} | {r['size']} | {r['tiles']} | {r['bpp']:.3f} | "
                     f"{r['encode']['seconds']} | {r['encode']['peak_rss_mb']} MiB | "
                     f"{r['decode']['seconds']} | {r['decode']['peak_rss_mb']} MiB |")
    lines += ["", "![peak RSS and seconds against megapixels](bench/memory.png)", "",
              "## Tiled vs whole-image coding (Kodak, 256-pixel tiles = 6 per image)", "",
              "| quality | whole bpp | tiled bpp | bpp change | whole PSNR | tiled PSNR | PSNR change |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for q, r in tiles.items():
        if q == "seam_crop":
            continue
        lines.append(f"| {q} | {r['whole']['bpp']:.4f} | {r['tiled']['bpp']:.4f} | "
                     f"{r['bpp_change_percent']:+.2f}% | {r['whole']['psnr']:.3f} | "
                     f"{r['tiled']['psnr']:.3f} | {r['psnr_change_db']:+.4f} dB |")
    lines += ["", "Left: whole-image coding; right: 256-pixel tiles, lowest quality, 96x96 pixels around "
              "the corner where four tiles meet (kodim01), enlarged 3x:", "",
              "![crop across a tile corner](bench/seam_crop.png)", ""]
    return "\n".join(lines)


def run(kodak: Path, out_dir: Path, sizes=(4, 16, 50)) -> str:
    """Run both benchmarks, write ``out_dir/bench/scaling.json`` and plots; return markdown."""
    bench = out_dir / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rows = memory_curve(kodak, bench, sizes)
    tiles = tiled_vs_whole(kodak, bench)
    plot_memory(rows, bench / "memory.png")
    (bench / "scaling.json").write_text(json.dumps({"memory": rows, "tiled_vs_whole": tiles,
                                                    "seconds": round(time.time() - t0)}, indent=2) + "\n")
    return markdown(rows, tiles)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kodak", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--sizes", default="4,16,50")
    args = ap.parse_args()
    print(run(args.kodak, args.out, tuple(float(s) for s in args.sizes.split(","))))

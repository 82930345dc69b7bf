"""``python -m lcodec.eval.benchmark`` (what ``make bench`` runs): writes ``docs/benchmarks.md``.

1. Rate-distortion on the Kodak images: lcodec against JPEG 4:2:0, WebP, AVIF (speed 6 and
   speed 2) and JPEG XL when available, with BD-rates (``docs/bench/results.json`` and plots).
2. Speed: in-process encode/decode seconds per image with the model loaded, and whole
   ``lcodec`` commands (process start, torch import and weights load included), with peak RSS.
3. Large images and tiling (:mod:`lcodec.eval.scaling`).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .images import list_images
from .scaling import measure

ANCHORS = ("jpeg", "webp", "avif-s6", "avif-s2")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores, Python {platform.python_version()}, torch {torch.__version__}"


def speed(kodak: Path, work: Path, quality: float = 4.0) -> dict:
    """Median in-process and whole-command seconds per Kodak image, peak RSS."""
    from ..api import Codec

    codec = Codec("cpu")
    files = list_images(kodak)
    enc, dec, mp = [], [], []
    for path in files:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        codec.encode_pixels(pixels, 3, quality)  # warm-up of this shape
        t = time.perf_counter()
        data = codec.encode_pixels(pixels, 3, quality)
        enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        codec.decode_pixels(data)
        dec.append(time.perf_counter() - t)
        mp.append(pixels.shape[0] * pixels.shape[1] / 1e6)
    lcodec = [sys.executable, "-m", "lcodec"]
    src = files[0]
    lc, png = work / "speed.lc", work / "speed.png"
    cmd_enc, cmd_dec = [], []
    for _ in range(3):
        for p in (lc, png):
            p.unlink(missing_ok=True)
        cmd_enc.append(measure(lcodec + ["encode", str(src), str(lc), "-q", str(quality), "--quiet"]))
        cmd_dec.append(measure(lcodec + ["decode", str(lc), str(png), "--quiet"]))
    helps = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(lcodec + ["--help"], capture_output=True, check=True)
        helps.append(time.perf_counter() - t)
    for p in (lc, png):
        p.unlink(missing_ok=True)
    med = statistics.median
    return {
        "quality": quality, "images": len(files),
        "encode_s": med(enc), "decode_s": med(dec),
        "encode_mp_per_s": med(m / s for m, s in zip(mp, enc)),
        "decode_mp_per_s": med(m / s for m, s in zip(mp, dec)),
        "command_encode_s": med(r["seconds"] for r in cmd_enc),
        "command_decode_s": med(r["seconds"] for r in cmd_dec),
        "command_encode_rss_mb": max(r["peak_rss_mb"] for r in cmd_enc),
        "command_decode_rss_mb": max(r["peak_rss_mb"] for r in cmd_dec),
        "help_s": med(helps), "command_image": src.name,
    }


CLASSICAL = ("jpeg", "webp", "avif-s6", "avif-s2", "jxl")
# AVIF speed 2 takes 5-11 s per Kodak image here: a shorter sweep keeps `make bench` short.
SWEEPS = {"avif-s2": [10, 25, 40, 55, 70, 85]}


def classical_results(kodak: Path, bench: Path, jobs: int, refresh: bool) -> tuple[list, dict, dict]:
    """Per-image records of the classical codecs, cached in ``bench/classical.json``.

    They do not depend on lcodec's weights, so they are re-used as long as the image list,
    the codec settings (library versions included) and the sweeps are unchanged.
    """
    from .classical import available_codecs, make_codec
    from .runner import json_safe, run_eval

    usable, missing = available_codecs(list(CLASSICAL))
    codecs = [make_codec(name, SWEEPS.get(name)) for name in usable]
    key = json_safe({"images": [p.name for p in list_images(kodak)],
                     "codecs": {c.name: {"settings": c.settings, "qualities": list(c.qualities)}
                                for c in codecs}})
    cache = bench / "classical.json"
    if cache.exists() and not refresh:
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved["per_image"], saved["codecs"], missing
    data = run_eval(kodak, codecs, None, None, jobs, progress=sys.stderr.isatty(), plots=False)
    cache.write_text(json.dumps({"key": key, "per_image": json_safe(data["per_image"]),
                                 "codecs": json_safe(data["codecs"])}, indent=1) + "\n")
    return data["per_image"], data["codecs"], missing


def rate_distortion(kodak: Path, bench: Path, jobs: int, refresh: bool) -> tuple[dict, dict]:
    """lcodec's sweep plus the (cached) classical codecs: results.json, plots, BD-rates."""
    from .plots import write_plots
    from .runner import average_records, bd_rate_table, run_eval, write_results

    per_image, codecs, missing = classical_results(kodak, bench, jobs, refresh)
    mine = run_eval(kodak, ["lcodec"], None, None, jobs, progress=sys.stderr.isatty(), plots=False)
    per_image = list(mine["per_image"]) + list(per_image)
    codecs = {**mine["codecs"], **codecs}
    average = average_records(per_image)
    order = ["lcodec", *CLASSICAL]
    average = {k: average[k] for k in order if k in average}
    data = {**mine, "image_set": "Kodak", "codecs": codecs, "per_image": per_image,
            "average": average, "bd_rate": bd_rate_table(average, ("jpeg", "lcodec") + ANCHORS[1:])}
    data["plots"] = [p.name for p in write_plots(data, bench)]
    write_results(data, bench / "results.json")
    return data, missing


def rd_markdown(data: dict) -> str:
    avg = data["average"]
    lines = ["## Rate-distortion on Kodak (24 images)", "",
             "bpp counts the whole file; PSNR on 8-bit RGB and MS-SSIM (RGB) per image, averaged "
             "over the 24 images at each setting.", "",
             "![RD curves, PSNR](bench/rd_psnr.png)", "", "![RD curves, MS-SSIM](bench/rd_msssim.png)", "",
             "| codec | setting | bpp | PSNR (dB) | MS-SSIM | encode s | decode s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for codec, points in avg.items():
        for p in points:
            lines.append(f"| {codec} | {p['quality']:g} | {p['bpp']:.4f} | {p['psnr']:.2f} | "
                         f"{p['ms_ssim']:.4f} | {p['encode_s']:.3f} | {p['decode_s']:.3f} |")
    table = data["bd_rate"]
    lines += ["", "### BD-rate (negative: fewer bits for the same quality)", ""]
    for metric, label in (("psnr", "PSNR"), ("ms_ssim_db", "MS-SSIM (dB)")):
        anchors = [a for a in table.get(metric, {})]
        if not anchors:
            continue
        lines += [f"{label}:", "", "| codec | " + " | ".join(f"vs {a}" for a in anchors) + " |",
                  "| --- |" + " --- |" * len(anchors)]
        for codec in avg:
            cells = []
            for a in anchors:
                v = table[metric][a].get(codec)
                cells.append("-" if codec == a else ("n/a" if v is None or v != v else f"{v:+.1f}%"))
            lines.append(f"| {codec} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Codec settings:", ""]
    for codec, meta in data["codecs"].items():
        lines.append(f"- **{codec}**: " + ", ".join(f"{k} {v}" for k, v in meta["settings"].items()))
    return "\n".join(lines) + "\n"


def speed_markdown(s: dict) -> str:
    return "\n".join([
        "## Speed and memory (Kodak, quality 4)", "",
        "| measure | value |", "| --- | --- |",
        f"| in-process encode, median per image (model loaded) | {s['encode_s']:.3f} s ({s['encode_mp_per_s']:.2f} MP/s) |",
        f"| in-process decode, median per image (model loaded) | {s['decode_s']:.3f} s ({s['decode_mp_per_s']:.2f} MP/s) |",
        f"| `lcodec encode` command, {s['command_image']} (median of 3) | {s['command_encode_s']:.2f} s, peak RSS {s['command_encode_rss_mb']:.0f} MiB |",
        f"| `lcodec decode` command, {s['command_image']} (median of 3) | {s['command_decode_s']:.2f} s, peak RSS {s['command_decode_rss_mb']:.0f} MiB |",
        f"| `lcodec --help` (no torch import) | {s['help_s']:.2f} s |", ""])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kodak", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--sizes", default="4,16,50", help="megapixels of the large-image test")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: rd,speed,scaling")
    ap.add_argument("--refresh-classical", action="store_true",
                    help="re-run the classical codecs even if bench/classical.json matches")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    bench = args.out / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    started = time.time()
    parts = []
    if "rd" not in skip:
        data, missing = rate_distortion(args.kodak, bench, args.jobs, args.refresh_classical)
        parts.append(rd_markdown(data))
        if missing:
            parts.append("Not measured: " + "; ".join(f"{k} ({v})" for k, v in missing.items()) + "\n")
    if "speed" not in skip:
        s = speed(args.kodak, bench)
        (bench / "speed.json").write_text(json.dumps(s, indent=2) + "\n")
        parts.append(speed_markdown(s))
    if "scaling" not in skip:
        from .scaling import run as scaling_run

        parts.append(scaling_run(args.kodak, args.out, tuple(float(v) for v in args.sizes.split(","))))
    from ..weights import find_entry

    entry = find_entry()
    head = ["# Benchmarks", "",
            f"Written by `make bench` (`python -m lcodec.eval.benchmark --kodak {args.kodak} --out {args.out}`) "
            f"on {dt.date.today().isoformat()}, in {round((time.time() - started) / 60)} minutes.", "",
            f"- machine: {machine()}",
            f"- weights: {entry.label} (`{entry.file}`, sha256 {entry.sha256[:16]}...)", ""]
    (args.out / "benchmarks.md").write_text("\n".join(head) + "\n" + "\n".join(parts))
    print(f"wrote {args.out / 'benchmarks.md'}")


if __name__ == "__main__":
    main()

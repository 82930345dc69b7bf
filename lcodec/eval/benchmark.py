"""``python -m lcodec.eval.benchmark`` (what ``make bench`` runs): writes ``docs/benchmarks.md``.

Every installed lcodec model family is measured (its newest version, as ``lcodec-<name>``:
``lcodec-hyperprior``, ``lcodec-context``, ...).

1. Rate-distortion on the Kodak images: the lcodec models against JPEG 4:2:0, WebP, AVIF
   (speed 6 and speed 2) and JPEG XL when available, with BD-rates (``docs/bench/results.json``
   and plots), against JPEG, the hyperprior model, WebP and AVIF. Per-image records are
   cached (``bench/classical.json``, ``bench/lcodec-models.json``) and re-used while nothing
   that decides them has changed, so a new set of weights costs only its own sweep.
2. Speed, timed in a Python process of its own: encode/decode seconds per image of each model
   (loaded), with the ratio of each model's times to the hyperprior's, and whole ``lcodec``
   commands with the default model (process start, torch import and weights load included),
   with peak RSS.
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
BASELINE_FAMILY = "hyperprior"  # other lcodec models are compared with this one
DECODE_RATIO_TARGET = 1.5  # issue "context model": decode time at most 1.5x the hyperprior's
BD_RATE_TARGET = -5.0  # issue "context model": BD-rate vs the hyperprior of -5% or better
# ``--effort N`` also measures the default model at encoder effort N (lcodec encode -e). Off by
# default: -e 3 took 54 of the 76 minutes of the 2026-12-02 bench, for 0.1 point of BD-rate.


def installed_models() -> list:
    """The newest version of every installed model family (``ModelEntry``), the default first.

    Families keep the manifest's order otherwise; an entry's eval name is ``lcodec-<name>``.
    """
    from ..weights import find_entry, read_manifest

    newest: dict = {}
    for entry in read_manifest():
        if entry.family not in newest or entry.version > newest[entry.family].version:
            newest[entry.family] = entry
    models = list(newest.values())
    default = find_entry()
    models.sort(key=lambda e: e.family != default.family)  # stable: manifest order otherwise
    return models


def eval_name(entry) -> str:
    return f"lcodec-{entry.name}"


def baseline_model(models: list):
    """The model the others are compared with: the hyperprior family, else the first one."""
    return next((e for e in models if e.family == BASELINE_FAMILY), models[0])


def vector_extensions(flags: set[str]) -> str:
    """The widest SIMD the CPU flags name (``/proc/cpuinfo``), which sets the speed of the
    networks: the same "AMD EPYC" has been seen here with and without AVX-512."""
    if "avx512f" in flags:
        return "AVX-512" + (" with BF16" if "avx512_bf16" in flags else "")
    return "AVX2" if "avx2" in flags else "no AVX2"


def cpu_info() -> tuple[str | None, str | None]:
    """The CPU's model name and widest SIMD (:func:`vector_extensions`) from ``/proc/cpuinfo``;
    None for what it does not say (or where there is no such file)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None, None
    cpu = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")), None)
    flags = next((l.split(":", 1)[1].split() for l in lines if l.startswith("flags")), None)
    return cpu, None if flags is None else vector_extensions(set(flags))


def machine() -> str:
    """One line naming the CPU, its SIMD, the cores this process may use, Python and torch."""
    cpu, simd = cpu_info()
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu or 'unknown CPU'}{f' ({simd})' if simd else ''}, {cores} cores, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def speed(kodak: Path, work: Path, quality: float = 4.0) -> dict:
    """Median in-process seconds per Kodak image of each model, whole-command seconds and
    peak RSS of the default model.

    The top-level ``encode_s`` ... keys are the first (default) model's, as before; ``models``
    holds every model's in-process medians, keyed by model name.
    """
    from ..api import Codec

    models = installed_models()
    codecs = {e.name: Codec("cpu", model=e.name) for e in models}
    files = list_images(kodak)
    enc: dict[str, list[float]] = {e.name: [] for e in models}
    dec: dict[str, list[float]] = {e.name: [] for e in models}
    mp = []
    for path in files:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        for name, codec in codecs.items():  # interleaved, so that load changes hit every model alike
            codec.encode_pixels(pixels, 3, quality)  # warm-up of this shape
            t = time.perf_counter()
            data = codec.encode_pixels(pixels, 3, quality)
            enc[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            codec.decode_pixels(data)
            dec[name].append(time.perf_counter() - t)
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
    per_model = {
        e.name: {"label": e.label, "family": e.family, "file": e.file, "sha256": e.sha256,
                 "encode_s": med(enc[e.name]), "decode_s": med(dec[e.name]),
                 "encode_mp_per_s": med(m / s for m, s in zip(mp, enc[e.name])),
                 "decode_mp_per_s": med(m / s for m, s in zip(mp, dec[e.name]))}
        for e in models}
    base = baseline_model(models)
    for e in models:
        if e.name != base.name:
            for key in ("encode", "decode"):
                per_model[e.name][f"{key}_ratio_vs_{base.name}"] = (
                    per_model[e.name][f"{key}_s"] / per_model[base.name][f"{key}_s"])
    from ..weights import find_entry

    first = per_model[models[0].name]
    return {
        "quality": quality, "images": len(files), "model": models[0].name,
        **{k: first[k] for k in ("encode_s", "decode_s", "encode_mp_per_s", "decode_mp_per_s")},
        "command_encode_s": med(r["seconds"] for r in cmd_enc),
        "command_decode_s": med(r["seconds"] for r in cmd_dec),
        "command_encode_rss_mb": max(r["peak_rss_mb"] for r in cmd_enc),
        "command_decode_rss_mb": max(r["peak_rss_mb"] for r in cmd_dec),
        "help_s": med(helps), "command_image": src.name, "command_model": find_entry().label,
        "baseline": base.name, "models": per_model,
    }




CLASSICAL = ("jpeg", "webp", "avif-s6", "avif-s2", "jxl")
# AVIF speed 2 takes 5-11 s per Kodak image here: a shorter sweep keeps `make bench` short.
SWEEPS = {"avif-s2": [10, 25, 40, 55, 70, 85]}


def speed_in_fresh_process(kodak: Path, work: Path) -> dict:
    """:func:`speed` run in a new Python process, so that nothing the bench did before (the
    rate-distortion part) weighs on its timings: measured inside the bench's process after that
    part, ``grouped`` decoded at 1.62x the hyperprior's time, in a fresh process at 1.33x (same
    machine and weights, session 40 of docs/model-card.md)."""
    code = ("import json, sys; from pathlib import Path; from lcodec.eval.benchmark import speed; "
            "print(json.dumps(speed(Path(sys.argv[1]), Path(sys.argv[2]))))")
    out = subprocess.run([sys.executable, "-c", code, str(kodak), str(work)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "fresh_process": True}


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


def rd_anchors(models: list) -> tuple[str, ...]:
    """BD-rate anchors: JPEG, the baseline lcodec model, WebP, AVIF speed 6 and speed 2."""
    return (ANCHORS[0], eval_name(baseline_model(models)), *ANCHORS[1:])


def sources_digest(root: Path) -> str:
    """sha256 (16 hex digits) of the coding sources under package folder ``root``: every
    ``*.py`` outside ``eval/`` and ``train/``, with its relative path."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0] in ("eval", "train"):
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def coding_fingerprint() -> dict:
    """What, besides the weights, decides lcodec's files and decoded pixels on this machine:
    the package's coding sources (:func:`sources_digest`), the versions of the libraries the
    coding path computes with, and the CPU's vector extensions (floats may round differently
    with another SIMD width)."""
    from importlib import metadata

    import torch

    return {"sources_sha256": sources_digest(Path(__file__).resolve().parent.parent),
            "torch": torch.__version__, "numpy": np.__version__,
            "constriction": metadata.version("constriction"),
            "simd": cpu_info()[1] or platform.machine()}


def model_results(kodak: Path, bench: Path, names: list[str], jobs: int,
                  refresh: bool) -> tuple[list, dict, dict[str, str]]:
    """Per-image records of the lcodec models ``names``, each cached in ``bench/lcodec-models.json``.

    A model's records are re-used while its key matches: the image list, its settings (model,
    weights sha256, effort, lcodec version), its sweep and :func:`coding_fingerprint`. So a
    ``make bench`` after a weights change measures only the new weights, and any change to the
    coding sources, libraries or CPU measures every model again. The re-used records keep the
    seconds of the run that measured them. Returns (records, codec metadata, {re-used name: date}).
    """
    from .classical import make_codec
    from .runner import json_safe, run_eval

    cache = bench / "lcodec-models.json"
    saved = json.loads(cache.read_text()) if cache.exists() and not refresh else {}
    images = [p.name for p in list_images(kodak)]
    fingerprint = coding_fingerprint()
    codecs = [make_codec(name) for name in names]
    keys = {c.name: json_safe({"images": images, "settings": c.settings,
                               "qualities": list(c.qualities), "coding": fingerprint}) for c in codecs}
    todo = [c for c in codecs if saved.get(c.name, {}).get("key") != keys[c.name]]
    if todo:
        data = run_eval(kodak, todo, None, None, jobs, progress=sys.stderr.isatty(), plots=False)
        records = json_safe(data["per_image"])
        for c in todo:
            saved[c.name] = {"key": keys[c.name], "date": dt.date.today().isoformat(),
                             "codec": json_safe(data["codecs"][c.name]),
                             "per_image": [r for r in records if r["codec"] == c.name]}
        cache.write_text(json.dumps(saved, indent=1) + "\n")
    per_image = [r for c in codecs for r in saved[c.name]["per_image"]]
    reused = {c.name: saved[c.name]["date"] for c in codecs if c not in todo}
    return per_image, {c.name: saved[c.name]["codec"] for c in codecs}, reused


def rate_distortion(kodak: Path, bench: Path, jobs: int, refresh: bool,
                    models: list | None = None, refresh_models: bool = False,
                    effort: int | None = None) -> tuple[dict, dict]:
    """The sweep of every lcodec model plus the classical codecs, both cached: results.json,
    plots, BD-rates."""
    from .plots import write_plots
    from .runner import (CONVENTIONS, SCHEMA, average_records, bd_rate_table, image_entries,
                         write_results)

    models = models or installed_models()
    names = [eval_name(e) for e in models]
    if effort and effort > 1:
        names.append(f"{eval_name(models[0])}@e{effort}")
    per_image, codecs, missing = classical_results(kodak, bench, jobs, refresh)
    mine, mine_codecs, reused = model_results(kodak, bench, names, jobs, refresh_models)
    per_image = mine + list(per_image)
    codecs = {**mine_codecs, **codecs}
    average = average_records(per_image)
    order = [*names, *CLASSICAL]
    average = {k: average[k] for k in order if k in average}
    data = {"schema": SCHEMA, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "image_set": "Kodak", "images_dir": str(kodak),
            "images": image_entries(list_images(kodak), per_image), "conventions": CONVENTIONS,
            "jobs": jobs, "reused": reused,
            "platform": {"python": platform.python_version(), "machine": platform.machine(), "cpu": machine()}, "codecs": codecs,
            "per_image": per_image, "average": average, "baseline": eval_name(baseline_model(models)),
            "bd_rate": bd_rate_table(average, rd_anchors(models))}
    data["plots"] = [p.name for p in write_plots(data, bench)]
    write_results(data, bench / "results.json")
    return data, missing


def _pct(v) -> str:
    return "n/a" if v is None or v != v else f"{v:+.1f}%"


def reused_lines(reused: dict[str, str]) -> list[str]:
    """A paragraph naming the lcodec models whose records came from an earlier bench."""
    if not reused:
        return []
    named = ", ".join(f"{name} ({date})" for name, date in reused.items())
    return [f"Re-used from an earlier `make bench` (same weights, coding sources, libraries and CPU "
            f"extensions, so the same files; their seconds are from that run): {named}. "
            "`--refresh-models` measures them again.", ""]


def rd_markdown(data: dict) -> str:
    avg = data["average"]
    n_images = len(data.get("images", [])) or 24
    lines = [f"## Rate-distortion on Kodak ({n_images} images)", "",
             "bpp counts the whole file; PSNR on 8-bit RGB and MS-SSIM (RGB) per image, averaged "
             f"over the {n_images} images at each setting. `lcodec-<model>` is lcodec with that "
             "model (newest version of each installed family); `@e<N>` marks encoder effort N "
             "(`lcodec encode -e N`: latent refinement, same decoder).", "",
             "![RD curves, PSNR](bench/rd_psnr.png)", "", "![RD curves, MS-SSIM](bench/rd_msssim.png)", "",
             *reused_lines(data.get("reused", {})),
             "| codec | setting | bpp | PSNR (dB) | MS-SSIM | encode s | decode s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for codec, points in avg.items():
        for p in points:
            lines.append(f"| {codec} | {p['quality']:g} | {p['bpp']:.4f} | {p['psnr']:.2f} | "
                         f"{p['ms_ssim']:.4f} | {p['encode_s']:.3f} | {p['decode_s']:.3f} |")
    table = data["bd_rate"]
    lines += ["", "### BD-rate (negative: fewer bits for the same quality)", ""]
    base = data.get("baseline")
    if base and base in table.get("psnr", {}):
        others = [c for c in avg if c.startswith("lcodec-") and c != base]
        for codec in others:
            lines.append(f"- {codec} vs {base}: PSNR {_pct(table['psnr'][base].get(codec))}, MS-SSIM "
                         f"{_pct(table.get('ms_ssim_db', {}).get(base, {}).get(codec))} "
                         f"(target <= {BD_RATE_TARGET:+.0f}%)")
        if others:
            lines.append("")
    for metric, label in (("psnr", "PSNR"), ("ms_ssim_db", "MS-SSIM (dB)")):
        anchors = [a for a in table.get(metric, {})]
        if not anchors:
            continue
        lines += [f"{label}:", "", "| codec | " + " | ".join(f"vs {a}" for a in anchors) + " |",
                  "| --- |" + " --- |" * len(anchors)]
        for codec in avg:
            cells = ["-" if codec == a else _pct(table[metric][a].get(codec)) for a in anchors]
            lines.append(f"| {codec} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += gap_markdown(avg)
    lines += ["Codec settings:", ""]
    for codec, meta in data["codecs"].items():
        lines.append(f"- **{codec}**: " + ", ".join(f"{k} {v}" for k, v in meta["settings"].items()))
    return "\n".join(lines) + "\n"


def gap_markdown(avg: dict) -> list[str]:
    """Lines of the table that shows where the default lcodec model's BD-rates come from: at
    each of its settings, its PSNR minus each classical codec's at the same bpp."""
    from .runner import quality_gap_table

    mine = [c for c in avg if c.startswith("lcodec-") and "@" not in c]
    anchors = [c for c in avg if not c.startswith("lcodec-")]
    if not mine or not anchors:
        return []
    rows = quality_gap_table(avg, mine[0], anchors)
    lines = [f"### Where the difference is: {mine[0]}'s PSNR minus each codec's at the same bpp", "",
             "Positive: lcodec is sharper at that bitrate. Each codec's curve is interpolated as "
             "for BD-PSNR; n/a is outside its bitrate range.", "",
             "| setting | bpp | PSNR (dB) | " + " | ".join(f"vs {a}" for a in anchors) + " |",
             "| --- | --- | --- |" + " --- |" * len(anchors)]
    for r in rows:
        cells = ["n/a" if g != g else f"{g:+.2f} dB" for g in (r["gaps"][a] for a in anchors)]
        lines.append(f"| {r['quality']:g} | {r['bpp']:.4f} | {r['psnr']:.2f} | " + " | ".join(cells) + " |")
    return lines + [""]


def speed_markdown(s: dict) -> str:
    """The speed section; ``s`` as written by :func:`speed` (an older dict without ``models``
    shows its single model)."""
    models = s.get("models") or {s.get("model"): {
        k: s[k] for k in ("encode_s", "decode_s", "encode_mp_per_s", "decode_mp_per_s")}}
    lines = [f"## Speed and memory (Kodak, quality {s['quality']:g})", ""]
    if s.get("fresh_process"):
        lines += ["Timed in a Python process of their own, started after the rate-distortion part: "
                  "per image a warm-up encode, then a timed encode and a timed decode of each model "
                  "in turn (median over the images).", ""]
    lines += ["| measure | value |", "| --- | --- |"]
    for name, m in models.items():
        label = (f"lcodec-{name}" if name else "lcodec") + (f" ({m['label']})" if m.get("label") else "")
        lines += [
            f"| {label}: in-process encode, median per image (model loaded) | {m['encode_s']:.3f} s "
            f"({m['encode_mp_per_s']:.2f} MP/s) |",
            f"| {label}: in-process decode, median per image (model loaded) | {m['decode_s']:.3f} s "
            f"({m['decode_mp_per_s']:.2f} MP/s) |"]
    model = f" (default model, {s['command_model']})" if s.get("command_model") else ""
    lines += [
        f"| `lcodec encode` command{model}, {s['command_image']} (median of 3) | {s['command_encode_s']:.2f} s, peak RSS {s['command_encode_rss_mb']:.0f} MiB |",
        f"| `lcodec decode` command{model}, {s['command_image']} (median of 3) | {s['command_decode_s']:.2f} s, peak RSS {s['command_decode_rss_mb']:.0f} MiB |",
        f"| `lcodec --help` (no torch import) | {s['help_s']:.2f} s |", ""]
    base = s.get("baseline")
    if base in models and len(models) > 1:
        for name, m in models.items():
            if name == base:
                continue
            dec = m["decode_s"] / models[base]["decode_s"]
            enc = m["encode_s"] / models[base]["encode_s"]
            lines += [f"{name} decode time / {base} decode time: {dec:.2f}x "
                      f"(target <= {DECODE_RATIO_TARGET:g}x)", "",
                      f"{name} encode time / {base} encode time: {enc:.2f}x", ""]
    return "\n".join(lines)


def campaign_markdown(entries: list[dict], bench: Path) -> str:
    """The weights campaign's history (``bench/campaign.json``, written by
    ``python -m lcodec.train.kodak_probe --record``): estimated Kodak BD-rates per checkpoint."""
    from .plots import write_campaign_plot

    lines = ["## Weights campaign (hyperprior checkpoints)", "",
             "Kodak BD-rate (PSNR) of training checkpoints, estimated from the likelihoods by "
             "`python -m lcodec.train.kodak_probe` (within ~1% of real files; the tables above are "
             "real files), against the classical codecs above, over cumulative training CPU-hours.", ""]
    if write_campaign_plot(entries, bench / "campaign.png"):
        lines += ["![BD-rate over CPU-hours](bench/campaign.png)", ""]
    codecs = [c for c in ("jpeg", "webp", "avif-s6", "avif-s2") if any(c in e["bd_rate_pct"] for e in entries)]
    lines += ["| checkpoint | date | steps | CPU-hours | " + " | ".join(f"vs {c}" for c in codecs) + " |",
              "| --- | --- | --- | --- |" + " --- |" * len(codecs)]
    for e in entries:
        cells = [f"{e['bd_rate_pct'][c]:+.1f}%" if c in e["bd_rate_pct"] else "-" for c in codecs]
        lines.append(f"| {e['label']} | {e['date']} | {e['steps']} | {e['cpu_hours']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kodak", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--sizes", default="4,16,50", help="megapixels of the large-image test")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: rd,speed,scaling")
    ap.add_argument("--refresh-classical", action="store_true",
                    help="re-run the classical codecs even if bench/classical.json matches")
    ap.add_argument("--effort", type=int, default=None,
                    help="also measure the default model at this encoder effort (2..7; slow)")
    ap.add_argument("--refresh-models", action="store_true",
                    help="re-run every lcodec model even if bench/lcodec-models.json matches")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    bench = args.out / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    started = time.time()
    models = installed_models()
    parts = []
    if "rd" not in skip:
        data, missing = rate_distortion(args.kodak, bench, args.jobs, args.refresh_classical, models,
                                        args.refresh_models, args.effort)
        parts.append(rd_markdown(data))
        if missing:
            parts.append("Not measured: " + "; ".join(f"{k} ({v})" for k, v in missing.items()) + "\n")
    if "speed" not in skip:
        s = speed_in_fresh_process(args.kodak, bench)
        (bench / "speed.json").write_text(json.dumps(s, indent=2) + "\n")
        parts.append(speed_markdown(s))
    campaign = bench / "campaign.json"
    if campaign.exists():
        parts.append(campaign_markdown(json.loads(campaign.read_text()), bench))
    if "scaling" not in skip:
        from .scaling import run as scaling_run

        parts.append(scaling_run(args.kodak, args.out, tuple(float(v) for v in args.sizes.split(","))))
    if not {"rd", "speed"} - skip:  # no model measured: name the default one
        from ..weights import find_entry

        models = [find_entry()]
    weights = "; ".join(f"{e.label} (`{e.file}`, sha256 {e.sha256[:16]}...)" for e in models)
    head = ["# Benchmarks", "",
            f"Written by `make bench` (`python -m lcodec.eval.benchmark --kodak {args.kodak} --out {args.out}`) "
            f"on {dt.date.today().isoformat()}, in {round((time.time() - started) / 60)} minutes.", "",
            f"- machine: {machine()}",
            f"- weights: {weights}", ""]
    (args.out / "benchmarks.md").write_text("\n".join(head) + "\n" + "\n".join(parts))
    print(f"wrote {args.out / 'benchmarks.md'}")


if __name__ == "__main__":
    main()

"""Rate-distortion runs: encode a folder of images with several codecs and measure.

``run_eval`` encodes every image with every codec over its quality sweep,
decodes, and records whole-file bytes, bpp = 8*bytes/(w*h), PSNR (8-bit RGB),
MS-SSIM (RGB) and encode/decode seconds; it averages per-image values over the
images for each quality point, computes BD-rate tables and writes
``results.json``. Also text formatting of the RD and BD-rate tables.

Depends on numpy, Pillow, tqdm and the other ``lcodec.eval`` modules; lcodec
itself is only reached through ``lcodec.api`` (inside ``classical``), never torch.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from lcodec.eval.bdrate import bd_rate, quality_at_rates
from lcodec.eval.classical import EvalCodec, make_codec
from lcodec.eval.images import EvalError, as_array, list_images, load_rgb
from lcodec.eval.metrics import ms_ssim, ms_ssim_db, mse, psnr_from_mse

SCHEMA = "lcodec-eval/1"
DEFAULT_ANCHORS: tuple[str, ...] = ("jpeg", "lcodec")
BD_METRICS: tuple[str, ...] = ("psnr", "ms_ssim_db")
"""Distortion keys used for BD-rate: PSNR in dB and MS-SSIM in dB (-10*log10(1-x))."""


def measure(codec: EvalCodec, img: Image.Image, quality: float, image_name: str = "") -> dict[str, Any]:
    """Encode and decode one image at one quality; return the per-image record.

    A codec's optional ``warmup()`` (lcodec: load the model) runs before timing.
    """
    warmup = getattr(codec, "warmup", None)
    if callable(warmup):
        warmup()
    original = as_array(img)
    height, width = original.shape[:2]
    start = time.perf_counter()
    data = codec.encode(img, quality)
    encoded = time.perf_counter()
    decoded_img = codec.decode(data)
    decoded = time.perf_counter()
    recon = as_array(decoded_img)
    if recon.shape != original.shape:
        raise EvalError(
            f"{codec.name} decoded {image_name or 'image'} to size {recon.shape[1]}x{recon.shape[0]}, "
            f"expected {width}x{height}"
        )
    err = mse(original, recon)
    return {
        "image": image_name,
        "codec": codec.name,
        "quality": quality,
        "width": width,
        "height": height,
        "bytes": len(data),
        "bpp": 8.0 * len(data) / (width * height),
        "mse": err,
        "psnr": psnr_from_mse(err),
        "ms_ssim": ms_ssim(original, recon),
        "encode_s": encoded - start,
        "decode_s": decoded - encoded,
    }


# --------------------------------------------------------------------------- workers

_WORKER_CODECS: dict[str, EvalCodec] = {}


def _init_worker(slot_counter: Any = None, cpus: Sequence[int] = ()) -> None:
    """Process-pool initializer: one compute thread per worker.

    Thread-count variables are set before torch is imported in the fresh (spawned)
    process, and when there are at least as many usable CPUs as workers each
    worker is pinned to its own CPU, so libraries that size their thread pools
    from the CPU affinity (torch via ``lcodec.device``, libavif) use one thread.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    _WORKER_CODECS.clear()
    if slot_counter is not None and cpus and hasattr(os, "sched_setaffinity"):
        with slot_counter.get_lock():
            slot = slot_counter.value
            slot_counter.value += 1
        try:
            os.sched_setaffinity(0, {cpus[slot % len(cpus)]})
        except OSError:  # pragma: no cover - affinity not permitted here
            pass


def _usable_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return []  # pragma: no cover - not Linux


def _run_task(codec: EvalCodec, image_path: str, qualities: Sequence[float]) -> list[dict[str, Any]]:
    """All quality points of one (image, codec) pair; in a worker the codec is cached."""
    cached = _WORKER_CODECS.setdefault(codec.name, codec)
    img = load_rgb(image_path)
    name = Path(image_path).name
    return [measure(cached, img, q, name) for q in qualities]


# --------------------------------------------------------------------------- averaging / BD


def average_records(records: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per codec, per quality point: per-image values averaged over the images."""
    groups: dict[str, dict[float, list[Mapping[str, Any]]]] = {}
    for rec in records:
        groups.setdefault(rec["codec"], {}).setdefault(rec["quality"], []).append(rec)
    out: dict[str, list[dict[str, Any]]] = {}
    for codec, by_q in groups.items():
        points = []
        for quality in sorted(by_q):
            recs = by_q[quality]
            n = len(recs)

            def mean(key: str, recs: list[Mapping[str, Any]] = recs, n: int = n) -> float:
                return sum(float(r[key]) for r in recs) / n

            msssim = mean("ms_ssim")
            points.append(
                {
                    "quality": quality,
                    "n_images": n,
                    "bytes": mean("bytes"),
                    "bpp": mean("bpp"),
                    "psnr": mean("psnr"),
                    "ms_ssim": msssim,
                    "ms_ssim_db": ms_ssim_db(msssim),
                    "encode_s": mean("encode_s"),
                    "decode_s": mean("decode_s"),
                }
            )
        out[codec] = points
    return out


def _curve_bd_rate(anchor: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]], key: str) -> float:
    try:
        return bd_rate(
            [p["bpp"] for p in anchor], [p[key] for p in anchor], [p["bpp"] for p in test], [p[key] for p in test]
        )
    except ValueError:
        return math.nan


def bd_rate_table(
    average: Mapping[str, Sequence[Mapping[str, Any]]], anchors: Sequence[str] = DEFAULT_ANCHORS
) -> dict[str, dict[str, dict[str, float]]]:
    """``{metric: {anchor: {codec: BD-rate %}}}`` for metrics psnr and ms_ssim_db.

    Anchors that were not run are left out; a codec against itself is omitted;
    nan means the curves do not overlap (or a curve has < 2 distinct points).
    """
    table: dict[str, dict[str, dict[str, float]]] = {}
    for key in BD_METRICS:
        table[key] = {}
        for anchor in anchors:
            if anchor not in average:
                continue
            table[key][anchor] = {
                codec: _curve_bd_rate(average[anchor], points, key)
                for codec, points in average.items()
                if codec != anchor
            }
    return table


def quality_gap_table(
    average: Mapping[str, Sequence[Mapping[str, Any]]], codec: str, anchors: Sequence[str], key: str = "psnr"
) -> list[dict[str, Any]]:
    """Where ``codec`` gains or loses against each anchor, setting by setting: one row per
    point of ``codec`` (``quality``, ``bpp``, ``key``) with ``gaps = {anchor: codec's quality
    minus the anchor's at the same bpp}`` (the anchor's curve interpolated as in BD-PSNR;
    ``nan`` outside its bpp range). Anchors that were not run are left out.

    BD-rate averages over the whole overlap; this shows which end of the curve the average
    comes from.
    """
    points = sorted(average[codec], key=lambda p: float(p["bpp"]))
    rates = [float(p["bpp"]) for p in points]
    at: dict[str, list[float]] = {}
    for anchor in anchors:
        if anchor == codec or anchor not in average:
            continue
        ref = average[anchor]
        try:
            at[anchor] = quality_at_rates([p["bpp"] for p in ref], [p[key] for p in ref], rates)
        except ValueError:
            at[anchor] = [math.nan] * len(rates)
    return [
        {"quality": p["quality"], "bpp": float(p["bpp"]), key: float(p[key]),
         "gaps": {a: float(p[key]) - v[i] for a, v in at.items()}}
        for i, p in enumerate(points)
    ]


def _fmt(value: float | None, spec: str = "+.1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def format_bd_table(table: Mapping[str, Mapping[str, Mapping[str, float]]], codecs: Sequence[str]) -> str:
    """Plain-text BD-rate table: one row per codec, PSNR and MS-SSIM columns per anchor."""
    anchors = list(table.get("psnr", {}))
    if not anchors:
        return "BD-rate: no anchor codec (jpeg or lcodec) in this run"
    headers = ["codec"]
    for anchor in anchors:
        headers += [f"vs {anchor} PSNR", f"vs {anchor} MS-SSIM"]
    rows = []
    for codec in codecs:
        row = [codec]
        for anchor in anchors:
            for key in BD_METRICS:
                row.append("-" if codec == anchor else _fmt(table[key][anchor].get(codec)))
        rows.append(row)
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "BD-rate in % (negative: fewer bits than the anchor for the same quality; n/a: no overlap)",
        "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths))),
    ]
    for row in rows:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def format_rd_table(average: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Plain-text table of the averaged RD points of every codec."""
    width = max([8] + [len(codec) for codec in average])
    lines = [f"{'codec':<{width}} {'quality':>7} {'bpp':>7} {'PSNR':>7} {'MS-SSIM':>8} {'enc s':>7} {'dec s':>7}"]
    for codec, points in average.items():
        for p in points:
            lines.append(
                f"{codec:<{width}} {p['quality']:>7g} {p['bpp']:>7.3f} {p['psnr']:>7.2f} {p['ms_ssim']:>8.4f} "
                f"{p['encode_s']:>7.3f} {p['decode_s']:>7.3f}"
            )
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """Recursively replace nan/inf floats by None so the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------- main entry


CONVENTIONS = {
    "bpp": "8 * whole-file bytes / (width * height)",
    "psnr": "8-bit RGB, one MSE over all channels, per image; capped at 100 dB",
    "ms_ssim": "RGB, per channel then averaged (lcodec.eval.metrics)",
    "average": "per-image values averaged over the images at each quality point",
    "ms_ssim_db": "-10*log10(1 - average MS-SSIM)",
    "bd_rate": "percent, PCHIP of log-rate vs distortion over the overlap, exact integral",
}


def image_entries(files: Sequence[Path], per_image: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``results.json``'s image list: each file's name, with its size when a record gives it."""
    sizes = {rec["image"]: (rec["width"], rec["height"]) for rec in per_image}
    entries: list[dict[str, Any]] = []
    for path in files:
        entry: dict[str, Any] = {"name": path.name}
        if path.name in sizes:
            entry["width"], entry["height"] = sizes[path.name]
        entries.append(entry)
    return entries


def run_eval(
    images_dir: str | Path,
    codecs: Sequence[str | EvalCodec],
    qualities: Mapping[str, Sequence[float]] | None = None,
    out_dir: str | Path | None = None,
    jobs: int = 1,
    progress: bool = True,
    *,
    anchors: Sequence[str] = DEFAULT_ANCHORS,
    image_set: str | None = None,
    limit: int | None = None,
    plots: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run the RD evaluation and return (and, with ``out_dir``, write) the results.

    Args:
        images_dir: folder of images (png/jpg/...; alpha dropped, converted to RGB).
        codecs: codec names (``"lcodec"``, ``"lcodec-<model>"``, ``"jpeg"``, ``"webp"``,
            ``"avif"``/``"avif-s6"``, ``"avif-s2"``, ``"jxl"``) or codec objects.
        qualities: optional ``{codec name: sweep}`` overriding the default sweeps.
        out_dir: where ``results.json`` (and plots) go; None writes nothing.
        jobs: > 1 runs (image, codec) pairs in a spawn process pool; every worker
            builds its own codecs (lcodec loads its model once per worker) and uses
            one thread. Results equal the sequential ones except the timings.
        progress: tqdm bar on stderr.
        anchors: anchors of the BD-rate table.
        image_set: name used in reports and plot titles (default: the folder name).
        limit: only the first ``limit`` images (sorted by name).
        plots: also write ``rd_psnr.png``/``rd_msssim.png`` when matplotlib exists.
        device: device for lcodec when given by name.
    """
    from tqdm import tqdm

    if jobs < 1:
        raise EvalError("--jobs must be at least 1")
    files = list_images(images_dir, limit)
    overrides = dict(qualities or {})
    codec_objs: list[EvalCodec] = []
    for c in codecs:
        obj = make_codec(c, device=device) if isinstance(c, str) else c
        if obj.name in overrides:
            obj.qualities = list(overrides[obj.name])
        if not obj.qualities:
            raise EvalError(f"empty quality sweep for {obj.name}")
        codec_objs.append(obj)
    names = [c.name for c in codec_objs]
    if len(set(names)) != len(names):
        raise EvalError(f"codec listed twice: {', '.join(names)}")

    tasks = [(codec, str(path), tuple(codec.qualities)) for codec in codec_objs for path in files]
    total = sum(len(t[2]) for t in tasks)
    started = time.perf_counter()
    results: list[list[dict[str, Any]]] = [[] for _ in tasks]
    with tqdm(total=total, desc="eval", unit="enc", file=sys.stderr, disable=not progress) as bar:
        if jobs == 1:
            for i, (codec, path, qs) in enumerate(tasks):
                bar.set_postfix_str(f"{codec.name} {Path(path).name}", refresh=False)
                img = load_rgb(path)
                for q in qs:
                    results[i].append(measure(codec, img, q, Path(path).name))
                    bar.update(1)
        else:
            ctx = multiprocessing.get_context("spawn")
            cpus = _usable_cpus()
            pin = cpus if len(cpus) >= jobs else []
            initargs = (ctx.Value("i", 0), pin)
            with ProcessPoolExecutor(
                max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=initargs
            ) as pool:
                futures = {pool.submit(_run_task, *task): i for i, task in enumerate(tasks)}
                for fut in as_completed(futures):
                    i = futures[fut]
                    results[i] = fut.result()
                    bar.set_postfix_str(f"{tasks[i][0].name} {Path(tasks[i][1]).name}", refresh=False)
                    bar.update(len(tasks[i][2]))
    elapsed = time.perf_counter() - started

    per_image = [rec for chunk in results for rec in chunk]
    average = average_records(per_image)
    average = {name: average[name] for name in names if name in average}
    table = bd_rate_table(average, anchors)
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "image_set": image_set or Path(images_dir).resolve().name,
        "images_dir": str(images_dir),
        "images": image_entries(files, per_image),
        "conventions": CONVENTIONS,
        "codecs": {c.name: {"settings": c.settings, "qualities": list(c.qualities)} for c in codec_objs},
        "jobs": jobs,
        "elapsed_s": elapsed,
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
        "per_image": per_image,
        "average": average,
        "bd_rate": table,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if plots:
            from lcodec.eval.plots import write_plots

            data["plots"] = [p.name for p in write_plots(data, out)]
        write_results(data, out / "results.json")
    return data


def write_results(data: Mapping[str, Any], path: str | Path) -> None:
    """Write results as standard JSON (nan/inf become null)."""
    Path(path).write_text(json.dumps(json_safe(data), indent=1, sort_keys=False) + "\n", encoding="utf-8")

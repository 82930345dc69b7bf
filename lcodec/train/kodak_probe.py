"""A quick rate-distortion probe of a training checkpoint on a test image set (Kodak).

``python -m lcodec.train.kodak_probe CHECKPOINT [--kodak DIR] [--classical docs/bench/classical.json]
[--ceiling] [--record docs/bench/campaign.json --label TEXT --prior-cpu-hours H]``

Estimates, per quality level, the average bpp (the likelihoods' bits of ``y`` and ``z``, with
a ``context`` model's parameters for its non-anchors: within about 0.5% of real range coding
plus the container's ~60 bytes) and PSNR (8-bit
RGB, rounded latents, as the decoder sees them) over every image, and the BD-rate of those
points against the classical codecs cached by ``make bench``. It takes 2-5 minutes on two
cores (a ``grouped`` checkpoint, 2026-12-02), against ~25 for a full ``make bench``, so
training runs and recipe comparisons can be judged on the real test set without exporting
weights. Shipping decisions still use ``make bench``.

``--ceiling`` also reports, per level, the PSNR of the synthesis of the *unrounded* latents:
what the transforms could give with unlimited bits. When it is flat across the levels the
top of the curve is held down by the transforms' capacity, not by the rate.

``--record`` appends the result, with the checkpoint's steps and CPU-hours (plus
``--prior-cpu-hours`` spent before the run it was resumed or initialized from), to the
weights campaign's history, which ``make bench`` plots as BD-rate against CPU-hours.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from ..eval.bdrate import bd_rate
from ..models import build_model
from ..models.entropy_models import gaussian_likelihood
from .data import list_images, load_rgb


@torch.no_grad()
def probe(model: torch.nn.Module, images: list[np.ndarray],
          levels: tuple[float, ...] = (1, 2, 3, 4, 5, 6, 7, 8), ceiling: bool = False) -> list[dict]:
    """Average estimated bpp and PSNR per quality level; with ``ceiling`` also
    ``psnr_unquantized``, the PSNR of the synthesis of the unrounded latents."""
    model.eval()
    device = next(model.parameters()).device
    points = []
    for q in levels:
        bpps, psnrs, ceilings = [], [], []
        for im in images:
            h, w = im.shape[:2]
            ph, pw = -(-h // 64) * 64, -(-w // 64) * 64
            padded = np.pad(im, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
            x = torch.from_numpy(padded).permute(2, 0, 1)[None].float().to(device) / 255
            y = model.analysis(x.contiguous(memory_format=torch.channels_last), q)
            bpp, psnr = rounded_point(model, y, im, q)
            bpps.append(bpp)
            psnrs.append(psnr)
            if ceiling:
                ceilings.append(synthesis_psnr(model.synthesis(y, q), im))
        point = {"quality": q, "bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs))}
        if ceiling:
            point["psnr_unquantized"] = float(np.mean(ceilings))
        points.append(point)
    return points


@torch.no_grad()
def rounded_point(model: torch.nn.Module, y: torch.Tensor, im: np.ndarray,
                  quality: float) -> tuple[float, float]:
    """``(bpp, psnr)`` of the latent ``y`` of the 8-bit image ``im`` (``y`` may cover it padded)
    rounded around the hyperprior's means, as the codec rounds it: the bits the model's
    densities estimate for ``y`` and ``z``, the PSNR of the synthesis."""
    h, w = im.shape[:2]
    z = torch.round(model.hyper_analysis(y, quality=quality))
    means, scales = model.entropy_params(y, model.h_s(z))
    y_q = torch.round(y - means)
    bits = -(gaussian_likelihood(y_q, scales).log2().sum() + model.z_density.likelihood(z).log2().sum())
    return float(bits) / (h * w), synthesis_psnr(model.synthesis(y_q + means, quality), im)


def synthesis_psnr(x_hat: torch.Tensor, im: np.ndarray) -> float:
    """PSNR of a padded synthesis output against the 8-bit image ``im``, cropped and rounded."""
    h, w = im.shape[:2]
    x8 = torch.round(x_hat[0, :, :h, :w].clamp(0, 1) * 255).permute(1, 2, 0).cpu().numpy()
    mse = float(np.mean((x8 - im.astype(np.float64)) ** 2))
    return 10 * math.log10(255 ** 2 / max(mse, 1e-10))


def classical_curves(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Average (bpp, PSNR) per setting of each codec in ``make bench``'s cache."""
    per_image = json.loads(path.read_text())["per_image"]
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in per_image:
        groups.setdefault((r["codec"], r["quality"]), []).append(r)
    curves: dict[str, list[tuple[float, float]]] = {}
    for (codec, _), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        curves.setdefault(codec, []).append((float(np.mean([r["bpp"] for r in rs])),
                                             float(np.mean([r["psnr"] for r in rs]))))
    return curves


def load_checkpoint_model(path: Path) -> torch.nn.Module:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    config = json.loads(ck["config_json"])
    model = build_model(config.pop("family"), **config)
    model.load_state_dict(ck["model"])
    return model


def record_result(history: Path, checkpoint: Path, label: str, prior_cpu_hours: float,
                  result: dict) -> None:
    """Append a probe result to the campaign history ``history`` (a JSON list)."""
    import datetime as dt

    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = json.loads(ck.get("state_json", "{}"))
    entries = json.loads(history.read_text()) if history.exists() else []
    entry = {"label": label, "date": dt.date.today().isoformat(), "steps": state.get("step"),
             "cpu_hours": round(state.get("cpu_seconds", 0.0) / 3600 + prior_cpu_hours, 3)}
    if "gpu_seconds" in state:  # a run (partly) trained on a GPU
        entry["gpu_hours"] = round(state["gpu_seconds"] / 3600, 3)
    entries.append({**entry, "images": result["images"], "points": result["points"],
                    "bd_rate_pct": result["bd_rate_pct"]})
    history.write_text(json.dumps(entries, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--classical", type=Path, default=Path("docs/bench/classical.json"))
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--ceiling", action="store_true",
                    help="also the PSNR of the unrounded latents per level (the transforms' ceiling)")
    ap.add_argument("--record", type=Path, help="append the result to this campaign history (JSON)")
    ap.add_argument("--label", default="", help="what the recorded checkpoint is")
    ap.add_argument("--prior-cpu-hours", type=float, default=0.0,
                    help="CPU-hours spent before the checkpoint's own run history")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = ap.parse_args(argv)
    from ..device import select_device
    from ..errors import DeviceError

    try:
        device = select_device(args.device).torch()
    except DeviceError as exc:
        ap.error(str(exc))
    model = load_checkpoint_model(args.checkpoint).to(device)
    images = [load_rgb(p) for p in list_images(args.kodak)]
    points = probe(model, images, ceiling=args.ceiling)
    rates = [p["bpp"] for p in points]
    dists = [p["psnr"] for p in points]
    bd = {}
    if args.classical.exists():
        for codec, curve in classical_curves(args.classical).items():
            bd[codec] = bd_rate([c[0] for c in curve], [c[1] for c in curve], rates, dists)
    result = {"checkpoint": str(args.checkpoint), "images": len(images), "points": points,
              "bd_rate_pct": bd}
    if args.record:
        record_result(args.record, args.checkpoint, args.label, args.prior_cpu_hours, result)
    if args.json:
        print(json.dumps(result))
        return
    for p in points:
        ceiling = f" (unrounded latents: {p['psnr_unquantized']:.2f} dB)" if args.ceiling else ""
        print(f"q{p['quality']:g}: {p['bpp']:.4f} bpp, {p['psnr']:.2f} dB{ceiling}")
    for codec, v in bd.items():
        print(f"BD-rate vs {codec}: {v:+.1f}%")


if __name__ == "__main__":
    main()

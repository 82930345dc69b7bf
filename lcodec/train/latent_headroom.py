"""How much better a model's synthesis decodes when the latents are chosen per image instead
of by the analysis transform: the encoder's share of a model's ceiling.

``python -m lcodec.train.latent_headroom CHECKPOINT [--kodak DIR] [--quality 8] [--steps 400]
[--crop 256]``

For the centre crop of each image, the latent ``y`` of one quality starts at the analysis'
output and is then moved by Adam to minimize the synthesis' squared error alone (no rate
term; the decoder and its gains stay fixed). Reported per image and on average, before and
after: the PSNR of the synthesis of the unrounded latent, and the estimated bpp and PSNR of
the latent rounded as the codec rounds it (around the hyperprior's means). A gain here is
reachable without touching the decoder (a better analysis, or per-image refinement), at the
rate the moved latent costs; the same test with the synthesis also free would bound the
decoder instead.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from .data import list_images, load_rgb
from .kodak_probe import load_checkpoint_model, rounded_point, synthesis_psnr


def optimize_latent(model: torch.nn.Module, x: torch.Tensor, quality: float, steps: int,
                    lr: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """The analysis' latent of ``x`` and the latent after ``steps`` Adam steps on the
    synthesis' squared error (``lr`` for the first half, a quarter of it after)."""
    with torch.no_grad():
        y0 = model.analysis(x, quality)
    y = y0.clone().requires_grad_(True)
    opt = torch.optim.Adam([y], lr=lr)
    for step in range(steps):
        if step == steps // 2:
            for group in opt.param_groups:
                group["lr"] = lr / 4
        opt.zero_grad()
        (model.synthesis(y, quality) - x).pow(2).mean().backward()
        opt.step()
    return y0, y.detach()


def headroom(model: torch.nn.Module, images: list[np.ndarray], quality: float, steps: int,
             crop: int = 256) -> list[dict]:
    """One record per image: unrounded PSNR and rounded (bpp, PSNR), before and after."""
    model.eval().requires_grad_(False)
    records = []
    for im in images:
        h, w = im.shape[:2]
        c = min(crop, h, w) // 64 * 64
        if c == 0:
            raise ValueError(f"an image of {w}x{h} has no 64-pixel crop")
        top, left = (h - c) // 2, (w - c) // 2
        part = np.ascontiguousarray(im[top:top + c, left:left + c])
        x = torch.from_numpy(part).permute(2, 0, 1)[None].float() / 255
        y0, y1 = optimize_latent(model, x, quality, steps)
        with torch.no_grad():
            free = [synthesis_psnr(model.synthesis(y, quality), part) for y in (y0, y1)]
        (bpp0, psnr0), (bpp1, psnr1) = (rounded_point(model, y, part, quality) for y in (y0, y1))
        records.append({"unrounded_psnr": free, "bpp": [bpp0, bpp1], "psnr": [psnr0, psnr1]})
    return records


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--quality", type=float, default=8.0)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_checkpoint_model(args.checkpoint)
    records = []
    for path in list_images(args.kodak):
        records += headroom(model, [load_rgb(path)], args.quality, args.steps, args.crop)
        print(json.dumps({"image": path.name, **records[-1]}), flush=True)
    mean = lambda key, i: float(np.mean([r[key][i] for r in records]))  # noqa: E731
    print(f"q{args.quality:g}, {len(records)} crops of {args.crop} px, {args.steps} steps: "
          f"unrounded {mean('unrounded_psnr', 0):.2f} -> {mean('unrounded_psnr', 1):.2f} dB; "
          f"rounded {mean('bpp', 0):.4f} bpp / {mean('psnr', 0):.2f} dB -> "
          f"{mean('bpp', 1):.4f} bpp / {mean('psnr', 1):.2f} dB")


if __name__ == "__main__":
    main()

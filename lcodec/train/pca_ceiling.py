"""How many latent channels a quality needs: the PSNR of keeping the top ``M`` principal
components of non-overlapping 16x16 RGB blocks (the footprint of one latent position).

``python -m lcodec.train.pca_ceiling [--kodak DIR] [--channels 48,96,128,192,320]``

A learned transform with ``M`` latent channels per 16x16 block is nonlinear and its filters
overlap, so it can beat this linear bound a little, but not by much while it is small: it
explains why a model's PSNR flattens near the bound of its ``M`` however many bits it is
given (hyperprior v4, M=96: 32.4 dB at -q 8 on Kodak, bound 30.9 dB). The components are
fitted on the same images they are measured on (an optimistic bound).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .data import list_images, load_rgb

BLOCK = 16  # pixels per latent position, in each direction


def blocks(images: list[np.ndarray]) -> np.ndarray:
    """All whole ``BLOCK x BLOCK`` RGB blocks of the images, as rows of ``3 * BLOCK^2`` values
    in ``[0, 1]``."""
    rows = []
    for a in images:
        h, w = a.shape[0] // BLOCK * BLOCK, a.shape[1] // BLOCK * BLOCK
        b = a[:h, :w].astype(np.float64) / 255
        rows.append(b.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK, 3).transpose(0, 2, 1, 3, 4)
                    .reshape(-1, BLOCK * BLOCK * 3))
    return np.concatenate(rows)


def pca_psnr(x: np.ndarray, channels: list[int]) -> dict[int, float]:
    """PSNR (dB, peak 1) of reconstructing the rows of ``x`` from their top principal
    components, for each number of components in ``channels``."""
    xc = x - x.mean(axis=0)
    eigvals = np.linalg.eigvalsh(xc.T @ xc / len(xc))[::-1]  # descending
    total = eigvals.sum()
    out = {}
    for m in channels:
        mse = (total - eigvals[:m].sum()) / x.shape[1]  # the dropped variance per value
        out[m] = float(10 * np.log10(1 / max(mse, 1e-12)))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--channels", default="48,96,128,192,320")
    args = ap.parse_args(argv)
    images = [load_rgb(p) for p in list_images(args.kodak)]
    result = pca_psnr(blocks(images), [int(c) for c in args.channels.split(",")])
    print(f"{len(images)} images, {BLOCK}x{BLOCK} blocks")
    for m, db in result.items():
        print(f"M={m:4d}: {db:.2f} dB")


if __name__ == "__main__":
    main()

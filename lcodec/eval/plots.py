"""Rate-distortion plots (``rd_psnr.png``, ``rd_msssim.png``) from eval results.

matplotlib is an optional extra: it is imported lazily, with the Agg backend
through the object-oriented API (no pyplot global state). Without matplotlib
the plots are skipped with a one-line notice on stderr. Must not import torch
or any lcodec codec code.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PLOTS: tuple[tuple[str, str, str], ...] = (
    ("rd_psnr.png", "psnr", "PSNR (dB, RGB)"),
    ("rd_msssim.png", "ms_ssim", "MS-SSIM (RGB)"),
)


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plots(results: Mapping[str, Any], out_dir: str | Path, quiet: bool = False) -> list[Path]:
    """Write the RD plots of ``results`` (as returned by ``run_eval``) into ``out_dir``.

    Returns the written paths; an empty list (and a notice unless ``quiet``) when
    matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        if not quiet:
            print("lcodec: note: matplotlib is not installed, skipping plots (pip install matplotlib)", file=sys.stderr)
        return []
    average: Mapping[str, list[Mapping[str, Any]]] = results["average"]
    image_set = results.get("image_set", "images")
    n_images = len(results.get("images", []))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    markers = "osD^v<>ph*"
    for filename, key, label in PLOTS:
        fig = Figure(figsize=(7, 5), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for i, (codec, points) in enumerate(average.items()):
            pts = sorted(points, key=lambda p: p["bpp"])
            ax.plot(
                [p["bpp"] for p in pts],
                [p[key] for p in pts],
                marker=markers[i % len(markers)],
                markersize=4,
                linewidth=1.5 if codec == "lcodec" or codec.startswith("lcodec-") else 1.0,
                label=codec,
            )
        ax.set_xlabel("bits per pixel (whole file)")
        ax.set_ylabel(label)
        ax.set_title(f"{label} vs rate - {image_set} ({n_images} images, averaged)")
        ax.grid(True, alpha=0.4)
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = out / filename
        fig.savefig(path)
        written.append(path)
    return written


def write_campaign_plot(entries: list[Mapping[str, Any]], path: str | Path,
                        anchors: tuple[str, ...] = ("jpeg", "webp", "avif-s6", "avif-s2")) -> Path | None:
    """Kodak BD-rate of each recorded checkpoint against the classical codecs, over the
    cumulative CPU-hours of training (``docs/bench/campaign.json``); entries marked
    ``side_branch`` (recipe arms that were not continued) are drawn hollow, off the line.
    None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for codec in anchors:
        def points(side: bool) -> list[tuple[float, float]]:
            return sorted((e["cpu_hours"], e["bd_rate_pct"][codec]) for e in entries
                          if codec in e.get("bd_rate_pct", {}) and bool(e.get("side_branch")) == side)

        main, side = points(False), points(True)
        if main:
            line, = ax.plot([p[0] for p in main], [p[1] for p in main], marker="o", label=f"vs {codec}")
            if side:  # recipe arms that were not continued: hollow markers, no line
                ax.plot([p[0] for p in side], [p[1] for p in side], linestyle="none", marker="o",
                        markerfacecolor="none", color=line.get_color())
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("cumulative training CPU-hours")
    ax.set_ylabel("Kodak BD-rate, PSNR (%)")
    ax.set_title("hyperprior weights campaign (lower is better)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path

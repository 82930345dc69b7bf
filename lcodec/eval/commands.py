"""Click commands ``lcodec eval`` and ``lcodec compare`` (registered lazily by the main CLI)."""
from __future__ import annotations

import sys
from pathlib import Path

import click


def _fail(message: str) -> None:
    """One line on stderr and exit code 1, as every lcodec command reports errors."""
    click.echo(f"lcodec: error: {message}", err=True)
    sys.exit(1)


def _usable_codecs(codecs: str) -> list[str]:
    """The requested codecs that can run here; a note on stderr for each missing one."""
    from .classical import available_codecs

    try:
        usable, missing = available_codecs([c for c in codecs.split(",") if c.strip()])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--codecs") from None
    for name, why in missing.items():
        click.echo(f"lcodec: note: skipping {name}: {why}", err=True)
    return usable


def _is_lcodec(name: str) -> bool:
    return name == "lcodec" or name.startswith("lcodec-")


def _floats(text: str | None, what: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers for {what}") from None


@click.command("eval")
@click.argument("images_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--codecs", default="lcodec,jpeg,webp,avif", show_default=True,
              help="Comma-separated: lcodec (the default model), lcodec-<model> (e.g. "
                   "lcodec-hyperprior, lcodec-context), jpeg, webp, avif (= avif-s6), avif-s2, jxl.")
@click.option("-q", "--quality", "qualities", default=None,
              help="lcodec's quality sweep (every lcodec model), e.g. 1,2,4,8.")
@click.option("--out", "out_dir", default="report", show_default=True, type=click.Path(file_okay=False),
              help="Folder for results.json and the RD plots.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (results are identical to a sequential run).")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Use only the first N images.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_command(images_dir, codecs, qualities, out_dir, jobs, limit, quiet):
    """Rate-distortion evaluation of lcodec against the formats people use."""
    from .runner import DEFAULT_ANCHORS, format_bd_table, format_rd_table, run_eval

    usable = _usable_codecs(codecs)
    if not usable:
        _fail("no codec to evaluate")
    sweep = _floats(qualities, "-q")
    lcodecs = [name for name in usable if _is_lcodec(name)]
    # BD-rates against JPEG and against the first lcodec model asked for
    anchors = ("jpeg", *lcodecs[:1]) if lcodecs else DEFAULT_ANCHORS
    try:
        data = run_eval(images_dir, usable, {name: sweep for name in lcodecs} if sweep else None, out_dir,
                        jobs, progress=not quiet and sys.stderr.isatty(), limit=limit, anchors=anchors)
    except Exception as exc:  # noqa: BLE001 - one line for the user
        _fail(f"evaluation failed: {exc}")
    click.echo(format_rd_table(data["average"]))
    click.echo()
    click.echo(format_bd_table(data["bd_rate"], list(data["average"])))
    click.echo(f"\nwrote {Path(out_dir) / 'results.json'}")


@click.command("compare")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--bpp", required=True, type=click.FloatRange(min=0.01), help="Target bits per pixel.")
@click.option("--out", "out_path", default="compare.png", show_default=True, help="Output picture.")
@click.option("--codecs", default="lcodec,jpeg,webp,avif", show_default=True)
@click.option("--crop", default=None, metavar="X,Y,W,H", help="Crop to show (default: 256x256 centre).")
def compare_command(image, bpp, out_path, codecs, crop):
    """Side-by-side crops of several codecs at about the same bpp."""
    from .compare import compare

    box = None
    if crop:
        try:
            box = tuple(int(v) for v in crop.split(","))
            assert len(box) == 4
        except (ValueError, AssertionError):
            raise click.BadParameter("expected X,Y,W,H", param_hint="--crop") from None
    usable = _usable_codecs(codecs)
    try:
        rows = compare(image, bpp, out_path, usable, box)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    width = max([8] + [len(r["codec"]) for r in rows])
    for r in rows:
        click.echo(f"{r['codec']:<{width}} q {r['quality']:>6.3g}  {r['bpp']:.3f} bpp  {r['psnr']:.2f} dB")
    click.echo(f"wrote {out_path}")

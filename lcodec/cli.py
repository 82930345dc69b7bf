"""The ``lcodec`` command line: parses arguments, calls :mod:`lcodec.api`, prints.

Conventions follow cjxl/avifenc: ``-q`` quality, ``-o`` output, ``--quiet``, ``-`` for
stdin/stdout, a summary on stderr. Exit codes: 0 success, 1 error (one line on stderr,
no output file left behind), 2 usage error, 130 interrupted. Heavy modules (torch, the
model) are imported only inside commands, so ``lcodec --help`` is instant.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click

from . import __version__
from .errors import LcodecError, OutputError

# Commands living in other modules: name -> (module:attribute, one-line help).
LAZY_COMMANDS = {
    "train": ("lcodec.train.__main__:train_command", "Train a variable-rate model on the CPU."),
    "eval": ("lcodec.eval.commands:eval_command", "Rate-distortion evaluation against other codecs."),
    "compare": ("lcodec.eval.commands:compare_command", "Side-by-side crops of codecs at one bpp."),
}


class LazyGroup(click.Group):
    """A group whose extra commands are imported only when they run."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[name][0].split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except ImportError as exc:
                raise click.ClickException(f"'{name}' is unavailable: {exc}") from None
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = [(name, cmd.get_short_help_str(60)) for name, cmd in self.commands.items()]
        rows += [(name, text) for name, (_, text) in LAZY_COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


def fail(message: str, code: int = 1) -> None:
    click.echo(f"lcodec: error: {message}", err=True)
    sys.exit(code)


def reports_errors(func):
    """Turn user-caused errors into one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LcodecError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except MemoryError:
            fail("out of memory (try a smaller image or a machine with more memory)")
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: say so in one line, trace on request
            if os.environ.get("LCODEC_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} (set LCODEC_DEBUG=1 for details)", 3)

    return wrapper


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    p = Path(path)
    try:
        if p.is_dir():
            raise LcodecError(f"{path} is a directory")
        return p.read_bytes()
    except FileNotFoundError:
        raise LcodecError(f"{path}: no such file") from None
    except PermissionError:
        raise LcodecError(f"{path}: permission denied") from None
    except OSError as exc:
        raise LcodecError(f"{path}: {exc.strerror or exc}") from None


def write_output(path: str, data: bytes) -> None:
    """Write all of ``data`` or nothing: a temporary file renamed into place."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{path} is a directory")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                   dir=target.parent if str(target.parent) else ".")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def resolve_output(output: str | None, output_opt: str | None) -> str:
    if output and output_opt:
        raise click.UsageError("give the output either as an argument or with -o, not both")
    out = output or output_opt
    if not out:
        raise click.UsageError("missing output path (OUTPUT or -o)")
    return out


def parse_region(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter("expected X,Y,W,H (four integers)", param_hint="--region") from None
    return x, y, w, h


tile_option = click.option("--tile", default=None, type=click.IntRange(min=0),
                           help="Tile size in pixels (a multiple of 64); default: from --max-memory.")
memory_option = click.option("--max-memory", default=None, type=click.IntRange(min=16),
                             help="Working-memory budget of the transforms in MiB (picks the tile size).")
device_option = click.option("--device", default="auto", show_default=True,
                             type=click.Choice(["auto", "cpu", "cuda"], case_sensitive=False),
                             help="Compute device; 'auto' uses CUDA when available.")
quiet_option = click.option("--quiet", is_flag=True, help="Print nothing but errors.")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lcodec")
def main() -> None:
    """lcodec: a learned image codec.

    \b
      lcodec encode photo.png photo.lc -q 4
      lcodec decode photo.lc photo.png
      lcodec info photo.lc
    """


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output", required=False)
@click.option("-o", "--output", "output_opt", help="Output .lc path ('-' for stdout).")
@click.option("-q", "--quality", default=4.0, show_default=True, type=float,
              help="1 (smallest) .. 8 (best); fractional values allowed.")
@click.option("--model", default=None, help="Model to encode with (default: the shipped default).")
@tile_option
@memory_option
@device_option
@quiet_option
@reports_errors
def encode(input_path, output, output_opt, quality, model, tile, max_memory, device, quiet):
    """Encode an image (PNG, JPEG, ...; '-' for stdin) into a .lc file."""
    from .api import Codec, check_quality
    from .image_io import open_image, to_pixels

    out = resolve_output(output, output_opt)
    check_quality(quality)
    t0 = time.perf_counter()
    source = read_input(input_path) if input_path == "-" else input_path
    pixels, channels, notices = to_pixels(open_image(source, name=input_path if input_path != "-" else "stdin"))
    if not quiet:
        for note in notices:
            click.echo(f"lcodec: note: {note}", err=True)
    codec = Codec(device, model, tile=tile, max_memory_mb=max_memory)
    data = codec.encode_pixels(pixels, channels, quality)
    write_output(out, data)
    if not quiet:
        h, w = pixels.shape[:2]
        entry = codec._pipeline(model).loaded.entry
        click.echo(f"{input_path} {w}x{h} -> {out}: {len(data)} bytes, {8 * len(data) / (w * h):.4f} bpp "
                   f"(q {quality:g}, {entry.label}, {codec.device.type}, "
                   f"{time.perf_counter() - t0:.2f} s)", err=True)


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output", required=False)
@click.option("-o", "--output", "output_opt", help="Output image path ('-' for stdout).")
@click.option("--format", "fmt", default=None,
              help="Output format (png, ppm, bmp, tiff, jpg, webp); default: from the extension, "
                   "PNG for stdout.")
@click.option("--max-pixels", default=None, type=click.IntRange(min=1),
              help="Refuse images larger than this many pixels (default 2^28).")
@click.option("--region", default=None, metavar="X,Y,W,H",
              help="Decode only this rectangle (only the tiles it needs are decoded).")
@tile_option
@memory_option
@device_option
@quiet_option
@reports_errors
def decode(input_path, output, output_opt, fmt, max_pixels, region, tile, max_memory, device, quiet):
    """Decode a .lc file ('-' for stdin) into an image."""
    from .api import DEFAULT_MAX_PIXELS, Codec
    from .image_io import encode_image, from_pixels, output_format

    out = resolve_output(output, output_opt)
    pillow_format = output_format(out, fmt)
    t0 = time.perf_counter()
    data = read_input(input_path)
    codec = Codec(device, tile=tile, max_memory_mb=max_memory)
    pixels, header = codec.decode_pixels(data, max_pixels or DEFAULT_MAX_PIXELS, parse_region(region))
    write_output(out, encode_image(from_pixels(pixels, header.channels), pillow_format))
    if not quiet:
        click.echo(f"{input_path} -> {out}: {pixels.shape[1]}x{pixels.shape[0]} "
                   f"{'gray' if header.channels == 1 else 'RGB'} {pillow_format} "
                   f"({time.perf_counter() - t0:.2f} s)", err=True)


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@reports_errors
def info(input_path, as_json):
    """Show what a .lc file holds (without decoding it)."""
    from .api import info as file_info

    meta = file_info(read_input(input_path))
    if as_json:
        click.echo(json.dumps(meta))
        return
    click.echo(f"{input_path}: lcodec format v{meta['format_version']}, {meta['width']}x{meta['height']} "
               f"{meta['mode']}, quality {meta['quality']:g}")
    click.echo(f"  model: {meta['model']} v{meta['model_version']} #{meta['model_digest']}")
    tiling = f" of {meta['tile_size'][0]}x{meta['tile_size'][1]}" if meta["tile_size"] else ""
    click.echo(f"  size:  {meta['bytes']} bytes, {meta['bpp']:.4f} bpp, {meta['tiles']} tile(s){tiling}")

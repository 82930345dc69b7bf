"""The ``lcodec`` command line: parses arguments, calls :mod:`lcodec.batch` / :mod:`lcodec.api`,
prints.

Conventions follow cjxl/avifenc/cwebp/rsync: ``-q`` quality, ``-o`` output, ``--quiet``,
``-`` for stdin/stdout, many inputs with ``-o DIR``, ``-r``, ``--jobs``, ``--json``, a
progress bar on a terminal. Exit codes: 0 success, 1 an error / some files failed (one line
each on stderr, no output file left behind), 2 usage error, 130 interrupted. Heavy modules
(torch, the model) are imported only inside commands, so ``lcodec --help`` is instant.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import time
from pathlib import Path

import click

from . import __version__
from . import batch
from .errors import LcodecError

# Commands living in other modules: name -> (module:attribute, one-line help).
LAZY_COMMANDS = {
    "train": ("lcodec.train.__main__:train_command", "Train a variable-rate model (CPU or CUDA)."),
    "train-context": ("lcodec.train.__main__:train_context_command",
                      "Train the checkerboard context model on top of hyperprior weights."),
    "train-grouped": ("lcodec.train.__main__:train_grouped_command",
                      "Train channel-group context networks on top of context weights."),
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


def one_line(message: str) -> str:
    """A message as one line (library errors and file names may hold newlines)."""
    return " ".join(str(message).split())


def fail(message: str, code: int = 1, now: bool = False) -> None:
    """Print ``lcodec: error: MESSAGE`` and exit with ``code``; ``now``: without the
    interpreter's exit handlers (``os._exit``), for when they could block."""
    click.echo(f"lcodec: error: {one_line(message)}", err=True)
    if now:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
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
    return batch._read(path)


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


def batch_options(func):
    """The options shared by ``encode`` and ``decode`` for many files."""
    for option in reversed([
        click.option("-r", "--recursive", is_flag=True,
                     help="Descend into sub-folders of folder inputs (the layout is kept under -o DIR)."),
        click.option("-j", "--jobs", default=1, show_default=True, type=click.IntRange(min=0),
                     help="Files coded in parallel, one worker process and model each (0: one per core)."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print one JSON line per file on stdout (input, output, status, bytes, bpp, seconds, ...)."),
        click.option("--fail-fast", is_flag=True, help="Stop at the first file that fails."),
        click.option("--force", is_flag=True, help="Overwrite existing outputs."),
        click.option("--skip-existing", is_flag=True, help="Leave existing outputs alone and skip their inputs."),
        click.option("--strip", is_flag=True, help="Drop the ICC profile and EXIF."),
    ]):
        func = option(func)
    return func


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lcodec")
def main() -> None:
    """lcodec: a learned image codec.

    \b
      lcodec encode photo.png photo.lc -q 4
      lcodec decode photo.lc photo.png
      lcodec encode -r photos/ -o archive/ --jobs 2
      lcodec decode archive/*.lc -o restored/
      lcodec info photo.lc
    """


# --------------------------------------------------------------------------- argument forms

def _looks_like_output(kind: str, arg: str) -> bool:
    """Whether the second of two arguments names the output (the single-file form): ``-``,
    an ``.lc`` name when encoding or an image name when decoding, or any other name that
    does not exist (and is not an input's extension)."""
    from .image_io import OUTPUT_FORMATS

    if arg == "-":
        return True
    suffix = Path(arg).suffix.lower()
    if arg.endswith(("/", os.sep)) or os.path.isdir(arg):
        return False
    if kind == batch.ENCODE:
        return suffix == batch.LC_SUFFIX or (suffix not in batch.IMAGE_SUFFIXES and not os.path.lexists(arg))
    if suffix == batch.LC_SUFFIX:
        return False
    return suffix in OUTPUT_FORMATS or not os.path.lexists(arg)


def _has_output_name(kind: str, arg: str) -> bool:
    """``-``, or the extension of this command's outputs (``.lc``; an image's)."""
    from .image_io import OUTPUT_FORMATS

    suffix = Path(arg).suffix.lower()
    return arg == "-" or (suffix == batch.LC_SUFFIX if kind == batch.ENCODE else suffix in OUTPUT_FORMATS)


def _is_folder_target(arg: str) -> bool:
    return arg != "-" and (arg.endswith(("/", os.sep)) or os.path.isdir(arg))


def plan_command(kind: str, inputs: tuple[str, ...], output_opt: str | None, options: batch.Options,
                 recursive: bool) -> tuple[bool, list[batch.Task]]:
    """``(single, tasks)`` for the arguments of ``encode``/``decode`` (see docs/batch.md):

    * ``INPUT OUTPUT`` (no ``-o``): one file into one output when OUTPUT is ``-``, has the
      output's extension, or does not exist; ``INPUT -o OUTPUT``: one file when INPUT is a
      file or ``-`` and OUTPUT is not a folder (an existing one, or a name ending in ``/``).
    * otherwise every argument is an input (files and folders) and ``-o`` names the output
      folder (created when missing), which is required.
    """
    single_input = len(inputs) == 1 and (inputs[0] == "-" or not os.path.isdir(inputs[0]))
    if output_opt is None:
        if len(inputs) == 2 and (inputs[0] == "-" or not os.path.isdir(inputs[0])) \
                and _looks_like_output(kind, inputs[1]):
            return True, [_single_task(kind, inputs[0], inputs[1], options)]
        if len(inputs) == 1 and single_input:
            raise click.UsageError("missing output path (OUTPUT or -o)")
        what = "a folder input" if len(inputs) == 1 else "several inputs"
        raise click.UsageError(f"{what} need an output folder: -o DIR "
                               f"(or give one INPUT and its OUTPUT)")
    if single_input and not _is_folder_target(output_opt):
        return True, [_single_task(kind, inputs[0], output_opt, options)]
    if len(inputs) == 2 and _has_output_name(kind, inputs[1]):
        raise click.UsageError("give the output either as an argument or with -o, not both")
    if not os.path.exists(output_opt) and _has_output_name(kind, output_opt):
        raise click.UsageError(f"-o {output_opt} looks like a file, but several inputs or a folder "
                               "need an output folder (-o DIR)")
    try:
        return False, batch.plan(kind, inputs, output_opt, options, recursive)
    except batch.BatchUsageError as exc:
        raise click.UsageError(str(exc)) from None


def _single_task(kind: str, src: str, out: str, options: batch.Options) -> batch.Task:
    if src != "-" and out != "-" and os.path.lexists(out) and Path(src).resolve() == Path(out).resolve():
        raise click.UsageError(f"{out} is the input itself")
    return batch.Task(kind, src, out, options, make_dirs=False)


# --------------------------------------------------------------------------- running

def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Reporter:
    """Prints what happens: notes and errors on stderr (through the progress bar when there
    is one), JSON lines on stdout, a summary at the end."""

    def __init__(self, total: int, quiet: bool, as_json: bool, single: bool, verb: str):
        self.quiet, self.as_json, self.single, self.verb = quiet, as_json, single, verb
        self.counts = {batch.OK: 0, batch.SKIPPED: 0, batch.FAILED: 0}
        self.in_bytes = self.out_bytes = 0
        self.t0 = time.perf_counter()
        self.bar = None
        if not quiet and not single and total > 1 and stderr_is_terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True,
                            smoothing=0.1, leave=True)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def __call__(self, res: batch.Result) -> None:
        self.counts[res.status] += 1
        self.in_bytes += res.input_bytes or 0
        if res.status == batch.OK:
            self.out_bytes += res.bytes or 0
        if self.as_json:
            click.echo(json.dumps(res.to_json()))
        if not self.quiet:
            for note in res.notices:
                note = one_line(note)
                self.line(f"lcodec: note: {note}" if self.single else f"lcodec: note: {res.input}: {note}")
        if res.status == batch.FAILED:
            msg = res.error or "failed"
            if not self.single and res.input not in msg:
                msg = f"{res.input}: {msg}"
            self.line(f"lcodec: error: {one_line(msg)}")
        elif res.status == batch.SKIPPED and self.single and not self.quiet:
            self.line(f"lcodec: note: {res.output} exists, skipped")
        elif self.single and not self.quiet:
            self.line(self._summary_line(res))
        if self.bar is not None:
            self.bar.update(1)
            elapsed = max(time.perf_counter() - self.t0, 1e-6)
            self.bar.set_postfix_str(f"{self.in_bytes / elapsed / 1e6:.2f} MB/s", refresh=False)

    def _summary_line(self, res: batch.Result) -> str:
        if self.verb == "encoded":
            return (f"{res.input} {res.width}x{res.height} -> {res.output}: {res.bytes} bytes, "
                    f"{res.bpp:.4f} bpp ({res.detail}, {res.seconds:.2f} s)")
        kind = {"L": "gray", "LA": "gray+alpha", "RGB": "RGB", "RGBA": "RGBA"}.get(res.mode or "", res.mode)
        return f"{res.input} -> {res.output}: {res.width}x{res.height} {kind} {res.detail} ({res.seconds:.2f} s)"

    def close(self, total: int, interrupted: bool = False) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.single or self.quiet:
            return
        done = sum(self.counts.values())
        parts = [f"{self.counts[batch.OK]} file(s) {self.verb}"]
        if self.counts[batch.SKIPPED]:
            parts.append(f"{self.counts[batch.SKIPPED]} skipped")
        if self.counts[batch.FAILED]:
            parts.append(f"{self.counts[batch.FAILED]} failed")
        if done < total:
            parts.append(f"{total - done} not {'finished' if interrupted else 'started'}")
        click.echo(f"lcodec: {', '.join(parts)}; {_size(self.in_bytes)} -> {_size(self.out_bytes)} "
                   f"in {time.perf_counter() - self.t0:.1f} s", err=True)


def run_command(kind: str, single: bool, tasks: list[batch.Task], jobs: int, quiet: bool,
                as_json: bool, fail_fast: bool) -> None:
    """Run the tasks (here, or on ``jobs`` worker processes), report, and exit with the
    command's code."""
    verb = "encoded" if kind == batch.ENCODE else "decoded"
    if not tasks:
        if not quiet:
            click.echo("lcodec: note: no input files found", err=True)
        return
    if single:
        task = tasks[0]
        res = batch.run_task(task, raise_unexpected=bool(os.environ.get("LCODEC_DEBUG")))
        Reporter(1, quiet, as_json, True, verb)(res)
        if res.status == batch.FAILED:
            sys.exit(res.exit_code or 1)
        return
    jobs = min(jobs or _cpu_count(), len(tasks))
    report = Reporter(len(tasks), quiet, as_json, False, verb)
    pool = batch.process_pool(jobs) if jobs > 1 else None
    interrupted = False
    try:
        for res in batch.map_files(tasks, pool, fail_fast=fail_fast):
            report(res)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if pool is not None:
            if interrupted:
                batch.stop_pool(pool)
            else:
                pool.shutdown(wait=True)
        report.close(len(tasks), interrupted)
    if interrupted:
        if pool is not None:
            # The workers are stopped and their partial files gone; a normal exit would also
            # join the pool's manager and queue-feeder threads, which can block for good on a
            # pipe whose reader was killed (seen once in CI: "interrupted" printed, no exit
            # within 60 s). Leave without waiting for them.
            fail("interrupted", 130, now=True)
        raise KeyboardInterrupt
    if report.counts[batch.FAILED]:
        sys.exit(1)


def _cpu_count() -> int:
    from .device import cpu_count

    return cpu_count()


def _overwrite_policy(force: bool, skip_existing: bool) -> str:
    if force and skip_existing:
        raise click.UsageError("--force and --skip-existing exclude each other")
    return "force" if force else "skip" if skip_existing else "error"


def _target(size: str | None, psnr: float | None):
    """The ``--target-size`` / ``--target-psnr`` asked for (None: encode at ``-q``)."""
    from click.core import ParameterSource

    from .rate_control import PSNR, SIZE, Target, parse_size

    if size is not None and psnr is not None:
        raise click.UsageError("--target-size and --target-psnr exclude each other")
    if size is None and psnr is None:
        return None
    if click.get_current_context().get_parameter_source("quality") is ParameterSource.COMMANDLINE:
        raise click.UsageError("-q and a --target-size / --target-psnr exclude each other")
    if size is not None:
        try:
            return Target(SIZE, parse_size(size))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--target-size") from None
    if not 0 < psnr < 100:
        raise click.BadParameter(f"must be between 0 and 100 dB, got {psnr:g}", param_hint="--target-psnr")
    return Target(PSNR, psnr)


def _check_json(single: bool, tasks: list[batch.Task], as_json: bool) -> None:
    if as_json and single and tasks[0].output == "-":
        raise click.UsageError("--json prints to stdout, which is already the output ('-')")


# --------------------------------------------------------------------------- commands

@main.command()
@click.argument("inputs", metavar="INPUT... [OUTPUT]", nargs=-1, required=True)
@click.option("-o", "--output", "output_opt",
              help="Output .lc file ('-' for stdout), or the output folder for several inputs or a folder.")
@click.option("-q", "--quality", default=4.0, show_default=True, type=float,
              help="1 (smallest) .. 8 (best); fractional values allowed.")
@click.option("--model", default=None, help="Model to encode with: grouped (channel groups on a checkerboard context), context (checkerboard context) or hyperprior, its newest version, or NAME:vN for version N (e.g. grouped:v20) (default: the manifest's default; decode reads it from the file).")
@click.option("-e", "--effort", default=1, show_default=True, type=click.IntRange(1, 7),
              help="Encoder effort 1..7: above 1, search for better latents (8, 16, ... 256 "
                   "steps): smaller files at the same quality, slower encoding; decoding is unchanged.")
@tile_option
@memory_option
@device_option
@batch_options
@click.option("--target-size", default=None, metavar="SIZE",
              help="Instead of -q: the highest quality whose file fits in SIZE (bytes, or with "
                   "K/KiB, KB, M/MiB, MB), found with a few encodes per file.")
@click.option("--target-psnr", default=None, type=float, metavar="DB",
              help="Instead of -q: the lowest quality whose decoded image reaches DB dB of PSNR, "
                   "found with a few encodes and decodes per file.")
@click.option("--verify", is_flag=True,
              help="Decode each file after encoding and check it before writing it.")
@click.option("--verify-psnr", default=batch.DEFAULT_VERIFY_PSNR, show_default=True, type=float,
              metavar="DB", help="Lowest PSNR --verify accepts.")
@quiet_option
@reports_errors
def encode(inputs, output_opt, quality, model, effort, tile, max_memory, device, recursive, jobs,
           as_json, fail_fast, force, skip_existing, strip, target_size, target_psnr, verify,
           verify_psnr, quiet):
    """Encode images (PNG, JPEG, ...; '-' for stdin) into .lc files.

    \b
      lcodec encode photo.png photo.lc           one file (or: photo.png -o photo.lc)
      lcodec encode *.png -o out/                many files into a folder
      lcodec encode -r photos/ -o out/ -j 4      a folder tree, layout kept, 4 workers
      lcodec encode a.png a.lc --target-size 100K  the best file of at most 100 KiB
    """
    from .api import check_quality

    q = check_quality(quality)
    options = batch.Options(quality=q, model=model, device=device, tile=tile, max_memory_mb=max_memory,
                            effort=effort, strip=strip, verify=verify, verify_psnr=verify_psnr,
                            target=_target(target_size, target_psnr),
                            overwrite=_overwrite_policy(force, skip_existing))
    single, tasks = plan_command(batch.ENCODE, inputs, output_opt, options, recursive)
    _check_json(single, tasks, as_json)
    run_command(batch.ENCODE, single, tasks, jobs, quiet, as_json, fail_fast)


@main.command()
@click.argument("inputs", metavar="INPUT... [OUTPUT]", nargs=-1, required=True)
@click.option("-o", "--output", "output_opt",
              help="Output image ('-' for stdout), or the output folder for several inputs or a folder.")
@click.option("--format", "fmt", default=None,
              help="Output format (png, ppm, bmp, tiff, jpg, webp); default: from the extension, "
                   "PNG for stdout and for files written into a folder.")
@click.option("--max-pixels", default=None, type=click.IntRange(min=1),
              help="Refuse images larger than this many pixels (default 2^28).")
@click.option("--region", default=None, metavar="X,Y,W,H",
              help="Decode only this rectangle (only the tiles it needs are decoded).")
@tile_option
@memory_option
@device_option
@batch_options
@quiet_option
@reports_errors
def decode(inputs, output_opt, fmt, max_pixels, region, tile, max_memory, device, recursive, jobs,
           as_json, fail_fast, force, skip_existing, strip, quiet):
    """Decode .lc files ('-' for stdin) into images.

    \b
      lcodec decode photo.lc photo.png           one file (or: photo.lc -o photo.png)
      lcodec decode out/*.lc -o restored/        many files into a folder (PNG, or --format)
      lcodec decode -r out/ -o restored/ -j 4
    """
    options = batch.Options(device=device, tile=tile, max_memory_mb=max_memory, strip=strip, format=fmt,
                            max_pixels=max_pixels, region=parse_region(region),
                            overwrite=_overwrite_policy(force, skip_existing))
    if fmt is not None:
        from .image_io import output_format

        try:
            output_format("-", fmt)
        except LcodecError as exc:
            raise click.BadParameter(str(exc), param_hint="--format") from None
    single, tasks = plan_command(batch.DECODE, inputs, output_opt, options, recursive)
    _check_json(single, tasks, as_json)
    run_command(batch.DECODE, single, tasks, jobs, quiet, as_json, fail_fast)


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
    extras = [name for name, present in (("alpha (lossless)", meta["alpha"]),
                                          (f"ICC profile ({meta['icc_bytes']} bytes)", meta["icc_bytes"]),
                                          (f"EXIF ({meta['exif_bytes']} bytes)", meta["exif_bytes"])) if present]
    if extras:
        click.echo(f"  with:  {', '.join(extras)}")

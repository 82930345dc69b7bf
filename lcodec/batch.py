"""Many files at once: inputs -> outputs planning, a per-file task that any
:class:`concurrent.futures.Executor` can run, and atomic, no-clobber writes.

>>> from concurrent.futures import ProcessPoolExecutor
>>> import lcodec
>>> with ProcessPoolExecutor(4) as pool:
...     results = lcodec.encode_batch(["photos/"], "out/", recursive=True, quality=4, executor=pool)
>>> [r.error for r in results if r.status == "failed"]

The same call takes a ``ThreadPoolExecutor`` or a Dask ``client.get_executor()``: a task is a
small picklable :class:`Task` (paths and options), run by the top-level :func:`run_task` on
the worker, which reads its input and writes its output itself (so a cluster needs the files
on storage all its workers see) and returns a small :class:`Result`. Each worker thread keeps
one loaded model. See ``docs/batch.md``.

Layering: ``cli -> batch -> api``. This module imports only the standard library at import
time (``lcodec --help`` stays instant); the codec is imported inside the task.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .errors import DeviceError, LcodecError, OutputError, WeightsError
from .rate_control import Target

ENCODE, DECODE = "encode", "decode"
LC_SUFFIX = ".lc"
# Files taken from a directory for encoding (files named explicitly are tried whatever their name).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".webp", ".bmp", ".tif", ".tiff", ".ppm",
                            ".pgm", ".pnm", ".pbm", ".gif", ".avif"})
# Pillow format -> the extension given to decoded files.
FORMAT_SUFFIX = {"PNG": ".png", "PPM": ".ppm", "BMP": ".bmp", "TIFF": ".tiff", "JPEG": ".jpg", "WEBP": ".webp"}
OVERWRITE_POLICIES = ("error", "force", "skip")
MAX_INPUT_BYTES = 1 << 30  # .lc files and stdin are read whole: refuse endless or absurd inputs
DEFAULT_VERIFY_PSNR = 10.0

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


class BatchUsageError(ValueError):
    """The inputs/outputs asked for do not make sense (the command line exits 2)."""


class VerificationError(LcodecError):
    """``verify``: the encoded file does not decode back to the input."""


@dataclass(frozen=True)
class Options:
    """How to code every file of a batch."""

    quality: float = 4.0
    model: str | None = None
    device: str = "auto"
    tile: int | None = None
    max_memory_mb: int | None = None
    effort: int = 1                        # encode: latent refinement (api.refinement_steps)
    strip: bool = False                    # drop ICC profile and EXIF
    verify: bool = False                   # encode: decode again and compare before writing
    verify_psnr: float = DEFAULT_VERIFY_PSNR
    target: Target | None = None           # encode: search the quality for a size or PSNR (replaces quality)
    format: str | None = None              # decode: Pillow format name or extension; None: from the output name
    max_pixels: int | None = None          # decode
    region: tuple[int, int, int, int] | None = None  # decode
    overwrite: str = "error"               # "error" | "force" | "skip"


@dataclass(frozen=True)
class Task:
    """One file to code: ``kind`` is ``"encode"`` or ``"decode"``; ``"-"`` is stdin/stdout
    (in-process runs only)."""

    kind: str
    input: str
    output: str
    options: Options = field(default_factory=Options)
    make_dirs: bool = True                 # create missing parent folders of the output


@dataclass
class Result:
    """What happened to one file. ``status`` is ``"ok"``, ``"skipped"`` (the output existed and
    ``overwrite="skip"``) or ``"failed"`` (``error`` says why; nothing was written)."""

    input: str
    output: str
    status: str = FAILED
    bytes: int | None = None               # size of the output written (or found, when skipped)
    input_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None                # L, LA, RGB, RGBA
    bpp: float | None = None               # bits of the .lc file per pixel
    quality: float | None = None           # encode: the quality used (found, with a target)
    seconds: float = 0.0
    error: str | None = None
    notices: list[str] = field(default_factory=list)
    exit_code: int = 0                     # of the error, for the single-file command line
    fatal: bool = False                    # the next files would fail the same way (device, weights)
    detail: str = ""                       # model and device, for messages

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_json(self) -> dict:
        """The fields of a ``--json`` line."""
        d = asdict(self)
        for k in ("exit_code", "fatal", "detail"):
            d.pop(k)
        return d


# --------------------------------------------------------------------------- planning

def output_suffix(kind: str, fmt: str | None = None) -> str:
    """Extension of outputs: ``.lc`` when encoding; from ``fmt`` (default PNG) when decoding."""
    if kind == ENCODE:
        return LC_SUFFIX
    from .image_io import output_format  # Pillow only

    return FORMAT_SUFFIX[output_format("-", fmt)]  # "-": PNG unless fmt says otherwise


def _walk(top: Path, recursive: bool, suffixes: Iterable[str], exclude: Path | None) -> list[Path]:
    """Files under ``top`` with one of ``suffixes`` (sorted; hidden files and folders skipped;
    symlinked folders not followed; ``exclude`` pruned)."""
    suffixes = set(suffixes)
    found: list[Path] = []
    for root, dirs, files in os.walk(top):
        here = Path(root)
        if recursive:
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and (exclude is None or (here / d).resolve() != exclude))
        else:
            dirs[:] = []
        found += [here / f for f in sorted(files)
                  if not f.startswith(".") and Path(f).suffix.lower() in suffixes]
    return found


def plan(kind: str, inputs: Iterable[str | os.PathLike], output_dir: str | os.PathLike,
         options: Options = Options(), recursive: bool = False) -> list[Task]:
    """The tasks for ``inputs`` (files and folders) written under ``output_dir``.

    A file ``a/b.png`` becomes ``output_dir/b.lc``; a folder contributes the images directly
    in it (every level below with ``recursive``), keeping their layout relative to it:
    ``photos/x/y.png`` -> ``output_dir/x/y.lc``. When decoding the extension comes from
    ``options.format`` (default ``.png``). Raises :class:`BatchUsageError` for ``-`` among
    inputs, an output folder that is a file, two inputs that would land on the same output,
    or an output that would replace its own input. A folder holding no images adds no task.
    """
    if kind not in (ENCODE, DECODE):
        raise BatchUsageError(f"unknown kind {kind!r}")
    if options.overwrite not in OVERWRITE_POLICIES:
        raise BatchUsageError(f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}")
    out_root = Path(output_dir)
    if str(output_dir) == "-":
        raise BatchUsageError("the output folder cannot be '-' (stdout takes a single input)")
    if out_root.exists() and not out_root.is_dir():
        raise BatchUsageError(f"{output_dir} is a file, not an output folder")
    try:
        suffix = output_suffix(kind, options.format)
    except LcodecError as exc:
        raise BatchUsageError(str(exc)) from None
    wanted = IMAGE_SUFFIXES if kind == ENCODE else {LC_SUFFIX}
    exclude = out_root.resolve()
    tasks: list[Task] = []
    seen_inputs: set[Path] = set()
    by_output: dict[Path, str] = {}
    for raw in inputs:
        name = os.fspath(raw)
        if name == "-":
            raise BatchUsageError("'-' (stdin) can only be used with a single input and output")
        path = Path(name)
        if path.is_dir():
            pairs = [(str(f), f.relative_to(path)) for f in _walk(path, recursive, wanted, exclude)]
        else:
            pairs = [(name, Path(path.name))]
        for src, rel in pairs:
            key = Path(src).resolve()
            if key in seen_inputs:
                continue
            seen_inputs.add(key)
            out = out_root / rel.with_suffix(suffix) if rel.suffix else out_root / (rel.name + suffix)
            out_key = out.resolve()
            if out_key == key:
                raise BatchUsageError(f"{src} would be replaced by its own output")
            if out_key in by_output:
                raise BatchUsageError(f"{by_output[out_key]} and {src} would both be written to {out}")
            by_output[out_key] = src
            tasks.append(Task(kind, src, str(out), options, make_dirs=True))
    return tasks


# --------------------------------------------------------------------------- writing

_UMASK: int | None = None
_UMASK_LOCK = threading.Lock()


def _file_mode() -> int:
    """Permissions of new outputs: ``0o666`` less the umask (``mkstemp`` makes them 0600)."""
    global _UMASK
    with _UMASK_LOCK:
        if _UMASK is None:  # reading the umask means setting it: once, under a lock
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return 0o666 & ~_UMASK


def write_file(path: str, data: bytes, overwrite: str = "force", make_dirs: bool = False) -> bool:
    """Write all of ``data`` to ``path`` or nothing: a temporary ``.NAME.*.part`` file in the
    same folder, synced, then renamed into place. ``overwrite``: ``"force"`` replaces an
    existing file; ``"error"`` refuses (:class:`OutputError`) and ``"skip"`` returns False,
    checked atomically (a hard link that fails if the name exists). ``"-"`` is stdout.
    Returns True when written."""
    if path == "-":
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError as exc:
            _silence_stdout()
            raise OutputError(f"cannot write to standard output: {exc.strerror or exc}") from None
        return True
    global _partial, _deferring
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    tmp = None
    try:
        if make_dirs:
            parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise OutputError(f"{path} is a directory")
        # A SIGTERM (a pool worker being stopped) inside mkstemp waits until the file it creates
        # has a name that the handler can remove.
        _deferring = True
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=parent)
            _partial = tmp
        finally:
            _deferring = False
        if _pending:
            _on_sigterm(signal.SIGTERM, None)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite == "force":
            os.replace(tmp, target)
            tmp = None
            return True
        try:
            os.link(tmp, target)  # fails if the name exists: no window for a race
        except FileExistsError:
            if overwrite == "skip":
                return False
            raise OutputError(exists_message(path)) from None
        except OSError:  # a file system without hard links
            if os.path.lexists(target):
                if overwrite == "skip":
                    return False
                raise OutputError(exists_message(path)) from None
            os.replace(tmp, target)
            tmp = None
        return True
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        _partial = None


def _silence_stdout() -> None:
    """After a failed write to stdout (full disk, closed pipe), point it at /dev/null so that
    the interpreter's final flush does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass


def exists_message(path: str) -> str:
    return f"{path} already exists (use --force to overwrite it or --skip-existing to keep it)"


# --------------------------------------------------------------------------- one file

_local = threading.local()
# A pool worker's SIGTERM handler removes the temporary file write_file is writing, if any.
_partial: str | None = None             # that file, from its creation until it is renamed or removed
_deferring = False                      # inside mkstemp: the file may exist before it has a name
_pending = False                        # a SIGTERM came while deferring


def _codec(opts: Options):
    """This thread's codec for these options (one loaded model per worker)."""
    cache = getattr(_local, "codecs", None)
    if cache is None:
        cache = _local.codecs = {}
    key = (opts.device, opts.model, opts.tile, opts.max_memory_mb, opts.effort)
    if key not in cache:
        from .api import Codec

        cache[key] = Codec(opts.device, opts.model, tile=opts.tile, max_memory_mb=opts.max_memory_mb,
                           effort=opts.effort)
    return cache[key]


def _read(path: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a file (``-``: stdin), refusing more than ``limit`` (``/dev/zero``...)."""
    label = "standard input" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            if Path(path).is_dir():
                raise LcodecError(f"{path} is a directory")
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        if len(data) > limit:
            raise LcodecError(f"{label} is more than {limit >> 20} MiB, too big for an input")
        return data
    except FileNotFoundError:
        raise LcodecError(f"{path}: no such file") from None
    except PermissionError:
        raise LcodecError(f"{path}: permission denied") from None
    except OSError as exc:
        raise LcodecError(f"{path}: {exc.strerror or exc}") from None


def verify_encoded(codec, data: bytes, prep, min_psnr: float = DEFAULT_VERIFY_PSNR) -> float:
    """Decode ``data`` and check it against the prepared input: same size, channels, alpha
    (exactly), ICC and EXIF, and a PSNR of at least ``min_psnr`` dB. Returns the PSNR;
    raises :class:`VerificationError`."""
    import numpy as np

    try:
        dec = codec.decode_full(data)
    except LcodecError as exc:
        raise VerificationError(f"verification failed: the encoded file does not decode ({exc})") from None
    h = dec.header
    if (h.width, h.height) != (prep.width, prep.height):
        raise VerificationError(f"verification failed: decoded size {h.width}x{h.height} differs from "
                                f"{prep.width}x{prep.height}")
    if h.channels != prep.channels or (dec.alpha is None) != (prep.alpha is None):
        raise VerificationError("verification failed: decoded image mode differs from the input's")
    if prep.alpha is not None and not np.array_equal(dec.alpha, prep.alpha):
        raise VerificationError("verification failed: the alpha plane did not survive exactly")
    if dec.icc != prep.icc or dec.exif != prep.exif:
        raise VerificationError("verification failed: the ICC profile or EXIF did not survive")
    value = prep.psnr(dec.pixels)
    if not value >= min_psnr:
        raise VerificationError(f"verification failed: decoded PSNR {value:.2f} dB is below "
                                f"{min_psnr:g} dB (--verify-psnr)")
    return value


def _encode(task: Task, res: Result) -> None:
    from .api import prepare
    from .image_io import open_image

    opts = task.options
    source = _read("-") if task.input == "-" else task.input
    label = "stdin" if task.input == "-" else task.input
    res.input_bytes = len(source) if isinstance(source, bytes) else _size(task.input)
    prep = prepare(open_image(source, name=label), opts.strip)
    res.notices += prep.notices
    codec = _codec(opts)
    quality = opts.quality
    if opts.target is None:
        data = codec.encode_prepared(prep, quality)
    else:
        found = codec.encode_for_target(prep, opts.target)
        data, quality = found.data, found.quality
        if not found.met:
            res.notices.append(f"{opts.target.describe(found.measure)} is out of reach: kept "
                               f"quality {quality:g}, the closest")
    if opts.verify:
        verify_encoded(codec, data, prep, opts.verify_psnr)
    res.width, res.height = prep.width, prep.height
    res.mode = ("L" if prep.channels == 1 else "RGB") + ("A" if prep.alpha is not None else "")
    res.quality = round(quality, 4)
    res.detail = f"q {quality:g}, {codec.encoding_model()}, {codec.device.type}"
    if not write_file(task.output, data, opts.overwrite, task.make_dirs):
        res.status = SKIPPED
        res.bytes = _size(task.output)
        return
    res.bytes = len(data)
    res.bpp = round(8 * len(data) / (prep.width * prep.height), 5)
    res.status = OK


def _decode(task: Task, res: Result) -> None:
    from .api import DEFAULT_MAX_PIXELS
    from .image_io import output_format
    from .metadata import image_bytes

    opts = task.options
    fmt = output_format(task.output, opts.format)
    data = _read(task.input)
    res.input_bytes = len(data)
    from .container import parse

    parse(data)  # a damaged file fails here, before torch and the model are loaded
    codec = _codec(opts)
    dec = codec.decode_full(data, opts.max_pixels or DEFAULT_MAX_PIXELS, opts.region)
    keep = not opts.strip
    out, notes = image_bytes(dec.to_image(strip=True), fmt, dec.icc if keep else None,
                             dec.exif if keep else None)
    res.notices += notes
    res.height, res.width = dec.pixels.shape[:2]
    res.mode = dec.mode
    res.bpp = round(8 * len(data) / (dec.header.width * dec.header.height), 5)
    res.detail = fmt
    if not write_file(task.output, out, opts.overwrite, task.make_dirs):
        res.status = SKIPPED
        res.bytes = _size(task.output)
        return
    res.bytes = len(out)
    res.status = OK


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def run_task(task: Task, raise_unexpected: bool = False) -> Result:
    """Code one file (read, code, optionally verify, write atomically) and say how it went.

    Errors become a failed :class:`Result` (nothing is written); only ``KeyboardInterrupt``
    propagates (and unexpected exceptions with ``raise_unexpected``). Picklable, so any
    executor can run it.
    """
    t0 = time.perf_counter()
    res = Result(task.input, task.output)
    try:
        opts = task.options
        if task.output != "-" and opts.overwrite != "force" and os.path.lexists(task.output):
            if opts.overwrite == "skip":
                res.status, res.bytes = SKIPPED, _size(task.output)
                return res
            raise OutputError(exists_message(task.output))
        if task.kind == ENCODE:
            _encode(task, res)
        elif task.kind == DECODE:
            _decode(task, res)
        else:
            raise LcodecError(f"unknown task kind {task.kind!r}")
    except LcodecError as exc:
        res.status, res.error, res.exit_code = FAILED, str(exc), exc.exit_code
        res.fatal = isinstance(exc, DeviceError) or (isinstance(exc, WeightsError) and task.kind == ENCODE)
    except MemoryError:
        res.status, res.exit_code = FAILED, 1
        res.error = "out of memory (try a smaller image, --max-memory, or fewer --jobs)"
    except Exception as exc:  # noqa: BLE001 - a bug: one file fails, the batch goes on
        if raise_unexpected:
            raise
        res.status, res.exit_code = FAILED, 3
        res.error = f"internal error: {type(exc).__name__}: {exc} (set LCODEC_DEBUG=1 for details)"
    finally:
        res.seconds = round(time.perf_counter() - t0, 4)
    return res


# --------------------------------------------------------------------------- running many

def map_files(tasks: Iterable[Task], executor: cf.Executor | None = None, *, fail_fast: bool = False,
              max_pending: int | None = None) -> Iterator[Result]:
    """Run ``tasks`` and yield their :class:`Result` s as they finish.

    ``executor``: any :class:`concurrent.futures.Executor` (process or thread pool, a Dask
    ``client.get_executor()``, ...); None runs them one by one here. At most ``max_pending``
    tasks are submitted ahead (default ``max(64, 4 x workers)``). After a failure with
    ``fail_fast``, or a failure that would repeat for every file (device, weights), nothing
    more is started: the files already running finish and are reported, the rest are not.
    Closing the generator early (or an interrupt) cancels the tasks not yet started.
    """
    it = iter(tasks)
    if executor is None:
        for task in it:
            res = run_task(task)
            yield res
            if res.fatal or (fail_fast and res.status == FAILED):
                return
        return
    window = max_pending or max(64, 4 * int(getattr(executor, "_max_workers", 0) or 0))
    pending: dict[cf.Future, Task] = {}
    stop = False

    def fill() -> None:
        while not stop and len(pending) < window:
            task = next(it, None)
            if task is None:
                return
            pending[executor.submit(run_task, task)] = task

    try:
        fill()
        while pending:
            done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                task = pending.pop(fut)
                if fut.cancelled():
                    continue
                res = _result_of(fut, task)
                yield res
                if res.fatal or (fail_fast and res.status == FAILED):
                    if not stop:
                        stop = True
                        for other in list(pending):
                            if other.cancel():
                                del pending[other]
            fill()
    finally:
        for fut in pending:
            fut.cancel()


def _result_of(fut: cf.Future, task: Task) -> Result:
    try:
        return fut.result()
    except Exception as exc:  # noqa: BLE001 - the worker died or the executor broke
        res = Result(task.input, task.output, FAILED, exit_code=1)
        res.error = f"worker failed: {type(exc).__name__}: {exc}".rstrip(": ")
        res.fatal = isinstance(exc, cf.BrokenExecutor)
        return res


def _in_input_order(tasks: list[Task], results: Iterable[Result]) -> list[Result]:
    order = {t.output: i for i, t in enumerate(tasks)}
    return sorted(results, key=lambda r: order.get(r.output, len(order)))


def encode_batch(inputs: Iterable[str | os.PathLike], output_dir: str | os.PathLike, *,
                 quality: float = 4.0, recursive: bool = False, executor: cf.Executor | None = None,
                 overwrite: str = "error", strip: bool = False, verify: bool = False,
                 verify_psnr: float = DEFAULT_VERIFY_PSNR, device: str = "auto",
                 model: str | None = None, tile: int | None = None, max_memory_mb: int | None = None,
                 effort: int = 1, target: Target | None = None,
                 fail_fast: bool = False) -> list[Result]:
    """Encode image files and folders into ``.lc`` files under ``output_dir`` (see :func:`plan`
    for the names, :class:`Options` for the settings), on ``executor`` if given; a ``target``
    (file size or PSNR) replaces ``quality`` with a search per file. Returns one
    :class:`Result` per file processed, in input order; failures do not raise."""
    from .api import check_quality

    opts = Options(quality=check_quality(quality), model=model, device=device, tile=tile,
                   max_memory_mb=max_memory_mb, effort=effort, strip=strip, verify=verify,
                   verify_psnr=verify_psnr, target=target, overwrite=overwrite)
    tasks = plan(ENCODE, inputs, output_dir, opts, recursive)
    return _in_input_order(tasks, map_files(tasks, executor, fail_fast=fail_fast))


def decode_batch(inputs: Iterable[str | os.PathLike], output_dir: str | os.PathLike, *,
                 format: str = "png", recursive: bool = False, executor: cf.Executor | None = None,
                 overwrite: str = "error", strip: bool = False, device: str = "auto",
                 max_pixels: int | None = None, tile: int | None = None,
                 max_memory_mb: int | None = None, fail_fast: bool = False) -> list[Result]:
    """Decode ``.lc`` files and folders into images of ``format`` under ``output_dir``, like
    :func:`encode_batch`."""
    opts = Options(device=device, tile=tile, max_memory_mb=max_memory_mb, strip=strip,
                   format=format, max_pixels=max_pixels, overwrite=overwrite)
    tasks = plan(DECODE, inputs, output_dir, opts, recursive)
    return _in_input_order(tasks, map_files(tasks, executor, fail_fast=fail_fast))


# --------------------------------------------------------------------------- the CLI's pool

def _on_sigterm(signum, frame) -> None:
    """A pool worker's SIGTERM: remove the temporary file being written (if any) and exit at
    once. It raises nothing: an exception raised in the middle of coding could surface inside
    a native extension (the range coder), which reports it as a crash; and one raised inside
    write_file could land between creating its temporary file and the cleanup that knows it."""
    global _pending
    if _deferring:
        _pending = True
        return
    partial = _partial
    if partial is not None:  # already renamed into place (a whole file) if this fails
        try:
            os.unlink(partial)
        except OSError:
            pass
    os._exit(128 + signal.SIGTERM)


def _init_worker(threads: int) -> None:
    """Process-pool initializer: Ctrl-C is the parent's business (it stops the workers with
    SIGTERM, which cleans up the file being written); ``threads`` torch threads each."""
    from .device import set_torch_threads

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    set_torch_threads(threads)


def process_pool(jobs: int) -> cf.ProcessPoolExecutor:
    """``jobs`` worker processes (spawned, so no torch state is forked), sharing the cores."""
    import multiprocessing

    from .device import cpu_count

    threads = max(1, cpu_count() // jobs)
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_init_worker, initargs=(threads,))


def stop_pool(executor: cf.Executor, timeout: float = 10.0) -> None:
    """Stop a process pool now: cancel queued tasks, SIGTERM the workers (each removes the
    temporary file it was writing), SIGKILL those still alive after ``timeout`` seconds."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    manager = getattr(executor, "_executor_manager_thread", None)
    previous_hook = threading.excepthook

    def quiet_manager(args):  # Python 3.11's pool trips over its cancelled futures when broken
        if args.thread is not manager:
            previous_hook(args)

    threading.excepthook = quiet_manager
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)
    executor.shutdown(wait=False, cancel_futures=True)
    if manager is not None:
        manager.join(max(1.0, deadline - time.monotonic()))
    threading.excepthook = previous_hook

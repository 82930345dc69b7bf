"""Choosing the compute device and CPU threads (``--device auto|cpu|cuda``)."""
from __future__ import annotations

import os

from .errors import DeviceError


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def select_device(spec: str = "auto"):
    """``auto``: CUDA when torch sees a GPU, else CPU. ``cuda`` without a GPU is an error."""
    import torch

    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None \
                else "torch sees no CUDA device"
            raise DeviceError(f"--device {spec} was requested but {why}; use --device cpu or auto")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise DeviceError(f"unknown device {spec!r} (use auto, cpu or cuda)")


def use_all_cores() -> None:
    """Let torch use every core this process may run on."""
    import torch

    torch.set_num_threads(cpu_count())


DEFAULT_CPU_BUDGET = 512 << 20


def memory_budget(device, max_memory_mb: int | None = None) -> int:
    """Bytes the transforms may use for one tile's working set.

    ``--max-memory`` wins; otherwise on CUDA a third of the free GPU memory, and on the CPU
    512 MiB or a quarter of the available RAM, whichever is smaller.
    """
    if max_memory_mb:
        return int(max_memory_mb) << 20
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 3)
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) << 10 for line in f if line.startswith("MemAvailable"))
        return min(DEFAULT_CPU_BUDGET, avail // 4)
    except (OSError, StopIteration, ValueError):
        return DEFAULT_CPU_BUDGET

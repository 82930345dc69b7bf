"""Choosing the compute device and CPU threads (``--device auto|cpu|cuda``)."""
from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass

from .errors import DeviceError


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Device:
    """Where the transforms run: ``cpu`` (numpy, no torch import) or ``cuda`` (torch)."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def torch(self):
        """The ``torch.device`` (imports torch)."""
        import torch

        return torch.device(str(self))


CPU = Device("cpu")


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded; without one CUDA cannot work, and ``auto`` can
    choose the CPU without importing torch (1-2 s)."""
    return os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))


def select_device(spec: str = "auto") -> Device:
    """``auto``: CUDA when torch sees a GPU, else CPU. ``cuda`` without a GPU is an error."""
    spec = (spec or "auto").lower()
    if spec == "cpu" or (spec == "auto" and not nvidia_driver_present()):
        return CPU
    if spec == "auto":
        import torch

        return Device("cuda") if torch.cuda.is_available() else CPU
    if spec == "cuda" or spec.startswith("cuda:"):
        import torch

        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None \
                else "torch sees no CUDA device"
            raise DeviceError(f"--device {spec} was requested but {why}; use --device cpu or auto")
        index = None
        if ":" in spec:
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError:
                raise DeviceError(f"unknown device {spec!r} (use auto, cpu or cuda)") from None
            if not 0 <= index < torch.cuda.device_count():
                raise DeviceError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
        return Device("cuda", index)
    raise DeviceError(f"unknown device {spec!r} (use auto, cpu or cuda)")


_torch_threads: int | None = None  # set_torch_threads's count (None: every core)


def set_torch_threads(threads: int | None) -> None:
    """Torch threads for this process from now on (None: every core it may run on, the
    default), e.g. a batch worker's share of the cores; applied at once if torch is imported,
    otherwise when the transforms import it."""
    global _torch_threads
    _torch_threads = threads
    apply_torch_threads()


def apply_torch_threads() -> None:
    """Give torch (when this process uses it) :func:`set_torch_threads`'s count of threads,
    by default every core this process may run on; numpy's BLAS uses them all by default."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(_torch_threads or cpu_count())


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

        free, _ = torch.cuda.mem_get_info(device.torch())
        return int(free // 3)
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) << 10 for line in f if line.startswith("MemAvailable"))
        return min(DEFAULT_CPU_BUDGET, avail // 4)
    except (OSError, StopIteration, ValueError):
        return DEFAULT_CPU_BUDGET

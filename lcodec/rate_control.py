"""Quality search for a target file size or PSNR (``lcodec encode --target-size/--target-psnr``).

A ``.lc`` file's quality is continuous (``-q`` 1..8, stored as float32), and both its size
and its PSNR grow with it; the log of the size is close to linear in the quality. So a few
complete encodes find the quality that meets a target, as ``cwebp -size`` / ``-psnr`` do:

* ``Target("size", B)``: the highest quality whose file has at most ``B`` bytes;
* ``Target("psnr", D)``: the lowest quality whose decoded image has at least ``D`` dB.

:func:`search` first tries the end of the range that may already meet the target (quality 8
for a size, 1 for a PSNR), then the other end, then narrows the bracket between a quality
that meets the target and one that does not by regula falsi on the log of the size (on the
dB of the PSNR), Illinois variant, aiming at the middle of the close-enough window, with
bisection whenever a step would land at a bracket end. It stops when the best file found is within ``slack`` of the target (1% of the bytes,
0.05 dB), when the bracket is narrower than ``tolerance`` quality units, or after
``max_encodes`` encodes; it returns the best file that meets the target, or, when no quality
can, the one closest to it (``met`` False). Pure Python: the caller supplies the encoder and
the measure.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

SIZE, PSNR = "size", "psnr"
SIZE_SLACK = 0.01        # a file within 1% below the size target is close enough
PSNR_SLACK_DB = 0.05     # a file within 0.05 dB above the PSNR target is close enough
TOLERANCE = 0.01         # quality units
MAX_ENCODES = 12
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000,
               "m": 1024 ** 2, "mib": 1024 ** 2, "mb": 1000 ** 2}


@dataclass(frozen=True)
class Target:
    """What a file must meet: ``kind`` ``"size"`` (``value`` bytes, at most) or ``"psnr"``
    (``value`` dB, at least)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in (SIZE, PSNR):
            raise ValueError(f"target kind must be {SIZE!r} or {PSNR!r}, got {self.kind!r}")
        if not self.value > 0 or math.isinf(self.value):
            raise ValueError(f"target {self.kind} must be a positive number, got {self.value}")

    def met_by(self, measure: float) -> bool:
        return measure <= self.value if self.kind == SIZE else measure >= self.value

    def gap(self, measure: float) -> float:
        """How far ``measure`` is above the target, on a scale close to linear in the quality
        (log of the bytes; dB)."""
        if self.kind == SIZE:
            return math.log(max(measure, 1.0) / self.value)
        return measure - self.value

    def aim(self) -> float:
        """The :meth:`gap` the search steers for: the middle of the close-enough window, so
        that a step that lands a little off still meets the target."""
        return math.log(1 - SIZE_SLACK / 2) if self.kind == SIZE else PSNR_SLACK_DB / 2

    def close_enough(self, measure: float) -> bool:
        if self.kind == SIZE:
            return self.value * (1 - SIZE_SLACK) <= measure <= self.value
        return self.value <= measure <= self.value + PSNR_SLACK_DB

    def describe(self, measure: float | None = None) -> str:
        unit = (lambda v: f"{v:.0f} bytes") if self.kind == SIZE else (lambda v: f"{v:.2f} dB")
        text = f"target {self.kind} {unit(self.value)}"
        return text if measure is None else f"{text} (got {unit(measure)})"


@dataclass(frozen=True)
class Found:
    """The file :func:`search` chose: its ``quality``, bytes, measure (bytes or dB), whether
    it meets the target, and how many encodes the search took."""

    quality: float
    data: bytes
    measure: float
    met: bool
    encodes: int


def parse_size(text: str) -> int:
    """Bytes of a size such as ``50000``, ``48K``/``48KiB`` (x1024), ``50KB`` (x1000),
    ``1.5M``/``1.5MiB``, ``2MB``. Raises ``ValueError``."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (bytes, or a number with K, KB, KiB, M, MB or MiB)")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 1:
        raise ValueError(f"size must be at least 1 byte, got {text!r}")
    return size


def search(encode: Callable[[float], bytes], measure: Callable[[bytes], float], target: Target,
           low: float = 1.0, high: float = 8.0, tolerance: float = TOLERANCE,
           max_encodes: int = MAX_ENCODES) -> Found:
    """The file of ``encode(quality)`` for ``quality`` in ``[low, high]`` that best meets
    ``target``, where ``measure(file)`` (bytes or dB) grows with the quality. See the module
    docstring for the method."""
    tried: list[tuple[float, bytes, float]] = []

    def attempt(q: float) -> float:
        data = encode(q)
        m = float(measure(data))
        tried.append((q, data, m))
        return target.gap(m) - target.aim()

    def result() -> Found:
        good = [t for t in tried if target.met_by(t[2])]
        if good:  # the biggest file that fits; the smallest file that reaches the PSNR
            if target.kind == SIZE:
                q, data, m = max(good, key=lambda t: t[2])
            else:
                q, data, m = min(good, key=lambda t: (len(t[1]), t[2]))
            return Found(q, data, m, True, len(tried))
        q, data, m = min(tried, key=lambda t: abs(target.gap(t[2])))
        return Found(q, data, m, False, len(tried))

    def done() -> bool:
        return any(target.met_by(m) and target.close_enough(m) for _, _, m in tried)

    # A size target is best met high, a PSNR target low: try that end first.
    first, second = (high, low) if target.kind == SIZE else (low, high)
    g_first = attempt(first)
    if target.met_by(tried[-1][2]):
        return result()
    g_second = attempt(second)
    if not target.met_by(tried[-1][2]) or done():
        return result()
    (a, ga), (b, gb) = sorted([(first, g_first), (second, g_second)])  # ga < 0 < gb: gaps grow with q
    side = 0
    while b - a > tolerance and len(tried) < max_encodes and not done():
        q = a - ga * (b - a) / (gb - ga) if gb != ga else (a + b) / 2
        margin = 0.01 * (b - a)
        if not a + margin <= q <= b - margin:
            q = (a + b) / 2
        q = round(q, 4)
        if q in (a, b):
            break
        g = attempt(q)
        if g < 0:
            a, ga = q, g
            if side < 0:
                gb /= 2  # Illinois: the same end moved twice, so the other one pulls less
            side = -1
        else:
            b, gb = q, g
            if side > 0:
                ga /= 2
            side = 1
    return result()

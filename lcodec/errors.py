"""The errors a user can cause, as a small hierarchy the CLI turns into one line and an exit code.

Imports nothing from the rest of the package, so every layer can raise these.
"""
from __future__ import annotations


class LcodecError(Exception):
    """Base of every error lcodec reports to a user (exit code 1)."""

    exit_code = 1


class InputError(LcodecError):
    """An input path is missing, unreadable or of the wrong kind."""


class UnsupportedImageError(InputError):
    """The input is not an image lcodec can encode."""


class CorruptStreamError(LcodecError):
    """A ``.lc`` file is truncated, damaged or not an lcodec file at all."""


class UnsupportedVersionError(CorruptStreamError):
    """A ``.lc`` file uses a format version or a critical feature this lcodec does not know."""


class WeightsError(LcodecError):
    """The model weights are missing, damaged, or are not the ones a file was encoded with."""


class WeightsMismatchError(WeightsError):
    """Weights whose content hash differs from the one recorded (in the manifest or a file)."""


class DeviceError(LcodecError):
    """The requested compute device is not available."""


class OutputError(LcodecError):
    """An output could not be written (permissions, full disk, ...)."""

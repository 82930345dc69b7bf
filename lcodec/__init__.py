"""lcodec: a learned image codec.

``lcodec.encode(image, quality=4) -> bytes`` and ``lcodec.decode(data) -> PIL.Image``; see
:mod:`lcodec.api`. Importing the package is cheap: torch loads on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Codec", "decode", "encode", "info", "__version__"]


def __getattr__(name: str):
    if name in ("Codec", "decode", "encode", "info"):
        from . import api

        return getattr(api, name)
    raise AttributeError(name)

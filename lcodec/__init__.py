"""lcodec: a learned image codec.

``lcodec.encode(image, quality=4) -> bytes`` and ``lcodec.decode(data) -> PIL.Image``; see
:mod:`lcodec.api`. Many files, on any ``concurrent.futures`` executor:
``lcodec.encode_batch(paths, out_dir, executor=...)`` / ``decode_batch``; see
:mod:`lcodec.batch`. Importing the package is cheap: torch loads on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Codec", "decode", "decode_batch", "encode", "encode_batch", "info", "map_files", "__version__"]


def __getattr__(name: str):
    if name in ("Codec", "decode", "encode", "info"):
        from . import api

        return getattr(api, name)
    if name in ("encode_batch", "decode_batch", "map_files"):
        from . import batch

        return getattr(batch, name)
    raise AttributeError(name)

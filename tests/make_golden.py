"""Write golden files for the newest weights of every installed model: ``python -m tests.make_golden``.

Golden files are written once per (format version, model version) and then never changed:
every later lcodec must decode them (tests/test_golden.py). Existing files are kept. The
source image of each case, the same for every model version, is kept once as
``source-<case>.png``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from lcodec import api, container
from lcodec.weights import read_manifest
from tests.conftest import synthetic_photo

HERE = Path(__file__).parent / "golden"
CASES = [  # (name suffix, width, height, quality, tile, grayscale)
    ("rgb-q2", 96, 64, 2.0, None, False),
    ("rgb-q6.5-tiled", 200, 136, 6.5, 64, False),
    ("gray-q4", 33, 47, 4.0, None, True),
]


def main() -> None:
    HERE.mkdir(exist_ok=True)
    index_path = HERE / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    models = sorted({e.name for e in read_manifest()})
    for model, (suffix, w, h, q, tile, gray) in ((m, c) for m in models for c in CASES):
        codec = api.Codec("cpu", model=model, tile=tile)
        pixels = synthetic_photo(w, h, seed=w)
        channels = 3
        if gray:
            pixels = np.repeat(pixels[:, :, 1:2], 3, axis=2)
            channels = 1
        data = codec.encode_pixels(pixels, channels, q)
        header = container.parse(data).header
        name = f"v{container.FORMAT_VERSION}-{header.model_name}-v{header.model_version}-{suffix}"
        if (HERE / f"{name}.lc").exists():
            continue
        (HERE / f"{name}.lc").write_bytes(data)
        decoded = codec.decode(data)
        decoded.save(HERE / f"{name}.png")
        source = HERE / f"source-{suffix}.png"
        if not source.exists():
            Image.fromarray(pixels if not gray else pixels[:, :, 0]).save(source)
        index[name] = {"width": w, "height": h, "quality": q, "tile": tile or 0,
                       "mode": decoded.mode, "bytes": len(data)}
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

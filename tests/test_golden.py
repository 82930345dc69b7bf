"""Golden files: every .lc file any released lcodec wrote must keep decoding.

``tests/golden/*.lc`` were written by earlier versions (``python -m tests.make_golden``) and are
never regenerated. Entropy decoding must succeed exactly (a damaged or misread stream fails
loudly); pixels may differ from the stored decode by float rounding of the synthesis only.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lcodec

GOLDEN = Path(__file__).parent / "golden"
INDEX = json.loads((GOLDEN / "index.json").read_text()) if (GOLDEN / "index.json").exists() else {}


def test_there_are_golden_files():
    assert len(INDEX) >= 3


@pytest.mark.parametrize("name", sorted(INDEX))
def test_golden_file_decodes(codec, name):
    meta = INDEX[name]
    data = (GOLDEN / f"{name}.lc").read_bytes()
    assert len(data) == meta["bytes"]
    info = lcodec.info(data)
    assert (info["width"], info["height"], info["quality"]) == (meta["width"], meta["height"], meta["quality"])
    decoded = np.asarray(codec.decode(data)).astype(int)
    expected = np.asarray(Image.open(GOLDEN / f"{name}.png")).astype(int)
    assert decoded.shape == expected.shape
    diff = np.abs(decoded - expected)
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01, f"max {diff.max()}, {(diff > 0).mean():.4f} differ"


@pytest.mark.parametrize("name", sorted(INDEX))
def test_golden_container_round_trips_byte_for_byte(name):
    """The container code still reads every field of old files and writes them back unchanged."""
    from lcodec import container

    data = (GOLDEN / f"{name}.lc").read_bytes()
    parsed = container.parse(data)
    assert container.serialize(parsed) == data

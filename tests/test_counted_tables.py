"""Tables counted on training photos (the ``y`` tables' frequencies, ``z`` per quality level):
counting and building them, shipping them in weights, and coding files with them (header flag
0x0001 for the per-level ``z`` tables) next to files without them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lcodec import container
from lcodec.api import Codec
from lcodec.entropy.tables import TOTAL, TableSet, gaussian_tables, trimmed_tables
from lcodec.errors import CorruptStreamError, UnsupportedVersionError, WeightsError
from lcodec.pipeline import CodecPipeline
from lcodec.runtime.transforms import nearest_level
from lcodec.train.export import reexport
from lcodec.train.counted_tables import SymbolCounter, counted_y_tables, level_z_tables
from lcodec.weights import find_entry, load_model, read_verified

from .conftest import synthetic_photo
from .test_grouped import _weights_folder

GRID = 20


@pytest.mark.parametrize("quality,level", [(1.0, 0), (1.49, 0), (1.5, 1), (2.0, 1), (4.7, 4),
                                           (7.5, 7), (8.0, 7)])
def test_nearest_level_rounds_halves_up(quality, level):
    assert nearest_level(quality, 8) == level


def test_nearest_level_refuses_qualities_outside_the_levels():
    with pytest.raises(ValueError):
        nearest_level(0.5, 8)


def _bits(tables, level_offset: int, samples: np.ndarray) -> float:
    """Ideal code length of ``samples`` (one channel) under table ``level_offset``."""
    table = tables.table(level_offset).astype(np.float64) / TOTAL
    offset, length = int(tables.offsets[level_offset]), int(tables.lengths[level_offset])
    idx = samples - offset
    inside = (idx >= 0) & (idx < length)
    assert inside.all()
    return float(-np.log2(table[idx]).sum())


def test_level_tables_beat_one_shared_table_on_data_that_widens_with_the_level():
    """Two levels of one channel, narrow and wide: each level's counted table codes fresh
    samples of its level in fewer bits than a table of the mixture, and a value that the
    counts never saw keeps a nonzero frequency (from the learned density)."""
    rng = np.random.default_rng(0)
    grid = np.arange(-GRID, GRID + 1)

    def draw(scale, n):
        return np.clip(np.rint(rng.laplace(0, scale, n)), -GRID, GRID).astype(np.int64)

    train = [draw(0.4, 20000), draw(4.0, 20000)]
    counts = np.stack([np.bincount(s + GRID, minlength=2 * GRID + 1) for s in train])[:, None, :]
    learned = np.exp(-np.abs(grid) / 2.0)[None]  # the shared density: between the two
    per_level = level_z_tables(counts, learned, GRID)
    shared = trimmed_tables(learned, -GRID)
    assert per_level.size == 2
    for level, scale in enumerate((0.4, 4.0)):
        test = draw(scale, 5000)
        assert _bits(per_level, level, test) < 0.97 * _bits(shared, 0, test)
    unseen = GRID  # the narrow level never produced +GRID
    assert counts[0, 0, unseen + GRID] == 0
    start = int(per_level.offsets[0])
    assert start <= unseen < start + int(per_level.lengths[0])
    assert per_level.table(0)[unseen - start] >= 1


def test_level_tables_refuse_a_learned_density_of_another_shape():
    with pytest.raises(ValueError):
        level_z_tables(np.zeros((8, 4, 2 * GRID + 1), dtype=np.int64), np.ones((3, 2 * GRID + 1)), GRID)


def test_symbol_counter_counts_what_an_encoder_is_handed_per_table():
    tables = gaussian_tables(np.array([0.5, 3.0]))
    counter = SymbolCounter(tables)
    lo0, n0 = int(tables.offsets[0]), int(tables.lengths[0])
    counter.encode(np.array([0, 0, 1, lo0 - 5]), np.array([0, 0, 0, 0]), tables)  # lo0 - 5: escape
    counter.encode(np.array([[2], [0]]), np.array([[1], [1]]), tables)
    c0, c1 = counter.counts(0), counter.counts(1)
    assert len(c0) == n0 + 1 and c0[-lo0] == 2 and c0[1 - lo0] == 1 and c0[-1] == 1 and c0.sum() == 4
    assert c1[2 - int(tables.offsets[1])] == 1 and c1.sum() == 2
    with pytest.raises(ValueError):
        counter.encode(np.array([0]), np.array([0]), gaussian_tables(np.array([0.5, 3.0])))


def test_counted_y_tables_keep_the_ranges_and_follow_the_counts():
    """A table whose symbols were mostly 0 gives 0 more of its mass than the Gaussian did; a
    table that saw nothing stays the Gaussian (up to rounding of the frequencies)."""
    tables = gaussian_tables(np.array([1.0, 2.0]))
    counter = SymbolCounter(tables)
    counter.encode(np.zeros(5000, dtype=np.int64), np.zeros(5000, dtype=np.int64), tables)
    counted = counted_y_tables(counter)
    assert np.array_equal(counted.offsets, tables.offsets) and np.array_equal(counted.lengths, tables.lengths)
    zero = -int(tables.offsets[0])
    assert counted.table(0)[zero] > 1.5 * tables.table(0)[zero]
    assert np.abs(counted.table(1).astype(np.int64) - tables.table(1).astype(np.int64)).max() <= 8


@pytest.fixture(scope="module")
def level_dir(tmp_path_factory, photos):
    """grouped v3 and context v12 shipped, plus grouped v4: v3 exported again with its tables
    counted on the test photos."""
    folder = tmp_path_factory.mktemp("zl")
    _weights_folder(folder, find_entry("grouped", 3), find_entry("context", 12))
    reexport("grouped", "grouped", base="context", note="test", folder=folder, count_tables_on=photos)
    return folder


def test_reexport_counts_y_tables_and_adds_one_z_table_per_channel_and_level(level_dir):
    entry, source = find_entry("grouped", folder=level_dir), find_entry("grouped", 3, level_dir)
    assert entry.version == 4
    arrays, old = read_verified(entry, level_dir), read_verified(source, level_dir)
    levels = len(entry.config["lambdas"])
    assert len(arrays["tables.zl.offsets"]) == levels * entry.config["N"]
    for key in ("tables.y.offsets", "tables.y.lengths", "tables.z.freqs"):
        assert np.array_equal(arrays[key], old[key]), key  # the same tables, ranges and escapes
    # (numpy's exp may differ in the last bit between CPUs: AVX-512 against AVX2)
    assert np.allclose(arrays["tables.scale_table"], old["tables.scale_table"], rtol=1e-12, atol=0)
    assert not np.array_equal(arrays["tables.y.freqs"], old["tables.y.freqs"])  # counted
    record = json.loads((level_dir / "manifest.json").read_text())["models"][-1]
    assert "counted_tables" in record["training"]


@pytest.mark.parametrize("quality", [1.0, 2.5, 8.0])
def test_level_tables_change_only_the_hyper_stream(level_dir, monkeypatch, quality):
    """Same pixels as the weights without them, other streams; the file says so in its header
    flag, and decodes through the public API."""
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(level_dir))
    pixels = synthetic_photo(200, 136, seed=5)
    old, new = CodecPipeline(load_model("grouped", 3)), CodecPipeline(load_model("grouped", 4))
    assert new.z_per_level and not old.z_per_level
    old_hyper, old_tiles = old.encode(pixels, quality)
    new_hyper, new_tiles = new.encode(pixels, quality)
    assert new_hyper != old_hyper and new_tiles != old_tiles
    decoded = new.decode(new_hyper, new_tiles, 136, 200, quality, z_per_level=True)
    assert np.array_equal(decoded, old.decode(old_hyper, old_tiles, 136, 200, quality))
    assert np.array_equal(decoded, new.decode(new_hyper, new_tiles, 136, 200, quality))  # default: as encode
    codec = Codec("cpu", model="grouped")
    data = codec.encode_pixels(pixels, 3, quality)
    header = container.parse(data).header
    assert header.flags == container.FLAG_Z_PER_LEVEL and header.model_version == 4
    assert np.array_equal(codec.decode_pixels(data)[0], new.decode(new_hyper, new_tiles, 136, 200, quality,
                                                                    z_per_level=True))


def test_a_flag_the_weights_cannot_honour_is_a_clean_error(level_dir, monkeypatch):
    """A v3 file whose header claims per-level z tables (v3 has none) is refused with one
    line, not decoded with the wrong tables."""
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(level_dir))
    codec = Codec("cpu", model="grouped")
    pipe = CodecPipeline(load_model("grouped", 3))
    hyper, tiles = pipe.encode(synthetic_photo(64, 64, seed=2), 4.0)
    entry = pipe.loaded.entry
    header = container.Header(64, 64, 3, 4.0, entry.name, entry.version, entry.digest,
                              flags=container.FLAG_Z_PER_LEVEL)
    data = container.serialize(container.Container(header, hyper, tiles))
    with pytest.raises(CorruptStreamError, match="per-level tables, which weights grouped v3 do not have"):
        codec.decode_pixels(data)


def test_unknown_flags_are_refused():
    entry = find_entry("grouped")
    for flags in (0x0002, 0x8000, 0x8001):
        header = container.Header(64, 64, 3, 4.0, entry.name, entry.version, entry.digest, flags=flags)
        data = container.serialize(container.Container(header, b"\0" * 4, [b"\0" * 4]))
        with pytest.raises(UnsupportedVersionError, match="unknown header flags"):
            container.parse(data)


def test_weights_with_a_wrong_number_of_level_tables_are_refused(level_dir, tmp_path, monkeypatch):
    import torch

    entry = find_entry("grouped", folder=level_dir)
    tensors = torch.load(level_dir / entry.file, map_location="cpu", weights_only=True)
    t = trimmed_tables(np.ones((3, 5)), -2).to_arrays("zl")  # 3 tables, not 8 x 64
    tensors.update({f"tables.{k}": torch.from_numpy(v) for k, v in t.items()})
    _weights_folder(tmp_path, find_entry("context", 12))
    torch.save(tensors, tmp_path / entry.file)
    import hashlib

    manifest = json.loads((level_dir / "manifest.json").read_text())
    record = next(m for m in manifest["models"] if (m["name"], m["version"]) == ("grouped", 4))
    record["sha256"] = hashlib.sha256((tmp_path / entry.file).read_bytes()).hexdigest()
    ours = json.loads((tmp_path / "manifest.json").read_text())
    ours["models"].append(record)
    (tmp_path / "manifest.json").write_text(json.dumps(ours))
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="per-level z tables"):
        load_model("grouped", 4)

"""The batch API on a Dask cluster (any concurrent.futures executor works; this is the
distributed one). Skipped unless the ``dask`` extra (dask + distributed) is installed."""
from __future__ import annotations

import pytest
from PIL import Image

import lcodec

from .conftest import synthetic_photo

distributed = pytest.importorskip("distributed")


def test_encode_and_decode_batch_on_a_local_dask_cluster(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.png", "sub/c.png"]):
        Image.fromarray(synthetic_photo(20 + i, 12, seed=i)).save(src / name)
    (src / "broken.png").write_text("junk")

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        executor = client.get_executor()
        encoded = lcodec.encode_batch([src], tmp_path / "out", recursive=True, executor=executor)
        decoded = lcodec.decode_batch([tmp_path / "out"], tmp_path / "back", recursive=True,
                                      executor=executor)

    assert [r.status for r in encoded] == ["ok", "ok", "failed", "ok"]  # a, b, broken, sub/c
    assert "not an image" in encoded[2].error
    assert (tmp_path / "out" / "sub" / "c.lc").is_file()
    assert [r.status for r in decoded] == ["ok"] * 3
    assert Image.open(tmp_path / "back" / "sub" / "c.png").size == (22, 12)
    # the same files as a local run
    local = lcodec.encode_batch([src / "a.png"], tmp_path / "local")
    assert (tmp_path / "local" / "a.lc").read_bytes() == (tmp_path / "out" / "a.lc").read_bytes()
    assert local[0].ok

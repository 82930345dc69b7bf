"""Averaging the weights of training runs (lcodec.train.soup): the mean of each tensor, blocks
that only some runs have, refusals, and a soup of two real runs that exports and codes."""
from __future__ import annotations

import json

import pytest
import torch

from lcodec.api import Codec
from lcodec.models import build_model
from lcodec.train.export import export_checkpoint
from lcodec.train.loop import TrainConfig, train
from lcodec.train.soup import average_weights, main

from .conftest import perturbed, psnr, synthetic_photo

ARCH = dict(N=8, M=12, groups=[4, 8], Na=16, res_a=1, res_s=1)


def _checkpoint(path, model, cpu_seconds, **arch):
    perturbed(model, seed=sum(path.name.encode()))
    torch.save({"model": model.state_dict(), "config_json": json.dumps({"family": "grouped", **arch}),
                "state_json": json.dumps({"step": 10, "cpu_seconds": cpu_seconds})}, path)
    return path


def _model(ck: dict) -> torch.nn.Module:
    config = json.loads(ck["config_json"])
    model = build_model(config.pop("family"), **config)
    model.load_state_dict(ck["model"])
    return model.eval()


def test_soup_is_the_mean_of_every_tensor_and_sums_the_runs_cpu(tmp_path):
    a = _checkpoint(tmp_path / "a.pt", build_model("grouped", **ARCH), 3600.0, **ARCH)
    b = _checkpoint(tmp_path / "b.pt", build_model("grouped", **ARCH), 1800.0, **ARCH)
    soup = average_weights([str(a), str(b)])
    wa, wb = torch.load(a)["model"], torch.load(b)["model"]
    assert set(soup["model"]) == set(wa)
    for key in ("g_a.0.weight", "g_s_res.1.body.2.weight", "nonanchor_nets.0.merge.4.weight"):
        assert not torch.equal(wa[key], wb[key])
        assert torch.allclose(soup["model"][key], (wa[key] + wb[key]) / 2, atol=1e-7)
    assert torch.equal(soup["model"]["lambdas"], wa["lambdas"])
    state = json.loads(soup["state_json"])
    assert state["cpu_seconds"] == 5400.0 and state["averaged_from"] == [str(a), str(b)]
    assert _model(soup) is not None  # loads into its architecture


@torch.no_grad()
def test_a_block_one_run_lacks_is_averaged_as_the_identity(tmp_path):
    deep_arch = dict(ARCH, res_a_deep=2, res_s_deep=1)
    plain = _checkpoint(tmp_path / "plain.pt", build_model("grouped", **ARCH), 10.0, **ARCH)
    deep = _checkpoint(tmp_path / "deep.pt", build_model("grouped", **deep_arch), 20.0, **deep_arch)
    soup = average_weights([str(plain), str(deep)])
    wd = torch.load(deep)["model"]
    assert json.loads(soup["config_json"]) == {"family": "grouped", **deep_arch}
    assert torch.equal(soup["model"]["g_s_deep.0.body.0.weight"], wd["g_s_deep.0.body.0.weight"])
    assert torch.allclose(soup["model"]["g_a_deep.1.body.2.weight"], wd["g_a_deep.1.body.2.weight"] / 2)
    assert torch.allclose(soup["model"]["g_s_deep.0.body.2.bias"], wd["g_s_deep.0.body.2.bias"] / 2)
    # a soup of a model with itself plus identity blocks codes as that model
    identity = torch.load(deep)
    for key in wd:
        if key.startswith(("g_a_deep.", "g_s_deep.")) and ".body.2." in key:
            identity["model"][key] = torch.zeros_like(wd[key])
        elif not key.startswith(("g_a_deep.", "g_s_deep.")):
            identity["model"][key] = torch.load(plain)["model"][key]
    torch.save(identity, tmp_path / "identity.pt")
    same = _model(average_weights([str(plain), str(tmp_path / "identity.pt")]))
    ref = _model(torch.load(plain))
    x = torch.from_numpy(synthetic_photo(64, 64, seed=2)).permute(2, 0, 1)[None].float() / 255
    y = ref.analysis(x, 4.0)
    assert torch.allclose(same.analysis(x, 4.0), y, atol=1e-5)
    assert torch.allclose(same.synthesis(torch.round(y), 4.0), ref.synthesis(torch.round(y), 4.0), atol=1e-5)


def test_dropped_deep_blocks_leave_a_soup_with_the_decoder_of_the_runs_without_them(tmp_path, capsys):
    deep_arch = dict(ARCH, res_a_deep=2, res_s_deep=1)
    plain = _checkpoint(tmp_path / "plain.pt", build_model("grouped", **ARCH), 10.0, **ARCH)
    deep = _checkpoint(tmp_path / "deep.pt", build_model("grouped", **deep_arch), 20.0, **deep_arch)
    assert main([str(plain), str(deep), "--drop", "res_s_deep", "-o", str(tmp_path / "soup.pt")]) == 0
    soup = torch.load(tmp_path / "soup.pt")
    assert json.loads(soup["config_json"]) == {"family": "grouped", **dict(ARCH, res_a_deep=2)}
    assert not [k for k in soup["model"] if k.startswith("g_s_deep.")]
    wd = torch.load(deep)["model"]
    assert torch.allclose(soup["model"]["g_a_deep.0.body.2.weight"], wd["g_a_deep.0.body.2.weight"] / 2)
    assert json.loads(soup["state_json"])["dropped_blocks"] == ["res_s_deep"]
    model = _model(soup)
    assert (model.res_a_deep, model.res_s_deep) == (2, 0)
    with pytest.raises(ValueError, match="cannot drop res_s"):
        average_weights([str(plain), str(deep)], ("res_s",))


def test_soup_refuses_other_architectures_and_missing_tensors(tmp_path):
    a = _checkpoint(tmp_path / "a.pt", build_model("grouped", **ARCH), 1.0, **ARCH)
    wide = dict(ARCH, Na=24)
    b = _checkpoint(tmp_path / "b.pt", build_model("grouped", **wide), 1.0, **wide)
    with pytest.raises(ValueError, match="another architecture.*Na"):
        average_weights([str(a), str(b)])
    broken = torch.load(a)
    del broken["model"]["g_s.2.bias"]
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="lacks g_s.2.bias"):
        average_weights([str(a), str(tmp_path / "broken.pt")])
    with pytest.raises(ValueError, match="at least two"):
        average_weights([str(a)])
    torch.save({**torch.load(a), "config_json": "{not json"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: not a training checkpoint"):
        average_weights([str(a), str(tmp_path / "bad.pt")])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        average_weights([str(a), str(tmp_path / "junk.pt")])


def test_soup_command_writes_the_checkpoint_or_fails_in_one_line(tmp_path, capsys):
    a = _checkpoint(tmp_path / "a.pt", build_model("grouped", **ARCH), 1.0, **ARCH)
    b = _checkpoint(tmp_path / "b.pt", build_model("grouped", **ARCH), 1.0, **ARCH)
    assert main([str(a), str(b), "-o", str(tmp_path / "soup.pt")]) == 0
    assert "the mean of 2 checkpoints" in capsys.readouterr().out
    assert _model(torch.load(tmp_path / "soup.pt")) is not None
    assert main([str(a), "no-such-model", "-o", str(tmp_path / "x.pt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lcodec: error: no-such-model") and err.count("\n") == 1
    assert main([str(a), str(b), "-o", str(tmp_path / "missing" / "soup.pt")]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "missing").exists()


def test_soup_of_two_runs_from_one_start_exports_and_codes(photos, tmp_path, monkeypatch):
    cfg = dict(data=str(photos), minutes=0.0, max_steps=3, crop=64, batch=2, threads="1",
               compile="off", init_from="hyperprior")
    one = train(TrainConfig(**cfg, run_dir=str(tmp_path / "one")))
    two = train(TrainConfig(**cfg, run_dir=str(tmp_path / "two"), seed=1))
    assert main([str(one), str(two), "-o", str(tmp_path / "soup.pt")]) == 0
    folder = tmp_path / "weights"
    export_checkpoint(tmp_path / "soup.pt", "hyperprior", folder=folder)
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(folder))
    pixels = synthetic_photo(96, 64, seed=5)
    codec = Codec("cpu")
    out, header = codec.decode_pixels(codec.encode_pixels(pixels, 3, 5.0))
    assert header.model_name == "hyperprior" and psnr(out, pixels) > 24

"""The ``grouped`` family: channel groups on top of the checkerboard context, exact and tiled.

These tests build grouped models from the shipped ``context`` weights plus seeded random
group pass networks, export them to a temporary weights folder with the real export code,
and code images with them.
"""
from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch

from lcodec import container
from lcodec.api import Codec
from lcodec.latent_coding import LatentCoder
from lcodec.models import build_model
from lcodec.models.context import anchor_mask
from lcodec.runtime import exact
from lcodec.runtime.exact import conv3x3_at
from lcodec.runtime.ops import conv2d
from lcodec.entropy.tables import SCALE_LEVELS
from lcodec.pipeline import CodecPipeline
from lcodec.train.export import export_checkpoint, reexport
from lcodec.train.grouped import DEFAULT_GROUPS, GroupedTrainConfig, train_grouped
from lcodec.train.widen import group_widths, widen_hidden
from lcodec.train.loop import TrainConfig, train
from lcodec.errors import WeightsError, WeightsMismatchError
from lcodec.weights import (find_entry, load_model, load_state_dict, load_weights_state, network_state,
                            read_verified, weights_dir)

from .conftest import psnr, synthetic_photo

GROUPS = (16, 16, 32, 64, 64)


def _grouped_model(correction_scale: float, seed: int = 0):
    """The shipped context weights in a grouped model with a shuffled channel order and
    seeded group networks whose last layers are scaled to ``correction_scale``."""
    entry = find_entry("context")
    order = list(range(entry.config["M"]))
    random.Random(seed).shuffle(order)
    config = dict(entry.config, groups=GROUPS, channel_order=order, group_features=16, group_hidden=24)
    model = build_model("grouped", **config)
    model.load_state_dict(load_state_dict(weights_dir() / entry.file), strict=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in list(model.anchor_nets) + list(model.nonanchor_nets):
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            for p in net.merge[-1].parameters():
                p.mul_(correction_scale / 0.05)
    return model.eval(), entry, config


def _weights_folder(folder, *entries):
    """``folder`` holding the shipped weights of ``entries`` only, with their manifest records."""
    folder.mkdir(exist_ok=True)
    for entry in entries:
        shutil.copy(weights_dir() / entry.file, folder / entry.file)
    manifest = json.loads((weights_dir() / "manifest.json").read_text())
    manifest["models"] = [m for m in manifest["models"]
                          if any((m["name"], m["version"]) == (e.name, e.version) for e in entries)]
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _install(model, entry, config, folder, base=None):
    """Copy the shipped weights of ``entry`` (context weights) into ``folder`` and export
    ``model`` beside them (holding only what differs from ``base``, a model name, when given)."""
    _weights_folder(folder, entry)
    ckpt = folder / "ckpt.pt"
    torch.save({"model": model.state_dict(), "config_json": json.dumps({"family": "grouped", **config})}, ckpt)
    return export_checkpoint(ckpt, "grouped", make_default=False, folder=folder, base=base)


@pytest.fixture(scope="module")
def grouped_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    _install(*_grouped_model(0.3, seed=1), folder)
    return folder


@pytest.fixture
def grouped_codec(grouped_dir, monkeypatch):
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(grouped_dir))
    return Codec("cpu", model="grouped")


def _coded_params(loaded, y: np.ndarray, hyper_raw: np.ndarray):
    """Means and table indexes of every latent as the codec codes ``y`` (original order), and
    the decoded ``y_hat``."""
    m = y.shape[1]
    means, idx = np.zeros_like(y), np.zeros(y.shape, dtype=np.int64)

    def code(mu, ix, channels, positions):
        for k, c in enumerate(channels):
            means[0, c][positions] = mu[0, k]
            idx[0, c][positions] = ix[0, k]
        return np.rint(y[:, channels][:, :, positions] - mu) + mu

    y_hat = LatentCoder(loaded)._passes(hyper_raw, code)
    assert means.shape[1] == m
    return means, idx, y_hat


# -- the exact group passes ----------------------------------------------------------------------

def test_convolution_at_positions_is_the_full_convolution_there(monkeypatch):
    gen = np.random.default_rng(0)
    x = np.floor(gen.normal(size=(7, 9, 5)) * 2 ** 12)
    w = np.floor(gen.normal(size=(4, 5, 3, 3)) * 2 ** 10)
    b = np.floor(gen.normal(size=4) * 2 ** 20)
    positions = gen.random((7, 9)) < 0.4
    assert np.array_equal(conv3x3_at(x, w, b, positions), conv2d(x, w, b, 1, 1)[positions])
    monkeypatch.setattr(exact, "PATCH_BLOCK", 5)  # positions in several blocks: the same integers
    assert np.array_equal(conv3x3_at(x, w, b, positions), conv2d(x, w, b, 1, 1)[positions])



def test_convolution_at_positions_leaves_out_only_the_channels_its_taps_see_as_zero():
    """A group pass's inputs as decoding leaves them: at the pass's checkerboard colour the
    first ``own`` channels, at the other colour the first ``other``; the taps that look
    there multiply only those, and the result is the full convolution's, to the integer."""
    gen = np.random.default_rng(1)
    h, w_, c, own, other = 8, 10, 6, 2, 5
    x = np.floor(gen.normal(size=(h, w_, c)) * 2 ** 12)
    colour = anchor_mask(h, w_).numpy()
    x[colour, own:] = 0
    x[~colour, other:] = 0
    w = np.floor(gen.normal(size=(4, c, 3, 3)) * 2 ** 10)
    b = np.floor(gen.normal(size=4) * 2 ** 20)
    taps = [[own if (u + v) % 2 == 0 else other for v in range(3)] for u in range(3)]
    full = conv2d(x, w, b, 1, 1)[colour]
    assert np.array_equal(conv3x3_at(x, w, b, colour, taps), full)
    assert np.array_equal(conv3x3_at(x, w, b, colour, [[0] * 3] * 3), np.broadcast_to(b, full.shape))
    x[1, 1, other] = 7.0  # a channel the taps say is zero is not multiplied: the claim matters
    assert np.array_equal(conv3x3_at(x, w, b, colour, taps), full)
    assert not np.array_equal(conv2d(x, w, b, 1, 1)[colour], full)

def test_zero_group_networks_code_as_the_context_model(tmp_path, monkeypatch):
    model, entry, config = _grouped_model(0.0, seed=2)
    _install(model, entry, config, tmp_path)
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(tmp_path))
    pixels = synthetic_photo(160, 96, seed=5)
    ours = Codec("cpu", model="grouped").encode_pixels(pixels, 3, 4.5)
    theirs = Codec("cpu", model="context").encode_pixels(pixels, 3, 4.5)
    assert container.parse(ours).header.model_name == "grouped"
    out_g, _ = Codec("cpu").decode_pixels(ours)
    out_c, _ = Codec("cpu").decode_pixels(theirs)
    assert np.array_equal(out_g, out_c)
    assert abs(len(ours) - len(theirs)) <= 16  # the same symbols and tables, another order


def test_integer_group_passes_follow_the_float_model(grouped_dir, monkeypatch):
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(grouped_dir))
    loaded = load_model("grouped")
    model = loaded.model
    gen = torch.Generator().manual_seed(3)
    y = torch.randn(1, model.M, 8, 10, generator=gen, dtype=torch.float64) * 3
    z = torch.round(torch.randn(1, model.N, 2, 3, generator=gen) * 2)
    hyper_raw = loaded.exact_hyper(z.numpy())[:, :, :8, :10]
    means, idx, y_hat = _coded_params(loaded, y.numpy(), hyper_raw)
    # the float model given the decoded latents rounds them to the same symbols (no rounding
    # flip can cascade through the passes), so its parameters differ by weight quantization only
    with torch.no_grad():
        model64 = model.double()
        f_means, f_scales = model64.entropy_params(torch.from_numpy(y_hat), torch.from_numpy(hyper_raw))
    f_means = f_means.numpy()
    a = anchor_mask(8, 10).numpy()
    diff = np.abs(means - f_means)[0]
    assert diff[:, a].max() < 0.02  # the anchor passes: the group networks' own quantization
    # non-anchors also carry the checkerboard network's (larger on these synthetic latents)
    assert np.median(diff) < 0.01 and diff.max() < 1.0
    f_idx = np.minimum(np.searchsorted(loaded.scale_table, f_scales.numpy(), side="left"),
                       len(loaded.scale_table) - 1)
    assert (idx == f_idx)[0][:, a].mean() > 0.97 and (np.abs(idx - f_idx) <= 2).mean() > 0.99
    # the group networks matter: without them the means are those of the checkerboard
    c_means, _ = super(type(model64), model64).entropy_params(torch.from_numpy(y_hat), torch.from_numpy(hyper_raw))
    assert np.abs(means - c_means.detach().numpy()).max() > 0.05


def test_training_pass_is_causal():
    """A latent's parameters depend only on latents coded in earlier passes."""
    model, _, _ = _grouped_model(0.5, seed=4)
    y = (torch.randn(1, model.M, 6, 6, generator=torch.Generator().manual_seed(5)) * 3).requires_grad_()
    hyper_raw = torch.randn(1, 2 * model.M, 6, 6, generator=torch.Generator().manual_seed(6))
    means, scales = model.entropy_params(y, hyper_raw)
    a = anchor_mask(6, 6)
    group_of = torch.empty(model.M, dtype=torch.long)
    for g, (lo, hi) in enumerate(model.group_bounds()):
        group_of[list(model.channel_order[lo:hi])] = g
    G = len(model.groups)
    step = torch.where(a, 0, G)[None, :, :] + group_of[:, None, None]  # the pass of each latent
    for c, i, j in ((model.channel_order[20], 0, 0), (model.channel_order[100], 2, 3),
                    (model.channel_order[-1], 5, 4), (model.channel_order[0], 1, 0)):
        for out in (means, scales):
            (grad,) = torch.autograd.grad(out[0, c, i, j], y, retain_graph=True, allow_unused=True)
            if grad is None:
                continue
            touched = grad[0].abs() > 0
            assert (step[touched] < step[c, i, j]).all()
    # the last non-anchor group does see earlier groups at its own position
    c = model.channel_order[-1]
    (grad,) = torch.autograd.grad(means[0, c, 1, 0], y, retain_graph=True)
    assert grad[0, model.channel_order[0], 1, 0] != 0


# -- coding with the grouped family --------------------------------------------------------------

@pytest.mark.parametrize("size", [(1, 1), (13, 7), (129, 65)])
def test_round_trip_any_size(grouped_codec, size):
    w, h = size
    pixels = synthetic_photo(w, h, seed=w + h)
    data = grouped_codec.encode_pixels(pixels, 3, 6.0)
    assert container.parse(data).header.model_name == "grouped"
    out, header = grouped_codec.decode_pixels(data)
    assert out.shape == pixels.shape and header.channels == 3
    if w * h > 1000:
        assert psnr(out, pixels) > 24


def test_tiled_file_decodes_and_is_deterministic(grouped_dir, monkeypatch):
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(grouped_dir))
    pixels = synthetic_photo(300, 200, seed=9)
    tiled = Codec("cpu", model="grouped", tile=128)
    data = tiled.encode_pixels(pixels, 3, 5.0)
    assert data == tiled.encode_pixels(pixels, 3, 5.0)
    assert len(container.parse(data).tiles) == 6
    full, _ = tiled.decode_pixels(data)
    assert psnr(full, pixels) > 24
    region, _ = Codec("cpu").decode_pixels(data, region=(130, 70, 120, 120))
    diff = np.abs(region.astype(int) - full[70:190, 130:250].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


# -- weights that extend a base ---------------------------------------------------------------

def test_weights_extending_context_code_as_a_whole_file(tmp_path, monkeypatch):
    """A grouped export that names its context base holds only the group networks, and codes
    the same latents with the same bits as the same model exported whole."""
    model, entry, config = _grouped_model(0.3, seed=6)
    whole = _install(model, entry, config, tmp_path / "whole")
    delta = _install(model, entry, config, tmp_path / "delta", base="context")
    assert delta.stat().st_size < 0.5 * whole.stat().st_size
    shared = load_state_dict(whole)
    own = torch.load(delta, weights_only=True)
    assert "g_s.0.weight" not in own and "anchor_nets.0.merge.4.weight" in own
    recorded = json.loads((tmp_path / "delta" / "manifest.json").read_text())["models"][-1]
    assert recorded["base"] == {"name": "context", "version": entry.version, "sha256": entry.sha256}
    pixels = synthetic_photo(144, 80, seed=7)
    coded = {}
    for name in ("whole", "delta"):
        monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(tmp_path / name))
        loaded = load_model("grouped")
        assert set(loaded.arrays) >= set(shared)
        coded[name] = Codec("cpu", model="grouped").encode_pixels(pixels, 3, 6.0)
        out, header = Codec("cpu").decode_pixels(coded[name])
        assert header.model_name == "grouped" and psnr(out, pixels) > 24
    whole_file, delta_file = container.parse(coded["whole"]), container.parse(coded["delta"])
    assert whole_file.header.model_digest != delta_file.header.model_digest  # its own file's id
    assert (whole_file.hyper, whole_file.tiles) == (delta_file.hyper, delta_file.tiles)


def test_weights_whose_base_changed_are_refused(tmp_path, monkeypatch):
    model, entry, config = _grouped_model(0.3, seed=8)
    _install(model, entry, config, tmp_path, base="context")
    manifest_path = tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["models"][-1]["base"]["sha256"] = "0" * 64  # the base the file was made from is gone
    manifest_path.write_text(json.dumps(manifest))
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsMismatchError, match="extend context v"):
        read_verified(find_entry("grouped", folder=tmp_path), tmp_path)
    manifest["models"] = [m for m in manifest["models"] if m["name"] == "grouped"]  # base missing
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="context v.* not installed"):
        read_verified(find_entry("grouped", folder=tmp_path), tmp_path)


def test_export_refuses_a_base_the_model_does_not_extend(tmp_path):
    model, _, config = _grouped_model(0.3, seed=9)
    hp = find_entry("hyperprior", 1)  # 96 latent channels, not the model's 192
    with pytest.raises(ValueError, match=r"cannot extend hyperprior v.*: its \S+ is \("):
        _install(model, hp, config, tmp_path / "w", base="hyperprior")


# -- training the group networks ---------------------------------------------------------------

def test_train_grouped_learns_resumes_and_exports(photos, tmp_path, monkeypatch):
    before = torch.get_num_threads()
    cfg = dict(init_from="context", data=str(photos), run_dir=str(tmp_path / "run"), minutes=0.05,
               crop=128, batch=2, threads=1, log_every=5, validate_every=10)
    try:
        ckpt = train_grouped(GroupedTrainConfig(**cfg))
        saved = torch.load(ckpt, weights_only=True)
        state, config = json.loads(saved["state_json"]), json.loads(saved["config_json"])
        assert state["step"] > 0 and set(state["final_val"]) == {"q1_saving_pct", "q5_saving_pct", "q8_saving_pct"}
        logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
        assert logged[-1]["step"] == state["step"] and logged[-1]["val"] == state["final_val"]
        validated = [r["step"] for r in logged if "val" in r]
        assert len(validated) == len(set(validated))  # no step validated twice
        assert config["family"] == "grouped" and config["groups"] == list(DEFAULT_GROUPS)
        assert sorted(config["channel_order"]) == list(range(config["M"]))
        # every network of the context model stays as shipped; the group networks learn
        shipped = load_state_dict(weights_dir() / find_entry("context").file)
        for key in ("g_s.0.weight", "h_s.4.weight", "entropy_parameters.4.weight"):
            assert torch.equal(saved["model"][key], shipped[key])
        assert saved["model"]["nonanchor_nets.3.merge.4.weight"].abs().sum() > 0
        assert saved["model"]["anchor_nets.0.merge.4.weight"].abs().sum() > 0
        train_grouped(GroupedTrainConfig(**cfg))  # resumes the folder
        state = json.loads(torch.load(ckpt, weights_only=True)["state_json"])
        assert len(state["runs"]) == 2 and state["runs"][1]["start_step"] > 0
    finally:
        torch.set_num_threads(before)
    folder = tmp_path / "weights"
    export_checkpoint(ckpt, "grouped", make_default=False, folder=folder)
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(folder))
    pixels = synthetic_photo(128, 96, seed=3)
    out, header = Codec("cpu").decode_pixels(Codec("cpu", model="grouped").encode_pixels(pixels, 3, 6.0))
    assert header.model_name == "grouped" and psnr(out, pixels) > 24
    # the same checkpoint exported with counted tables (`lcodec train-grouped --count-tables-on`)
    export_checkpoint(ckpt, "grouped", make_default=False, folder=folder, count_tables_on=photos)
    counted = Codec("cpu", model="grouped").encode_pixels(pixels, 3, 6.0)
    header = container.parse(counted).header
    assert header.model_version == 2 and header.flags == container.FLAG_Z_PER_LEVEL
    assert np.array_equal(Codec("cpu").decode_pixels(counted)[0], out)


def test_train_grouped_starts_only_from_context_or_grouped_weights(photos, tmp_path):
    with pytest.raises(ValueError, match="not a model of the 'context' or 'grouped' family"):
        train_grouped(GroupedTrainConfig(init_from="hyperprior", data=str(photos),
                                         run_dir=str(tmp_path / "run"), minutes=0.0, threads=1))


def test_widened_group_networks_compute_the_same_parameters():
    narrow, _, config = _grouped_model(correction_scale=0.05, seed=4)
    wide = build_model("grouped", **dict(config, group_features=24, group_hidden=40))
    widen_hidden(narrow.state_dict(), wide)
    assert group_widths(wide.state_dict()) == (24, 40)
    torch.manual_seed(0)
    y = torch.randn(1, narrow.M, 12, 16) * 3
    with torch.no_grad():
        raw = narrow.h_s(torch.round(narrow.h_a(y)))
        (m0, s0), (m1, s1) = narrow.entropy_params(y, raw), wide.eval().entropy_params(y, raw)
        base_m, _ = super(type(narrow), narrow).entropy_params(y, raw)
    assert (m0 - base_m).abs().max() > 1e-3          # the group networks do change the parameters
    # float32 sums of other lengths: 1.1e-5 apart on a mean of 4.9 was seen (AVX-512, full suite)
    torch.testing.assert_close(m1, m0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s1, s0, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot narrow the group features"):
        widen_hidden(wide.state_dict(), build_model("grouped", **dict(config, group_features=8)))


def test_train_grouped_continues_grouped_weights_and_widens_them(photos, tmp_path):
    before = torch.get_num_threads()
    common = dict(data=str(photos), crop=128, batch=2, threads=1, minutes=0.02, validate_every=1000)
    try:
        first = train_grouped(GroupedTrainConfig(init_from="context", run_dir=str(tmp_path / "a"), **common))
        start = torch.load(first, weights_only=True)
        ckpt = train_grouped(GroupedTrainConfig(init_from=str(first), group_features=72,
                                                run_dir=str(tmp_path / "b"), **common))
        with pytest.raises(ValueError, match="a run from grouped weights keeps them"):
            train_grouped(GroupedTrainConfig(init_from=str(first), groups=(32, 32, 64, 64),
                                             run_dir=str(tmp_path / "c"), **common))
    finally:
        torch.set_num_threads(before)
    saved = torch.load(ckpt, weights_only=True)
    config, old = json.loads(saved["config_json"]), json.loads(start["config_json"])
    assert config["channel_order"] == old["channel_order"] and config["groups"] == old["groups"]
    assert (config["group_features"], config["group_hidden"]) == (72, 128)
    assert saved["model"]["anchor_nets.0.pred.weight"].shape[0] == 72
    # the group networks went on from the first run's (random-initialized, so a fresh start
    # would differ by about their own size): their old block moved only a little
    w0, w1 = start["model"]["anchor_nets.2.pred.weight"], saved["model"]["anchor_nets.2.pred.weight"]
    assert (w1[:64] - w0).abs().max() < 0.2 * w0.abs().max()
    assert json.loads(saved["state_json"])["init_from"] == str(first)



def test_train_grouped_runs_chained_by_init_from_draw_other_crops(photos, tmp_path):
    """The trainers on frozen latents seed their draws as `lcodec train` does: the same start
    draws the same, a run from another run's weights draws otherwise, a resume goes on."""
    def data_seeds(ckpt):
        return [r["data_seed"] for r in json.loads(torch.load(ckpt, weights_only=True)["state_json"])["runs"]]

    before = torch.get_num_threads()
    common = dict(data=str(photos), crop=128, batch=2, threads=1, validate_every=1000, seed=5)
    try:
        first = train_grouped(GroupedTrainConfig(init_from="context", run_dir=str(tmp_path / "a"),
                                                 minutes=0.02, **common))
        b, c = (train_grouped(GroupedTrainConfig(init_from=str(first), run_dir=str(tmp_path / name),
                                                 minutes=0.0, **common)) for name in "bc")
        assert data_seeds(b) == data_seeds(c) and data_seeds(b)[0] != data_seeds(first)[0]
        train_grouped(GroupedTrainConfig(init_from=str(first), run_dir=str(tmp_path / "a"),
                                         minutes=0.0, **common))  # resumes a
    finally:
        torch.set_num_threads(before)
    state = json.loads(torch.load(first, weights_only=True)["state_json"])
    (s0, s1), steps = data_seeds(first), state["runs"][1]["start_step"]
    assert steps > 0 and s1 == s0 + steps

def test_grouped_model_trains_end_to_end_with_a_context_runs_adam_state(photos, tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        common = dict(data=str(photos), crop=64, batch=2, threads="1", compile="off", minutes=5.0)
        train(TrainConfig(**common, family="context", init_from="context", max_steps=2,
                          run_dir=str(tmp_path / "ctx")))
        start = train_grouped(GroupedTrainConfig(init_from="context", data=str(photos), minutes=0.02,
                                                 crop=128, batch=2, threads=1,
                                                 run_dir=str(tmp_path / "groups")))
        cfg = dict(common, family="grouped", init_from=str(start), max_steps=2,
                   adam_from=str(tmp_path / "ctx" / "checkpoint.pt"), run_dir=str(tmp_path / "e2e"))
        ckpt = train(TrainConfig(**cfg))
        assert "Adam's moments carried from" in capsys.readouterr().out
        saved, first = torch.load(ckpt, weights_only=True), torch.load(start, weights_only=True)
        config = json.loads(saved["config_json"])
        assert config["family"] == "grouped"
        assert config["channel_order"] == json.loads(first["config_json"])["channel_order"]
        # the transforms and the group networks both learn
        for key in ("g_a.0.weight", "nonanchor_nets.3.merge.4.weight"):
            assert not torch.equal(saved["model"][key], first["model"][key])
        train(TrainConfig(**{**cfg, "max_steps": 3}))  # resumes with its own groups
        assert json.loads(torch.load(ckpt, weights_only=True)["state_json"])["step"] == 3
        with pytest.raises(ValueError, match="starts from a grouped model"):
            train(TrainConfig(**{**cfg, "init_from": str(tmp_path / "ctx" / "checkpoint.pt"),
                                 "run_dir": str(tmp_path / "wrong")}))
    finally:
        torch.set_num_threads(before)


def test_grouped_training_starts_from_shipped_weights_that_extend_a_base(photos, tmp_path, monkeypatch):
    model, entry, config = _grouped_model(0.3, seed=10)
    _install(model, entry, config, tmp_path / "weights", base="context")
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(tmp_path / "weights"))
    start = load_weights_state("grouped")  # the base's networks and the file's group networks
    assert set(start) == set(model.state_dict())
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())
    before = torch.get_num_threads()
    try:
        ckpt = train(TrainConfig(data=str(photos), crop=64, batch=2, threads="1", compile="off",
                                 minutes=5.0, family="grouped", init_from="grouped", max_steps=1,
                                 run_dir=str(tmp_path / "run")))
    finally:
        torch.set_num_threads(before)
    saved = json.loads(torch.load(ckpt, weights_only=True)["config_json"])
    assert (saved["groups"], saved["channel_order"]) == (list(GROUPS), config["channel_order"])


def test_weights_whose_groups_do_not_describe_the_latent_are_refused(grouped_dir, tmp_path, monkeypatch):
    from lcodec.errors import WeightsError

    folder = tmp_path / "weights"
    shutil.copytree(grouped_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(m for m in manifest["models"] if m["family"] == "grouped")
    entry["config"]["groups"] = [16, 16, 32, 64]  # 128 of the 192 channels
    (folder / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(folder))
    with pytest.raises(WeightsError, match="do not fit the grouped model"):
        load_model("grouped")


def test_reexport_keeps_the_networks_and_decodes_the_same_pixels(tmp_path, monkeypatch):
    """``python -m lcodec.train.export --from grouped ...`` (how grouped v3 was made from v2):
    the same networks and symbols, this lcodec's tables, the source's training record."""
    source = find_entry("grouped", 2)
    base = find_entry("context", 12)
    _weights_folder(tmp_path, source, base)
    reexport("grouped", "grouped", base="context", note="test", folder=tmp_path)
    new = find_entry("grouped", folder=tmp_path)
    assert new.version == 3 and new.base == ("context", 12, base.sha256) and new.config == source.config
    record = json.loads((tmp_path / "manifest.json").read_text())["models"][-1]
    assert record["training"]["reexported_from"] == "grouped v2" and record["training"]["steps"] == 8370
    old_arrays, new_arrays = read_verified(source, tmp_path), read_verified(new, tmp_path)
    old_state, new_state = network_state(old_arrays), network_state(new_arrays)
    assert old_state.keys() == new_state.keys()
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    assert len(new_arrays["tables.scale_table"]) == SCALE_LEVELS > len(old_arrays["tables.scale_table"])
    pixels = synthetic_photo(160, 96, seed=12)
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(tmp_path))
    old_pipe, new_pipe = CodecPipeline(load_model("grouped", 2)), CodecPipeline(load_model("grouped", 3))
    old_out = old_pipe.decode(*old_pipe.encode(pixels, 3.0), 96, 160, 3.0)
    new_out = new_pipe.decode(*new_pipe.encode(pixels, 3.0), 96, 160, 3.0)
    assert np.array_equal(old_out, new_out)


def test_init_from_names_an_older_shipped_version():
    """``--init-from NAME:vN`` starts from version N, so a shipped version's recipe can be redone
    on a checkout whose manifest has newer ones; a bad spec is one clear WeightsError."""
    from lcodec.weights import find_spec

    assert find_spec("grouped") == find_entry("grouped")
    assert find_spec("grouped:v5") == find_spec("grouped:5") == find_entry("grouped", 5)
    assert find_spec("grouped:v5") != find_entry("grouped")
    for bad in ("grouped:v", "grouped:five", ":5"):
        with pytest.raises(WeightsError, match="NAME:vN"):
            find_spec(bad)
    with pytest.raises(WeightsError, match="grouped v999 are not installed"):
        find_spec("grouped:v999")
    start, older = load_weights_state("grouped"), load_weights_state("grouped:v5")
    # both are whole models: RGB in through the analysis' 5x5 first layer, whose width may grow
    # (v19: 160 channels against v5's 128)
    assert start["g_a.0.weight"].shape[1:] == older["g_a.0.weight"].shape[1:] == (3, 5, 5)
    # newer versions may add layers (v13: the analysis' residual blocks), never drop v5's
    assert older.keys() <= start.keys()
    assert any(not torch.equal(start[k], older[k]) for k in older)

"""Training code: short real runs on generated photos, resume, export, and the Kodak probe."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lcodec.api import Codec
from lcodec.train.context import ContextTrainConfig, train_context
from lcodec.train.data import weights_fingerprint
from lcodec.train.export import export_checkpoint
from lcodec.train.kodak_probe import classical_curves, load_checkpoint_model, probe
from lcodec.train.latent_headroom import headroom
from lcodec.models import DEFAULT_LAMBDAS, build_model
from lcodec.train.loop import (CompiledForward, DivergenceGuard, TrainConfig, jpeg_points,
                               level_weights, train, validate)
from lcodec.train.start import DEFAULT_M
from lcodec.train.levels import LEVEL_BIAS_KEYS, LEVEL_SCALE_KEYS, check_lambdas, retarget_levels
from lcodec.train.pca_ceiling import blocks, pca_psnr
from lcodec.train.reopen import reopen_channels, shut_channels
from lcodec.train.narrow import channel_activity, narrow_latents
from lcodec.train.transfer import match_latent_channels, transfer_context
from lcodec.train.widen import hyper_widths, widen_hidden, widen_latents
from lcodec.weights import find_entry, load_state_dict, load_weights_state, read_manifest, weights_dir

from .conftest import perturbed, psnr, synthetic_photo


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """Training sets torch's thread count; later tests should not inherit it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_level_weights_equalize_levels_whose_losses_differ_in_scale():
    state: dict = {}
    level = torch.tensor([0, 0, 7, 7])
    per_item = torch.tensor([1.0, 1.0, 100.0, 100.0])
    w = level_weights(level, per_item, state, "normalized")
    weighted = per_item * w
    assert torch.allclose(weighted[:2], weighted[2:])
    assert torch.equal(level_weights(level, per_item, {}, "none"), torch.ones(4))
    # sqrt: halfway in log scale, the level with the larger loss still weighs 10x more
    weighted = per_item * level_weights(level, per_item, {}, "sqrt")
    assert torch.allclose(weighted[2:] / weighted[:2], torch.tensor(10.0))
    with pytest.raises(ValueError):
        level_weights(level, per_item, {}, "sideways")


def test_compiled_forward_falls_back_to_eager_when_compilation_fails(monkeypatch, capsys):
    model = torch.nn.Linear(3, 2)
    x = torch.ones(1, 3)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", lambda m: broken)
    forward = CompiledForward(model, "auto")
    assert forward.active
    assert torch.equal(forward(x), model(x))
    assert not forward.active and "eager mode" in capsys.readouterr().out
    with pytest.raises(RuntimeError):
        CompiledForward(model, "on")(x)
    assert torch.equal(CompiledForward(model, "off")(x), model(x))
    with pytest.raises(ValueError):
        CompiledForward(model, "sometimes")


def test_train_starts_from_shipped_weights_named_in_the_manifest(photos, tmp_path):
    ckpt = train(TrainConfig(data=str(photos), run_dir=str(tmp_path / "run"), minutes=0.0,
                             threads="1", compile="off", init_from="hyperprior"))
    trained = torch.load(ckpt, weights_only=True)["model"]
    shipped = torch.load(weights_dir() / find_entry("hyperprior").file, weights_only=True)
    assert trained.keys() <= shipped.keys()
    assert all(torch.equal(trained[k], shipped[k]) for k in trained)


@pytest.mark.parametrize("hyper_hidden", [None, (16, 24)])  # default widths grow with M; set ones stay
@torch.no_grad()
def test_widened_latent_computes_the_same_codec(hyper_hidden):
    narrow = perturbed(build_model("hyperprior", N=8, M=8, hyper_hidden=hyper_hidden))
    wide = build_model("hyperprior", N=8, M=16, hyper_hidden=hyper_hidden).eval()
    widen_latents(narrow.state_dict(), wide)
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    for q in (1.0, 4.5, 8.0):
        y_n, y_w = narrow.analysis(x, q), wide.analysis(x, q)
        assert torch.equal(y_n, y_w[:, :8])
        z = torch.round(narrow.hyper_analysis(y_n))
        assert torch.equal(z, torch.round(wide.hyper_analysis(y_w)))
        m_n, s_n = narrow.hyper_synthesis(z)
        m_w, s_w = wide.hyper_synthesis(z)
        assert torch.equal(m_n, m_w[:, :8]) and torch.equal(s_n, s_w[:, :8])
        # The new channels: mean 0, the smallest scale, values that round to 0 (no bits).
        assert torch.all(m_w[:, 8:] == 0) and torch.all(s_w[:, 8:] <= 0.11)
        assert torch.all(y_w[:, 8:] == 0)
        x_n = narrow.synthesis(torch.round(y_n - m_n) + m_n, q)
        x_w = wide.synthesis(torch.round(y_w - m_w) + m_w, q)
        assert torch.equal(x_n, x_w)


def test_widening_refuses_other_changes():
    narrow = build_model("hyperprior", N=8, M=16)
    with pytest.raises(ValueError, match="narrow"):
        widen_latents(narrow.state_dict(), build_model("hyperprior", N=8, M=8))
    with pytest.raises(ValueError, match="differs in shape"):
        widen_latents(narrow.state_dict(), build_model("hyperprior", N=16, M=32))


def test_train_widens_the_latent_of_the_weights_it_starts_from(photos, tmp_path, capsys):
    shipped = load_state_dict(weights_dir() / find_entry("hyperprior").file)
    m_old = shipped["g_a.6.weight"].shape[0]
    ckpt = train(TrainConfig(data=str(photos), run_dir=str(tmp_path / "run"), minutes=0.0,
                             threads="1", compile="off", init_from="hyperprior", M=m_old + 16))
    assert f"widened from M={m_old} to M={m_old + 16}" in capsys.readouterr().out
    trained = torch.load(ckpt, weights_only=True)["model"]
    assert trained["g_a.6.weight"].shape[0] == m_old + 16
    assert torch.equal(trained["g_a.6.weight"][:m_old], shipped["g_a.6.weight"])


def test_train_keeps_the_latent_width_of_its_weights_when_M_is_not_given(photos, tmp_path):
    start = tmp_path / "narrow.pt"
    torch.save(build_model("hyperprior", N=8, M=12).state_dict(), start)
    cfg = dict(data=str(photos), run_dir=str(tmp_path / "run"), minutes=0.0, threads="1",
               compile="off", N=8)
    for resumed in (False, True):  # started from the weights, then resumed from its checkpoint
        ckpt = train(TrainConfig(**cfg, init_from=None if resumed else str(start)))
        saved = torch.load(ckpt, weights_only=True)
        assert saved["model"]["g_a.6.weight"].shape[0] == 12
        assert json.loads(saved["config_json"])["M"] == 12
    fresh = train(TrainConfig(**{**cfg, "run_dir": str(tmp_path / "fresh")}))
    assert json.loads(torch.load(fresh, weights_only=True)["config_json"])["M"] == DEFAULT_M


def _with_dead_channels(M: int, dead: list[int]) -> torch.nn.Module:
    """A trained-looking hyperprior whose ``dead`` latent channels are always 0 with mean 0 and
    whose other channels are nonzero (a bias well above the rounding threshold)."""
    torch.manual_seed(0)  # the init: a live channel that never rounds to nonzero would tie
    model = perturbed(build_model("hyperprior", N=8, M=M))
    with torch.no_grad():
        model.g_a[6].bias[:] = 3.0
        model.g_a[6].weight[dead] = 0
        model.g_a[6].bias[dead] = 0
        model.h_s[4].weight[[M + c for c in dead]] = 0  # their means
        model.h_s[4].bias[[M + c for c in dead]] = 0
    return model


def _with_shut_gains(M: int, shut: list[int]) -> dict[str, torch.Tensor]:
    """A hyperprior state dict whose ``shut`` channels have a log-gain of -4 at every level
    (what training with rounded latents leaves in grouped v8-v10) and whose inverse gains
    undo it."""
    torch.manual_seed(0)
    state = perturbed(build_model("hyperprior", N=8, M=M)).state_dict()
    state["log_gain"][:, shut] = -4.0
    state["log_inv_gain"][:, shut] = 4.0
    return state


def test_reopened_channels_take_the_open_ones_median_gains_and_new_filters():
    shut = [3, 7]
    state = _with_shut_gains(12, shut)
    before = {k: v.clone() for k, v in state.items()}
    assert shut_channels(state, -2.0) == shut and shut_channels(state, -5.0) == []
    reopened, idx = reopen_channels(state, -2.0, seed=1)
    assert idx == shut
    assert all(torch.equal(state[k], before[k]) for k in state)  # the input is left alone
    open_ = [c for c in range(12) if c not in shut]
    for name in ("log_gain", "log_inv_gain"):
        median = before[name][:, open_].median(dim=1).values
        for c in shut:
            assert torch.equal(reopened[name][:, c], median)
        assert torch.equal(reopened[name][:, open_], before[name][:, open_])
    for name in ("g_a.6.weight", "g_s.0.weight"):  # (M, ...) in both: conv out, deconv in
        new, old = reopened[name], before[name]
        assert torch.equal(new[open_], old[open_])
        assert not torch.equal(new[shut], old[shut])
        ratio = new[shut].std().item() / old[open_].std().item()
        assert 0.35 < ratio < 0.65, ratio  # half the open channels' spread
    assert torch.all(reopened["g_a.6.bias"][shut] == 0)
    untouched = set(state) - {"log_gain", "log_inv_gain", "g_a.6.weight", "g_a.6.bias", "g_s.0.weight"}
    assert all(reopened[k] is state[k] for k in untouched)
    again, _ = reopen_channels(state, -2.0, seed=1)
    other, _ = reopen_channels(state, -2.0, seed=2)
    assert torch.equal(again["g_a.6.weight"], reopened["g_a.6.weight"])
    assert not torch.equal(other["g_a.6.weight"], reopened["g_a.6.weight"])
    assert reopen_channels(state, -5.0) == (state, [])
    with pytest.raises(ValueError, match="no open channels"):
        reopen_channels(state, 10.0)


def test_train_reopens_shut_channels_of_the_weights_it_starts_from_and_trains_them(photos, tmp_path,
                                                                                   capsys):
    shut = [3, 7]
    start = tmp_path / "shut.pt"
    torch.save(_with_shut_gains(12, shut), start)
    cfg = dict(data=str(photos), run_dir=str(tmp_path / "run"), threads="1", compile="off", N=8,
               crop=64, batch=1, lr=1e-3, warmup=0, ste_frac=1.0)
    ckpt = train(TrainConfig(**cfg, minutes=0.0, init_from=str(start), reopen_below=-2.0))
    assert f"reopened 2 latent channels whose top-level log-gain is below -2: {shut}" in capsys.readouterr().out
    started = torch.load(ckpt, weights_only=True)["model"]
    assert torch.all(started["log_gain"][-1, shut] > -2)
    assert torch.all(started["g_a.6.weight"][shut].abs().sum((1, 2, 3)) > 0)
    train(TrainConfig(**cfg, minutes=1.0, max_steps=1))  # one step on rounded latents
    stepped = torch.load(ckpt, weights_only=True)["model"]
    # The distortion's straight-through gradient reaches the reopened channels' filters.
    assert not torch.equal(stepped["g_a.6.weight"][shut], started["g_a.6.weight"][shut])
    assert not torch.equal(stepped["g_s.0.weight"][shut], started["g_s.0.weight"][shut])


@torch.no_grad()
def test_narrowed_latent_computes_the_same_codec_and_keeps_the_hyper_synthesis():
    wide = _with_dead_channels(16, dead=[1, 4, 5, 9, 10, 11, 14, 15])
    keep = [0, 2, 3, 6, 7, 8, 12, 13]
    narrow = build_model("hyperprior", N=8, M=8, hyper_hidden=hyper_widths(wide.state_dict())).eval()
    narrow.load_state_dict(narrow_latents(wide.state_dict(), keep))
    assert narrow.hyper_hidden == (16, 24) and hyper_widths(narrow.state_dict()) == (16, 24)
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    for q in (1.0, 4.5, 8.0):
        y_w, y_n = wide.analysis(x, q), narrow.analysis(x, q)
        assert torch.equal(y_n, y_w[:, keep])
        z = torch.round(wide.hyper_analysis(y_w))
        assert torch.allclose(z, torch.round(narrow.hyper_analysis(y_n)))
        m_w, s_w = wide.hyper_synthesis(z)
        m_n, s_n = narrow.hyper_synthesis(z)
        assert torch.equal(m_n, m_w[:, keep]) and torch.equal(s_n, s_w[:, keep])
        x_w = wide.synthesis(torch.round(y_w - m_w) + m_w, q)
        x_n = narrow.synthesis(torch.round(y_n - m_n) + m_n, q)
        assert torch.allclose(x_n, x_w, atol=1e-5)
    activity = channel_activity(wide, [(x[0].permute(1, 2, 0) * 255).round().to(torch.uint8)])
    assert torch.all(activity[keep] > 0) and torch.all(activity[[1, 4, 5, 9, 10, 11, 14, 15]] == 0)
    for bad in ([], [0, 0], [16]):
        with pytest.raises(ValueError, match="distinct latent channels"):
            narrow_latents(wide.state_dict(), bad)


def test_train_narrows_the_latent_to_the_channels_used_and_the_codec_runs_it(photos, tmp_path,
                                                                              capsys, monkeypatch):
    dead = list(range(1, 16, 2))
    start = tmp_path / "wide.pt"
    torch.save(_with_dead_channels(16, dead).state_dict(), start)
    cfg = dict(data=str(photos), run_dir=str(tmp_path / "run"), minutes=0.0, threads="1",
               compile="off", N=8)
    ckpt = train(TrainConfig(**cfg, init_from=str(start), M=8))
    assert "narrowed from M=16 to M=8" in capsys.readouterr().out
    saved = torch.load(ckpt, weights_only=True)
    assert json.loads(saved["config_json"])["hyper_hidden"] == [16, 24]
    assert torch.equal(saved["model"]["g_a.6.weight"], torch.load(start)["g_a.6.weight"][0::2])
    train(TrainConfig(**{**cfg, "minutes": 1.0}, max_steps=1, crop=64, batch=1))  # resumes at M=8
    assert json.loads(torch.load(ckpt, weights_only=True)["config_json"])["hyper_hidden"] == [16, 24]

    folder = tmp_path / "weights"
    export_checkpoint(ckpt, "hyperprior", folder=folder)
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(folder))
    pixels = synthetic_photo(80, 64, seed=4)
    out, header = Codec("cpu").decode_pixels(Codec("cpu").encode_pixels(pixels, 3, 5.0))
    assert out.shape == pixels.shape and header.model_name == "hyperprior"


@torch.no_grad()
def test_widened_analysis_computes_the_same_latents_and_leaves_the_decoder_alone():
    narrow = perturbed(build_model("hyperprior", N=8, M=8))
    wide = perturbed(build_model("hyperprior", N=8, M=8, Na=16), seed=1)
    widen_hidden(narrow.state_dict(), wide)
    assert wide.g_a[0].weight.shape[0] == 16 and wide.g_s[0].weight.shape[1] == 8
    for key, value in narrow.state_dict().items():
        if not key.startswith("g_a."):
            assert torch.equal(value, wide.state_dict()[key]), key
    # the new hidden units carry a signal (so that they can learn) ...
    assert wide.g_a[0].weight[8:].abs().sum() > 0
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    assert wide.g_a[1](wide.g_a[0](x - 0.5))[:, 8:].abs().amax() > 1e-3
    # ... but the latent does not see them yet
    for q in (1.0, 4.5, 8.0):
        assert torch.allclose(narrow.analysis(x, q), wide.analysis(x, q), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_widened_synthesis_decodes_the_same_image_and_leaves_the_encoder_alone():
    torch.manual_seed(0)
    narrow = perturbed(build_model("hyperprior", N=8, M=8, Na=12))
    wide = perturbed(build_model("hyperprior", N=8, M=8, Na=12, Ns=16), seed=1)
    widen_hidden(narrow.state_dict(), wide)
    assert wide.g_s[0].weight.shape[1] == 16 and wide.g_s[6].weight.shape[0] == 16
    # float64: the random weights make the inverse GDNs amplify float32 rounding differences
    # between convolution kernels of different widths beyond any useful tolerance
    narrow, wide = narrow.double(), wide.double()
    for key, value in narrow.state_dict().items():
        if not key.startswith("g_s."):
            assert torch.equal(value, wide.state_dict()[key]), key
    gen = torch.Generator().manual_seed(2)
    y_hat = torch.randn(1, 8, 6, 5, generator=gen, dtype=torch.float64).mul(4).round()
    # the new hidden units carry a signal (so that they can learn) ...
    h = wide.g_s[1](wide.g_s[0](y_hat))
    assert h[:, 8:].abs().amax() > 1e-3
    # ... but the pixels do not see them yet
    for q in (1.0, 4.5, 8.0):
        assert torch.allclose(narrow.synthesis(y_hat, q), wide.synthesis(y_hat, q), rtol=1e-9, atol=1e-9)
    # both transforms at once
    both = perturbed(build_model("hyperprior", N=8, M=8, Na=16, Ns=16), seed=3)
    widen_hidden(build_model("hyperprior", N=8, M=8).state_dict(), both)


@torch.no_grad()
def test_widened_transforms_keep_their_residual_blocks_and_level_scales():
    config = dict(N=8, M=8, res_a=2, res_s=1, level_scales_a=True, level_scales_s=True,
                  level_scales_h=True, level_bias_a=True)
    narrow = perturbed(build_model("hyperprior", Na=12, Ns=12, **config)).double()
    wide = build_model("hyperprior", Na=20, Ns=16, **config).double()
    widen_hidden(narrow.state_dict(), wide)
    assert wide.log_level_scale_a.shape == (8, 3, 20) and wide.log_level_scale_s.shape == (8, 3, 16)
    assert torch.equal(wide.log_level_scale_a[..., :12], narrow.log_level_scale_a)
    assert torch.equal(wide.log_level_scale_a[..., 12:], torch.zeros(8, 3, 8, dtype=torch.float64))
    assert wide.level_bias_a.shape == (8, 3, 20) and narrow.level_bias_a.abs().sum() > 0
    assert torch.equal(wide.level_bias_a[..., :12], narrow.level_bias_a)
    assert torch.equal(wide.level_bias_a[..., 12:], torch.zeros(8, 3, 8, dtype=torch.float64))
    assert wide.g_a_res["5"].body[0].weight[12:].abs().sum() > 0
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(1, 3, 96, 64, generator=gen, dtype=torch.float64)
    y_hat = torch.randn(1, 8, 6, 4, generator=gen, dtype=torch.float64).mul(3).round()
    for q in (1.0, 4.5, 8.0):
        torch.testing.assert_close(wide.analysis(x, q), narrow.analysis(x, q), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(wide.synthesis(y_hat, q), narrow.synthesis(y_hat, q),
                                   rtol=1e-9, atol=1e-9)


@torch.no_grad()
def test_widened_context_networks_give_the_same_entropy_parameters():
    narrow = perturbed(build_model("context", N=8, M=8, context_channels=8, hidden=16))
    wide = perturbed(build_model("context", N=8, M=8, context_channels=12, hidden=24, Ns=12), seed=1)
    widen_hidden(narrow.state_dict(), wide)
    narrow, wide = narrow.double(), wide.double()
    gen = torch.Generator().manual_seed(3)
    y = torch.randn(1, 8, 6, 7, generator=gen, dtype=torch.float64).mul(3)
    hyper_raw = torch.randn(1, 16, 6, 7, generator=gen, dtype=torch.float64)
    for a, b in zip(narrow.entropy_params(y, hyper_raw), wide.entropy_params(y, hyper_raw)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    # the new context features and hidden units carry a signal, so that they can learn
    assert wide.context_prediction(y)[:, 8:].abs().amax() > 1e-3
    with pytest.raises(ValueError, match="cannot narrow the merging network"):
        widen_hidden(wide.state_dict(), build_model("context", N=8, M=8, context_channels=12,
                                                    hidden=16, Ns=12))


def test_hidden_widening_refuses_other_changes():
    for wider in ({"Na": 16}, {"Ns": 16}):
        wide = build_model("hyperprior", N=8, M=8, **wider)
        with pytest.raises(ValueError, match="narrow"):
            widen_hidden(wide.state_dict(), build_model("hyperprior", N=8, M=8))
    with pytest.raises(ValueError, match="differs in shape"):
        widen_hidden(build_model("hyperprior", N=8, M=8).state_dict(),
                     build_model("hyperprior", N=16, M=8, Na=16, Ns=16))


def test_train_widens_the_analysis_of_the_weights_it_starts_from_and_exports_it(photos, tmp_path,
                                                                                capsys, monkeypatch):
    shipped = load_state_dict(weights_dir() / find_entry("hyperprior").file)
    n_old = shipped["g_a.0.weight"].shape[0]
    ckpt = train(TrainConfig(data=str(photos), run_dir=str(tmp_path / "run"), minutes=0.0,
                             threads="1", compile="off", init_from="hyperprior", Na=n_old + 8))
    assert f"analysis widened from {n_old} to {n_old + 8} channels" in capsys.readouterr().out
    trained = torch.load(ckpt, weights_only=True)["model"]
    assert trained["g_a.0.weight"].shape[0] == n_old + 8
    assert torch.equal(trained["g_s.0.weight"], shipped["g_s.0.weight"])
    # the exported weights record the width, and the codec builds the wider encoder from them
    folder = tmp_path / "weights"
    export_checkpoint(ckpt, "hyperprior", folder=folder)
    entry = json.loads((folder / "manifest.json").read_text())["models"][0]
    assert entry["config"]["Na"] == n_old + 8
    narrow_tile = Codec("cpu", model="hyperprior", max_memory_mb=256).tile_size(6000, 4000)
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(folder))
    pixels = synthetic_photo(96, 64, seed=5)
    out, header = Codec("cpu").decode_pixels(Codec("cpu").encode_pixels(pixels, 3, 5.0))
    assert header.model_name == "hyperprior" and psnr(out, pixels) > 24
    # the wider encoder needs more memory per pixel: smaller tiles under the same budget
    assert 0 < Codec("cpu", max_memory_mb=256).tile_size(6000, 4000) < narrow_tile
    # a context model on top of it keeps the wider encoder
    ctx = train_context(ContextTrainConfig(init_from=str(folder / entry["file"]), data=str(photos),
                                           run_dir=str(tmp_path / "ctx"), minutes=0.0, crop=128,
                                           batch=2, threads=1))
    config = json.loads(torch.load(ctx, weights_only=True)["config_json"])
    assert (config["N"], config["Na"], config.get("Ns", config["N"])) == (
        shipped["h_a.0.weight"].shape[0], n_old + 8, shipped["g_s.0.weight"].shape[1])


@torch.no_grad()
def test_residual_blocks_added_to_trained_weights_start_as_identities():
    from lcodec.train.start import load_adding_blocks

    plain = build_model("grouped", N=8, M=12, groups=(4, 8), Na=16)
    gen = torch.Generator().manual_seed(3)
    for p in plain.parameters():
        p += 0.05 * torch.randn(p.shape, generator=gen)
    deep = build_model("grouped", N=8, M=12, groups=(4, 8), Na=16, res_a=2, res_s=3)
    assert load_adding_blocks(deep, plain.state_dict()) == 5
    x = torch.from_numpy(synthetic_photo(64, 64, seed=4)).permute(2, 0, 1)[None].float() / 255
    y = deep.analysis(x, 5.0)
    assert torch.equal(y, plain.analysis(x, 5.0))
    assert torch.equal(deep.synthesis(torch.round(y), 5.0), plain.synthesis(torch.round(y), 5.0))
    # training moves them: a block's first step gives its zero convolution a gradient
    deep.train()
    with torch.enable_grad():
        out = deep(x, torch.tensor([4]))
        ((out["x_hat"] - x) ** 2).mean().backward()
    assert deep.g_s_res["5"].body[2].weight.grad.abs().sum() > 0
    assert deep.g_a_res["3"].body[2].weight.grad.abs().sum() > 0
    # only blocks may be missing; a block the model lacks is an error
    broken = dict(plain.state_dict())
    del broken["g_s.2.bias"]
    with pytest.raises(RuntimeError, match="g_s.2.bias"):
        load_adding_blocks(build_model("grouped", N=8, M=12, groups=(4, 8), Na=16, res_s=1), broken)
    with pytest.raises(ValueError, match="has not"):
        load_adding_blocks(plain, deep.state_dict())


@torch.no_grad()
def test_deep_blocks_added_to_trained_weights_start_as_identities_and_widen_with_them():
    from lcodec.train.start import load_adding_blocks

    plain = perturbed(build_model("grouped", N=8, M=12, groups=(4, 8), Na=16, res_a=1, res_s=1))
    deep = build_model("grouped", N=8, M=12, groups=(4, 8), Na=16, res_a=1, res_s=1,
                       res_a_deep=2, res_s_deep=1)
    assert load_adding_blocks(deep, plain.state_dict()) == 3
    x = torch.from_numpy(synthetic_photo(64, 64, seed=4)).permute(2, 0, 1)[None].float() / 255
    y = deep.analysis(x, 5.0)
    assert torch.equal(y, plain.analysis(x, 5.0))
    assert torch.equal(deep.synthesis(torch.round(y), 5.0), plain.synthesis(torch.round(y), 5.0))
    # they sit at 1/8 resolution, and training reaches them
    seen = []
    hook = deep.g_s_deep[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[-2:]))
    deep.train()
    with torch.enable_grad():
        out = deep(x, torch.tensor([4]))
        ((out["x_hat"] - x) ** 2).mean().backward()
    hook.remove()
    assert seen == [torch.Size([8, 8])]
    assert deep.g_s_deep[0].body[2].weight.grad.abs().sum() > 0
    assert deep.g_a_deep[1].body[2].weight.grad.abs().sum() > 0
    # a wider analysis or synthesis widens the deep blocks with the others
    perturbed(deep)
    wide = build_model("grouped", N=8, M=12, groups=(4, 8), Na=24, Ns=16, res_a=1, res_s=1,
                       res_a_deep=2, res_s_deep=1)
    widen_hidden(deep.state_dict(), wide)
    deep.eval(), wide.eval()
    y = deep.analysis(x, 3.0)
    assert torch.allclose(wide.analysis(x, 3.0), y, atol=1e-5)
    assert torch.allclose(wide.synthesis(torch.round(y), 3.0), deep.synthesis(torch.round(y), 3.0),
                          atol=1e-5)


def test_train_adds_deep_blocks_keeps_them_on_resume_and_exports_them(photos, tmp_path, capsys,
                                                                       monkeypatch):
    cfg = dict(data=str(photos), run_dir=str(tmp_path / "run"), minutes=0.0, max_steps=2, crop=64,
               batch=2, threads="1", compile="off", init_from="hyperprior")
    ckpt = train(TrainConfig(**cfg, res_a=1, res_s=1, res_s_deep=2))
    config = json.loads(torch.load(ckpt, weights_only=True)["config_json"])
    assert (config["res_a"], config["res_s"], config["res_s_deep"]) == (1, 1, 2)
    assert "res_a_deep" not in config
    with pytest.raises(ValueError, match="keeps its residual blocks"):
        train(TrainConfig(**cfg, res_a=1, res_s=1, res_s_deep=3))
    folder = tmp_path / "weights"
    export_checkpoint(ckpt, "hyperprior", folder=folder)
    entry = json.loads((folder / "manifest.json").read_text())["models"][0]
    assert entry["config"]["res_s_deep"] == 2
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(folder))
    pixels = synthetic_photo(96, 64, seed=5)
    out, header = Codec("cpu").decode_pixels(Codec("cpu").encode_pixels(pixels, 3, 5.0))
    assert header.model_name == "hyperprior" and psnr(out, pixels) > 24


def test_train_adds_residual_blocks_to_its_weights_resumes_them_and_exports_them(photos, tmp_path,
                                                                                  capsys, monkeypatch):
    cfg = dict(data=str(photos), run_dir=str(tmp_path / "run"), minutes=0.0, max_steps=2, crop=64,
               batch=2, threads="1", compile="off", init_from="hyperprior")
    ckpt = train(TrainConfig(**cfg, res_s=2, res_a=1))
    assert "3 residual blocks added as identities" in capsys.readouterr().out
    config = json.loads(torch.load(ckpt, weights_only=True)["config_json"])
    assert (config["res_a"], config["res_s"]) == (1, 2)
    train(TrainConfig(**{**cfg, "minutes": 5.0, "max_steps": 4}))  # resumes with its blocks
    with pytest.raises(ValueError, match="keeps its residual blocks"):
        train(TrainConfig(**cfg, res_s=3))
    folder = tmp_path / "weights"
    export_checkpoint(ckpt, "hyperprior", folder=folder)
    entry = json.loads((folder / "manifest.json").read_text())["models"][0]
    assert (entry["config"]["res_a"], entry["config"]["res_s"]) == (1, 2)
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(folder))
    pixels = synthetic_photo(96, 64, seed=5)
    out, header = Codec("cpu").decode_pixels(Codec("cpu").encode_pixels(pixels, 3, 5.0))
    assert header.model_name == "hyperprior" and psnr(out, pixels) > 24
    # training moved the blocks off the identity, and the shipped file carries them
    shipped = load_state_dict(folder / entry["file"])
    assert shipped["g_s_res.3.body.2.weight"].abs().sum() > 0
    assert {k.split(".")[1] for k in shipped if k.startswith("g_a_res.")} == {"5"}


def test_level_scales_added_to_trained_weights_start_at_one_and_give_each_level_its_transforms():
    from lcodec.train.loop import is_encoder_parameter, param_groups
    from lcodec.train.start import load_adding_blocks

    plain = perturbed(build_model("grouped", N=8, M=12, groups=(4, 8), Na=16, res_a=1))
    scaled = build_model("grouped", N=8, M=12, groups=(4, 8), Na=16, res_a=1, level_scales_a=True,
                         level_scales_s=True, level_scales_h=True, level_bias_a=True)
    # no block added; the scales at 1, the analysis' offsets at 0
    assert load_adding_blocks(scaled, plain.state_dict()) == 0
    scaled.eval()
    x = torch.from_numpy(synthetic_photo(64, 64, seed=4)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = torch.round(plain.analysis(x, 8.0))
        for q in (1.0, 4.5, 8.0):
            assert torch.equal(scaled.analysis(x, q), plain.analysis(x, q))
            assert torch.equal(scaled.hyper_analysis(y, q), plain.hyper_analysis(y, q))
            assert torch.equal(scaled.synthesis(y, q), plain.synthesis(y, q))
        for key, stage, arg in (("log_level_scale_a", "analysis", x), ("log_level_scale_s", "synthesis", y),
                                ("log_level_scale_h", "hyper_analysis", y), ("level_bias_a", "analysis", x)):
            param = getattr(scaled, key)
            param[7] += 0.2  # the top level's own transform
            assert not torch.allclose(getattr(scaled, stage)(arg, 8.0), getattr(plain, stage)(arg, 8.0))
            assert torch.equal(getattr(scaled, stage)(arg, 7.0), getattr(plain, stage)(arg, 7.0))
            halfway = getattr(scaled, stage)(arg, 7.5)  # a fractional quality interpolates the log-scales
            param[7] -= 0.1
            param[6] += 0.1
            assert torch.allclose(getattr(scaled, stage)(arg, 7.5), halfway, atol=1e-6)
            param[6:] = 0
    with pytest.raises(ValueError, match="analysis depends on the quality"):
        scaled.transform_a(x - 0.5)
    with pytest.raises(ValueError, match="synthesis depends on the quality"):
        scaled.transform_s(y)
    with pytest.raises(ValueError, match="hyper-analysis depends on the quality"):
        scaled.hyper_analysis(y)
    # training moves one level's scales through the images coded at it (the hyper-analysis'
    # through the bits only); they train with the gains
    scaled.train()
    with torch.enable_grad():
        out = scaled(torch.cat([x, x]), torch.tensor([2, 5]))
        bits = -out["y_likelihoods"].log2().sum() - out["z_likelihoods"].log2().sum()
        (((out["x_hat"] - x) ** 2).mean() + 1e-3 * bits).backward()
    per_level = (scaled.log_level_scale_a, scaled.log_level_scale_s, scaled.log_level_scale_h,
                 scaled.level_bias_a)
    for param in per_level:
        grad = param.grad.abs().sum(dim=(1, 2))
        assert grad[2] > 0 and grad[5] > 0 and grad[[0, 1, 3, 4, 6, 7]].sum() == 0
    assert is_encoder_parameter("log_level_scale_a") and not is_encoder_parameter("log_level_scale_s")
    assert is_encoder_parameter("log_level_scale_h") and is_encoder_parameter("level_bias_a")
    lifted = param_groups(scaled, 10.0)[1]
    assert lifted["lr_mult"] == 10.0 and {id(p) for p in lifted["params"]} >= {id(p) for p in per_level}
    # moving the levels moves the scales like the gains
    moved = retarget_levels(scaled.state_dict(), DEFAULT_LAMBDAS[:4] + (0.1, 0.2))
    assert moved["log_level_scale_a"].shape == (6, 3, 16) and moved["log_level_scale_s"].shape == (6, 3, 8)
    assert moved["log_level_scale_h"].shape == (6, 2, 8) and moved["level_bias_a"].shape == (6, 3, 16)
    assert torch.equal(moved["log_level_scale_s"][1], scaled.state_dict()["log_level_scale_s"][1])


def test_train_adds_level_scales_resumes_them_and_the_codec_codes_with_them(photos, tmp_path, capsys,
                                                                           monkeypatch):
    cfg = dict(data=str(photos), run_dir=str(tmp_path / "run"), minutes=0.0, max_steps=3, crop=64,
               batch=2, threads="1", compile="off", init_from="hyperprior", gain_lr_mult=10.0)
    with pytest.raises(ValueError, match="--level-bias-a needs the analysis' level scales"):
        train(TrainConfig(**cfg, level_bias_a=True))
    ckpt = train(TrainConfig(**cfg, level_scales_a=True, level_scales_s=True, level_scales_h=True,
                             level_bias_a=True))
    assert ("analysis level scales added at 1; synthesis level scales added at 1; hyper-analysis "
            "level scales added at 1; analysis level offsets added at 0") in capsys.readouterr().out
    config = json.loads(torch.load(ckpt, weights_only=True)["config_json"])
    assert config["level_scales_a"] is True and config["level_scales_s"] is True
    assert config["level_scales_h"] is True and config["level_bias_a"] is True
    train(TrainConfig(**{**cfg, "minutes": 5.0, "max_steps": 5}))  # resumes with its scales
    folder = tmp_path / "weights"
    export_checkpoint(ckpt, "hyperprior", folder=folder)
    entry = json.loads((folder / "manifest.json").read_text())["models"][0]
    assert entry["config"]["level_scales_a"] is True and entry["config"]["level_scales_s"] is True
    assert entry["config"]["level_scales_h"] is True and entry["config"]["level_bias_a"] is True
    shipped = load_state_dict(folder / entry["file"])
    assert all(shipped[key].abs().sum() > 0 for key in LEVEL_SCALE_KEYS + LEVEL_BIAS_KEYS)
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(folder))
    codec = Codec("cpu")
    pixels = synthetic_photo(96, 64, seed=5)
    out, header = codec.decode_pixels(codec.encode_pixels(pixels, 3, 5.0))
    assert header.model_name == "hyperprior" and psnr(out, pixels) > 24
    # the analysis memo of a quality search keeps one latent per tile and quality, and gives
    # the files that fresh encodes give
    pipe = codec._pipeline(None)
    assert pipe.transforms.analysis_depends_on_quality
    plain = {q: pipe.encode(pixels, q, 64) for q in (2.5, 6.0)}
    memo: dict = {}
    assert {q: pipe.encode(pixels, q, 64, memo=memo) for q in (2.5, 6.0)} == plain
    assert len(memo) == 2 * 2 and {key[4] for key in memo} == {2.5, 6.0}


def test_retargeted_levels_keep_trained_gains_and_extend_them_in_log_lambda():
    model = perturbed(build_model("hyperprior", N=8, M=8, lambdas=(0.001, 0.004, 0.016)))
    state = model.state_dict()
    moved = retarget_levels(state, (0.0005, 0.002, 0.004, 0.032))
    g = state["log_gain"]
    assert torch.allclose(moved["log_gain"][2], g[1])                 # a trained level: kept
    assert torch.allclose(moved["log_gain"][1], (g[0] + g[1]) / 2)     # halfway in log lambda
    assert torch.allclose(moved["log_gain"][0], g[0] - (g[1] - g[0]) / 2)  # extrapolated below
    assert torch.allclose(moved["log_inv_gain"][3], state["log_inv_gain"][2] + (state["log_inv_gain"][2] - state["log_inv_gain"][1]) / 2)
    assert moved["lambdas"].tolist() == pytest.approx([0.0005, 0.002, 0.004, 0.032])
    assert torch.equal(moved["g_s.0.weight"], state["g_s.0.weight"])
    wide = build_model("hyperprior", N=8, M=8, lambdas=(0.0005, 0.002, 0.004, 0.032))
    wide.load_state_dict(moved)
    with pytest.raises(ValueError, match="increasing"):
        check_lambdas((0.01, 0.001))


def test_train_moves_the_levels_of_the_weights_it_starts_from(photos, tmp_path, capsys):
    lambdas = (0.0004, 0.001, 0.0025, 0.006, 0.014, 0.033, 0.077, 0.18)
    ckpt = train(TrainConfig(data=str(photos), run_dir=str(tmp_path / "run"), minutes=0.0,
                             threads="1", compile="off", init_from="hyperprior", lambdas=lambdas))
    assert "quality levels moved to lambdas 0.0004, 0.001" in capsys.readouterr().out
    saved = torch.load(ckpt, weights_only=True)
    assert saved["model"]["lambdas"].tolist() == pytest.approx(lambdas)
    assert json.loads(saved["config_json"])["lambdas"] == pytest.approx(lambdas)


def test_train_keeps_the_levels_of_its_weights_and_a_resumed_run_keeps_its_own(photos, tmp_path, capsys):
    lambdas = (0.0004, 0.001, 0.0025, 0.006, 0.014, 0.033, 0.077, 0.45)
    cfg = dict(data=str(photos), minutes=0.0, threads="1", compile="off")
    moved = train(TrainConfig(**cfg, run_dir=str(tmp_path / "a"), init_from="hyperprior", lambdas=lambdas))
    torch.save(torch.load(moved, weights_only=True)["model"], tmp_path / "moved.pt")
    capsys.readouterr()
    again = train(TrainConfig(**cfg, run_dir=str(tmp_path / "b"), init_from=str(tmp_path / "moved.pt")))
    assert "quality levels moved" not in capsys.readouterr().out
    assert torch.load(again, weights_only=True)["model"]["lambdas"].tolist() == pytest.approx(lambdas)
    train(TrainConfig(**cfg, run_dir=str(tmp_path / "b")))  # resumes with the run's levels
    with pytest.raises(ValueError, match="keeps its quality levels"):
        train(TrainConfig(**cfg, run_dir=str(tmp_path / "b"), lambdas=DEFAULT_LAMBDAS))


def test_gain_lr_mult_moves_the_gains_faster_than_the_transforms(photos, tmp_path):
    cfg = dict(data=str(photos), run_dir=str(tmp_path / "run"), minutes=5.0, crop=64, batch=1,
               threads="1", compile="off", init_from="hyperprior", lr=1e-5, warmup=1,
               gain_lr_mult=100.0, bf16="off")
    start = load_weights_state("hyperprior")
    ckpt = train(TrainConfig(**cfg, max_steps=2))
    moved = torch.load(ckpt, weights_only=True)["model"]
    change = {k: float((moved[k] - start[k]).abs().max()) for k in ("log_gain", "g_s.0.weight", "h_s.0.weight")}
    # Adam moves every parameter by about its lr per step: 1e-3 for the gains, 1e-5 for the rest.
    assert change["log_gain"] > 1e-3
    assert change["g_s.0.weight"] < 1e-4 and change["h_s.0.weight"] < 1e-4
    with pytest.raises(ValueError, match="--gain-lr-mult"):
        train(TrainConfig(**{**cfg, "gain_lr_mult": 1.0}, max_steps=3))


def test_train_only_encoder_leaves_every_decoder_network_as_it_started(photos, tmp_path, capsys):
    cfg = dict(data=str(photos), run_dir=str(tmp_path / "run"), minutes=5.0, crop=64, batch=1,
               threads="1", compile="off", family="context", init_from="context", lr=1e-3, warmup=1,
               bf16="off", train_only="encoder")
    start = load_weights_state("context")
    ckpt = train(TrainConfig(**cfg, max_steps=2))
    assert "decoder frozen" in capsys.readouterr().out
    moved = torch.load(ckpt, weights_only=True)["model"]
    changed = {k for k in start if not torch.equal(moved[k], start[k])}
    assert {"g_a.0.weight", "h_a.0.weight", "log_gain"} <= changed
    assert all(k.startswith(("g_a.", "h_a.")) or k == "log_gain" for k in changed), changed
    with pytest.raises(ValueError, match="--train-only"):
        train(TrainConfig(**{**cfg, "train_only": "all"}, max_steps=3))


def test_encoder_swap_moves_only_the_encoder_and_refuses_another_decoder():
    from lcodec.train.encoder_swap import swap_encoder

    torch.manual_seed(0)
    context = build_model("context", N=8, M=16)
    grouped = build_model("grouped", N=8, M=16, groups=(8, 8), group_features=4, group_hidden=4)
    grouped.load_state_dict(context.state_dict(), strict=False)
    trained = {k: v + 1 if k.startswith(("g_a.", "h_a.")) or k == "log_gain" else v.clone()
               for k, v in context.state_dict().items()}
    out = swap_encoder(trained, grouped.state_dict())
    for key in ("g_a.0.weight", "h_a.0.weight", "log_gain"):
        assert torch.equal(out[key], trained[key]) and not torch.equal(out[key], grouped.state_dict()[key])
    for key in ("g_s.0.weight", "log_inv_gain", "anchor_nets.0.pred.weight"):
        assert torch.equal(out[key], grouped.state_dict()[key])
    grouped.load_state_dict(out)  # a whole state dict of the target
    trained["g_s.0.weight"] = trained["g_s.0.weight"] + 1
    with pytest.raises(ValueError, match="another decoder"):
        swap_encoder(trained, grouped.state_dict())


def test_held_out_bd_rate_against_jpeg_ranks_a_trained_model_above_a_broken_one():
    crops = [torch.from_numpy(synthetic_photo(128, 128, seed=s)) for s in range(2)]
    jpeg = jpeg_points(crops)
    assert all(b[0] > a[0] and b[1] > a[1] for a, b in zip(jpeg, jpeg[1:]))
    from lcodec.weights import load_model
    good = validate(load_model("hyperprior").model, crops, jpeg)
    broken = perturbed(build_model("hyperprior", N=16, M=16))
    bad = validate(broken, crops, jpeg)
    assert "bd_jpeg" in good and good["bd_jpeg"] < bad.get("bd_jpeg", float("inf"))
    assert set(good) >= {"q1_bpp", "q1_psnr", "q8_bpp", "q8_psnr"}
    # against a curve of the same levels that spends 25% more bits for each PSNR: -20%
    costlier = [[b * 1.25, q] for b, q in good["points"]]
    assert validate(load_model("hyperprior").model, crops, jpeg, reference=costlier)["bd_ref"] == pytest.approx(-20, abs=0.1)


def test_best_checkpoint_ranking_follows_the_reference_and_keeps_old_runs_on_jpeg():
    from lcodec.train.loop import selection_score
    val = {"bd_jpeg": -40.0, "bd_ref": -3.9}
    assert selection_score(val, {"reference": [[0.1, 25.0]]}) == ("best_bd_ref", -3.9)
    assert selection_score(val, {"best_bd_jpeg": -40.2}) == ("best_bd_jpeg", -40.0)


def test_training_keeps_the_checkpoint_with_the_best_held_out_bd_rate(photos, tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(data=str(photos), run_dir=str(run), minutes=5.0, max_steps=2, crop=64,
                      batch=2, threads="1", compile="off", init_from="hyperprior",
                      validate_every=1, log_every=1))
    best = torch.load(run / "best.pt", weights_only=True)
    state = json.loads(best["state_json"])
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    vals = [r["val"] for r in logged if "val" in r]
    # ranked against the run's first validation (the reference: 0 by definition)
    assert len(vals) == 2 and vals[0]["bd_ref"] == 0.0 and state["reference"] == vals[0]["points"]
    bds = [v["bd_ref"] for v in vals]
    assert state["best_bd_ref"] == min(bds) and state["best_step"] == 1 + bds.index(min(bds))
    assert all(len(v["points"]) == 8 and "bd_jpeg" in v for v in vals)
    # another run can start from it
    ckpt = train(TrainConfig(data=str(photos), run_dir=str(tmp_path / "next"), minutes=0.0,
                             threads="1", compile="off", init_from=str(run / "best.pt")))
    started = torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.equal(started[k], best["model"][k]) for k in best["model"])


def test_weights_fingerprint_follows_the_weights_not_the_dict():
    weights = {"a.weight": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.bfloat16)}
    same = {k: v.clone() for k, v in reversed(weights.items())}
    assert weights_fingerprint(weights) == weights_fingerprint(same) < 2 ** 31
    same["b"][2] = 2.0
    assert weights_fingerprint(weights) != weights_fingerprint(same)


def test_a_run_from_trained_weights_draws_other_crops_than_the_run_that_made_them(photos, tmp_path):
    """A new folder started from weights adds their fingerprint to its data seed: runs chained
    by --init-from do not replay one another's crops, the same start draws the same crops, and
    a resumed folder goes on from its step."""
    def data_seeds(name):
        ck = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)
        return [run["data_seed"] for run in json.loads(ck["state_json"])["runs"]]

    cfg = dict(data=str(photos), crop=64, batch=1, threads="1", compile="off", seed=3,
               minutes=5.0, max_steps=1)
    train(TrainConfig(**{**cfg, "minutes": 0.0}, run_dir=str(tmp_path / "scratch")))
    assert data_seeds("scratch") == [3]  # from scratch: the seed and the step, as before
    train(TrainConfig(**cfg, run_dir=str(tmp_path / "a"), init_from="hyperprior"))
    for name in ("b", "c"):
        train(TrainConfig(**cfg, run_dir=str(tmp_path / name), init_from=str(tmp_path / "a" / "best.pt")))
    (a,), (b,), (c,) = data_seeds("a"), data_seeds("b"), data_seeds("c")
    assert b == c and len({3, a, b}) == 3
    train(TrainConfig(**{**cfg, "max_steps": 2}, run_dir=str(tmp_path / "b")))
    assert data_seeds("b") == [b, b + 1]


def test_weight_average_follows_the_iterates_and_is_what_best_pt_holds(photos, tmp_path):
    from lcodec.train.loop import WeightAverage

    model = build_model("hyperprior", N=8, M=8)
    avg = WeightAverage(model, 0.75)
    before = model.g_s[0].weight.detach().clone()
    with torch.no_grad():
        model.g_s[0].weight += 1.0
    avg.update(model)
    assert torch.allclose(avg.model.g_s[0].weight, before + 0.25)
    with pytest.raises(ValueError):
        WeightAverage(model, 1.0)

    run = tmp_path / "run"
    cfg = dict(data=str(photos), run_dir=str(run), minutes=5.0, crop=64, batch=2, threads="1",
               compile="off", init_from="hyperprior", validate_every=2, log_every=2, ema=0.5)
    train(TrainConfig(**cfg, max_steps=2))
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    best = torch.load(run / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(best[k], ck["average"][k]) for k in best)
    assert not all(torch.equal(ck["average"][k], ck["model"][k]) for k in best)
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert "val_current" in logged[-1] and "bd_jpeg" in logged[-1]["val"]
    # resuming keeps the average going
    train(TrainConfig(**cfg, max_steps=3))
    resumed = torch.load(run / "checkpoint.pt", weights_only=True)
    assert not torch.equal(resumed["average"]["g_s.0.weight"], ck["average"]["g_s.0.weight"])
    # a new run started from the checkpoint starts from its average, not its last iterate
    started = torch.load(train(TrainConfig(**{**cfg, "run_dir": str(tmp_path / "next"), "minutes": 0.0,
                                              "init_from": str(run / "checkpoint.pt")})), weights_only=True)
    assert all(torch.equal(started["model"][k], resumed["average"][k]) for k in resumed["average"])


def test_a_run_validates_its_last_weights_once(photos, tmp_path):
    run = tmp_path / "run"
    cfg = dict(data=str(photos), run_dir=str(run), minutes=5.0, crop=64, batch=2, threads="1",
               compile="off", init_from="hyperprior", validate_every=2, log_every=1)

    def validated_steps() -> list[int]:
        logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return [r["step"] for r in logged if "val" in r]

    train(TrainConfig(**cfg, max_steps=3))  # stops between two validations: step 3 is validated
    assert validated_steps() == [2, 3]
    assert json.loads(torch.load(run / "checkpoint.pt", weights_only=True)["state_json"])[
        "best_step"] in (2, 3)
    train(TrainConfig(**cfg, max_steps=4))  # ends on a validation step: not validated twice
    assert validated_steps() == [2, 3, 4]
    train(TrainConfig(**cfg, max_steps=4))  # no step taken: nothing new to validate
    assert validated_steps() == [2, 3, 4]


def test_export_keeps_another_model_as_the_default(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"models": [
        {"name": "hyperprior", "version": 1, "default": False},
        {"name": "context", "version": 1, "default": True}]}))
    ckpt = tmp_path / "checkpoint.pt"
    entry = find_entry("hyperprior")
    torch.save({"model": load_state_dict(weights_dir() / entry.file),
                "config_json": json.dumps({"family": "hyperprior", **entry.config}),
                "state_json": "{}"}, ckpt)
    export_checkpoint(ckpt, "hyperprior", folder=folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [(m["name"], m["version"], m["default"]) for m in manifest["models"]] == [
        ("hyperprior", 1, False), ("context", 1, True), ("hyperprior", 2, False)]


def test_train_resume_and_export(photos, tmp_path, monkeypatch):
    cfg = dict(data=str(photos), run_dir=str(tmp_path / "run"), minutes=0.03, crop=64, batch=2,
               threads="1", level_weighting="normalized", compile="off")
    ckpt = train(TrainConfig(**cfg))
    first = json.loads(torch.load(ckpt, weights_only=True)["state_json"])
    assert first["step"] > 0 and first["level_loss_ema"][:8] != [0.0] * 8
    train(TrainConfig(**{**cfg, "minutes": 5.0, "max_steps": first["step"] + 2}))  # resumes the same run
    second = json.loads(torch.load(ckpt, weights_only=True)["state_json"])
    assert second["step"] == first["step"] + 2 and len(second["runs"]) == 2
    assert (tmp_path / "run" / "log.jsonl").exists()

    folder = tmp_path / "weights"
    path = export_checkpoint(ckpt, "hyperprior", folder=folder)
    assert path.name == "hyperprior-v1.pt"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["models"][0]["training"]["steps"] == second["step"]
    assert manifest["models"][0]["default"]  # the first model exported is the default
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(folder))
    pixels = synthetic_photo(80, 48, seed=9)
    out, header = Codec("cpu").decode_pixels(Codec("cpu").encode_pixels(pixels, 3, 5.0))
    assert out.shape == pixels.shape and header.model_name == "hyperprior"


def _hyperprior_for(ctx):
    """The newest shipped hyperprior with the latent width of the context entry ``ctx``
    (the shape of its own transforms)."""
    return max((e for e in read_manifest() if e.family == "hyperprior" and e.config["M"] == ctx.config["M"]),
               key=lambda e: e.version)


def test_train_context_can_start_from_shipped_context_networks(photos, tmp_path):
    ctx = find_entry("context")
    hp = _hyperprior_for(ctx)
    cfg = dict(init_from=str(weights_dir() / hp.file), data=str(photos), minutes=0.0, crop=128,
               batch=2, threads=1)
    warm = torch.load(train_context(ContextTrainConfig(**cfg, run_dir=str(tmp_path / "warm"),
                                                       context_from="context")), weights_only=True)["model"]
    shipped = load_state_dict(weights_dir() / ctx.file)
    assert torch.equal(warm["entropy_parameters.4.weight"], shipped["entropy_parameters.4.weight"])
    assert torch.equal(warm["g_a.0.weight"], load_state_dict(weights_dir() / hp.file)["g_a.0.weight"])
    with pytest.raises(ValueError, match="no context networks"):
        train_context(ContextTrainConfig(**cfg, run_dir=str(tmp_path / "bad"), context_from="hyperprior"))


@torch.no_grad()
def test_context_networks_carried_to_other_latent_channels_predict_the_same():
    old = perturbed(build_model("context", N=8, M=6, context_channels=5, hidden=12, scale_floor=None), seed=1)
    src = [3, None, 0, 5]  # new channel -> old channel; channel 1 is new
    new = perturbed(build_model("context", N=8, M=4, context_channels=5, hidden=12, scale_floor=None), seed=2)
    new_state = new.state_dict()
    for i, j in enumerate(src):
        if j is not None:
            new_state["g_s.0.weight"][i] = old.state_dict()["g_s.0.weight"][j] * 1.3  # moved, same pattern
    assert match_latent_channels(old.state_dict(), new_state) == src
    new_state.update(transfer_context(old.state_dict(), src))
    new.load_state_dict(new_state)

    gen = torch.Generator().manual_seed(0)
    anchors, hyper = torch.randn(1, 4, 6, 7, generator=gen), torch.randn(1, 8, 6, 7, generator=gen)
    old_anchors, old_hyper = torch.zeros(1, 6, 6, 7), torch.zeros(1, 12, 6, 7)  # dropped channels: 0
    for i, j in enumerate(src):
        if j is not None:
            old_anchors[:, j] = anchors[:, i]
            old_hyper[:, j], old_hyper[:, 6 + j] = hyper[:, i], hyper[:, 4 + i]
    got, want = new.nonanchor_params(anchors, hyper), old.nonanchor_params(old_anchors, old_hyper)
    for i, j in enumerate(src):
        if j is None:   # a new channel: the hyperprior's parameters, unchanged
            assert torch.equal(got[:, i], hyper[:, i]) and torch.equal(got[:, 4 + i], hyper[:, 4 + i])
        else:
            assert torch.allclose(got[:, i], want[:, j], atol=1e-5)
            assert torch.allclose(got[:, 4 + i], want[:, 6 + j], atol=1e-5)


def test_train_context_warm_starts_on_a_narrowed_hyperprior(photos, tmp_path, capsys):
    ctx = find_entry("context")
    m = ctx.config["M"]
    # The context model's own transforms as a hyperprior (a context trained end to end has moved
    # away from the hyperprior it started on), so that every kept channel has its exact match.
    hp_keys = load_state_dict(weights_dir() / _hyperprior_for(ctx).file).keys()
    own = {k: v for k, v in load_state_dict(weights_dir() / ctx.file).items() if k in hp_keys}
    narrowed = narrow_latents(own, keep=list(range(0, m, 2)))
    torch.save(narrowed, tmp_path / "narrow.pt")
    ckpt = train_context(ContextTrainConfig(init_from=str(tmp_path / "narrow.pt"), data=str(photos),
                                            run_dir=str(tmp_path / "ctx"), minutes=0.0, crop=128,
                                            batch=2, threads=1, context_from="context"))
    assert f"from M={m} to M={m // 2}: {m // 2} channels matched" in capsys.readouterr().out
    carried = torch.load(ckpt, weights_only=True)["model"]["entropy_parameters.4.weight"]
    shipped = load_state_dict(weights_dir() / ctx.file)["entropy_parameters.4.weight"]
    assert torch.equal(carried[:m // 2], shipped[0:m:2]) and torch.equal(carried[m // 2:], shipped[m::2])


def test_train_context_learns_and_exports(photos, tmp_path, monkeypatch):
    hp = find_entry("hyperprior")
    ckpt = train_context(ContextTrainConfig(init_from=str(weights_dir() / hp.file), data=str(photos),
                                            run_dir=str(tmp_path / "ctx"), minutes=0.08, crop=128,
                                            batch=2, threads=1, log_every=5))
    saved = torch.load(ckpt, weights_only=True)
    state = json.loads(saved["state_json"])
    assert state["step"] > 0 and set(state["final_val"]) == {"q1_saving_pct", "q5_saving_pct", "q8_saving_pct"}
    # the transforms stay the hyperprior's, bit for bit
    base = torch.load(weights_dir() / hp.file, weights_only=True)
    assert torch.equal(saved["model"]["g_s.0.weight"], base["g_s.0.weight"])
    assert torch.equal(saved["model"]["h_s.4.weight"], base["h_s.4.weight"])
    assert not torch.equal(saved["model"]["entropy_parameters.4.weight"],
                           torch.zeros_like(saved["model"]["entropy_parameters.4.weight"]))

    folder = tmp_path / "weights"
    export_checkpoint(ckpt, "context", make_default=False, folder=folder)
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(folder))
    pixels = synthetic_photo(128, 96, seed=3)
    data = Codec("cpu", model="context").encode_pixels(pixels, 3, 6.0)
    out, header = Codec("cpu").decode_pixels(data)
    assert header.model_name == "context" and psnr(out, pixels) > 24


def _probe_setup(tmp_path):
    """The shipped hyperprior loaded through a training checkpoint, and two small photos."""
    hp = find_entry("hyperprior")
    tensors = torch.load(weights_dir() / hp.file, weights_only=True)
    state = {k: v for k, v in tensors.items() if not k.startswith(("tables.", "exact."))}
    ckpt = tmp_path / "c.pt"
    torch.save({"model": state, "config_json": json.dumps({"family": "hyperprior", **hp.config})}, ckpt)
    model = load_checkpoint_model(ckpt)
    images = [synthetic_photo(70, 50, seed=s) for s in range(2)]
    return model, images


def test_probe_reports_every_level_and_bd_rates(tmp_path):
    model, images = _probe_setup(tmp_path)
    points = probe(model, images, levels=(1, 4, 8))
    assert [p["quality"] for p in points] == [1, 4, 8]
    assert points[0]["bpp"] < points[1]["bpp"] < points[2]["bpp"]
    assert points[0]["psnr"] < points[2]["psnr"]
    cache = tmp_path / "classical.json"
    records = [{"codec": "jpeg", "quality": q, "image": f"i{i}", "bpp": b + i * 0.1, "psnr": d}
               for i in range(2) for q, b, d in ((10, 0.3, 27.0), (50, 0.8, 31.0), (90, 2.0, 37.0))]
    cache.write_text(json.dumps({"per_image": records}))
    curves = classical_curves(cache)
    assert list(curves) == ["jpeg"]
    assert np.allclose(curves["jpeg"], [(0.35, 27.0), (0.85, 31.0), (2.05, 37.0)])


def test_probe_ceiling_synthesizes_the_unrounded_latents(tmp_path):
    model, images = _probe_setup(tmp_path)
    plain = probe(model, images, levels=(1, 8))
    assert all("psnr_unquantized" not in p for p in plain)
    points = probe(model, images, levels=(1, 8), ceiling=True)
    # the same rate-distortion points, plus the ceiling
    assert [(p["bpp"], p["psnr"]) for p in points] == [(p["bpp"], p["psnr"]) for p in plain]
    # at the lowest level rounding costs several dB; at the highest little
    low, high = points
    assert low["psnr_unquantized"] > low["psnr"] + 2
    assert high["psnr_unquantized"] > high["psnr"] - 0.1
    assert high["psnr_unquantized"] - high["psnr"] < low["psnr_unquantized"] - low["psnr"]


def test_pca_ceiling_counts_the_variance_the_kept_components_leave_out():
    gen = np.random.default_rng(0)
    # rows in a 2-dimensional subspace: two components reconstruct them, one does not
    basis = gen.standard_normal((2, 768))
    x = 0.5 + 0.01 * gen.standard_normal((500, 2)) @ basis
    got = pca_psnr(x, [1, 2, 3])
    assert got[2] > 100 and got[3] > 100 and got[1] < 60
    # the dropped variance is the MSE: one component of two equal ones leaves half
    x = np.zeros((4, 768))
    x[[0, 1], 0], x[[2, 3], 1] = (0.1, -0.1), (0.1, -0.1)
    assert abs(pca_psnr(x, [1])[1] - 10 * np.log10(768 / (4 * 0.01 / 4 / 2))) < 1e-6
    # blocks: whole 16x16 blocks only, 768 values each, scaled to [0, 1]
    image = np.full((40, 50, 3), 255, np.uint8)
    b = blocks([image])
    assert b.shape == (2 * 3, 768) and np.all(b == 1.0)


def test_scale_bound_gradient_pulls_up_but_never_pushes_further_down():
    from lcodec.models.entropy_models import SCALE_BOUND, gaussian_likelihood

    # a latent that is always 0: a smaller scale always looks better, so the loss pushes the
    # scale down; below the bound that no longer changes anything and must not be followed
    raw = torch.tensor([-5.0, 0.05, 0.5], requires_grad=True)
    bits = -gaussian_likelihood(torch.zeros(3), raw).log2().sum()
    bits.backward()
    assert raw.grad[0] == 0 and raw.grad[1] == 0 and raw.grad[2] > 0
    # a large value under a small scale: the loss wants a larger scale; that pull passes below
    # the bound too
    raw = torch.tensor([-5.0, 0.5], requires_grad=True)
    bits = -gaussian_likelihood(torch.full((2,), 1.0), raw).log2().sum()
    bits.backward()
    assert raw.grad[0] < 0 and raw.grad[1] < 0
    assert torch.equal(gaussian_likelihood(torch.zeros(1), torch.tensor([-5.0])),
                       gaussian_likelihood(torch.zeros(1), torch.tensor([SCALE_BOUND])))


def test_divergence_guard_skips_a_short_window_after_resume():
    """A one-step window (the first after a resume) with a low loss must not become the bar
    that later, normal windows are judged against; a full window 3x above the bar still
    rolls back and halves the lr."""
    model = torch.nn.Linear(2, 2)
    guard = DivergenceGuard(model, torch.optim.Adam(model.parameters()), min_steps=100)
    state = {"step": 100}
    assert not guard.check(0.9, state, steps=1)          # short: not judged, not the bar
    for step in (200, 300):
        state["step"] = step
        assert not guard.check(6.0, state, steps=100)
    assert "lr_scale" not in state
    state["step"] = 400
    assert guard.check(19.0, state, steps=100)           # > 3x the best full window
    assert state["step"] == 300 and state["lr_scale"] == 0.5
    assert guard.check(float("nan"), state, steps=1)     # non-finite: judged however short
    assert state["lr_scale"] == 0.25


def test_train_context_family_end_to_end_from_a_hyperprior_resumes_and_exports(photos, tmp_path,
                                                                               monkeypatch, capsys):
    cfg = dict(data=str(photos), run_dir=str(tmp_path / "run"), family="context", crop=64, batch=2,
               threads="1", compile="off", minutes=5.0, max_steps=3, init_from="hyperprior")
    ckpt = train(TrainConfig(**cfg))
    assert "the context networks start as none" in capsys.readouterr().out
    saved = torch.load(ckpt, weights_only=True)
    config = json.loads(saved["config_json"])
    assert config["family"] == "context" and config["scale_floor"] == 0.11
    shipped = load_state_dict(weights_dir() / find_entry("hyperprior").file)
    # the transforms and the context networks both learn
    assert not torch.equal(saved["model"]["g_a.0.weight"], shipped["g_a.0.weight"])
    assert saved["model"]["entropy_parameters.4.weight"].abs().sum() > 0
    train(TrainConfig(**{**cfg, "max_steps": 5}))  # resumes with its own context widths
    state = json.loads(torch.load(ckpt, weights_only=True)["state_json"])
    assert state["step"] == 5 and len(state["runs"]) == 2

    _exported_context_codes_a_photo(ckpt, tmp_path / "weights", monkeypatch)


def test_train_context_family_refuses_weights_that_are_not_a_whole_hyperprior(photos, tmp_path):
    partial = load_state_dict(weights_dir() / find_entry("hyperprior").file)
    del partial["h_s.4.bias"]
    torch.save(partial, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="not a hyperprior of this architecture"):
        train(TrainConfig(data=str(photos), run_dir=str(tmp_path / "run"), family="context",
                          threads="1", compile="off", minutes=0.0, init_from=str(tmp_path / "wrong.pt")))


def test_train_records_the_device_it_ran_on_and_resumes_with_adam_state_on_it(photos, tmp_path):
    cfg = dict(data=str(photos), run_dir=str(tmp_path / "run"), minutes=5.0, max_steps=3, crop=64,
               batch=2, threads="1", compile="off", device="auto")
    ckpt = train(TrainConfig(**cfg))
    ck = torch.load(ckpt, weights_only=True)
    state = json.loads(ck["state_json"])
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert state["runs"][0]["device"].startswith(expected)
    assert ("gpu_seconds" in state) == (expected == "cuda")
    assert ck["optimizer"]["state"], "Adam's moments are saved"
    train(TrainConfig(**{**cfg, "max_steps": 5}))  # the moments come back onto the model's device
    assert json.loads(torch.load(ckpt, weights_only=True)["state_json"])["step"] == 5


def test_moving_the_optimizer_state_keeps_adam_moments_and_step_counts():
    from lcodec.train.loop import move_optimizer_state

    layer = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    layer(torch.randn(4, 3)).sum().backward()
    opt.step()
    before = {k: v.clone() for k, v in opt.state[layer.weight].items()}
    move_optimizer_state(opt)
    after = opt.state[layer.weight]
    assert after["exp_avg"].device == layer.weight.device
    assert all(torch.equal(before[k], after[k]) for k in before)
    opt.step()  # and the optimizer still steps


def test_bf16_autocast_setting():
    from lcodec.train.loop import cpu_has_native_bf16, use_bf16_autocast

    cpu = torch.device("cpu")
    assert use_bf16_autocast("on", cpu) and not use_bf16_autocast("off", cpu)
    assert use_bf16_autocast("auto", cpu) == cpu_has_native_bf16()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_train_on_cuda_without_a_gpu_fails_in_one_line_before_writing(photos, tmp_path):
    from click.testing import CliRunner

    from lcodec.train.__main__ import train_command

    run_dir = tmp_path / "run"
    result = CliRunner().invoke(train_command, ["--data", str(photos), "--run-dir", str(run_dir),
                                                "--device", "cuda", "--minutes", "0.01"])
    assert result.exit_code == 1
    message = result.output.strip()
    assert "cuda" in message and "use --device cpu or auto" in message and len(message.splitlines()) == 1
    assert not run_dir.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_probe_on_cuda_without_a_gpu_is_a_usage_error(tmp_path, capsys):
    from lcodec.train.kodak_probe import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "none.pt"), "--device", "cuda"])
    assert exit_info.value.code == 2 and "use --device cpu or auto" in capsys.readouterr().err


def _adam_with_state(model: torch.nn.Module, gain_lr_mult: float = 10.0) -> torch.optim.Adam:
    from lcodec.train.loop import param_groups

    opt = torch.optim.Adam(param_groups(model, gain_lr_mult), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    opt.step()
    return opt


def test_adam_moments_carry_into_the_leading_block_of_a_widened_synthesis():
    from lcodec.train.adam_state import carry_adam_moments
    from lcodec.train.loop import param_groups

    torch.manual_seed(0)
    narrow = build_model("hyperprior", N=8, M=8)
    saved = _adam_with_state(narrow).state_dict()
    wide = build_model("hyperprior", N=8, M=8, Ns=16)
    opt = torch.optim.Adam(param_groups(wide, 10.0), lr=1e-3)
    widened = carry_adam_moments(saved, opt)
    # g_s: its 4 layers' weights, the 3 hidden biases, and the 3 (I)GDNs' beta and gamma
    assert widened == 4 + 3 + 3 * 2
    names = [n for n, _ in narrow.named_parameters()]
    wide_params = dict(wide.named_parameters())
    narrow_opt_state = {n: old for n, old in zip(
        [n for g in param_groups(narrow, 10.0) for n in _names_of(narrow, g["params"])],
        [saved["state"][i] for g in saved["param_groups"] for i in g["params"]])}
    assert set(narrow_opt_state) == set(names)
    for name, old in narrow_opt_state.items():
        new = opt.state[wide_params[name]]
        block = tuple(slice(0, n) for n in old["exp_avg"].shape)
        assert torch.equal(new["exp_avg"][block], old["exp_avg"]), name
        assert torch.equal(new["exp_avg_sq"][block], old["exp_avg_sq"]), name
        assert float(new["step"]) == 2.0
        if new["exp_avg"].shape != old["exp_avg"].shape:  # the new units: no momentum yet, and
            rest = torch.ones_like(new["exp_avg"], dtype=torch.bool)  # the old units' mean scale
            rest[block] = False
            assert new["exp_avg"][rest].abs().max() == 0
            assert torch.allclose(new["exp_avg_sq"][rest], old["exp_avg_sq"].mean().expand(int(rest.sum())))
    # the widened optimizer takes a step
    for p in wide.parameters():
        p.grad = torch.randn_like(p)
    opt.step()


def _names_of(model: torch.nn.Module, params: list) -> list[str]:
    ids = {id(p): n for n, p in model.named_parameters()}
    return [ids[id(p)] for p in params]


def test_adam_moments_refuse_another_grouping_or_a_narrower_model():
    from lcodec.train.adam_state import carry_adam_moments
    from lcodec.train.loop import param_groups

    saved = _adam_with_state(build_model("hyperprior", N=8, M=8, Ns=16)).state_dict()
    with pytest.raises(ValueError, match="gain-lr-mult"):
        carry_adam_moments(saved, torch.optim.Adam(param_groups(build_model("hyperprior", N=8, M=8, Ns=16)), lr=1e-3))
    with pytest.raises(ValueError, match="does not fit"):
        carry_adam_moments(saved, torch.optim.Adam(param_groups(build_model("hyperprior", N=8, M=8), 10.0), lr=1e-3))


def test_train_widens_a_context_model_carries_its_adam_state_and_codes_with_it(photos, tmp_path,
                                                                                  capsys, monkeypatch):
    cfg = dict(data=str(photos), family="context", crop=64, batch=2, threads="1", compile="off",
               gain_lr_mult=10.0)
    first = train(TrainConfig(**cfg, run_dir=str(tmp_path / "a"), minutes=5.0, max_steps=2,
                              init_from="context"))
    parent = torch.load(first, weights_only=True)
    ns = parent["model"]["g_s.0.weight"].shape[1]
    capsys.readouterr()
    ckpt = train(TrainConfig(**cfg, run_dir=str(tmp_path / "b"), minutes=0.0, Ns=ns + 8,
                             init_from=str(first), adam_from=str(first)))
    out = capsys.readouterr().out
    assert f"synthesis widened from {ns} to {ns + 8} channels" in out
    assert "Adam's moments carried from" in out and "widened tensors" in out
    saved = torch.load(ckpt, weights_only=True)
    assert json.loads(saved["config_json"])["Ns"] == ns + 8
    # the context networks come over unchanged, and the moments sit in the new optimizer
    assert torch.equal(saved["model"]["entropy_parameters.4.weight"],
                       parent["model"]["entropy_parameters.4.weight"])
    wide_moments = [s["exp_avg"] for s in saved["optimizer"]["state"].values()]
    assert any(m.shape[1:2] == (ns + 8,) or m.shape[:1] == (ns + 8,) for m in wide_moments)
    # wider context networks, trained a step, exported, and coding real files
    cc = parent["model"]["context_prediction.weight"].shape[0]
    hidden = parent["model"]["entropy_parameters.0.weight"].shape[0]
    ckpt = train(TrainConfig(**cfg, run_dir=str(tmp_path / "d"), minutes=5.0, max_steps=1,
                             context_channels=cc + 16, context_hidden=hidden + 32,
                             init_from=str(first), adam_from=str(first)))
    out = capsys.readouterr().out
    assert f"context features widened from {cc} to {cc + 16} channels" in out
    assert f"context merging network widened from {hidden} to {hidden + 32} channels" in out
    config = json.loads(torch.load(ckpt, weights_only=True)["config_json"])
    assert (config["context_channels"], config["hidden"]) == (cc + 16, hidden + 32)
    with pytest.raises(ValueError, match="keeps its context networks' widths"):
        train(TrainConfig(**cfg, run_dir=str(tmp_path / "d"), minutes=0.0, context_hidden=hidden + 64))
    _exported_context_codes_a_photo(ckpt, tmp_path / "weights", monkeypatch)
    with pytest.raises(ValueError, match="no optimizer state"):
        train(TrainConfig(**cfg, run_dir=str(tmp_path / "c"), minutes=0.0, init_from=str(first),
                          adam_from=str(tmp_path / "a" / "best.pt")))



def test_adam_moments_carry_by_name_into_a_run_that_adds_residual_blocks(photos, tmp_path, capsys):
    """Blocks added with --res-a / --res-s sit between the parameters of the run Adam's state
    comes from: each saved moment goes to the parameter of its name, the blocks start fresh."""
    from lcodec.train.adam_state import saved_parameter_names

    cfg = dict(data=str(photos), crop=64, batch=2, threads="1", compile="off", gain_lr_mult=10.0, N=8)
    first = train(TrainConfig(**cfg, M=8, run_dir=str(tmp_path / "a"), minutes=5.0, max_steps=2))
    capsys.readouterr()
    ckpt = train(TrainConfig(**cfg, run_dir=str(tmp_path / "b"), minutes=0.0, res_a=1, res_s=1,
                             init_from=str(first), adam_from=str(first)))
    assert "residual blocks added" in capsys.readouterr().out
    parent, child = torch.load(first, weights_only=True), torch.load(ckpt, weights_only=True)

    def moments(ck):
        opt = ck["optimizer"]
        return {name: opt["state"].get(i) for group, names in zip(opt["param_groups"], saved_parameter_names(ck))
                for i, name in zip(group["params"], names)}

    old, new = moments(parent), moments(child)
    assert set(new) - set(old) == {n for n in new if n.startswith(("g_a_res.", "g_s_res."))} != set()
    for name, state in old.items():
        assert torch.equal(new[name]["exp_avg"], state["exp_avg"]), name
        assert torch.equal(new[name]["exp_avg_sq"], state["exp_avg_sq"]), name
    assert all(new[n] is None for n in set(new) - set(old))  # fresh: Adam starts them at its step
    # a run without a parameter the saved run trained cannot take its moments
    with pytest.raises(ValueError, match="trains g_a_res.5.body.0.weight, which this run does not"):
        train(TrainConfig(**cfg, run_dir=str(tmp_path / "c"), minutes=0.0, init_from=str(first),
                          adam_from=str(ckpt)))

def _exported_context_codes_a_photo(ckpt, folder, monkeypatch) -> None:
    """Export a context run's checkpoint into ``folder`` and code a photo with it."""
    export_checkpoint(ckpt, "context", folder=folder)
    monkeypatch.setenv("LCODEC_WEIGHTS_DIR", str(folder))
    pixels = synthetic_photo(128, 96, seed=3)
    out, header = Codec("cpu").decode_pixels(Codec("cpu").encode_pixels(pixels, 3, 6.0))
    assert header.model_name == "context" and psnr(out, pixels) > 24


def test_latent_headroom_starts_from_the_probe_point_and_only_lowers_the_error(tmp_path):
    model, _ = _probe_setup(tmp_path)
    image = synthetic_photo(160, 130, seed=3)  # a 128-pixel centre crop
    before = probe(model, [image[1:129, 16:144]], levels=(8,))[0]
    (record,) = headroom(model, [image], quality=8, steps=40, crop=200)
    # the starting point is the analysis' latent, rounded as the probe rounds it
    assert abs(record["bpp"][0] - before["bpp"]) < 1e-9
    assert abs(record["psnr"][0] - before["psnr"]) < 1e-9
    # the synthesis of the moved latent is closer to the image; the model is unchanged
    assert record["unrounded_psnr"][1] > record["unrounded_psnr"][0] + 0.05
    assert probe(model, [image[1:129, 16:144]], levels=(8,))[0] == before
    with pytest.raises(ValueError, match="no 64-pixel crop"):
        headroom(model, [synthetic_photo(70, 50)], quality=8, steps=1)

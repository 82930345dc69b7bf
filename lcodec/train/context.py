"""Training the checkerboard context networks on top of frozen hyperprior weights.

The ``context`` family (:mod:`lcodec.models.context`) keeps a shipped hyperprior's
transforms and adds networks that only change the parameters of the non-anchor latents. With
the transforms frozen, those networks affect the rate of the non-anchors and nothing else, so
training needs no synthesis transform and no pixel gradients: the analysis transform runs
once per training photo (without the per-level gain, a channel-wise factor applied per step),
and every step draws random crops of these latents at random quality levels and minimizes the
non-anchors' estimated bits (additive-noise proxy, as in the main loop).

Each logged line compares the non-anchor rate with the context to the same latents' rate
under the hyperprior alone: the saving this family can bring. The checkpoint has the main
loop's layout, so :func:`lcodec.train.export.export_checkpoint` ships it.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..models import build_model
from ..models.context import CONTEXT_PREFIXES, anchor_mask
from ..models.hyperprior import default_hyper_hidden
from ..models.entropy_models import SCALE_BOUND, gaussian_likelihood
from .data import list_images, load_rgb, split_holdout
from .levels import lambdas_of
from .loop import keep_freed_memory, resume
from .widen import hidden_widths, hyper_widths


@dataclass
class ContextTrainConfig:
    init_from: str                # hyperprior weights (.pt, or a manifest name) whose transforms are kept
    context_from: str | None = None  # context weights whose context networks start the run (warm start)
    data: str = "../shared/data/train"
    run_dir: str = "runs/context"
    minutes: float = 15.0
    crop: int = 512               # pixels (32 latents) per side of a training crop
    batch: int = 8
    lr: float = 1e-3
    decay_frac: float = 0.3       # final fraction of the budget over which the lr decays 20x
    context_channels: int = 96
    hidden: int = 192
    scale_floor: float | None = SCALE_BOUND  # see CheckerboardContext (None: as context v1)
    threads: int = 2
    seed: int = 0
    log_every: int = 50
    checkpoint_minutes: float = 3.0


def _latents(model: torch.nn.Module, paths: list[Path]) -> list[torch.Tensor]:
    """``g_a(x - 0.5)`` (no gain) of each photo, cropped to a multiple of 64 pixels."""
    out = []
    with torch.inference_mode():
        for p in paths:
            im = load_rgb(p)
            h, w = im.shape[0] // 64 * 64, im.shape[1] // 64 * 64
            if h == 0 or w == 0:
                continue
            x = torch.from_numpy(im[:h, :w].copy()).permute(2, 0, 1)[None].float() / 255
            out.append(model.g_a(x.contiguous(memory_format=torch.channels_last) - 0.5)[0].contiguous())
    return out


def nonanchor_bits(model: torch.nn.Module, lat: torch.Tensor, level: torch.Tensor,
                   noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimated bits of the non-anchor latents with the context and with the hyperprior alone.

    ``lat`` is a batch of ungained latents, ``level`` one 0-based quality level per item and
    ``noise`` uniform noise shaped like ``lat`` (the quantization proxy).
    """
    gain = model.log_gain[level].exp()[:, :, None, None].detach()
    y = lat * gain
    with torch.no_grad():
        raw = model.h_s(torch.round(model.h_a(y)))
        means, scales = model.split_params(raw)
        hyper = -gaussian_likelihood(y + noise - means, scales).log2()
    means2, scales2 = model.entropy_params(y, raw)
    ctx = -gaussian_likelihood(y + noise - means2, scales2).log2()
    na = ~anchor_mask(y.shape[2], y.shape[3])
    return ctx[:, :, na].sum(), hyper[:, :, na].sum()


def _sample(latents: list[torch.Tensor], weights: torch.Tensor, size: int, batch: int,
            gen: torch.Generator) -> torch.Tensor:
    """Random ``size x size`` latent crops (images chosen by area), with random flips."""
    out = []
    for k in torch.multinomial(weights, batch, replacement=True, generator=gen).tolist():
        lat = latents[k]
        h, w = lat.shape[1:]
        s = min(size, h, w) // 4 * 4
        top = int(torch.randint(0, h - s + 1, (1,), generator=gen)) // 2 * 2  # keep the parity
        left = int(torch.randint(0, w - s + 1, (1,), generator=gen)) // 2 * 2
        crop = lat[:, top:top + s, left:left + s]
        if int(torch.randint(0, 2, (1,), generator=gen)):
            crop = crop.flip(2)
        out.append(crop[:, :s, :s])
    s = min(c.shape[1] for c in out)
    return torch.stack([c[:, :s, :s] for c in out])


@torch.no_grad()
def validate(model: torch.nn.Module, latents: list[torch.Tensor]) -> dict[str, float]:
    """Non-anchor saving (%) over whole held-out photos at the lowest, middle and top level."""
    result = {}
    gen = torch.Generator().manual_seed(1)
    for level in (0, model.num_levels // 2, model.num_levels - 1):
        ctx_bits = hyper_bits = 0.0
        for lat in latents:
            lat = lat[None]
            noise = torch.rand(lat.shape, generator=gen) - 0.5
            c, h = nonanchor_bits(model, lat, torch.tensor([level]), noise)
            ctx_bits += float(c)
            hyper_bits += float(h)
        result[f"q{level + 1}_saving_pct"] = round(100 * (1 - ctx_bits / hyper_bits), 2)
    return result


def train_context(cfg: ContextTrainConfig) -> Path:
    """Run (or resume) context training for ``cfg.minutes``; return the checkpoint path."""
    from ..weights import load_state_dict, resolve_weights_file

    torch.set_num_threads(cfg.threads)
    keep_freed_memory()
    init = resolve_weights_file(cfg.init_from)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    base = load_state_dict(init)
    N, M = base["h_a.0.weight"].shape[:2]  # a Conv2d (out, in, k, k) from M channels to N
    Na, Ns = hidden_widths(base)
    lambdas = lambdas_of(base)
    config = {"family": "context", "N": N, "M": M, "lambdas": list(lambdas),
              "context_channels": cfg.context_channels, "hidden": cfg.hidden}
    if Na != N:
        config["Na"] = Na
    if Ns != N:
        config["Ns"] = Ns
    if hyper_widths(base) != default_hyper_hidden(M):
        config["hyper_hidden"] = list(hyper_widths(base))
    if cfg.scale_floor is not None:
        config["scale_floor"] = cfg.scale_floor
    model = build_model(**config)
    model.load_hyperprior(base, cfg.init_from)
    if cfg.context_from:
        source = load_state_dict(resolve_weights_file(cfg.context_from))
        warm = {k: v for k, v in source.items() if k.startswith(CONTEXT_PREFIXES)}
        if "context_prediction.weight" in warm and warm["context_prediction.weight"].shape[1] != M:
            from .transfer import match_latent_channels, transfer_context
            src = match_latent_channels(source, base)
            warm = transfer_context(warm, src)
            print(f"context networks carried over from M={source['g_s.0.weight'].shape[0]} to M={M}: "
                  f"{sum(j is not None for j in src)} channels matched, the others start at zero",
                  flush=True)
        own = model.state_dict()
        if not warm or any(k not in own or own[k].shape != v.shape for k, v in warm.items()):
            raise ValueError(f"{cfg.context_from} has no context networks of this architecture")
        model.load_state_dict(warm, strict=False)
    trainable = list(model.context_prediction.parameters()) + list(model.entropy_parameters.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trainable, lr=cfg.lr)
    state = {"step": 0, "cpu_seconds": 0.0, "wall_seconds": 0.0, "runs": [],
             "init_from": init.name, "context_from": cfg.context_from}
    state = resume(ckpt_path, model, opt) or state
    model.eval()  # no dropout or batch statistics; eval only freezes nothing else

    train_paths, held_paths = split_holdout(list_images(Path(cfg.data)))
    t_lat = time.time()
    latents = _latents(model, train_paths)
    held = _latents(model, held_paths)
    print(f"analysed {len(latents)} + {len(held)} photos in {time.time() - t_lat:.0f} s", flush=True)
    weights = torch.tensor([float(l.shape[1] * l.shape[2]) for l in latents])
    gen = torch.Generator().manual_seed(cfg.seed + state["step"])
    run_record = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "start_step": state["step"],
                  "config": asdict(cfg)}
    state["runs"].append(run_record)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(flag=True))
    log = (run_dir / "log.jsonl").open("a")

    def save() -> None:
        run_record.update(end_step=state["step"])
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "state_json": json.dumps(state), "config_json": json.dumps(config)}, tmp)
        os.replace(tmp, ckpt_path)

    size = cfg.crop // 16
    t0, cpu0 = time.time(), time.process_time()
    cpu_base, wall_base = state["cpu_seconds"], state["wall_seconds"]
    last_ckpt = t0
    budget = cfg.minutes * 60
    acc = {"ctx": 0.0, "hyper": 0.0}
    while not stop["flag"] and time.time() - t0 < budget:
        elapsed = time.time() - t0
        decay_start = budget * (1 - cfg.decay_frac)
        lr = cfg.lr * (0.05 ** max(0.0, (elapsed - decay_start) / max(1e-9, budget - decay_start)))
        for g in opt.param_groups:
            g["lr"] = lr
        lat = _sample(latents, weights, size, cfg.batch, gen)
        level = torch.randint(0, model.num_levels, (cfg.batch,), generator=gen)
        noise = torch.rand(lat.shape, generator=gen) - 0.5
        ctx_bits, hyper_bits = nonanchor_bits(model, lat, level, noise)
        pixels = lat.shape[0] * lat.shape[2] * lat.shape[3] * 256
        loss = ctx_bits / pixels
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if math.isfinite(loss.item()):
            opt.step()
        state["step"] += 1
        acc["ctx"] += ctx_bits.item()
        acc["hyper"] += float(hyper_bits)
        state["cpu_seconds"] = cpu_base + time.process_time() - cpu0
        state["wall_seconds"] = wall_base + time.time() - t0
        if state["step"] % cfg.log_every == 0:
            rec = {"step": state["step"], "lr": round(lr, 7),
                   "cpu_h": round(state["cpu_seconds"] / 3600, 4),
                   "saving_pct": round(100 * (1 - acc["ctx"] / max(acc["hyper"], 1e-9)), 2)}
            if state["step"] % (cfg.log_every * 10) == 0:
                rec["val"] = validate(model, held)
            acc = {"ctx": 0.0, "hyper": 0.0}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
            save()
            last_ckpt = time.time()
    state["final_val"] = validate(model, held)
    save()
    log.close()
    print(f"stopped at step {state['step']}; validation {state['final_val']}", flush=True)
    return ckpt_path

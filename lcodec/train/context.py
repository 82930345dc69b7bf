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

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..models import build_model
from ..models.context import CONTEXT_PREFIXES, anchor_mask
from ..models.hyperprior import default_hyper_hidden
from ..models.entropy_models import SCALE_BOUND, gaussian_likelihood
from .data import list_images, split_holdout, weights_fingerprint
from .levels import lambdas_of
from .latent_loop import LoopSettings, photo_latents, run_on_latents
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


def nonanchor_bits(model: torch.nn.Module, lat: torch.Tensor, level: torch.Tensor,
                   noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimated bits of the non-anchor latents with the context and with the hyperprior alone.

    ``lat`` is a batch of ungained latents, ``level`` one 0-based quality level per item and
    ``noise`` uniform noise shaped like ``lat`` (the quantization proxy).
    """
    gain = model.log_gain[level].exp()[:, :, None, None].detach()
    y = lat * gain
    with torch.no_grad():
        raw = model.h_s(torch.round(model.hyper_analysis(y, level=level)))
        means, scales = model.split_params(raw)
        hyper = -gaussian_likelihood(y + noise - means, scales).log2()
    means2, scales2 = model.entropy_params(y, raw)
    ctx = -gaussian_likelihood(y + noise - means2, scales2).log2()
    na = ~anchor_mask(y.shape[2], y.shape[3])
    return ctx[:, :, na].sum(), hyper[:, :, na].sum()


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
    from ..weights import load_weights_state

    torch.set_num_threads(cfg.threads)
    keep_freed_memory()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    base = load_weights_state(cfg.init_from)
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
        source = load_weights_state(cfg.context_from)
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
    fresh = {"step": 0, "cpu_seconds": 0.0, "wall_seconds": 0.0, "runs": [],
             "init_from": cfg.init_from, "context_from": cfg.context_from}
    # a new folder offsets its draws by the fingerprint of the weights it starts from
    state = (resume(ckpt_path, model, opt)
             or dict(fresh, data_offset=weights_fingerprint(model.state_dict())))
    model.eval()  # no dropout or batch statistics; eval only freezes nothing else

    train_paths, held_paths = split_holdout(list_images(Path(cfg.data)))
    t_lat = time.time()
    latents = photo_latents(model, train_paths)
    held = photo_latents(model, held_paths)
    print(f"analysed {len(latents)} + {len(held)} photos in {time.time() - t_lat:.0f} s", flush=True)

    def step(lat, level, noise):
        ctx_bits, hyper_bits = nonanchor_bits(model, lat, level, noise)
        loss = ctx_bits / (lat.shape[0] * lat.shape[2] * lat.shape[3] * 256)
        return loss, {"ctx": ctx_bits.item(), "hyper": float(hyper_bits)}

    def summarize(sums, _steps):
        return {"saving_pct": round(100 * (1 - sums["ctx"] / max(sums["hyper"], 1e-9)), 2)}

    settings = LoopSettings(minutes=cfg.minutes, lr=cfg.lr, crop=cfg.crop, batch=cfg.batch, seed=cfg.seed,
                            log_every=cfg.log_every, validate_every=cfg.log_every * 10,
                            checkpoint_minutes=cfg.checkpoint_minutes, decay_frac=cfg.decay_frac)
    return run_on_latents(model, opt, state, config, run_dir, settings, asdict(cfg), latents, step,
                          summarize, lambda: validate(model, held))

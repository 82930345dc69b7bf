"""Training the channel-group context networks on top of frozen ``context`` weights.

A ``grouped`` model (:mod:`lcodec.models.grouped_context`) keeps every network of the
``context`` model it starts from and adds the group pass networks, whose last layers start
at zero. With the rest frozen, those networks change the rate of the latents and nothing
else: the analysis transform runs once per training photo (without the per-level gain),
and every step draws random crops of these latents at random quality levels and minimizes
their estimated bits (additive-noise proxy, as in the main loop).

The channel order of a fresh run puts the channels that cost the most bits under the
starting model (summed over the quality levels, on the training photos) first, so that
the first groups, coded with the least context, are the ones the later groups learn most
from.

Each validation codes whole held-out photos at the lowest, middle and top level with the
real rounding and reports the saving in ``y`` bits against the starting model. The
checkpoint has the main loop's layout, so :func:`lcodec.train.export.export_checkpoint`
ships it.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..models import build_model
from ..models.entropy_models import gaussian_likelihood
from ..models.grouped_context import GROUP_PREFIXES
from .latent_loop import LoopSettings, photo_latents, run_on_latents
from .data import list_images, split_holdout, weights_fingerprint
from .loop import keep_freed_memory, resume
from .start import load_weights


DEFAULT_GROUPS = (16, 16, 32, 64, 64)
DEFAULT_FEATURES, DEFAULT_HIDDEN = 64, 128


@dataclass
class GroupedTrainConfig:
    init_from: str                # ``context`` or ``grouped`` weights: a manifest name or a training checkpoint
    data: str = "../shared/data/train"
    run_dir: str = "runs/grouped"
    minutes: float = 15.0
    crop: int = 512               # pixels (32 latents) per side of a training crop
    batch: int = 8
    lr: float = 1e-3
    warmup: int = 200
    decay_frac: float = 0.3       # final fraction of the budget over which the lr decays 20x
    groups: tuple[int, ...] | None = None      # None: DEFAULT_GROUPS, or a grouped start's own
    group_features: int | None = None          # None: 64, or a grouped start's own
    group_hidden: int | None = None            # None: 128, or a grouped start's own
    threads: int = 2
    seed: int = 0
    log_every: int = 50
    validate_every: int = 500
    checkpoint_minutes: float = 3.0


def _starting_point(spec: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Architecture config (with ``family``) and state dict of ``context`` or ``grouped`` weights."""
    config, state, _ = load_weights(spec)
    if config["family"] not in ("context", "grouped"):
        raise ValueError(f"{spec} is not a model of the 'context' or 'grouped' family")
    return config, state


def _grouped_start(cfg: GroupedTrainConfig, config: dict, state: dict[str, torch.Tensor]
                   ) -> tuple[dict, torch.nn.Module]:
    """The model of a fresh run from ``grouped`` weights: their groups, channel order and
    group networks, the networks widened losslessly where ``cfg`` asks for more features or
    hidden units (:func:`lcodec.train.widen.widen_hidden`)."""
    from .widen import widen_hidden

    if cfg.groups is not None and tuple(cfg.groups) != tuple(config["groups"]):
        raise ValueError(f"{cfg.init_from} has groups {list(config['groups'])}: a run from grouped "
                         f"weights keeps them (start from context weights to change them)")
    config = dict(config, group_features=cfg.group_features or config["group_features"],
                  group_hidden=cfg.group_hidden or config["group_hidden"])
    model = build_model(**config)
    widen_hidden(state, model)
    return config, model


def latent_bits(model: torch.nn.Module, lat: torch.Tensor, level: torch.Tensor,
                noise: torch.Tensor | None, params=None) -> torch.Tensor:
    """Bits of every latent of ``lat`` (ungained, one level per item) under ``model``'s
    entropy parameters (``params``: a function ``(y, hyper_raw) -> (means, scales)``,
    default ``model.entropy_params``): with ``noise`` the additive-noise proxy, without it
    the real rounding ``round(y - mean)``."""
    gain = model.log_gain[level].exp()[:, :, None, None].detach()
    y = lat * gain
    with torch.no_grad():
        raw = model.h_s(torch.round(model.hyper_analysis(y, level=level)))
    means, scales = (params or model.entropy_params)(y, raw)
    values = y + noise - means if noise is not None else torch.round(y - means)
    return -gaussian_likelihood(values, scales).log2()


def channel_order(model: torch.nn.Module, latents: list[torch.Tensor]) -> list[int]:
    """Latent channels by decreasing real bits under ``model`` (summed over its levels)."""
    bits = torch.zeros(model.M)
    with torch.no_grad():
        for lat in latents:
            for level in range(model.num_levels):
                bits += latent_bits(model, lat[None], torch.tensor([level]), None).sum(dim=(0, 2, 3))
    return torch.argsort(bits, descending=True).tolist()


def _checked_levels(model: torch.nn.Module) -> tuple[int, ...]:
    return (0, model.num_levels // 2, model.num_levels - 1)


@torch.no_grad()
def checkerboard_bits(model: torch.nn.Module, latents: list[torch.Tensor]) -> dict[int, float]:
    """Real ``y`` bits of whole photos under the starting ``context`` model (the checkerboard
    alone) at the levels :func:`validate` checks: fixed for a run, so computed once."""
    base = super(type(model), model).entropy_params
    return {level: sum(float(latent_bits(model, lat[None], torch.tensor([level]), None, params=base).sum())
                       for lat in latents)
            for level in _checked_levels(model)}


@torch.no_grad()
def validate(model: torch.nn.Module, latents: list[torch.Tensor], baseline: dict[int, float]) -> dict[str, float]:
    """Saving (%) in real ``y`` bits against the starting ``context`` model (``baseline``, from
    :func:`checkerboard_bits`), over whole held-out photos at the lowest, middle and top level."""
    result = {}
    for level in _checked_levels(model):
        new = sum(float(latent_bits(model, lat[None], torch.tensor([level]), None).sum()) for lat in latents)
        result[f"q{level + 1}_saving_pct"] = round(100 * (1 - new / baseline[level]), 3)
    return result


def train_grouped(cfg: GroupedTrainConfig) -> Path:
    """Run (or resume) group-context training for ``cfg.minutes``; return the checkpoint path."""
    torch.set_num_threads(cfg.threads)
    keep_freed_memory()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    train_paths, held_paths = split_holdout(list_images(Path(cfg.data)))
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.exists() else None
    if ck is not None:
        config = json.loads(ck["config_json"])
        model = build_model(**config)
        latents = held = None
    else:
        base_config, base_state = _starting_point(cfg.init_from)
        if base_config["family"] == "grouped":
            config, model = _grouped_start(cfg, base_config, base_state)
            latents = held = None
        else:
            base = build_model(**base_config)
            base.load_state_dict(base_state)
            base.eval()
            t_lat = time.time()
            latents, held = photo_latents(base, train_paths), photo_latents(base, held_paths)
            order = channel_order(base, latents)
            print(f"analysed {len(latents)} + {len(held)} photos and ordered the channels "
                  f"in {time.time() - t_lat:.0f} s", flush=True)
            config = dict(base_config, family="grouped", groups=list(cfg.groups or DEFAULT_GROUPS),
                          channel_order=order, group_features=cfg.group_features or DEFAULT_FEATURES,
                          group_hidden=cfg.group_hidden or DEFAULT_HIDDEN)
            model = build_model(**config)
            keys = model.load_state_dict(base_state, strict=False)
            if keys.unexpected_keys or any(not k.startswith(GROUP_PREFIXES) for k in keys.missing_keys):
                raise ValueError(f"{cfg.init_from} does not fit a grouped model of this architecture")
    trainable = list(model.anchor_nets.parameters()) + list(model.nonanchor_nets.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trainable, lr=cfg.lr)
    fresh = {"step": 0, "cpu_seconds": 0.0, "wall_seconds": 0.0, "runs": [], "init_from": cfg.init_from}
    # a new folder offsets its draws by the fingerprint of the weights it starts from
    state = (resume(ckpt_path, model, opt, ck)
             or dict(fresh, data_offset=weights_fingerprint(model.state_dict())))
    model.eval()
    if latents is None:
        latents, held = photo_latents(model, train_paths), photo_latents(model, held_paths)

    baseline = checkerboard_bits(model, held)  # the frozen starting model's, once per run

    def step(lat, level, noise):
        loss = latent_bits(model, lat, level, noise).sum() / (lat.shape[0] * lat.shape[2] * lat.shape[3] * 256)
        return loss, {"bpp": loss.item()}

    settings = LoopSettings(minutes=cfg.minutes, lr=cfg.lr, crop=cfg.crop, batch=cfg.batch, seed=cfg.seed,
                            log_every=cfg.log_every, validate_every=cfg.validate_every,
                            checkpoint_minutes=cfg.checkpoint_minutes, decay_frac=cfg.decay_frac,
                            warmup=cfg.warmup)
    return run_on_latents(model, opt, state, config, run_dir, settings, asdict(cfg), latents, step,
                          lambda sums, n: {"bpp": round(sums["bpp"] / n, 5)},
                          lambda: validate(model, held, baseline))

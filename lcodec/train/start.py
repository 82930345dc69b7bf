"""How a training run starts: the architecture it trains and the weights it starts with.

A run resumes its folder's checkpoint, or starts from trained weights (``--init-from``: shipped
weights by manifest name, a weights file or another run's checkpoint), or from scratch. Its
architecture (:func:`run_architecture`) is the resumed run's, else that of the weights it starts
from, changed where the flags ask for more: wider transforms (``--Na`` / ``--Ns``, a wider or
narrower latent ``--M``), residual blocks, per-level scales and offsets, other quality levels,
wider context networks. :func:`initialize_from` then loads the starting weights into the new
model so that it codes as they did: new units and blocks start as identities (:mod:`.widen`,
:func:`load_adding_blocks`) and moved levels are interpolated (:mod:`.levels`). The training
loop (:mod:`.loop`) takes the model from here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..models import DEFAULT_LAMBDAS, build_model
from ..models.entropy_models import SCALE_BOUND
from ..models.hyperprior import default_hyper_hidden
from .data import center_crops, list_images, load_rgb, split_holdout
from .levels import LEVEL_BIAS_KEYS, LEVEL_SCALE_KEYS, lambdas_of
from .widen import context_widths, hidden_widths, hyper_widths, latent_width

if TYPE_CHECKING:
    from .loop import TrainConfig

DEFAULT_M = 96  # latent channels of a model trained from scratch without --M


def load_weights(spec: str) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """``(config with family, state dict, training state)`` of a training checkpoint (a path
    that exists) or of shipped weights (a manifest name, its newest version, or ``NAME:vN``;
    no training state)."""
    from ..weights import find_spec, network_state, read_verified

    path = Path(spec)
    if path.exists():
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if "config_json" not in ck:
            raise ValueError(f"{spec} is not a training checkpoint (give a manifest name instead)")
        return json.loads(ck["config_json"]), ck["model"], json.loads(ck.get("state_json", "{}"))
    entry = find_spec(spec)
    return dict(entry.config, family=entry.family), network_state(read_verified(entry)), {}


def read_initial_weights(cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state dict, config)`` of the weights ``cfg.init_from`` names: a weights file or a
    training checkpoint (its weight average when it keeps one; the config is empty for a bare
    weights file), or shipped weights by manifest name. A hyperprior run with a smaller ``--M``
    narrows them to the latent channels they use most; ``--reopen-below`` re-initializes shut
    latent channels (:mod:`.reopen`)."""
    init_config: dict = {}
    if Path(cfg.init_from).exists():  # a weights file or a training checkpoint
        from ..weights import load_state_dict
        init = load_state_dict(Path(cfg.init_from))
        if isinstance(init.get("model"), dict):  # a training checkpoint (e.g. a run's best.pt):
            init_config = json.loads(init.get("config_json", "{}"))
            init = init.get("average") or init["model"]  # its weight average when it keeps one
    else:  # shipped weights: the manifest gives the config
        init_config, init, _ = load_weights(cfg.init_from)
    if cfg.family == "hyperprior" and cfg.M and cfg.M < latent_width(init):
        init = _narrowed(init, cfg)
    if cfg.reopen_below is not None:
        from .reopen import reopen_channels
        init, reopened = reopen_channels(init, cfg.reopen_below, seed=cfg.seed)
        print(f"reopened {len(reopened)} latent channels whose top-level log-gain is below "
              f"{cfg.reopen_below:g}" + (f": {reopened}" if reopened else ""), flush=True)
    return init, init_config


def _initial_latent(init: dict[str, torch.Tensor] | None) -> int:
    """The latent width of the starting weights (0: none, or no analysis in them)."""
    return latent_width(init) if init is not None and "g_a.6.weight" in init else 0


def run_architecture(cfg: TrainConfig, resumed: dict, init: dict[str, torch.Tensor] | None,
                     init_config: dict) -> dict:
    """The constructor arguments (config) of the run's model (``cfg.family``): from the
    resumed run's config ``resumed`` (empty for a new folder), else from the starting weights
    ``init`` and their config ``init_config``, with the flags of ``cfg`` applied. Raises
    ``ValueError`` where the flags ask a resumed run to change its shape, or a new run to drop
    a part its starting weights have."""
    m_init = _initial_latent(init)
    latent = cfg.M or resumed.get("M") or m_init or DEFAULT_M
    arch = {"N": cfg.N, "M": latent, "lambdas": list(_levels(cfg, resumed, init))}
    # The analysis / synthesis widths: --Na / --Ns, else those of the checkpoint resumed or the
    # weights started from.
    init_widths = hidden_widths(init) if init is not None else None
    for i, (key, width) in enumerate((("Na", cfg.Na), ("Ns", cfg.Ns))):
        if not width and resumed:
            width = resumed.get(key, 0)
        elif not width and init_widths is not None:
            width = init_widths[i]
        if width and width != cfg.N:
            arch[key] = width
    # The hyper-synthesis widths: the resumed checkpoint's; else the initial weights' unless
    # they are the default of their M and the latent is widened (then the new M's default).
    hyper = resumed.get("hyper_hidden")
    if init is not None:
        widths = hyper_widths(init)
        if latent == m_init or widths != default_hyper_hidden(m_init):
            hyper = list(widths)
    if hyper and tuple(hyper) != default_hyper_hidden(latent):
        arch["hyper_hidden"] = list(hyper)
    arch.update(_res_blocks(cfg, resumed, init))
    arch.update(_level_scales(cfg, resumed, init))
    if cfg.family in ("context", "grouped"):
        arch.update(_context_arch(resumed, init))
        for key, width in (("context_channels", cfg.context_channels), ("hidden", cfg.context_hidden)):
            if not width:
                continue
            if resumed and width != arch.get(key, width):
                raise ValueError(f"a resumed run keeps its context networks' widths ({key} "
                                 f"{arch[key]}): widen them in a new run started with --init-from")
            arch[key] = width
    if cfg.family == "grouped":
        arch.update(_grouped_arch(resumed, init_config, cfg.init_from))
    return arch


def initialize_from(model: torch.nn.Module, init: dict[str, torch.Tensor],
                    cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Load the starting weights ``init`` into the new run's ``model`` (built from
    :func:`run_architecture`) so that it codes as they did, saying how on stdout: their levels
    moved to the model's, their latent or hidden layers widened, context networks added to a
    hyperprior as none, or residual blocks and per-level scales and offsets added as
    identities. Returns the starting weights as loaded (with the model's levels)."""
    levels = lambdas_of(model.state_dict())
    if "lambdas" in init and init["lambdas"].tolist() != list(model.lambdas.tolist()):
        from .levels import retarget_levels
        init = retarget_levels(init, levels)
        print(f"quality levels moved to lambdas {', '.join(f'{v:g}' for v in levels)}", flush=True)
    m_init = _initial_latent(init)
    widths_init, widths_model = _widths(init), _widths(model.state_dict())
    if cfg.family == "hyperprior" and m_init and m_init != model.M:
        from .widen import widen_latents
        widen_latents(init, model)
        print(f"initialized from {cfg.init_from}, latent widened from M={m_init} to "
              f"M={model.M}", flush=True)
    elif widths_init != widths_model and (cfg.family == "hyperprior" or context_widths(init)):
        from .widen import widen_hidden
        widen_hidden(init, model)
        names = ("analysis", "synthesis", "context features", "context merging network")
        for name, was, now in zip(names, widths_init, widths_model):
            if was != now:
                print(f"initialized from {cfg.init_from}, {name} widened from {was} to "
                      f"{now} channels", flush=True)
    elif cfg.family == "context" and "context_prediction.weight" not in init:
        model.load_hyperprior(init, cfg.init_from)
        print(f"initialized from {cfg.init_from}; the context networks start as none "
              "(their last layer at zero)", flush=True)
    else:
        added = load_adding_blocks(model, init)
        print(f"initialized from {cfg.init_from}"
              + (f"; {added} residual blocks added as identities" if added else "")
              + "".join(f"; {name} added at {start}"
                        for name, start, key in zip(
                            ("analysis level scales", "synthesis level scales",
                             "hyper-analysis level scales", "analysis level offsets"),
                            (1, 1, 1, 0), LEVEL_SCALE_KEYS + LEVEL_BIAS_KEYS)
                        if key in model.state_dict() and key not in init), flush=True)
    return init


def _narrowed(init: dict[str, torch.Tensor], cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """``init`` (a hyperprior state dict) narrowed to the ``cfg.M`` latent channels it uses
    most on the training photos' centres (:mod:`.narrow`)."""
    from .narrow import channel_activity, narrow_latents

    na, ns = hidden_widths(init)
    model = build_model("hyperprior", N=cfg.N, M=latent_width(init), Na=na, Ns=ns,
                        hyper_hidden=hyper_widths(init), lambdas=[float(v) for v in init["lambdas"]])
    model.load_state_dict(init)
    model.eval()
    train_paths, _ = split_holdout(list_images(Path(cfg.data)))
    activity = channel_activity(model, center_crops([load_rgb(p) for p in train_paths[:32]], 256))
    keep = sorted(activity.argsort(descending=True)[:cfg.M].tolist())
    dropped = sorted(set(range(model.M)) - set(keep))
    print(f"latent narrowed from M={model.M} to M={cfg.M}: the dropped channels were nonzero at "
          f"-q {model.num_levels} at most {float(activity[dropped].max()):.2%} of the time", flush=True)
    return narrow_latents(init, keep)


def _levels(cfg: TrainConfig, resumed: dict, init: dict | None) -> tuple[float, ...]:
    """The run's quality levels: ``cfg.lambdas``, else the resumed run's, else the initial
    weights', else :data:`DEFAULT_LAMBDAS`. A resumed run keeps its levels (``ValueError``
    if ``cfg.lambdas`` asks for others: move them in a new run started with ``init_from``)."""
    if resumed.get("lambdas"):
        if cfg.lambdas and not _same_levels(cfg.lambdas, resumed["lambdas"]):
            raise ValueError("a resumed run keeps its quality levels: to move them, start a new run "
                             "from its best.pt with --init-from and --lambdas")
        return tuple(resumed["lambdas"])
    if cfg.lambdas:
        return tuple(cfg.lambdas)
    if init is not None and "lambdas" in init:
        return lambdas_of(init)
    return DEFAULT_LAMBDAS


def _context_arch(resumed: dict, init: dict | None) -> dict:
    """The context networks' widths of a ``context`` run: the resumed run's; else those of
    the initial weights when they have context networks; else the family's defaults (new
    networks on a hyperprior). The merging network's scale floor is the likelihood's bound,
    as in every context model since v2."""
    if resumed:
        return {k: resumed[k] for k in ("context_channels", "hidden", "scale_floor") if k in resumed}
    arch = {"scale_floor": SCALE_BOUND}
    if init is not None and "context_prediction.weight" in init:
        arch["context_channels"] = init["context_prediction.weight"].shape[0]
        arch["hidden"] = init["entropy_parameters.0.weight"].shape[0]
    return arch


GROUP_KEYS = ("groups", "channel_order", "group_features", "group_hidden")


def _grouped_arch(resumed: dict, init_config: dict, init_from: str | None) -> dict:
    """The channel groups of a ``grouped`` run: the resumed run's, else those of the grouped
    model it starts from (a training checkpoint of ``lcodec train-grouped`` or of this loop, or
    shipped grouped weights named in the manifest)."""
    source = resumed if resumed else init_config
    if source.get("family") != "grouped":
        raise ValueError(f"a grouped run starts from a grouped model's training checkpoint "
                         f"(lcodec train-grouped makes one); {init_from} is not one")
    return {k: source[k] for k in GROUP_KEYS if k in source}


def _widths(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The widths :func:`.widen.widen_hidden` can widen: ``(Na, Ns)``, then the context
    networks' ``(context_channels, hidden)`` for a context model."""
    return hidden_widths(state) + (context_widths(state) or ())


def _res_blocks(cfg: TrainConfig, resumed: dict, init: dict | None) -> dict:
    """The residual blocks of the run (``res_a`` / ``res_s`` / ``res_a_deep`` / ``res_s_deep``
    config keys, when not 0): those of the resumed run, else ``--res-a`` / ``--res-s`` /
    ``--res-a-deep`` / ``--res-s-deep`` or those of the initial weights. A fresh run may add
    blocks to its initial weights (:func:`load_adding_blocks`), not remove them."""
    out = {}
    for key, asked, prefix in (("res_a", cfg.res_a, "g_a_res"), ("res_s", cfg.res_s, "g_s_res"),
                               ("res_a_deep", cfg.res_a_deep, "g_a_deep"),
                               ("res_s_deep", cfg.res_s_deep, "g_s_deep")):
        if resumed:
            have = int(resumed.get(key, 0))
            if asked and asked != have:
                raise ValueError(f"a resumed run keeps its residual blocks ({key} {have}): add "
                                 "blocks in a new run started with --init-from")
        else:
            start = residual_blocks(init, prefix) if init else 0
            if asked and asked < start:
                raise ValueError(f"the initial weights have {start} residual blocks ({key}); "
                                 f"a run can add blocks, not remove them")
            have = asked or start
        if have:
            out[key] = have
    return out


def _level_scales(cfg: TrainConfig, resumed: dict, init: dict | None) -> dict:
    """The per-level channel scales and offsets of the run's transforms (``level_scales_a`` /
    ``_s`` / ``_h`` and ``level_bias_a`` config keys, when true): the resumed run's, else those
    asked for or of the initial weights (added as ones, or zeros, when they lack them,
    :func:`load_adding_blocks`)."""
    out = {}
    names = [f"level_scales_{side}" for side in "ash"] + list(LEVEL_BIAS_KEYS)
    for name, key in zip(names, LEVEL_SCALE_KEYS + LEVEL_BIAS_KEYS):
        asked = getattr(cfg, name)
        if resumed:
            have = bool(resumed.get(name))
            if asked and not have:
                raise ValueError(f"a resumed run keeps its transforms: add level scales or offsets "
                                 f"({name}) in a new run started with --init-from")
        else:
            have = asked or (init is not None and key in init)
        if have:
            out[name] = True
    if out.get("level_bias_a") and not out.get("level_scales_a"):
        raise ValueError("--level-bias-a needs the analysis' level scales (--level-scales-a)")
    return out


BLOCK_PREFIXES = ("g_a_res.", "g_s_res.", "g_a_deep.", "g_s_deep.")  # parameters of residual blocks


def residual_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many residual blocks a state dict has under ``prefix`` (``g_a_res`` / ``g_s_res`` /
    ``g_a_deep`` / ``g_s_deep``)."""
    return len({k.split(".")[1] for k in state if k.startswith(prefix + ".")})


def load_adding_blocks(model: torch.nn.Module, init: dict[str, torch.Tensor]) -> int:
    """Load ``init`` into ``model``, which may have residual blocks or per-level scales that
    ``init`` lacks: those keep their initialization, the identity. Returns how many blocks
    were added; any other missing or unexpected tensor is an error, as in
    ``load_state_dict``."""
    missing = [k for k in model.state_dict() if k not in init]
    per_level = LEVEL_SCALE_KEYS + LEVEL_BIAS_KEYS
    if any(not k.startswith(BLOCK_PREFIXES) and k not in per_level for k in missing):
        model.load_state_dict(init)  # raises, naming what does not fit
    result = model.load_state_dict(init, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"the initial weights have tensors the model has not: {result.unexpected_keys[:4]}")
    return len({".".join(k.split(".")[:2]) for k in result.missing_keys if k not in per_level})


def _same_levels(a, b) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-6 * max(abs(x), abs(y)) for x, y in zip(a, b))

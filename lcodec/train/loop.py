"""The resumable training loop of the variable-rate models.

Each step draws a batch of random crops and gives every crop a random quality level; the loss
is ``mean(lambda_level * 255^2 * MSE + bpp)``. Tensors are channels-last. Training runs on the
CPU or, with ``--device cuda`` (or ``auto`` where torch sees a GPU), on a CUDA GPU; crops are
sampled on the CPU either way. bf16 autocast is used on CUDA GPUs that support it, and on CPUs
only where they have native bf16 arithmetic (AVX512_BF16 or AMX): measured on an AVX-512 CPU
without it, bf16 convolutions ran 4x *slower* than fp32. The probability models stay float32.

State (model, optimizer, step, CPU seconds, RNG) is checkpointed to ``RUN_DIR/checkpoint.pt``
every few minutes and on exit, and a run with the same ``RUN_DIR`` resumes from it. A fresh run
can start from shipped weights (``--init-from``), so that training sessions add up; :mod:`.start`
decides the run's architecture and loads the weights it starts from.
"""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..models import build_model
from .data import CropSampler, center_crops, data_seed, load_rgb, training_photos, weights_fingerprint
from .levels import LEVEL_KEYS
from .start import initialize_from, read_initial_weights, run_architecture



@dataclass
class TrainConfig:
    data: str = "../shared/data/train"
    extra_data: tuple[str, ...] = ()  # folders of photos added to the training crops only
    run_dir: str = "runs/hyperprior"
    family: str = "hyperprior"
    N: int = 64
    M: int = 0                    # latent channels (0: the resumed or initial weights', else 96)
    Na: int = 0                   # analysis width (0: the resumed or initial weights', else N)
    Ns: int = 0                   # synthesis width (0: the resumed or initial weights', else N)
    res_a: int = 0                # residual blocks in the analysis (0: the resumed or initial weights')
    res_s: int = 0                # residual blocks in the synthesis (likewise)
    res_a_deep: int = 0           # further analysis blocks at 1/8 resolution (likewise)
    res_s_deep: int = 0           # further synthesis blocks at 1/8 resolution (likewise)
    level_scales_a: bool = False  # per-level channel scales in the analysis (added to weights without)
    level_scales_s: bool = False  # and in the synthesis
    level_scales_h: bool = False  # and in the hyper-analysis
    level_bias_a: bool = False    # per-level channel offsets after the analysis' scales
    lambdas: tuple[float, ...] | None = None  # levels (None: the resumed run's, else the initial weights')
    crop: int = 128
    batch: int = 16
    lr: float = 5e-4
    gain_lr_mult: float = 1.0     # the quality levels' gain vectors learn at lr * this
    warmup: int = 300
    minutes: float = 60.0         # wall-clock budget of this invocation
    max_steps: int = 0            # also stop when the run reaches this step (0: no limit)
    decay_frac: float = 0.15      # final fraction of the budget: lr decays to lr * decay_to
    decay_to: float = 0.1
    ste_frac: float = 0.35        # final fraction of the budget: the decoder sees rounded latents
    threads: str = "auto"         # "1", "2", ... or "auto" (measure and pick the faster)
    checkpoint_minutes: float = 5.0
    ema: float = 0.0              # decay of an exponential moving average of the weights (0: off)
    log_every: int = 100
    validate_every: int = 1000
    init_from: str | None = None  # shipped weights to start from: a .pt file or a manifest name
    adam_from: str | None = None  # a fresh run: carry Adam's moments from this training checkpoint
    context_channels: int = 0     # context family: context features (0: those of the run or weights)
    context_hidden: int = 0       # context family: merging network width (0: likewise)
    seed: int = 0
    bf16: str = "auto"           # "auto" (a GPU with bf16, or a CPU with native bf16), "on", "off"
    level_weighting: str = "none"  # "none", "normalized" or "sqrt" (see level_weights)
    compile: str = "auto"        # torch.compile the training forward: "auto" (fall back), "on", "off"
    device: str = "auto"         # "auto" (CUDA when torch sees a GPU), "cpu", "cuda" or "cuda:N"
    train_only: str = "all"      # "all", or "encoder": only is_encoder_parameter's train
    reopen_below: float | None = None  # a fresh run: start afresh the latent channels whose
                                       # top-level log-gain is below this (lcodec.train.reopen)
    extra: dict = field(default_factory=dict)


class ThreadTuner:
    """Picks the torch thread count with the best measured step time.

    Another busy process on one of two cores makes a 2-thread run several times slower than a
    1-thread one, so the choice is re-measured periodically.
    """

    def __init__(self, spec: str, probe_every: int = 100, probe_len: int = 8) -> None:
        cores = os.cpu_count() or 1
        self.fixed = None if spec == "auto" else max(1, int(spec))
        self.options = [1, cores] if cores > 1 else [1]
        self.current = self.fixed or self.options[-1]
        self.probe_every, self.probe_len = probe_every, probe_len
        self.times: dict[int, list[float]] = {}
        self.step_in_phase = 0
        self.probing: int | None = None
        torch.set_num_threads(self.current)

    def record(self, seconds: float) -> None:
        if self.fixed is not None or len(self.options) == 1:
            return
        active = self.probing or self.current
        self.times.setdefault(active, []).append(seconds)
        self.times[active] = self.times[active][-self.probe_len:]
        self.step_in_phase += 1
        if self.probing is None and self.step_in_phase >= self.probe_every:
            self.probing = next(t for t in self.options if t != self.current)
            self.times[self.probing] = []
            self.step_in_phase = 0
            torch.set_num_threads(self.probing)
        elif self.probing is not None and self.step_in_phase >= self.probe_len:
            med = {t: sorted(v)[len(v) // 2] for t, v in self.times.items() if v}
            if med.get(self.probing, math.inf) < 0.9 * med.get(self.current, math.inf):
                self.current = self.probing
            self.probing, self.step_in_phase = None, 0
            torch.set_num_threads(self.current)

    @property
    def active(self) -> int:
        return self.probing or self.current


class DivergenceGuard:
    """Rolls the model back when training diverges, and halves the learning rate.

    GDN models at a high learning rate can leave the stable regime within a few hundred steps
    and never come back (measured here twice at lr 1e-3: PSNR fell from 22 dB to below 0 dB).
    Every logging window, a copy of the model and optimizer is kept when the window's mean
    loss is within 1.5x of the best window so far; a window above 3x the best restores that
    copy, halves ``state["lr_scale"]`` and counts a rollback. A finite window shorter than
    ``min_steps`` (the first one after a resume ends at the next multiple of the logging
    interval, possibly one step later) is not judged: one step's loss can be far below the
    mean, and judging later windows against it rolled back a healthy resumed run.
    """

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, min_steps: int = 1) -> None:
        self._copy = copy.deepcopy
        self.model, self.opt = model, opt
        self.min_steps = min_steps
        self.best = math.inf
        self.saved = None

    def check(self, window_loss: float, state: dict, steps: int) -> bool:
        """Judge a logging window of ``steps`` steps with mean loss ``window_loss``; return
        whether the model was rolled back."""
        finite = math.isfinite(window_loss)
        if finite and steps < self.min_steps:
            return False
        if not finite or (self.saved and window_loss > 3 * self.best):
            if self.saved is None:
                return False
            model_state, opt_state, step = self.saved
            self.model.load_state_dict(model_state)
            self.opt.load_state_dict(opt_state)
            state["step"] = step
            state["lr_scale"] = state.get("lr_scale", 1.0) * 0.5
            state["rollbacks"] = state.get("rollbacks", 0) + 1
            return True
        self.best = min(self.best, window_loss)
        if window_loss <= 1.5 * self.best:
            self.saved = (self._copy(self.model.state_dict()), self._copy(self.opt.state_dict()), state["step"])
        return False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory instead of returning it to the system.

    Every step frees and re-allocates the same activations (up to 16 MiB each). By default
    glibc serves such blocks with ``mmap`` and unmaps them on free, so each step page-faults
    its memory in again: measured here, 15.6 s of system time in 72 s of 2-thread training
    (about 70,000 page faults a second). With the thresholds below the blocks stay in the
    heap: 0.7 s of system time and 15% more steps per minute (289 vs 254 steps in 72 s).
    Same as ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824
    MALLOC_TOP_PAD_=268435456``. Returns False where it does not apply (not glibc).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
                    and libc.mallopt(M_TOP_PAD, 256 << 20))
    except (OSError, AttributeError):
        return False


class CompiledForward:
    """The model's training forward through ``torch.compile``, falling back to eager mode.

    Measured here (1 thread, batch 16, 128x128 crops, N=64/M=96): 0.49 s per step compiled vs
    0.71 s eager, after about a minute of compilation (once per run, and once more when the
    decoder switches from noisy to rounded latents). Inductor needs a C++ compiler; where
    compilation fails (``mode="auto"``), the step runs eagerly with a one-line notice.
    """

    def __init__(self, model: torch.nn.Module, mode: str) -> None:
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"compile must be auto, on or off, got {mode!r}")
        self.model, self.mode = model, mode
        self.compiled = torch.compile(model) if mode != "off" else None

    @property
    def active(self) -> bool:
        return self.compiled is not None

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.model(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:  # inductor/compiler failures surface at the first call
            if self.mode == "on":
                raise
            print(f"torch.compile unavailable ({type(exc).__name__}); training in eager mode",
                  flush=True)
            self.compiled = None
            return self.model(*args, **kwargs)


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def _lr_at(cfg: TrainConfig, step: int, elapsed: float) -> float:
    lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
    budget = cfg.minutes * 60
    start_decay = budget * (1 - cfg.decay_frac)
    if elapsed > start_decay and cfg.decay_frac > 0:
        t = min(1.0, (elapsed - start_decay) / (budget - start_decay))
        lr *= cfg.decay_to ** t
    return lr


def level_weights(level: torch.Tensor, per_item: torch.Tensor, state: dict, mode: str) -> torch.Tensor:
    """Per-item loss weights of the quality levels.

    ``none``: 1. ``normalized``: divide each item's loss by its level's running mean loss
    (times the mean over levels), so that every level's relative improvement counts the same.
    Without it, the high-lambda levels' distortion terms (100x larger at the top level than at
    the bottom one) dominate the shared transforms' gradients. ``sqrt``: the square root of
    the ``normalized`` weight, halfway between the two (in log scale).
    """
    if mode == "none":
        return torch.ones_like(per_item)
    if mode not in ("normalized", "sqrt"):
        raise ValueError(f"unknown level weighting {mode!r}")
    ema = state.setdefault("level_loss_ema", [0.0] * 64)
    for k in level.unique().tolist():
        v = float(per_item[level == k].mean())
        ema[k] = v if ema[k] == 0 else 0.99 * ema[k] + 0.01 * v
    seen = [e for e in ema if e > 0]
    mean = sum(seen) / len(seen)
    power = 1.0 if mode == "normalized" else 0.5
    return torch.tensor([(mean / ema[k]) ** power for k in level.tolist()], dtype=per_item.dtype,
                        device=per_item.device)


def rd_terms(out: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image bits per pixel and MSE (on [0, 1] pixels; unclamped, so gradients flow)."""
    pixels = x.shape[2] * x.shape[3]
    bits = -(out["y_likelihoods"].log2().sum((1, 2, 3)) + out["z_likelihoods"].log2().sum((1, 2, 3)))
    mse = (out["x_hat"] - x).pow(2).mean((1, 2, 3))
    return bits / pixels, mse


def jpeg_points(crops: list[torch.Tensor],
                qualities: tuple[int, ...] = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
                ) -> list[tuple[float, float]]:
    """``(bpp, PSNR)`` of baseline JPEG (4:2:0, Pillow) on the same crops: the reference of
    the held-out BD-rate. bpp counts the whole JPEG file."""
    import io

    import numpy as np
    from PIL import Image

    points = []
    for quality in qualities:
        bpps, psnrs = [], []
        for c in crops:
            im = c.numpy()
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="JPEG", quality=quality, subsampling=2)
            back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float64)
            mse = float(np.mean((back - im) ** 2))
            bpps.append(8 * len(buf.getvalue()) / (im.shape[0] * im.shape[1]))
            psnrs.append(10 * math.log10(255 ** 2 / max(mse, 1e-10)))
        points.append((sum(bpps) / len(bpps), sum(psnrs) / len(psnrs)))
    return points


def validate(model: torch.nn.Module, crops: list[torch.Tensor],
             jpeg: list[tuple[float, float]] | None = None,
             reference: list[list[float]] | None = None) -> dict:
    """Held-out validation: estimated bpp / PSNR at the lowest, middle and highest level, at
    every level (``points``), and BD-rates over all levels in percent (lower is better):
    against JPEG (``bd_jpeg``), given ``jpeg`` (:func:`jpeg_points` of the same crops), and
    against ``reference`` (``bd_ref``), another ``points`` list of the same model's levels."""
    from ..eval.bdrate import bd_rate
    from .kodak_probe import probe

    was_training = model.training
    points = [(p["bpp"], p["psnr"]) for p in probe(model, [c.numpy() for c in crops])]
    model.train(was_training)
    result: dict = {}
    for level in (0, model.num_levels // 2, model.num_levels - 1):
        result[f"q{level + 1}_bpp"] = round(points[level][0], 4)
        result[f"q{level + 1}_psnr"] = round(points[level][1], 3)
    for key, anchor in (("bd_jpeg", jpeg), ("bd_ref", reference)):
        if anchor:
            bd = bd_rate([p[0] for p in anchor], [p[1] for p in anchor],
                         [p[0] for p in points], [p[1] for p in points])
            if math.isfinite(bd):
                result[key] = round(bd, 2)
    result["points"] = [[round(b, 5), round(q, 4)] for b, q in points]
    return result


def selection_score(val: dict, state: dict) -> tuple[str, float | None]:
    """Which held-out score picks ``best.pt``, and its value (lower is better).

    A run compares its validations with its own first one (``bd_ref``): a BD-rate between
    two curves of the same levels covers the same quality range. Against JPEG (``bd_jpeg``)
    the range follows the curve's ends, so a model that moves its levels, or whose top
    level rises, can get better at every level and still score worse (run 28: -3.9% against
    its step 2500, and 0.2 points worse against JPEG). Runs started before the reference
    existed keep ranking by ``bd_jpeg``.
    """
    if "reference" in state:
        return "best_bd_ref", val.get("bd_ref")
    return "best_bd_jpeg", val.get("bd_jpeg")


class WeightAverage:
    """An exponential moving average of a model's weights (Polyak averaging):
    ``avg = decay * avg + (1 - decay) * current`` after every optimizer step.

    The average of the last ~``1 / (1 - decay)`` steps sits nearer the bottom of the loss
    valley than any single iterate when the step size keeps the iterates bouncing around it;
    validation, ``best.pt`` and export then use the average.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the averaging decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for avg, cur in zip(self.model.state_dict().values(), model.state_dict().values()):
            if avg.is_floating_point():
                avg.lerp_(cur.detach(), 1.0 - self.decay)
            else:
                avg.copy_(cur)


# The parameters only the encoder uses: the analysis and the hyper-analysis (their level scales
# and offsets included) and the gains applied before quantization. Everything else (synthesis and its
# level scales, hyper-synthesis, densities, context and group networks, inverse gains) is what
# a decoder needs.
ENCODER_PREFIXES = ("g_a.", "g_a_res.", "g_a_deep.", "h_a.")
ENCODER_KEYS = ("log_gain", "log_level_scale_a", "log_level_scale_h", "level_bias_a")


def is_encoder_parameter(name: str) -> bool:
    return name.startswith(ENCODER_PREFIXES) or name in ENCODER_KEYS


def freeze_decoder(model: torch.nn.Module) -> int:
    """Leave only the encoder's parameters trainable; return how many numbers stay trainable.

    A model trained this way decodes every file exactly as the model it started from (same
    decoder networks); only the latents its analysis gives can change. Why try: at ``-q 8``,
    64 steps of per-image latent refinement (``-e 5``) raise kodim05 from 33.37 to 34.34 dB for
    4% more bytes. Run 54 (docs/model-card.md) found that this gain did not amortize into the
    analysis in 1800 steps.
    """
    count = 0
    for name, p in model.named_parameters():
        p.requires_grad_(is_encoder_parameter(name))
        count += p.numel() if p.requires_grad else 0
    return count


def param_groups(model: torch.nn.Module, gain_lr_mult: float = 1.0) -> list[dict]:
    """The optimizer's parameter groups: one, or with ``gain_lr_mult != 1`` a second group
    holding the quality levels' own parameters, the gain vectors and the transforms' level
    scales if any (``lr_mult`` scales its learning rate). Frozen parameters (``requires_grad``
    off) are left out.

    Moving the levels to other lambdas (:mod:`.levels`) changes mainly the gains: a few
    hundred numbers per level that Adam, whose step is about the learning rate, moves by at
    most ``lr`` per step. At the transforms' lr 1e-4 a log-gain needs thousands of steps to
    move by 0.5; a separate, larger rate moves the levels in hundreds.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if gain_lr_mult == 1.0:
        return [{"params": [p for _, p in named], "lr_mult": 1.0}]
    gains = [p for n, p in named if n in LEVEL_KEYS]
    rest = [p for n, p in named if n not in LEVEL_KEYS]
    return [{"params": rest, "lr_mult": 1.0}, {"params": gains, "lr_mult": gain_lr_mult}]


def resume(ckpt_path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
           ck: dict | None = None) -> dict | None:
    """Load a run's checkpoint (``ck`` when already read) into ``model`` and ``opt``; return
    its state (None: no checkpoint)."""
    if ck is None and not ckpt_path.exists():
        return None
    if ck is None:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model.load_state_dict(ck["model"])
    saved_groups = len(ck["optimizer"]["param_groups"])
    if saved_groups != len(opt.param_groups):
        raise ValueError(f"{ckpt_path} was trained with {saved_groups} parameter group(s), this run "
                         f"asks for {len(opt.param_groups)}: resume it with the --gain-lr-mult it "
                         "was started with")
    sizes = [len(g["params"]) for g in ck["optimizer"]["param_groups"]]
    if sizes != [len(g["params"]) for g in opt.param_groups]:
        raise ValueError(f"{ckpt_path} trained other parameters than this run asks for: resume it "
                         "with the --train-only it was started with")
    opt.load_state_dict(ck["optimizer"])
    for g in opt.param_groups:
        g.setdefault("lr_mult", 1.0)
    state = json.loads(ck["state_json"])
    print(f"resumed from {ckpt_path} at step {state['step']}", flush=True)
    return state


def use_bf16_autocast(setting: str, device: torch.device) -> bool:
    """Whether the training forward runs under bf16 autocast: ``on``, ``off``, or ``auto``:
    on a CUDA GPU with bf16 support, or a CPU with native bf16 arithmetic."""
    if setting != "auto":
        return setting == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def move_optimizer_state(opt: torch.optim.Optimizer) -> None:
    """Put the optimizer's state (Adam's moments) on its parameters' device, after the model
    has moved: reloading the state dict casts each tensor as the optimizer expects (Adam keeps
    its step counts on the CPU unless ``capturable``)."""
    opt.load_state_dict(opt.state_dict())


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training for ``cfg.minutes``; return the checkpoint path."""
    from ..device import select_device

    device = select_device(cfg.device).torch()  # DeviceError before anything is written
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    keep_freed_memory()

    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.exists() else None
    resumed = json.loads(ck["config_json"]) if ck is not None else {}
    init, init_config = read_initial_weights(cfg) if ck is None and cfg.init_from else (None, {})
    arch = run_architecture(cfg, resumed, init, init_config)
    model = build_model(cfg.family, **arch)
    if cfg.train_only == "encoder":
        print(f"decoder frozen: {freeze_decoder(model):,} encoder parameters train", flush=True)
    elif cfg.train_only != "all":
        raise ValueError(f"train_only must be 'all' or 'encoder', got {cfg.train_only!r}")
    opt = torch.optim.Adam(param_groups(model, cfg.gain_lr_mult), lr=cfg.lr)
    state = {"step": 0, "cpu_seconds": 0.0, "wall_seconds": 0.0, "runs": []}
    if ck is not None:
        state = resume(ckpt_path, model, opt, ck)
    elif init is not None:
        init = initialize_from(model, init, cfg)
    if ck is None and cfg.adam_from:
        from .adam_state import carry_adam_moments, group_names, saved_parameter_names
        saved = torch.load(cfg.adam_from, map_location="cpu", weights_only=True)
        if "optimizer" not in saved:
            raise ValueError(f"{cfg.adam_from} holds no optimizer state (a run's checkpoint.pt does)")
        names = None  # matched by name when the checkpoint says what it trained: blocks may be added
        if "config_json" in saved:
            names = (saved_parameter_names(saved), group_names(model, opt.param_groups))
        widened = carry_adam_moments(saved["optimizer"], opt, trailing_new=cfg.family == "grouped", names=names)
        print(f"Adam's moments carried from {cfg.adam_from}"
              + (f" ({widened} widened tensors)" if widened else ""), flush=True)
        del saved
    model = model.to(device=device, memory_format=torch.channels_last).train()
    move_optimizer_state(opt)
    average = WeightAverage(model, cfg.ema) if cfg.ema else None
    if average is not None and ck is not None:  # the run's average goes on (or starts there)
        average.model.load_state_dict(ck.get("average", ck["model"]))
    del ck
    shipped = average.model if average is not None else model  # what validation and best.pt see

    train_paths, held_paths = training_photos(Path(cfg.data), [Path(d) for d in cfg.extra_data])
    if init is not None:  # a new folder started from trained weights: not the crops they saw
        state["data_offset"] = weights_fingerprint(init)
    seed = data_seed(cfg.seed, state)
    sampler = CropSampler([load_rgb(p) for p in train_paths], cfg.crop, seed=seed)
    val_crops = center_crops([load_rgb(p) for p in held_paths], 256)
    val_jpeg = jpeg_points(val_crops)
    lambdas = model.lambdas
    gen = torch.Generator().manual_seed(seed)
    # On a GPU the host threads only sample crops: no thread count to tune.
    tuner = ThreadTuner("1" if device.type != "cpu" and cfg.threads == "auto" else cfg.threads)
    log = (run_dir / "log.jsonl").open("a")
    run_record = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "start_step": state["step"],
                  "data_seed": seed,
                  "config": {k: v for k, v in asdict(cfg).items() if k != "extra"}}
    state["runs"].append(run_record)

    use_bf16 = use_bf16_autocast(cfg.bf16, device)
    run_record.update(bf16=use_bf16, device=str(device))
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(flag=True))

    config_json = json.dumps({"family": cfg.family, **arch})

    def save_best(val: dict) -> None:
        """Keep the model with the lowest held-out score so far (:func:`selection_score`)
        as ``best.pt``."""
        key, score = selection_score(val, state)
        if score is None or score >= state.get(key, float("inf")):
            return
        state[key], state["best_step"] = score, state["step"]
        tmp = run_dir / "best.tmp"
        torch.save({"model": shipped.state_dict(), "state_json": json.dumps(state),
                    "config_json": config_json}, tmp)
        os.replace(tmp, run_dir / "best.pt")

    def save() -> None:
        run_record.update(end_step=state["step"], cpu_seconds_total=round(state["cpu_seconds"], 1))
        if ckpt_path.exists():  # keep one older checkpoint to roll back to after a divergence
            os.replace(ckpt_path, ckpt_path.with_suffix(".prev.pt"))
        tmp = ckpt_path.with_suffix(".tmp")
        extra = {"average": average.model.state_dict()} if average is not None else {}
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "state_json": json.dumps(state),
                    "config_json": config_json, **extra}, tmp)
        os.replace(tmp, ckpt_path)

    rollback = DivergenceGuard(model, opt, min_steps=cfg.log_every)
    last_validated = {"step": state["step"]}

    def validate_into(rec: dict) -> None:
        """Put the held-out scores of the average (and of the current iterate) into ``rec``
        and keep ``best.pt``."""
        reference = state.get("reference")
        rec["val"] = validate(shipped, val_crops, val_jpeg, reference)
        if reference is None and "best_bd_jpeg" not in state:  # a new run's first
            state["reference"] = reference = rec["val"]["points"]
            rec["val"]["bd_ref"] = 0.0
        if average is not None:  # the current iterate too, to see what averaging gives
            rec["val_current"] = validate(model, val_crops, val_jpeg, reference)
        save_best(rec["val"])
        last_validated["step"] = state["step"]

    forward = CompiledForward(model, cfg.compile)
    t0 = time.time()
    cpu0 = time.process_time()
    cpu_base, wall_base = state["cpu_seconds"], state["wall_seconds"]
    gpu_base = state.get("gpu_seconds", 0.0)
    last_ckpt = t0
    acc = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
    while (not stop["flag"] and time.time() - t0 < cfg.minutes * 60
           and not 0 < cfg.max_steps <= state["step"]):
        ts = time.perf_counter()
        step = state["step"]
        lr = _lr_at(cfg, step, time.time() - t0) * state.get("lr_scale", 1.0)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)
        x = sampler.batch(cfg.batch).to(device, non_blocking=True)
        level = torch.randint(0, len(lambdas), (cfg.batch,), generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            noise = time.time() - t0 < cfg.minutes * 60 * (1 - cfg.ste_frac)
            out = forward(x, level, decoder_noise=noise)
        bpp, mse = rd_terms(out, x)
        per_item = lambdas[level] * 255 ** 2 * mse + bpp
        loss = per_item.mean()
        weights = level_weights(level, per_item.detach(), state, cfg.level_weighting)
        opt.zero_grad(set_to_none=True)
        (per_item * weights).mean().backward()
        # Clip only outliers: at 4x the running gradient norm (typical norms are 30-600).
        limit = 4 * state.get("grad_norm_ema", 0.0) or float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), limit))
        # Skip the update of a batch whose loss spikes far above the running loss: with GDN,
        # one such step at a high learning rate can throw the model into a diverging regime.
        loss_ema = state.get("loss_ema", 0.0)
        spike = loss_ema > 0 and state["step"] > 200 and loss.item() > 10 * loss_ema
        if not spike and math.isfinite(norm) and torch.isfinite(loss):
            state["loss_ema"] = loss.item() if loss_ema == 0 else 0.99 * loss_ema + 0.01 * loss.item()
            opt.step()
            if average is not None:
                average.update(model)
            ema = state.get("grad_norm_ema", 0.0)
            state["grad_norm_ema"] = norm if ema == 0 else 0.98 * ema + 0.02 * min(norm, limit)
        state["step"] += 1
        tuner.record(time.perf_counter() - ts)
        acc["loss"] += loss.item()
        acc["bpp"] += bpp.mean().item()
        acc["psnr"] += (-10 * torch.log10(mse.detach().clamp_min(1e-10))).mean().item()
        acc["n"] += 1
        state["cpu_seconds"] = cpu_base + time.process_time() - cpu0
        state["wall_seconds"] = wall_base + time.time() - t0
        if device.type == "cuda":  # GPU time, apart from the CPU-hours of CPU runs
            state["gpu_seconds"] = gpu_base + time.time() - t0
        if state["step"] % cfg.log_every == 0:
            window_loss, at_step = acc["loss"] / acc["n"], state["step"]
            if rollback.check(window_loss, state, steps=acc["n"]):
                print(f"step {at_step}: loss {window_loss:.1f} diverged; rolled back to step "
                      f"{state['step']}, lr scale {state['lr_scale']}", flush=True)
                acc = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
                continue
            n = acc.pop("n")
            rec = {"step": state["step"], "lr": round(lr, 7), "threads": tuner.active,
                   "cpu_h": round(state["cpu_seconds"] / 3600, 4)}
            if "gpu_seconds" in state:
                rec["gpu_h"] = round(state["gpu_seconds"] / 3600, 4)
            rec.update({k: round(v / n, 4) for k, v in acc.items()})
            acc = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
            if state["step"] % cfg.validate_every == 0:
                validate_into(rec)
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
            save()
            last_ckpt = time.time()
    if not stop["flag"] and run_record["start_step"] < state["step"] != last_validated["step"]:
        # The run's last weights, at the end of its lr decay, are usually its best: validate
        # them too (best.pt may take them), unless the run was interrupted.
        rec = {"step": state["step"], "final": True}
        validate_into(rec)
        log.write(json.dumps(rec) + "\n")
    save()
    log.close()
    print(f"stopped at step {state['step']}; {state['cpu_seconds'] / 3600:.2f} CPU-hours in total",
          flush=True)
    return ckpt_path

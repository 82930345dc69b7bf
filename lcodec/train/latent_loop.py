"""The training loop of the trainers that keep a model's transforms frozen and train only
networks that set the entropy parameters: the checkerboard context on hyperprior latents
(:mod:`.context`) and the channel-group networks on context latents (:mod:`.grouped`).

With the transforms frozen, the analysis transform runs once per training photo (without the
per-level gain, a channel-wise factor applied per step). Every step draws random crops of
these latents at random quality levels with uniform quantization noise, and the trainer's
``step`` function turns them into a loss. The learning rate warms up linearly, stays, and
decays 20x over the budget's last ``decay_frac``. The run checkpoints every few minutes (and on
SIGTERM / SIGINT) in the main loop's layout, so a folder resumes and
:func:`lcodec.train.export.export_checkpoint` ships it.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .data import data_seed, load_rgb

# step(latents, levels, noise) -> (loss, numbers to sum until the next log line)
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class LoopSettings:
    minutes: float
    lr: float
    crop: int                  # pixels per side of a crop (latents: crop / 16)
    batch: int
    seed: int
    log_every: int
    validate_every: int        # steps (a multiple of log_every)
    checkpoint_minutes: float
    decay_frac: float          # final fraction of the budget over which the lr decays 20x
    warmup: int = 0            # steps of linear warmup at the start of each run


def photo_latents(model: torch.nn.Module, paths: list[Path]) -> list[torch.Tensor]:
    """``g_a(x - 0.5)`` (no gain) of each photo, cropped to a multiple of 64 pixels."""
    out = []
    with torch.inference_mode():
        for p in paths:
            im = load_rgb(p)
            h, w = im.shape[0] // 64 * 64, im.shape[1] // 64 * 64
            if h == 0 or w == 0:
                continue
            x = torch.from_numpy(im[:h, :w].copy()).permute(2, 0, 1)[None].float() / 255
            out.append(model.transform_a(x.contiguous(memory_format=torch.channels_last) - 0.5)[0].contiguous())
    return out


def sample_crops(latents: list[torch.Tensor], weights: torch.Tensor, size: int, batch: int,
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


def run_on_latents(model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict, config: dict,
                   run_dir: Path, settings: LoopSettings, run_config: dict,
                   latents: list[torch.Tensor], step: StepFn,
                   summarize: Callable[[dict[str, float], int], dict],
                   validate: Callable[[], dict]) -> Path:
    """Train for ``settings.minutes`` from ``state`` (a fresh or resumed run's); return the
    checkpoint path. ``summarize(sums, steps)`` makes a log line's numbers, ``validate()``
    its held-out ones. The last step is validated once (unless its log line just was) and
    logged like the others; its numbers are also stored as the run's ``final_val``."""
    ckpt_path = run_dir / "checkpoint.pt"
    weights = torch.tensor([float(l.shape[1] * l.shape[2]) for l in latents])
    seed = data_seed(settings.seed, state)
    gen = torch.Generator().manual_seed(seed)
    run_record = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "start_step": state["step"],
                  "data_seed": seed, "config": run_config}
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

    size = settings.crop // 16
    t0, cpu0 = time.time(), time.process_time()
    cpu_base, wall_base = state["cpu_seconds"], state["wall_seconds"]
    last_ckpt = t0
    budget = settings.minutes * 60
    start_step = state["step"]
    sums: dict[str, float] = {}
    steps = 0
    last_val, last_val_step = None, None
    while not stop["flag"] and time.time() - t0 < budget:
        elapsed = time.time() - t0
        decay_start = budget * (1 - settings.decay_frac)
        lr = settings.lr * min(1.0, (state["step"] - start_step + 1) / max(1, settings.warmup))
        lr *= 0.05 ** max(0.0, (elapsed - decay_start) / max(1e-9, budget - decay_start))
        for g in opt.param_groups:
            g["lr"] = lr
        lat = sample_crops(latents, weights, size, settings.batch, gen)
        level = torch.randint(0, model.num_levels, (settings.batch,), generator=gen)
        noise = torch.rand(lat.shape, generator=gen) - 0.5
        loss, numbers = step(lat, level, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if math.isfinite(loss.item()):
            opt.step()
        state["step"] += 1
        steps += 1
        for k, v in numbers.items():
            sums[k] = sums.get(k, 0.0) + v
        state["cpu_seconds"] = cpu_base + time.process_time() - cpu0
        state["wall_seconds"] = wall_base + time.time() - t0
        if state["step"] % settings.log_every == 0:
            rec = {"step": state["step"], "lr": round(lr, 7),
                   "cpu_h": round(state["cpu_seconds"] / 3600, 4), **summarize(sums, steps)}
            if state["step"] % settings.validate_every == 0:
                rec["val"] = last_val = validate()
                last_val_step = state["step"]
            sums, steps = {}, 0
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
        if time.time() - last_ckpt > settings.checkpoint_minutes * 60:
            save()
            last_ckpt = time.time()
    if last_val_step != state["step"]:
        last_val = validate()
        if state["step"] > start_step:  # the same record as the transforms' loop writes
            log.write(json.dumps({"step": state["step"], "final": True, "val": last_val}) + "\n")
    state["final_val"] = last_val
    save()
    log.close()
    print(f"stopped at step {state['step']}; validation {state['final_val']}", flush=True)
    return ckpt_path

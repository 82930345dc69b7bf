"""Average the weights of several training runs of one model (a "model soup").

Runs that start from the same weights and train at a small learning rate stay close enough
for their weights to be averaged tensor by tensor, and the average often codes better than
each run (Wortsman et al. 2022, "Model soups"). On this project's two cores that turns two
one-thread runs of a session into one model. Measured in docs/model-card.md (session 54):
the mean of run 119's and run 121's best weights probed +7.21% against AVIF speed 6 on Kodak,
where they probed +7.32% and +7.39%.

:func:`average_weights` takes training checkpoints (a run's ``best.pt`` or ``checkpoint.pt``,
whose weight average it uses when it keeps one) or shipped weights (a manifest name, or
``NAME:vN``) of the same architecture, except that some may have residual blocks the others
lack (``lcodec train --res-a-deep 2`` in one run only, say). A model without a block computes
as if it had one whose last convolution is zero (a block is ``x + conv(act(conv(x)))``; blocks
start that way, :func:`lcodec.train.start.load_adding_blocks`), so the block's last
convolution is averaged with zeros (summed over the models that have it, divided by all), and
its first convolution, which such a zero multiplies, is the mean over the models that have it.

The result is a checkpoint that ``python -m lcodec.train.export`` and ``lcodec train
--init-from`` take: the model of the most blocks' config, and the training state of that
checkpoint with ``cpu_seconds`` summed over all (right for runs in separate folders from one
start: each folder counts only its own run) and ``averaged_from`` naming the inputs.

``--drop res_s_deep`` (or ``res_a_deep``) first removes those deep blocks from every input, as
if the runs had never had them: a soup with the decoder of the runs without them.

``python -m lcodec.train.soup A B [C ...] [--drop res_s_deep] -o OUT.pt``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..errors import LcodecError
from .start import BLOCK_PREFIXES, load_weights

BLOCK_KEYS = ("res_a", "res_s", "res_a_deep", "res_s_deep")  # config keys that may differ
DROPPABLE = {"res_a_deep": "g_a_deep.", "res_s_deep": "g_s_deep."}  # --drop: config key -> tensors
_LAST_CONV = ".body.2."  # a residual block's last convolution (``body`` = conv, act, conv)


def _read(spec: str) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(config, weights, training state) of a checkpoint or shipped weights; a checkpoint's
    weight average when it keeps one (as ``lcodec train --init-from`` does)."""
    path = Path(spec)
    if path.exists():
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # not a torch file, truncated, ...
            raise ValueError(f"{spec}: not a training checkpoint ({exc.__class__.__name__})") from None
        if not isinstance(ck, dict) or "config_json" not in ck or not isinstance(ck.get("model"), dict):
            raise ValueError(f"{spec}: not a training checkpoint")
        weights = ck.get("average") or ck["model"]
        try:
            return json.loads(ck["config_json"]), weights, json.loads(ck.get("state_json", "{}"))
        except (TypeError, ValueError):  # its config or state is not JSON text
            raise ValueError(f"{spec}: not a training checkpoint (its config is unreadable)") from None
    try:
        return load_weights(spec)
    except LcodecError as exc:  # not installed, or a file that fails its checks
        raise ValueError(f"{spec}: no such file, and {exc}") from None


def _without_blocks(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in BLOCK_KEYS}


def _dropped(config: dict, weights: dict[str, torch.Tensor], drop: tuple[str, ...]) -> tuple[dict, dict]:
    """``config`` and ``weights`` without the deep blocks ``drop`` names (config keys of
    :data:`DROPPABLE`): the model as if it had never had them."""
    prefixes = tuple(DROPPABLE[key] for key in drop)
    return ({k: v for k, v in config.items() if k not in drop},
            {k: v for k, v in weights.items() if not (prefixes and k.startswith(prefixes))})


def average_weights(specs: list[str], drop: tuple[str, ...] = ()) -> dict:
    """The checkpoint (``model``, ``config_json``, ``state_json``) whose weights are the mean
    of those ``specs`` name, after removing the deep blocks ``drop`` names from each
    (``("res_s_deep",)``: a decoder as fast as theirs without those blocks); raises ValueError
    when they are not one architecture."""
    if len(specs) < 2:
        raise ValueError("give at least two checkpoints to average")
    unknown = [key for key in drop if key not in DROPPABLE]
    if unknown:
        raise ValueError(f"cannot drop {unknown[0]} (only {', '.join(DROPPABLE)})")
    read = [(*_dropped(c, w, drop), s) for c, w, s in (_read(spec) for spec in specs)]
    configs = [c for c, _, _ in read]
    weights = [w for _, w, _ in read]
    for spec, config in zip(specs[1:], configs[1:]):
        if _without_blocks(config) != _without_blocks(configs[0]):
            diff = sorted(k for k in set(config) | set(configs[0])
                          if k not in BLOCK_KEYS and config.get(k) != configs[0].get(k))
            raise ValueError(f"{spec} is another architecture than {specs[0]} (differs in {', '.join(diff)})")
    widest = max(range(len(specs)), key=lambda i: len(weights[i]))
    names = weights[widest]
    for spec, w in zip(specs, weights):
        extra = [k for k in w if k not in names]
        if extra:
            raise ValueError(f"{spec} has tensors that {specs[widest]} lacks ({extra[0]}, ...): "
                             "neither holds all the other's blocks")
    n = len(specs)
    out: dict[str, torch.Tensor] = {}
    for key, ref in names.items():
        have = [w[key] for w in weights if key in w]
        if len(have) < n and not key.startswith(BLOCK_PREFIXES):
            raise ValueError(f"{specs[[key in w for w in weights].index(False)]} lacks {key}, "
                             "which is not a residual block's")
        if any(t.shape != ref.shape for t in have):
            raise ValueError(f"{key} has other shapes in the checkpoints")
        if not ref.is_floating_point():
            if any(not torch.equal(t, ref) for t in have):
                raise ValueError(f"{key} (not a float tensor) differs between the checkpoints")
            out[key] = ref.clone()
            continue
        total = sum(t.double() for t in have)
        divisor = n if _LAST_CONV in key else len(have)  # a missing block's last conv is zero
        out[key] = (total / divisor).to(ref.dtype)
    states = [s for _, _, s in read]
    state = dict(states[widest])
    state["cpu_seconds"] = sum(float(s.get("cpu_seconds", 0.0)) for s in states)
    state["averaged_from"] = [str(s) for s in specs]
    if drop:
        state["dropped_blocks"] = list(drop)
    return {"model": out, "config_json": json.dumps(configs[widest]), "state_json": json.dumps(state)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lcodec.train.soup",
                                 description="Average the weights of training checkpoints of one model.")
    ap.add_argument("checkpoints", nargs="+", help="runs' best.pt / checkpoint.pt, or shipped weights by name")
    ap.add_argument("-o", "--output", type=Path, required=True, help="the averaged checkpoint to write")
    ap.add_argument("--drop", action="append", default=[], choices=sorted(DROPPABLE),
                    help="remove these deep blocks from every checkpoint first (repeatable)")
    args = ap.parse_args(argv)
    try:
        soup = average_weights(args.checkpoints, tuple(args.drop))
    except ValueError as exc:
        print(f"lcodec: error: {exc}", file=sys.stderr)
        return 1
    tmp = args.output.with_name(args.output.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(soup, f)
        tmp.replace(args.output)
    except (OSError, RuntimeError) as exc:  # no such folder, out of disk (torch's writer), ...
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"lcodec: error: cannot write {args.output}: {reason}", file=sys.stderr)
        return 1
    state = json.loads(soup["state_json"])
    print(f"wrote {args.output}: the mean of {len(args.checkpoints)} checkpoints, "
          f"{state['cpu_seconds'] / 3600:.3f} CPU-hours in their runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

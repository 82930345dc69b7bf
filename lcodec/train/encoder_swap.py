"""Give a model the encoder of a decoder-frozen run: its analysis, hyper-analysis and gains.

A run with ``lcodec train --train-only encoder`` changes only the parameters the encoder uses
(:func:`lcodec.train.loop.is_encoder_parameter`). Any model whose decoder-side networks are the
ones that run started from can take the new encoder as it is: ``grouped`` v2, say, keeps
``context`` v12's transforms, hyper-synthesis and densities, so an encoder trained against
v12's decoder fits it. The group networks were trained on the old encoder's latents; the
Kodak probe measures whether they still pay.

``python -m lcodec.train.encoder_swap runs/e54/best.pt grouped runs/e54/grouped.pt`` writes a
training checkpoint of ``grouped`` (its newest version) with the run's encoder, which
``python -m lcodec.train.kodak_probe`` and :func:`lcodec.train.export.export_checkpoint` read.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .loop import is_encoder_parameter
from .start import load_weights


def swap_encoder(encoder_state: dict[str, torch.Tensor], target_state: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """``target_state`` with the encoder's parameters of ``encoder_state``.

    Raises ``ValueError`` unless every decoder-side tensor the two share is identical (the
    encoder was trained against another decoder) and the target has every encoder tensor.
    """
    out = dict(target_state)
    for key, value in encoder_state.items():
        if is_encoder_parameter(key):
            if key not in target_state or target_state[key].shape != value.shape:
                raise ValueError(f"the target model has no {key!r} of shape {tuple(value.shape)}")
            out[key] = value.clone()
        elif key in target_state and not torch.equal(target_state[key], value):
            raise ValueError(f"{key!r} differs: the encoder was trained against another decoder")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("encoder", help="training checkpoint of a --train-only encoder run (e.g. its best.pt)")
    parser.add_argument("target", help="model to give it to: a manifest name or a training checkpoint")
    parser.add_argument("out", type=Path, help="training checkpoint to write")
    args = parser.parse_args(argv)
    _, encoder_state, state = load_weights(args.encoder)
    config, target_state, _ = load_weights(args.target)
    model_state = swap_encoder(encoder_state, target_state)
    state = dict(state, encoder_from=args.encoder, decoder_from=args.target)
    torch.save({"model": model_state, "config_json": json.dumps(config), "state_json": json.dumps(state)},
               args.out)
    print(f"wrote {args.out}: {config['family']} with the encoder of {args.encoder}")


if __name__ == "__main__":
    main()

"""Export a training checkpoint as shipped inference weights with their entropy tables.

Writes ``weights/<name>-v<version>.pt`` (tensors only: the model's ``state_dict``, the
integer probability tables under ``tables.*`` and the integer networks that feed the entropy
coder under ``exact.*``) and adds it to ``weights/manifest.json`` with
its SHA-256, keeping every older version listed so old ``.lc`` files keep decoding.

With a ``base`` (a shipped model the checkpoint extends, e.g. the context weights whose
transforms a ``train-grouped`` run kept frozen), the file holds only the tensors that are not
bit-identical to the base's, and the manifest entry names the base by version and SHA-256.

``python -m lcodec.train.export --from NAME --name NAME [--base NAME] [--default]`` exports
shipped weights again, their networks unchanged, with the tables and integer networks this
lcodec builds (grouped v3 is grouped v2 with 256 scale tables instead of 64); with
``--count-tables-on PHOTOS`` the ``y`` tables' frequencies and tables of ``z`` per quality
level are counted on those photos (:mod:`.counted_tables`; grouped v4).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from ..entropy.tables import default_scale_table, gaussian_tables, trimmed_tables
from ..models import build_model
from ..models.exact import quantize_model
from ..weights import (DERIVED_PREFIXES, MANIFEST, ModelEntry, find_entry, loaded_from_arrays, network_state,
                       read_verified, weights_dir)
from .counted_tables import photo_counted_tables

Z_GRID = 255  # z tables are evaluated on the integers -Z_GRID..Z_GRID before trimming


def build_tables(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The integer tables of a model from its densities: z per channel, y per Gaussian scale."""
    pmf = model.z_density.pmf_grid(-Z_GRID, Z_GRID).numpy()
    z = trimmed_tables(pmf, -Z_GRID)
    scale_table = default_scale_table()
    y = gaussian_tables(scale_table)
    return {**z.to_arrays("z"), **y.to_arrays("y"), "scale_table": scale_table}


def counted_tables(model: torch.nn.Module, family: str, config: dict, tensors: dict[str, torch.Tensor],
                   photos: Path) -> dict[str, torch.Tensor]:
    """``tables.zl.*`` and ``tables.y.*`` counted on ``photos`` by coding them with the
    weights ``tensors`` (the model's state, tables and integer networks; :mod:`.counted_tables`)."""
    entry = ModelEntry("export", 0, family, "", "", config)
    loaded = loaded_from_arrays(entry, {k: v.numpy() for k, v in tensors.items()})
    learned = model.z_density.pmf_grid(-Z_GRID, Z_GRID).numpy()
    out = {}
    for prefix, tables in photo_counted_tables(loaded, learned, Path(photos), Z_GRID).items():
        out.update({f"tables.{k}": torch.from_numpy(np.ascontiguousarray(v))
                    for k, v in tables.to_arrays(prefix).items()})
    return out


def export_checkpoint(checkpoint: Path, name: str, make_default: bool = True,
                      notes: dict | None = None, folder: Path | None = None,
                      base: str | None = None, count_tables_on: Path | None = None) -> Path:
    """Write the weights of ``checkpoint`` as the next version of ``name``; return the path
    (:func:`export_state`, with the run's steps and CPU time as the training record)."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = json.loads(ck.get("state_json", "{}"))
    training = {"steps": state.get("step"), "cpu_hours": round(state.get("cpu_seconds", 0) / 3600, 3)}
    return export_state(ck["model"], json.loads(ck["config_json"]), name, str(checkpoint), training,
                        make_default=make_default, notes=notes, folder=folder, base=base,
                        count_tables_on=count_tables_on)


def export_state(model_state: dict, config: dict, name: str, source: str, training: dict,
                 make_default: bool = True, notes: dict | None = None, folder: Path | None = None,
                 base: str | None = None, count_tables_on: Path | None = None) -> Path:
    """Write a model (its ``state_dict`` and its ``config`` with ``family``) as the next
    version of ``name``; return the path. ``source`` names it in errors; the manifest entry's
    training record is ``training`` updated with ``notes``.

    With ``make_default`` the new version becomes the manifest's default model if the current
    default is an older version of ``name`` (or there is none); another model stays default.
    With ``base`` (a model name in the manifest: its newest version) the file leaves out the
    tensors equal to the base's. The model must have every tensor of the base (its network
    tensors at the base's shapes), so that the base's tensors updated with the file's are
    the model's. With ``count_tables_on`` (a folder of training photos) the ``y`` tables'
    frequencies and per-level ``z`` tables are counted on them (:func:`counted_tables`).
    """
    folder = Path(folder or weights_dir())
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    family = config.pop("family")
    model = build_model(family, **config)
    model.load_state_dict(model_state)
    model.eval()
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for k, v in build_tables(model).items():
        tensors[f"tables.{k}"] = torch.from_numpy(np.ascontiguousarray(v))
    tensors.update(quantize_model(model))
    if count_tables_on is not None:
        tensors.update(counted_tables(model, family, config, tensors, count_tables_on))
    base_entry = None
    if base is not None:
        base_entry = find_entry(base, folder=folder)
        if base_entry.base is not None:  # the loader follows one level
            raise ValueError(f"{base_entry.label} extends other weights itself: name its base instead")
        base_arrays = read_verified(base_entry, folder)
        for key, value in base_arrays.items():  # the merged weights must be this model's
            mine = tensors.get(key)
            derived = key.startswith(DERIVED_PREFIXES)  # these may change shape
            if mine is None or (not derived and tuple(mine.shape) != value.shape):
                raise ValueError(f"{source} cannot extend {base_entry.label}: its {key} "
                                 f"is {'missing' if mine is None else tuple(mine.shape)}, the "
                                 f"base's {value.shape}")
        own = _without_shared(tensors, base_arrays)
        if not own:
            raise ValueError(f"{source} holds the same tensors as {base_entry.label}: nothing to export")
        tensors = own

    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"models": []}
    # The new version takes over the default only from its own model (or an empty manifest):
    # exporting hyperprior weights must not demote another default model such as ``context``.
    make_default = make_default and all(m["name"] == name for m in manifest["models"] if m.get("default"))
    version = 1 + max((m["version"] for m in manifest["models"] if m["name"] == name), default=0)
    path = folder / f"{name}-v{version}.pt"
    buf = io.BytesIO()
    torch.save(tensors, buf)
    path.write_bytes(buf.getvalue())
    entry = {"name": name, "version": version, "family": family, "file": path.name,
             "sha256": hashlib.sha256(buf.getvalue()).hexdigest(), "config": config,
             "default": make_default, "training": {**training, **(notes or {})}}
    if base_entry is not None:
        entry["base"] = {"name": base_entry.name, "version": base_entry.version,
                         "sha256": base_entry.sha256}
    if make_default:
        for m in manifest["models"]:
            m["default"] = False
    manifest["models"].append(entry)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _without_shared(tensors: dict[str, torch.Tensor], base: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """``tensors`` less those bit-identical (dtype, shape and values) to the base's."""
    def shared(key: str, value: torch.Tensor) -> bool:
        other = base.get(key)
        mine = value.numpy()
        return (other is not None and other.dtype == mine.dtype and other.shape == mine.shape
                and np.array_equal(other, mine))
    return {k: v for k, v in tensors.items() if not shared(k, v)}


def reexport(source: str, name: str, base: str | None = None, make_default: bool = False,
             note: str = "", folder: Path | None = None, count_tables_on: Path | None = None) -> Path:
    """Export the newest version of the shipped model ``source`` again as the next version of
    ``name``: the same networks, with this lcodec's tables and integer networks (the tables
    counted on the photos in ``count_tables_on``, if given). The entry's
    training record is the source's, with ``note`` and the source's label added."""
    source_entry = find_entry(source, folder=folder)
    manifest = json.loads((Path(folder or weights_dir()) / MANIFEST).read_text())
    record = next(m for m in manifest["models"]
                  if m["name"] == source_entry.name and m["version"] == source_entry.version)
    training = dict(record.get("training") or {})
    notes = {k: v for k, v in training.items() if k not in ("steps", "cpu_hours")}
    notes["reexported_from"] = source_entry.label
    if note:
        notes["reexport_note"] = note
    if count_tables_on is not None:
        notes["counted_tables"] = (f"y tables and per-level z tables counted on the training photos of "
                                   f"{Path(count_tables_on).name}/")

    return export_state(network_state(read_verified(source_entry, folder)),
                        {"family": source_entry.family, **source_entry.config}, name, source_entry.label,
                        {"steps": training.get("steps"), "cpu_hours": training.get("cpu_hours")},
                        make_default=make_default, notes=notes, folder=folder, base=base,
                        count_tables_on=count_tables_on)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lcodec.train.export", description=reexport.__doc__)
    ap.add_argument("--from", dest="source", required=True, help="the shipped model to export again")
    ap.add_argument("--name", required=True, help="the model name of the new version")
    ap.add_argument("--base", default=None, help="a shipped model the new file extends")
    ap.add_argument("--default", action="store_true", help="make the new version the default model")
    ap.add_argument("--note", default="", help="recorded in the manifest entry")
    ap.add_argument("--count-tables-on", type=Path, default=None,
                    help="count the y tables and per-level z tables on the training photos in this folder")
    args = ap.parse_args(argv)
    path = reexport(args.source, args.name, args.base or None, args.default, args.note,
                    count_tables_on=args.count_tables_on)
    print(f"exported {path}")


if __name__ == "__main__":
    main()

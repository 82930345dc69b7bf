"""Shipped weights: locate them, verify their hash, load them without running pickled code.

``weights/manifest.json`` lists every model the package ships (name, version, family,
architecture config, file, SHA-256). A weights file holds only tensors (the model's
``state_dict``, its entropy tables under ``tables.*`` and its integer networks under
``exact.*``) in torch's zip format. It is read after its SHA-256 matches the manifest, by
:mod:`lcodec.runtime.ptfile`, which needs no torch and runs no pickled code. Old versions
stay listed so that files encoded with them keep decoding.

An entry may name a ``base``: another entry (name, version, SHA-256) whose tensors it
shares. Its own file then holds only the tensors it adds or changes, and its weights are the
base's tensors updated with its own. The model id in ``.lc`` files is still the first bytes
of the entry's own file's SHA-256; the base is pinned by the SHA-256 the manifest records.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .entropy.tables import TableSet
from .errors import WeightsError, WeightsMismatchError
from .runtime.exact import ExactContext, ExactGroupedContext, ExactSequential
from .runtime.transforms import HyperpriorTransforms

MANIFEST = "manifest.json"
FAMILIES = ("hyperprior", "context", "grouped")  # the model families this version can code with
# The architecture keys a manifest ``config`` may hold (the families' constructor arguments).
# Weights with another key were made by a newer lcodec, for a part of the model this one does
# not have; they are refused rather than coded without it.
CONFIG_KEYS = frozenset({"N", "M", "Na", "Ns", "lambdas", "hyper_hidden", "res_a", "res_s",
                         "res_a_deep", "res_s_deep",
                         "level_scales_a", "level_scales_s", "level_scales_h", "level_bias_a",
                         "context_channels", "hidden", "scale_floor", "groups", "channel_order",
                         "group_features", "group_hidden"})
ENV_DIR = "LCODEC_WEIGHTS_DIR"
DERIVED_PREFIXES = ("tables.", "exact.")  # what export derives from the network's state_dict


@dataclass(frozen=True)
class ModelEntry:
    """One shipped set of weights as recorded in the manifest."""

    name: str
    version: int
    family: str
    file: str
    sha256: str
    config: dict = field(default_factory=dict, hash=False, compare=False)
    default: bool = False
    base: tuple[str, int, str] | None = None  # (name, version, sha256) of the entry it extends

    @property
    def digest(self) -> bytes:
        """The 8-byte id stored in ``.lc`` files: the first bytes of the SHA-256."""
        return bytes.fromhex(self.sha256)[:8]

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


def weights_dir() -> Path:
    """``$LCODEC_WEIGHTS_DIR``, else the checkout's ``weights/``, else the installed copy."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "weights"
    if checkout.is_dir() and (Path(__file__).resolve().parent.parent / "pyproject.toml").is_file():
        return checkout  # a source checkout (or an editable install of one)
    return Path(__file__).resolve().parent / "_weights"


def read_manifest(folder: Path | None = None) -> list[ModelEntry]:
    folder = folder or weights_dir()
    path = folder / MANIFEST
    try:
        raw = json.loads(path.read_text())
        return [ModelEntry(m["name"], int(m["version"]), m["family"], m["file"], m["sha256"],
                           m.get("config", {}), bool(m.get("default", False)), _base_of(m))
                for m in raw["models"]]
    except FileNotFoundError:
        raise WeightsError(f"no weights manifest at {path}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"weights manifest {path} is malformed ({exc})") from None


def _base_of(raw: dict) -> tuple[str, int, str] | None:
    base = raw.get("base")
    return None if base is None else (base["name"], int(base["version"]), base["sha256"])


def find_entry(name: str | None = None, version: int | None = None,
               folder: Path | None = None) -> ModelEntry:
    """The entry for ``name`` (newest version unless ``version``), or the default model."""
    entries = read_manifest(folder)
    if name is None:
        defaults = [e for e in entries if e.default] or entries
        if not defaults:
            raise WeightsError("the weights manifest lists no model")
        return max(defaults, key=lambda e: e.version)
    matching = [e for e in entries if e.name == name and (version is None or e.version == version)]
    if not matching:
        known = ", ".join(sorted({e.label for e in entries})) or "none"
        wanted = f"{name} v{version}" if version is not None else name
        raise WeightsError(f"weights {wanted} are not installed (installed: {known})")
    return max(matching, key=lambda e: e.version)


def parse_spec(spec: str) -> tuple[str, int | None]:
    """The model name and version (None: the newest) a command-line ``spec`` names: ``NAME``
    or ``NAME:vN`` (``NAME:N`` too) for version N, e.g. ``grouped:v5``."""
    name, sep, version = spec.partition(":")
    if not sep:
        return name, None
    digits = version[1:] if version[:1] in ("v", "V") else version
    if not name or not digits.isdigit():
        raise WeightsError(f"{spec!r} is not a model name or NAME:vN (e.g. grouped:v5)")
    return name, int(digits)


def find_spec(spec: str, folder: Path | None = None) -> ModelEntry:
    """The entry a command-line ``spec`` names (:func:`parse_spec`)."""
    name, version = parse_spec(spec)
    return find_entry(name, version, folder)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_verified(entry: ModelEntry, folder: Path | None = None) -> dict[str, np.ndarray]:
    """The arrays of an entry's weights, after checking every file's SHA-256 against the
    manifest: its base's arrays (when it names one) updated with those of its own file."""
    arrays = {}
    if entry.base is not None:
        name, version, sha256 = entry.base
        base = find_entry(name, version, folder)
        if base.sha256 != sha256:
            raise WeightsMismatchError(f"weights {entry.label} extend {base.label}, whose file is "
                                       "not the one they were made from; reinstall lcodec")
        if base.base is not None:
            raise WeightsError(f"weights {entry.label} extend {base.label}, which extends others "
                               "(one level is allowed); reinstall lcodec")
        arrays = read_verified(base, folder)
    arrays.update(_read_file(entry, folder))
    return arrays


def _read_file(entry: ModelEntry, folder: Path | None) -> dict[str, np.ndarray]:
    """The arrays of the entry's own file, after checking its SHA-256."""
    from .runtime.ptfile import PtFileError, load_tensors

    path = (folder or weights_dir()) / entry.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read weights {path}: {exc.strerror or exc}") from None
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise WeightsMismatchError(f"weights file {path} does not match its recorded SHA-256 "
                                   "(damaged or replaced); reinstall lcodec")
    try:
        return load_tensors(data)
    except PtFileError as exc:
        raise WeightsError(f"cannot load weights {path}: not a plain tensor file ({exc}); "
                           "reinstall lcodec") from None


def load_state_dict(path: Path) -> dict:
    """A model ``state_dict`` from a weights file that holds all of it (for training restarts;
    no hash check)."""
    import torch

    tensors = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in tensors.items() if not k.startswith(DERIVED_PREFIXES)}


def network_state(arrays: dict[str, np.ndarray]) -> dict:
    """The torch ``state_dict`` in an entry's arrays (:func:`read_verified`): every tensor but
    the tables and integer networks derived from it. The tensors share the arrays' memory."""
    import torch

    return {k: torch.from_numpy(v) for k, v in arrays.items() if not k.startswith(DERIVED_PREFIXES)}


def load_weights_state(spec: str) -> dict:
    """What ``--init-from`` starts from: the file at the path ``spec`` (a weights file or a
    training checkpoint, as :func:`torch.load` reads it), or the whole ``state_dict`` of the
    shipped model ``spec`` names (:func:`find_spec`; its base's tensors included)."""
    path = Path(spec)
    if path.exists():
        return load_state_dict(path)
    return network_state(read_verified(find_spec(spec)))


@dataclass
class LoadedModel:
    """A model ready for coding: its entropy tables, the integer networks that compute the
    entropy parameters, and the pixel transforms (numpy; the torch network on demand)."""

    entry: ModelEntry
    arrays: dict  # name -> np.ndarray: everything in the weights file
    z_tables: TableSet
    y_tables: TableSet
    scale_table: np.ndarray
    transforms: HyperpriorTransforms  # the float pixel transforms, with numpy
    exact_hyper: ExactSequential      # the bit-exact hyper-synthesis
    exact_context: ExactContext | None = None  # ``context`` family only
    exact_grouped: ExactGroupedContext | None = None  # ``grouped`` family only
    # Tables of ``z`` per quality level (``L x N``, table ``k * N + c``; ``tables.zl.*``), in
    # weights exported with them; files coded with them carry header flag 0x0001.
    z_level_tables: TableSet | None = None
    _torch_model: object = field(default=None, repr=False)

    @property
    def N(self) -> int:
        return self.transforms.N

    @property
    def M(self) -> int:
        return self.transforms.M

    @property
    def model(self):
        """The torch network (eval mode, CPU), built on first use: for CUDA, for latent
        refinement and for training tools. Imports torch."""
        if self._torch_model is None:
            from .models import build_model

            try:
                model = build_model(self.entry.family, **self.entry.config)
                model.load_state_dict(network_state(self.arrays))
            except (KeyError, RuntimeError, ValueError, TypeError) as exc:
                raise WeightsError(f"weights {self.entry.label} do not fit the {self.entry.family} "
                                   f"model: {exc}") from None
            self._torch_model = model.eval()
        return self._torch_model


def load_model(name: str | None = None, version: int | None = None) -> LoadedModel:
    """Load (once per process and weights folder) the named model, or the default one."""
    folder = weights_dir()
    entry = find_entry(name, version, folder)
    return _load_model(folder, entry)


@lru_cache(maxsize=8)
def _load_model(folder: Path, entry: ModelEntry) -> LoadedModel:
    if entry.family not in FAMILIES:
        raise WeightsError(f"weights {entry.label} are of an unknown model family {entry.family!r} "
                           f"(this lcodec knows {', '.join(FAMILIES)}); upgrade lcodec")
    unknown = sorted(set(entry.config) - CONFIG_KEYS)
    if unknown:
        raise WeightsError(f"weights {entry.label} use {', '.join(unknown)}, which this lcodec does "
                           f"not know; upgrade lcodec")
    return loaded_from_arrays(entry, read_verified(entry, folder))


def loaded_from_arrays(entry: ModelEntry, arrays: dict[str, np.ndarray]) -> LoadedModel:
    """A model ready for coding from everything its weights hold (its base's tensors
    included), e.g. weights being exported that are not written yet."""
    tables = {k[len("tables."):]: v for k, v in arrays.items() if k.startswith("tables.")}
    try:
        transforms = HyperpriorTransforms(arrays, **entry.config)
        z_tables = TableSet.from_arrays(tables, "z")
        y_tables = TableSet.from_arrays(tables, "y")
        scale_table = np.asarray(tables["scale_table"], dtype=np.float64)
        exact_hyper = ExactSequential(arrays, "exact.h_s")
        z_level_tables = None
        if "zl.offsets" in tables:
            z_level_tables = TableSet.from_arrays(tables, "zl")
            expected = transforms.num_levels * transforms.N
            if z_level_tables.size != expected:
                raise ValueError(f"{z_level_tables.size} per-level z tables where "
                                 f"{transforms.num_levels} levels of {transforms.N} channels need {expected}")
        exact_context = None
        exact_grouped = None
        if entry.family == "context":
            exact_context = ExactContext(arrays, scale_floor=entry.config.get("scale_floor"))
        elif entry.family == "grouped":
            exact_grouped = ExactGroupedContext(arrays, entry.config["groups"], entry.config["channel_order"],
                                                scale_floor=entry.config.get("scale_floor"))
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"weights {entry.label} do not fit the {entry.family} model: {exc}") from None
    return LoadedModel(entry, arrays, z_tables, y_tables, scale_table, transforms, exact_hyper,
                       exact_context, exact_grouped, z_level_tables)

"""Carry Adam's moments from one run into a fresh run of the same architecture, widened or not.

A run resumed from its own folder keeps its optimizer state and goes on learning; a fresh run
started from the same weights with a new Adam loses ground first (run 36 stalled at -0.12%
held out in 2979 steps where the same folder, resumed, gained 0.65 point in 2668: see
docs/model-card.md). A run that widens a transform cannot resume its folder, since the shapes
change, but it can start from that folder's moments: :func:`carry_adam_moments` copies them
into the new optimizer, each saved tensor into the leading block of its (possibly wider)
parameter, which is where :func:`lcodec.train.widen.widen_hidden` puts the old weights.

The entries of the new units start with a zero first moment and, as second moment, the mean of
their tensor's saved one: their first updates are then about as large as the old units' (a
zero second moment would make Adam's first steps on them ~3x the learning rate), and grow as
their own gradients accumulate.

Parameters are matched by position, or, with the saved run's parameter names
(:func:`saved_parameter_names`), by name: then a run may also have parameters the saved one
had not, anywhere in its order (residual blocks added with ``--res-a`` / ``--res-s``), and
those start with a fresh state.
"""
from __future__ import annotations

import torch


def carry_adam_moments(saved: dict, opt: torch.optim.Optimizer, trailing_new: bool = False,
                       names: tuple[list[list[str]], list[list[str]]] | None = None) -> int:
    """Load the Adam state dict ``saved`` (``optimizer.state_dict()`` of a run of the same
    model family) into ``opt``, whose parameters may be wider in any dimension.

    Parameters are matched by position, group by group, so the two optimizers must have been
    built the same way (the same family and ``--gain-lr-mult``). With ``trailing_new`` a group
    of ``opt`` may end with parameters the saved one has not (a ``grouped`` model's group
    networks after the ``context`` model's parameters): those start with a fresh state.
    With ``names`` (the saved optimizer's parameter names and ``opt``'s, group by group, in
    their order) parameters are matched by name within their group instead: every saved name
    must be one of ``opt``'s, and ``opt``'s other parameters start with a fresh state.
    Returns how many parameters were widened. Raises ``ValueError`` if the groups differ in
    size (beyond such new trailing parameters, or, by name, a saved parameter this run lacks)
    or a saved moment does not fit the leading block of its parameter.
    """
    if names is not None:
        return _carry(saved, opt, _pairs_by_name(saved, opt, *names))
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    ours = [len(g["params"]) for g in opt.param_groups]
    fits = len(sizes) == len(ours) and all(a == b or (trailing_new and a < b) for a, b in zip(sizes, ours))
    if not fits:
        raise ValueError(f"the saved optimizer has parameter groups of {sizes} tensors, this run "
                         f"{ours}: start it with the family and --gain-lr-mult of the run it "
                         "carries Adam's state from")
    pairs = [(i, p) for saved_group, group in zip(saved["param_groups"], opt.param_groups)
             for i, p in zip(saved_group["params"], group["params"])]
    return _carry(saved, opt, pairs)


def _pairs_by_name(saved: dict, opt: torch.optim.Optimizer, saved_names: list[list[str]],
                   our_names: list[list[str]]) -> list[tuple[int, torch.nn.Parameter]]:
    """(saved index, parameter of ``opt``) for every saved parameter, matched by name."""
    groups = saved["param_groups"]
    if len(groups) != len(opt.param_groups) or len(saved_names) != len(groups) or len(our_names) != len(groups):
        raise ValueError(f"the saved optimizer has {len(groups)} parameter groups, this run "
                         f"{len(opt.param_groups)}: start it with the --gain-lr-mult of the run it "
                         "carries Adam's state from")
    pairs = []
    for saved_group, names, group, ours in zip(groups, saved_names, opt.param_groups, our_names):
        if len(names) != len(saved_group["params"]) or len(ours) != len(group["params"]):
            raise ValueError("a list of parameter names does not match its optimizer group")
        by_name = dict(zip(ours, group["params"]))
        for index, name in zip(saved_group["params"], names):
            if name not in by_name:
                raise ValueError(f"the saved optimizer trains {name}, which this run does not "
                                 "(or in another group): a run can add parameters, not drop them")
            pairs.append((index, by_name[name]))
    return pairs


def _carry(saved: dict, opt: torch.optim.Optimizer, pairs: list[tuple[int, torch.nn.Parameter]]) -> int:
    """Copy the saved state of each pair's index into its parameter (widened); return how many
    were widened."""
    widened = 0
    for index, param in pairs:
        state = saved["state"].get(index)
        if not state:
            continue
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if m.dim() != param.dim() or any(a > b for a, b in zip(m.shape, param.shape)):
            raise ValueError(f"a saved moment of shape {tuple(m.shape)} does not fit a parameter "
                             f"of shape {tuple(param.shape)}")
        if m.shape != param.shape:
            block = tuple(slice(0, n) for n in m.shape)
            m_new = torch.zeros(param.shape, dtype=m.dtype)
            v_new = torch.full(param.shape, float(v.mean()), dtype=v.dtype)
            m_new[block], v_new[block] = m, v
            m, v = m_new, v_new
            widened += 1
        opt.state[param] = {"step": state["step"].clone(), "exp_avg": m.clone(),
                            "exp_avg_sq": v.clone()}
    return widened


def group_names(model: torch.nn.Module, groups: list[dict]) -> list[list[str]]:
    """The names (in ``model``) of each optimizer group's parameters, in their order."""
    ids = {id(p): n for n, p in model.named_parameters()}
    return [[ids[id(p)] for p in g["params"]] for g in groups]


def saved_parameter_names(checkpoint: dict) -> list[list[str]]:
    """The names of the parameters a training checkpoint's optimizer holds, group by group in
    its order: those of a model built from its ``config_json`` with its last run's
    ``--train-only`` and its number of groups (two: the gains apart, ``--gain-lr-mult``).
    Raises ``ValueError`` when that model's parameters do not have the saved moments' shapes
    (a checkpoint this reconstruction does not describe)."""
    import json

    from ..models import build_model
    from .loop import freeze_decoder, param_groups

    config = json.loads(checkpoint["config_json"])
    runs = json.loads(checkpoint.get("state_json", "{}")).get("runs", [])
    model = build_model(config.pop("family"), **config)
    if runs and runs[-1].get("config", {}).get("train_only") == "encoder":
        freeze_decoder(model)
    saved = checkpoint["optimizer"]
    names = group_names(model, param_groups(model, 2.0 if len(saved["param_groups"]) == 2 else 1.0))
    params = dict(model.named_parameters())
    for saved_group, in_group in zip(saved["param_groups"], names):
        shapes = [saved["state"][i]["exp_avg"].shape if i in saved["state"] else None
                  for i in saved_group["params"]]
        if len(shapes) != len(in_group) or any(
                shape is not None and shape != params[n].shape for shape, n in zip(shapes, in_group)):
            raise ValueError("the checkpoint's optimizer does not hold the parameters of the model "
                             "its config describes")
    return names

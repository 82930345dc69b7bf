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
"""
from __future__ import annotations

import torch


def carry_adam_moments(saved: dict, opt: torch.optim.Optimizer, trailing_new: bool = False) -> int:
    """Load the Adam state dict ``saved`` (``optimizer.state_dict()`` of a run of the same
    model family) into ``opt``, whose parameters may be wider in any dimension.

    Parameters are matched by position, group by group, so the two optimizers must have been
    built the same way (the same family and ``--gain-lr-mult``). With ``trailing_new`` a group
    of ``opt`` may end with parameters the saved one has not (a ``grouped`` model's group
    networks after the ``context`` model's parameters): those start with a fresh state.
    Returns how many parameters were widened. Raises ``ValueError`` if the groups differ in
    size (beyond such new trailing parameters) or a saved moment does not fit the leading
    block of its parameter.
    """
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    ours = [len(g["params"]) for g in opt.param_groups]
    fits = len(sizes) == len(ours) and all(a == b or (trailing_new and a < b) for a, b in zip(sizes, ours))
    if not fits:
        raise ValueError(f"the saved optimizer has parameter groups of {sizes} tensors, this run "
                         f"{ours}: start it with the family and --gain-lr-mult of the run it "
                         "carries Adam's state from")
    widened = 0
    pairs = [(i, p) for saved_group, group in zip(saved["param_groups"], opt.param_groups)
             for i, p in zip(saved_group["params"], group["params"])]
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

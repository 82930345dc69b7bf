"""Model families (torch ``nn.Module`` s) and the registry that builds them by name.

Models never touch files, bytes or images: :mod:`lcodec.weights` loads their parameters and
the codec pipeline drives their stages.
"""
from __future__ import annotations

from torch import nn

from .context import CheckerboardContext
from .grouped_context import ChannelGroupedContext
from .hyperprior import DEFAULT_LAMBDAS, MeanScaleHyperprior

FAMILIES: dict[str, type[nn.Module]] = {"hyperprior": MeanScaleHyperprior,
                                        "context": CheckerboardContext,
                                        "grouped": ChannelGroupedContext}


def build_model(family: str, **config) -> nn.Module:
    """Instantiate a model family with its architecture config (``N``, ``M``, ``lambdas``, ...)."""
    try:
        cls = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}") from None
    return cls(**config)


__all__ = ["DEFAULT_LAMBDAS", "FAMILIES", "ChannelGroupedContext", "CheckerboardContext", "MeanScaleHyperprior", "build_model"]

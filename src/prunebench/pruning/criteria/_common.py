"""Helpers shared by the built-in criteria."""

from __future__ import annotations

import torch
from torch import nn

from prunebench.errors import PruningError
from prunebench.pruning.context import PruneContext


def layer_weight(module: nn.Module, ctx: PruneContext, criterion: str) -> torch.Tensor:
    """The detached weight of a Conv2d/Linear layer, or a PruningError naming the criterion."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise PruningError(
            f"criterion {criterion!r} cannot score layer {ctx.name!r} ({type(module).__name__}): "
            "expected a Conv2d or Linear layer with a weight"
        )
    return weight.detach()

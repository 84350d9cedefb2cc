"""A new pruning criterion in one file: the largest absolute weight of each filter."""

import torch
from torch import nn

from prunebench.pruning import PruneContext, register_criterion


@register_criterion("linf")
def linf(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
    """L-infinity norm of each filter (one score per output channel; higher is kept).

    ``ctx`` also offers ``ctx.model``, ``ctx.name``, ``ctx.batches`` (data for data-driven
    criteria), ``ctx.generator`` (seeded RNG) and ``ctx.following_bn()``.
    """
    return module.weight.detach().flatten(1).abs().amax(dim=1)

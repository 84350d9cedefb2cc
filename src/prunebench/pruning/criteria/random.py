"""Random filter pruning: the control baseline (e.g. Liu et al., "Rethinking", ICLR 2019)."""

from __future__ import annotations

import torch
from torch import nn

from prunebench.pruning.context import PruneContext, register_criterion
from prunebench.pruning.criteria._common import layer_weight


@register_criterion("random")
def random_scores(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
    """Seeded uniform random scores (random pruning baseline; Liu et al. ICLR 2019).

    Drawn from ``ctx.generator`` (seeded from ``seed`` by ``prune_structured``, shared by
    the layers of one call in a fixed order), so a seed gives the same choice every time
    and different seeds give different choices. Without a generator, seed 0 is used.
    """
    n = layer_weight(module, ctx, "random").shape[0]
    generator = ctx.generator if ctx.generator is not None else torch.Generator().manual_seed(0)
    return torch.rand(n, generator=generator, dtype=torch.float64)

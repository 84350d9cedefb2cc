"""L2-norm filter pruning (the L2 variant of Li et al., 2017; He et al., IJCAI 2018)."""

from __future__ import annotations

import torch
from torch import nn

from prunebench.pruning.context import PruneContext, register_criterion
from prunebench.pruning.criteria._common import layer_weight


@register_criterion("l2")
def l2_norm(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
    """L2 norm of each filter / neuron (Li et al. 2017 variant; He et al. 2018, SFP).

    One score per output channel: ``||W[i]||_2`` over the filter's weights; bias ignored.
    """
    return layer_weight(module, ctx, "l2").flatten(1).norm(p=2, dim=1)

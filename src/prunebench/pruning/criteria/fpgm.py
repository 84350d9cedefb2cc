"""Filter pruning via geometric median (He et al., CVPR 2019)."""

from __future__ import annotations

import torch
from torch import nn

from prunebench.pruning.context import PruneContext, register_criterion
from prunebench.pruning.criteria._common import layer_weight


@register_criterion("fpgm")
def fpgm(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
    """Distance to the layer's geometric median (He et al. CVPR 2019, FPGM).

    The paper's approximation: ``score_i = sum_j ||W_i - W_j||_2`` over the layer's
    filters. Filters close to all others (near the geometric median) are redundant and
    score low, so they are pruned first. Computed in float64; bias ignored.
    """
    w = layer_weight(module, ctx, "fpgm").flatten(1).to(torch.float64)
    return torch.cdist(w.unsqueeze(0), w.unsqueeze(0)).squeeze(0).sum(dim=1)

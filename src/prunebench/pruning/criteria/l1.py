"""L1-norm filter pruning (Li et al., 2017)."""

from __future__ import annotations

import torch
from torch import nn

from prunebench.errors import PruningError
from prunebench.pruning.context import PruneContext, register_criterion


@register_criterion("l1")
def l1_norm(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
    """Mean absolute weight of each filter / neuron (Li et al. 2017, "Pruning Filters for
    Efficient ConvNets", ICLR; the TPP/GReg convention: L1 norm divided by filter size).

    Works on Conv2d weights (out, in, kh, kw) and Linear weights (out, in): one score per
    output channel (row). Biases are ignored, as in the original method.
    """
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise PruningError(
            f"criterion 'l1' cannot score layer {ctx.name!r} ({type(module).__name__}): "
            "expected a Conv2d or Linear layer with a weight"
        )
    return weight.detach().abs().flatten(1).mean(dim=1)

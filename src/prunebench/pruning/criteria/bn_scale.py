"""Network Slimming's channel score: |BN gamma| (Liu et al., ICCV 2017)."""

from __future__ import annotations

import torch
from torch import nn

from prunebench.errors import PruningError
from prunebench.pruning.context import PruneContext, register_criterion
from prunebench.pruning.criteria._common import layer_weight


@register_criterion("bn_scale")
def bn_scale(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
    """Absolute BatchNorm scale of each channel (Liu et al. ICCV 2017, Network Slimming).

    Uses the BatchNorm that directly consumes the layer's output (found through the
    Torch-Pruning dependency graph, else the module order); a PruningError if there is
    none or it has no affine weight.
    """
    n = layer_weight(module, ctx, "bn_scale").shape[0]
    bn = ctx.following_bn()
    gamma = getattr(bn, "weight", None) if bn is not None else None
    if not isinstance(gamma, torch.Tensor) or tuple(gamma.shape) != (n,):
        raise PruningError(
            f"criterion 'bn_scale' cannot score layer {ctx.name!r}: no affine BatchNorm with "
            f"{n} channels directly follows it; use it on conv-BN layers or pick another "
            "criterion (e.g. l1)"
        )
    return gamma.detach().abs().clone()

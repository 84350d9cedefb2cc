"""First-order Taylor importance (Molchanov et al., CVPR 2019)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.errors import PruningError
from prunebench.pruning.context import PruneContext, register_criterion
from prunebench.pruning.criteria._common import layer_weight

_CACHE_KEY = "taylor_fo"


def _all_scores(ctx: PruneContext) -> dict[str, torch.Tensor]:
    """Taylor-FO scores of every Conv2d/Linear layer, from one pass over ``ctx.batches``.

    Gradients are taken on a deep copy of the model (in its current, eval, mode), so the
    model's weights, ``.grad`` fields and BN statistics are left exactly as they were.
    """
    if not ctx.batches:
        raise PruningError(
            f"criterion 'taylor_fo' needs data to score layer {ctx.name!r}: pass batches "
            "(a few (input, target) pairs) to the pruning call"
        )
    work = copy.deepcopy(ctx.model)
    work.train(ctx.model.training)
    layers = {
        name: m
        for name, m in work.named_modules()
        if name and isinstance(m, (nn.Conv2d, nn.Linear))
    }
    for p in work.parameters():
        p.requires_grad_(True)
        p.grad = None
    ref = next(work.parameters())
    scores = {
        name: torch.zeros(m.weight.shape[0], dtype=torch.float64) for name, m in layers.items()
    }
    with torch.enable_grad():
        for x, y in ctx.batches:
            work.zero_grad(set_to_none=True)
            out = work(x.to(ref.device))
            loss = F.cross_entropy(out, y.to(out.device))
            loss.backward()
            for name, m in layers.items():
                if m.weight.grad is None:  # layer unused in forward
                    continue
                contrib = (m.weight.detach() * m.weight.grad).flatten(1).sum(dim=1)
                if m.bias is not None and m.bias.grad is not None:
                    contrib = contrib + m.bias.detach() * m.bias.grad
                scores[name] += contrib.to("cpu", torch.float64) ** 2
    return scores


@register_criterion("taylor_fo", needs_data=True)
def taylor_fo(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
    """First-order Taylor importance (Molchanov et al. CVPR 2019, "Importance Estimation
    for Neural Network Pruning"), weight variant.

    Per filter: ``(sum over its weights and bias of w * dL/dw)^2`` per batch, summed over
    ``ctx.batches`` (cross-entropy loss). We use the weight group rather than the BN-gamma
    gate so it also works on layers without BatchNorm (Linear, LeNet). Needs batches.
    """
    n = layer_weight(module, ctx, "taylor_fo").shape[0]
    cached = ctx.cache.get(_CACHE_KEY)
    if cached is None:
        cached = ctx.cache[_CACHE_KEY] = _all_scores(ctx)
    scores = cached.get(ctx.name)
    if scores is None or tuple(scores.shape) != (n,):
        raise PruningError(f"criterion 'taylor_fo' found no layer {ctx.name!r} in the model")
    return scores.clone()

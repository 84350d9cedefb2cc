"""Torch-Pruning's importance criteria as prunebench criteria (``tp_*``).

Torch-Pruning (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023) scores a
*group*: every parameter that loses a channel when a layer loses an output channel (the
layer's filter, its BatchNorm, the next layers' input slices). The adapter builds the
dependency graph once per pruning call on a deep copy of the model, takes each scored
layer's group over all its output channels and returns TP's group score per channel
(reduction ``mean`` over the group, no normaliser except LAMP's own), so the model itself,
its gradients and BN statistics are never touched. ``tp_bn_scale`` and ``tp_fpgm`` are not
added: on a prunebench group they rank like the built-in ``bn_scale`` and ``fpgm``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from prunebench.errors import PruningError
from prunebench.pruning.context import PruneContext, register_criterion

_CACHE_KEY = "torch_pruning"


def _workspace(ctx: PruneContext, crit: str, make: Callable[[], Any], data: str | None
               ) -> tuple[nn.Module, Any, Any]:
    """(model copy, its dependency graph, the importance object), built once per call."""
    key = f"{_CACHE_KEY}:{crit}"
    cached = ctx.cache.get(key)
    if cached is not None:
        return cached
    from prunebench.pruning.structured import _build_graph

    work = copy.deepcopy(ctx.model)
    work.train(ctx.model.training)
    for p in work.parameters():
        p.requires_grad_(True)
        p.grad = None
    example = ctx.example_inputs.to(next(work.parameters()).device)
    graph = _build_graph(work, example)
    imp = make()
    if data is not None:
        if not ctx.batches:
            raise PruningError(
                f"criterion {crit!r} needs data to score layer {ctx.name!r}: pass batches "
                "(a few (input, target) pairs) to the pruning call"
            )
        _accumulate(work, ctx.batches, imp, data)
    ctx.cache[key] = (work, graph, imp)
    return ctx.cache[key]


def _accumulate(work: nn.Module, batches: Any, imp: Any, how: str) -> None:
    device = next(work.parameters()).device
    with torch.enable_grad():
        work.zero_grad(set_to_none=True)
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            if how == "grad":  # first-order Taylor: the summed gradient over the batches
                F.cross_entropy(work(x), y).backward()
            else:  # OBD/Hessian: squared per-sample gradients, accumulated by TP
                for i in range(len(x)):
                    work.zero_grad(set_to_none=True)
                    F.cross_entropy(work(x[i : i + 1]), y[i : i + 1]).backward()
                    imp.accumulate_grad(work)
    if how != "grad":  # TP fills .grad from its accumulators; every param needs one
        for p in work.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)


def _score(ctx: PruneContext, module: nn.Module, crit: str, make: Callable[[], Any],
           data: str | None = None) -> torch.Tensor:
    work, graph, imp = _workspace(ctx, crit, make, data)
    try:
        layer = work.get_submodule(ctx.name)
    except AttributeError:
        raise PruningError(f"criterion {crit!r} found no layer {ctx.name!r}") from None
    n = module.weight.shape[0]
    fn = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else \
        tp.prune_linear_out_channels
    group = graph.get_pruning_group(layer, fn, idxs=list(range(n)))
    with torch.no_grad():
        scores = imp(group)
    if scores is None or tuple(scores.shape) != (n,):
        raise PruningError(
            f"criterion {crit!r} gave no score for layer {ctx.name!r} (Torch-Pruning "
            f"{tp.__version__} found nothing to score in its group)"
        )
    return scores.detach().to("cpu", torch.float64)


_IMP = tp.pruner.importance


@register_criterion("tp_magnitude")
def tp_magnitude(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
    """Torch-Pruning group L2 magnitude (DepGraph, Fang et al. CVPR 2023): mean over the
    group (filter, BN, next layers' input slices) of the squared L2 norms."""
    return _score(ctx, module, "tp_magnitude",
                  lambda: _IMP.GroupMagnitudeImportance(p=2, normalizer=None))


@register_criterion("tp_l1")
def tp_l1(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
    """Torch-Pruning group L1 magnitude (Li et al. ICLR 2017, grouped as in DepGraph)."""
    return _score(ctx, module, "tp_l1",
                  lambda: _IMP.GroupMagnitudeImportance(p=1, normalizer=None))


@register_criterion("tp_lamp")
def tp_lamp(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
    """Torch-Pruning LAMP (Lee et al., ICLR 2021, "Layer-adaptive sparsity for the
    magnitude-based pruning"): group L2 magnitudes, LAMP-normalised within the layer."""
    return _score(ctx, module, "tp_lamp", lambda: _IMP.LAMPImportance(p=2))


@register_criterion("tp_taylor", needs_data=True)
def tp_taylor(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
    """Torch-Pruning group first-order Taylor (Molchanov et al. CVPR 2019): |w * dL/dw|
    over the group, gradients summed over ``ctx.batches``."""
    return _score(ctx, module, "tp_taylor",
                  lambda: _IMP.GroupTaylorImportance(normalizer=None), data="grad")


@register_criterion("tp_hessian", needs_data=True)
def tp_hessian(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
    """Torch-Pruning group Hessian / Optimal Brain Damage (LeCun et al. NeurIPS 1989):
    w^2 times the squared per-sample gradients (diagonal Fisher) over ``ctx.batches``."""
    return _score(ctx, module, "tp_hessian",
                  lambda: _IMP.GroupHessianImportance(normalizer=None), data="hessian")

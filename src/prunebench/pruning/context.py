"""The criterion registry and the context a criterion is called with.

A criterion scores the output channels (conv filters / linear neurons) of one layer:
``fn(module, ctx) -> Tensor[out_channels]``; a higher score means more important, i.e. kept.
Registering a new criterion is one file in ``pruning/criteria/`` plus one import line in
``pruning/criteria/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunebench.registry import Registry

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def following_bn_by_order(model: nn.Module, name: str) -> nn.Module | None:
    """The BatchNorm registered right after layer ``name`` in ``model`` (module order).

    A fallback for contexts built without a dependency graph: it relies on the usual
    ``conv, bn`` definition order and checks that the BN width matches the layer's outputs.
    """
    modules = [(n, m) for n, m in model.named_modules() if n]
    for i, (n, m) in enumerate(modules):
        if n != name:
            continue
        width = getattr(m, "weight", None)
        if i + 1 < len(modules) and isinstance(modules[i + 1][1], _NORMS):
            bn = modules[i + 1][1]
            if isinstance(width, torch.Tensor) and bn.num_features == width.shape[0]:
                return bn
        return None
    return None


@dataclass
class PruneContext:
    """What a criterion may look at besides the layer itself.

    ``model`` is the whole (still dense, eval-mode) model and ``name`` the layer's module
    name in it; ``batches`` carries (input, target) pairs for data-driven criteria and
    ``generator`` a seeded RNG for stochastic ones (e.g. random pruning). ``bn_after`` maps
    layer names to the BatchNorm that directly consumes their output (filled from the
    Torch-Pruning dependency graph by :func:`prune_structured`); ``cache`` is shared by all
    layers of one pruning call (e.g. gradients computed once for every layer).
    """

    model: nn.Module
    name: str
    example_inputs: torch.Tensor
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    generator: torch.Generator | None = None
    bn_after: dict[str, nn.Module | None] | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def following_bn(self) -> nn.Module | None:
        """The BatchNorm directly after this layer, or None (graph map, else module order)."""
        if self.bn_after is not None and self.name in self.bn_after:
            return self.bn_after[self.name]
        return following_bn_by_order(self.model, self.name)


Criterion = Callable[[nn.Module, PruneContext], torch.Tensor]

CRITERIA: Registry[Criterion] = Registry("criterion")

#: names of the registered criteria that score from training data (``ctx.batches``)
_NEEDS_DATA: set[str] = set()


def register_criterion(
    name: str, *, doc: str | None = None, needs_data: bool = False
) -> Callable[[Criterion], Criterion]:
    """Register ``fn(module, ctx) -> scores`` under ``name`` (thin wrapper over CRITERIA).

    ``needs_data=True`` declares a data-driven criterion: the pruning stage then hands it
    ``prune.batches`` shuffled training batches as ``ctx.batches`` (else ``None``).
    """
    register = CRITERIA.register(name, doc=doc)

    def deco(fn: Criterion) -> Criterion:
        out = register(fn)
        if needs_data:
            _NEEDS_DATA.add(name)
        else:
            _NEEDS_DATA.discard(name)
        return out

    return deco


def criterion_needs_data(name: str) -> bool:
    """Whether the registered criterion ``name`` scores from data (RegistryError if unknown)."""
    CRITERIA.get(name)
    return name in _NEEDS_DATA

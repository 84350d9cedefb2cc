"""The criterion registry and the context a criterion is called with.

A criterion scores the output channels (conv filters / linear neurons) of one layer:
``fn(module, ctx) -> Tensor[out_channels]``; a higher score means more important, i.e. kept.
Registering a new criterion is one file in ``pruning/criteria/`` plus one import line in
``pruning/criteria/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from prunebench.registry import Registry


@dataclass
class PruneContext:
    """What a criterion may look at besides the layer itself.

    ``model`` is the whole (still dense, eval-mode) model and ``name`` the layer's module
    name in it; ``batches`` carries (input, target) pairs for data-driven criteria and
    ``generator`` a seeded RNG for stochastic ones (e.g. random pruning).
    """

    model: nn.Module
    name: str
    example_inputs: torch.Tensor
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    generator: torch.Generator | None = None


Criterion = Callable[[nn.Module, PruneContext], torch.Tensor]

CRITERIA: Registry[Criterion] = Registry("criterion")


def register_criterion(name: str, *, doc: str | None = None) -> Callable[[Criterion], Criterion]:
    """Register ``fn(module, ctx) -> scores`` under ``name`` (thin wrapper over CRITERIA)."""
    return CRITERIA.register(name, doc=doc)

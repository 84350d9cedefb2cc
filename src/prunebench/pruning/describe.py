"""What a pruning spec does to a model's size and cost, without any data or training.

``describe("resnet56", "cifar10", "*layer*.conv1:0.5")`` builds the model at the dataset's
static shape (:data:`prunebench.data.DATASET_SHAPES`), prunes a randomly initialised copy
(fixed seed) and counts parameters and MACs before and after: the numbers papers report as
parameter sparsity and speedup (Wang et al. arXiv 2301.05219, Tables 1, 6 and 7). Layerwise
counts do not depend on the weights (only on ``ceil(ratio * n)``); for the ``global``
scheme and data-driven criteria they reflect random weights and one random batch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from prunebench.pruning.schemes import StructuredSpec, prune_model

CONVENTION = (
    "MACs = multiply-accumulates of Conv2d and Linear layers per image (no BN, activation, "
    "pooling, addition or bias terms); FLOPs = 2 * MACs; speedup = dense MACs / pruned MACs"
)


def describe(
    model: str,
    dataset: str,
    layers: str | float | list[float],
    skip: Sequence[str] | str = (),
    method: str = "l1",
    scheme: str = "layerwise",
    *,
    max_layer_ratio: float = 0.9,
    normalize: bool = False,
    target_speedup: float | None = None,
    target_param_sparsity: float | None = None,
    seed: int = 0,
    coupled: bool = False,
) -> dict[str, Any]:
    """Parameters, MACs, sparsity, speedup and per-layer widths of a pruned ``model``.

    Returns a JSON-ready dict: ``params_dense``, ``params_pruned``, ``macs_dense``,
    ``macs_pruned``, ``param_sparsity`` and ``flops_sparsity`` (percent), ``speedup``,
    ``layers`` ({name: [kept, total]}), ``ratios`` (applied per layer), ``solved_ratio``
    (with a target), ``model``, ``dataset``, ``input_shape``, ``method``, ``scheme`` and
    ``convention`` (how MACs are counted). ``coupled``: prune residual-tied layers as
    coupled groups (``prune.coupled``); every layer of a group is listed.
    """
    from prunebench.data import dataset_shape
    from prunebench.models import build_model
    from prunebench.pruning.structured import prune_summary

    in_channels, size, num_classes = dataset_shape(dataset)
    input_shape = (in_channels, *size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dense = build_model(
            model, in_channels=in_channels, num_classes=num_classes, input_size=size
        ).eval()
    g = torch.Generator().manual_seed(seed)
    example = torch.randn(1, *input_shape, generator=g)
    x = torch.randn(2, *input_shape, generator=g)
    batches = [(x, torch.randint(0, num_classes, (2,), generator=g))]
    spec = StructuredSpec(
        method=method,
        layers=layers,
        skip=[skip] if isinstance(skip, str) else list(skip),
        scheme=scheme,
        max_layer_ratio=max_layer_ratio,
        normalize=normalize,
        target_speedup=target_speedup,
        target_param_sparsity=target_param_sparsity,
        coupled=coupled,
    )
    pruned = copy.deepcopy(dense)
    outcome = prune_model(
        pruned, spec, example, batches=batches, seed=seed, input_shape=input_shape
    )
    summary = prune_summary(dense, pruned, input_shape)
    return {
        "model": model,
        "dataset": dataset,
        "input_shape": list(input_shape),
        "method": method,
        "scheme": scheme,
        **summary,
        "layers": {
            name: [outcome.n_total[name] - outcome.n_pruned[name], outcome.n_total[name]]
            for name in outcome.kept
        },
        "ratios": dict(outcome.ratios),
        "solved_ratio": outcome.solved_ratio,
        "convention": CONVENTION,
    }

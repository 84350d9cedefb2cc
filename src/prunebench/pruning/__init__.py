"""Pruning: criteria (registry), layer-ratio patterns and structured removal.

>>> from prunebench.pruning import parse_layer_ratios, resolve_layer_ratios, prune_structured
>>> # ratios = resolve_layer_ratios(parse_layer_ratios("*layer*.conv1:0.5"), model,
>>> #                               prunable_layers(model, x))
>>> # outcome = prune_structured(model, ratios, "l1", x)
"""

from prunebench.pruning import criteria  # noqa: F401  (registers the built-in criteria)
from prunebench.pruning.context import CRITERIA, Criterion, PruneContext, register_criterion
from prunebench.pruning.ratios import (
    LayerRatios,
    expand_stage_ratios,
    num_to_prune,
    output_layer_name,
    parse_layer_ratios,
    resolve_layer_ratios,
)
from prunebench.pruning.schemes import (
    SCHEMES,
    ShapeCounter,
    StructuredSpec,
    global_allocation,
    prune_model,
)
from prunebench.pruning.structured import (
    PruneOutcome,
    apply_structure,
    masked_reference,
    prunable_layers,
    prune_structured,
    prune_summary,
)

__all__ = [
    "SCHEMES",
    "ShapeCounter",
    "StructuredSpec",
    "expand_stage_ratios",
    "global_allocation",
    "prune_model",
    "CRITERIA",
    "Criterion",
    "LayerRatios",
    "PruneContext",
    "PruneOutcome",
    "apply_structure",
    "masked_reference",
    "num_to_prune",
    "output_layer_name",
    "parse_layer_ratios",
    "prunable_layers",
    "prune_structured",
    "prune_summary",
    "register_criterion",
    "resolve_layer_ratios",
]

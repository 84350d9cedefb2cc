"""Unstructured (weight-level) pruning masks: magnitude and random, layer or global scope.

A :data:`Masks` maps a parameter name (``"fc1.weight"``, ``"layer1.0.conv1.weight"``) to a
boolean tensor of the weight's shape: ``True`` keeps a weight, ``False`` prunes it (the
``torch.nn.utils.prune`` convention, mask 1 = keep). Prunable weights are the ``.weight`` of
every ``nn.Conv2d`` and ``nn.Linear``; the output layer (:func:`output_layer_name`) only
with ``include_output=True``.

Counts are exact: a sparsity ``s`` prunes ``round(s * n)`` weights (Python's ``round``,
half to even) of each layer's ``n`` (``scope="layer"``) or of all ``n`` prunable weights
together (``scope="global"``). Scores are sorted with a stable sort, so ties go to the
lower position (layer order of ``model.named_modules()``, then flat index): the same
model and sparsity always give the same mask, and the weights pruned at a sparsity
``s1`` are a subset of those pruned at any ``s2 >= s1``.

Magnitude pruning keeps the largest ``|w|`` (Han et al., "Learning both Weights and
Connections for Efficient Neural Networks", NeurIPS 2015); with ``existing`` masks only
the still-kept weights compete and the sparsity counts the weights pruned before, which is
one round of iterative magnitude pruning (Frankle & Carbin, "The Lottery Ticket
Hypothesis", ICLR 2019). Random pruning is the usual control of both.

During training, :class:`MaskHooks` keeps pruned weights at exactly zero: gradients are
masked after ``backward`` and weights re-masked after ``optimizer.step()``, so neither
weight decay nor a momentum buffer can resurrect them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from prunebench.errors import PruningError
from prunebench.models.profile import count_nonzero_params, count_params
from prunebench.pruning.ratios import output_layer_name
from prunebench.train import StepHooks

Masks = dict[str, torch.Tensor]
"""Parameter name -> bool tensor of the weight's shape; True keeps, False prunes."""

Scope = Literal["layer", "global"]

__all__ = [
    "MaskHooks",
    "Masks",
    "apply_masks",
    "magnitude_masks",
    "mask_sparsity",
    "prunable_weights",
    "random_masks",
]


def prunable_weights(model: nn.Module, *, include_output: bool = False) -> dict[str, nn.Parameter]:
    """``{parameter name: weight}`` of every Conv2d/Linear, in module order.

    The output layer's weight is included only with ``include_output=True``.
    """
    out_name = None if include_output else output_layer_name(model)
    weights: dict[str, nn.Parameter] = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or not name or name == out_name:
            continue
        weights[f"{name}.weight"] = module.weight
    return weights


def _check_sparsity(sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise PruningError(f"bad sparsity {sparsity!r}: expected a number in [0, 1)")
    if not math.isfinite(sparsity) or not 0.0 <= sparsity < 1.0:
        raise PruningError(f"bad sparsity {sparsity!r}: expected a number in [0, 1)")
    return float(sparsity)


def _check_scope(scope: str) -> None:
    if scope not in ("layer", "global"):
        raise PruningError(f"bad mask scope {scope!r}: allowed 'layer' or 'global'")


def _num_pruned(sparsity: float, n: int) -> int:
    """``round(sparsity * n)`` (Python's round, half to even)."""
    return min(n, round(sparsity * n))


def _resolve(model: nn.Module, masks: Masks) -> list[tuple[str, nn.Parameter, torch.Tensor]]:
    """Pair each mask with its parameter; PruningError on an unknown name or a bad shape."""
    params = dict(model.named_parameters())
    out = []
    for name, mask in masks.items():
        p = params.get(name)
        if p is None:
            shown = ", ".join(list(params)[:6]) + (", ..." if len(params) > 6 else "")
            raise PruningError(
                f"mask for {name!r} matches no parameter of the model; names are like: {shown}"
            )
        if tuple(mask.shape) != tuple(p.shape):
            raise PruningError(
                f"mask for {name!r} has shape {tuple(mask.shape)}, the weight {tuple(p.shape)}"
            )
        out.append((name, p, mask.to(device=p.device, dtype=torch.bool)))
    return out


def _masks_from_scores(
    scores: dict[str, torch.Tensor],
    counts: dict[str, int] | int,
) -> Masks:
    """Prune the lowest-scoring weights: ``counts`` per layer (dict) or in total (int).

    Ties go to the lower position (stable sort over layers in order, then flat index).
    """
    if isinstance(counts, dict):
        masks: Masks = {}
        for name, s in scores.items():
            flat = s.detach().reshape(-1)
            keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
            k = counts[name]
            if k > 0:
                order = torch.sort(flat, stable=True).indices
                keep[order[:k]] = False
            masks[name] = keep.reshape(s.shape)
        return masks
    flats = [s.detach().reshape(-1).to(torch.float64).cpu() for s in scores.values()]
    allflat = torch.cat(flats) if flats else torch.zeros(0, dtype=torch.float64)
    keep = torch.ones(allflat.numel(), dtype=torch.bool)
    if counts > 0:
        order = torch.sort(allflat, stable=True).indices
        keep[order[:counts]] = False
    masks = {}
    offset = 0
    for name, s in scores.items():
        n = s.numel()
        masks[name] = keep[offset : offset + n].reshape(s.shape).to(s.device)
        offset += n
    return masks


def _select(
    model: nn.Module,
    scores: dict[str, torch.Tensor],
    sparsity: float,
    scope: Scope,
    existing: Masks | None,
) -> Masks:
    """Shared body of magnitude/random masks: already-pruned weights score ``-inf``."""
    sparsity = _check_sparsity(sparsity)
    _check_scope(scope)
    if existing is not None:
        missing = sorted(set(scores) - set(existing))
        extra = sorted(set(existing) - set(scores))
        if missing or extra:
            raise PruningError(
                "existing masks do not cover the prunable weights: "
                f"missing {missing or 'none'}, not prunable {extra or 'none'} "
                "(check include_output)"
            )
        resolved = {name: mask for name, _p, mask in _resolve(model, existing)}
        scores = {name: s.masked_fill(~resolved[name], float("-inf")) for name, s in scores.items()}
    already = {
        name: 0 if existing is None else int((~existing[name].bool()).sum()) for name in scores
    }
    if scope == "layer":
        counts = {name: _num_pruned(sparsity, s.numel()) for name, s in scores.items()}
        for name, k in counts.items():
            if k < already[name]:
                raise PruningError(
                    f"existing mask of {name!r} already prunes {already[name]} of "
                    f"{scores[name].numel()} weights, more than sparsity {sparsity!r} ({k})"
                )
        return _masks_from_scores(scores, counts)
    total = sum(s.numel() for s in scores.values())
    k = _num_pruned(sparsity, total)
    pruned_before = sum(already.values())
    if k < pruned_before:
        raise PruningError(
            f"existing masks already prune {pruned_before} of {total} weights, more than "
            f"sparsity {sparsity!r} ({k})"
        )
    return _masks_from_scores(scores, k)


def magnitude_masks(
    model: nn.Module,
    sparsity: float,
    *,
    scope: Scope = "global",
    include_output: bool = False,
    existing: Masks | None = None,
) -> Masks:
    """Masks keeping the largest-``|w|`` weights (Han et al. 2015; Frankle & Carbin 2019).

    ``sparsity`` in [0, 1) is the fraction of prunable weights pruned in the end:
    ``round(sparsity * n)`` per layer (``scope="layer"``) or over all prunable weights
    (``scope="global"``). With ``existing`` masks the weights they prune stay pruned and
    only the kept ones compete for the rest (one IMP round); PruningError if they already
    prune more than the target.
    """
    weights = prunable_weights(model, include_output=include_output)
    scores = {name: w.detach().abs() for name, w in weights.items()}
    return _select(model, scores, sparsity, scope, existing)


def random_masks(
    model: nn.Module,
    sparsity: float,
    *,
    seed: int,
    scope: Scope = "global",
    include_output: bool = False,
    existing: Masks | None = None,
) -> Masks:
    """Masks pruning uniformly random weights (the control of Frankle & Carbin 2019).

    Same counts and ``existing`` semantics as :func:`magnitude_masks`; the scores are drawn
    on the CPU from ``torch.Generator().manual_seed(seed)`` in layer order, so a seed gives
    the same mask on every device.
    """
    weights = prunable_weights(model, include_output=include_output)
    g = torch.Generator().manual_seed(seed)
    scores = {
        name: torch.rand(w.shape, generator=g, dtype=torch.float64).to(w.device)
        for name, w in weights.items()
    }
    return _select(model, scores, sparsity, scope, existing)


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero the pruned (``False``) weights of ``model`` in place."""
    for _name, p, mask in _resolve(model, masks):
        p.masked_fill_(~mask, 0)


def mask_sparsity(model: nn.Module, masks: Masks) -> dict[str, float | int]:
    """How sparse ``model`` is under ``masks``.

    Keys: ``nonzero_params`` / ``total_params`` / ``sparsity_percent`` over every parameter
    of the model (biases, BatchNorm included; zeros counted as they are in the weights),
    and ``pruned_weights`` / ``masked_weights`` / ``mask_sparsity_percent`` over the
    weights the masks cover (what the masks prune, whatever the weights hold).
    """
    total = count_params(model)
    nonzero = count_nonzero_params(model)
    covered = sum(int(m.numel()) for m in masks.values())
    pruned = sum(int((~m.bool()).sum()) for m in masks.values())
    return {
        "nonzero_params": nonzero,
        "total_params": total,
        "sparsity_percent": 100.0 * (total - nonzero) / total if total else 0.0,
        "pruned_weights": pruned,
        "masked_weights": covered,
        "mask_sparsity_percent": 100.0 * pruned / covered if covered else 0.0,
    }


class MaskHooks(StepHooks):
    """Step hooks that keep masked weights at exactly zero through training.

    ``after_backward`` zeroes the gradients of pruned weights; ``after_step`` re-zeroes the
    weights themselves, so SGD's weight decay and momentum (even a momentum buffer resumed
    from before pruning) never bring them back. Parameters are resolved on the first call
    (and again if a different model is passed).
    """

    def __init__(self, masks: Masks) -> None:
        self.masks = masks
        self._model_id: int | None = None
        self._pairs: list[tuple[nn.Parameter, torch.Tensor]] = []

    def _bind(self, model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
        if self._model_id != id(model):
            self._pairs = [(p, ~mask) for _n, p, mask in _resolve(model, self.masks)]
            self._model_id = id(model)
        return self._pairs

    @torch.no_grad()
    def after_backward(self, model: nn.Module, step: int) -> None:
        for p, pruned in self._bind(model):
            if p.grad is not None:
                p.grad.masked_fill_(pruned, 0)

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        for p, pruned in self._bind(model):
            p.masked_fill_(pruned, 0)

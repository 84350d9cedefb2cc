"""Lottery tickets: iterative magnitude pruning (IMP) with weight rewinding.

Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
Networks" (ICLR 2019): train, prune a fraction ``p`` of the remaining weights by magnitude,
reset the survivors to their initial values, repeat. Frankle, Dziugaite, Roy & Carbin,
"Linear Mode Connectivity and the Lottery Ticket Hypothesis" (ICML 2020) rewind to the
weights of an early epoch ``k`` instead of the initialisation (weight rewinding).

These are the building blocks; the pipeline drives the training between rounds::

    rewind_state = snapshot(model)           # at the rewind epoch (0 = initialisation)
    masks = None
    for _ in imp_schedule(0.9, 0.2):
        train(model, ..., hooks=MaskHooks(masks) if masks else None)
        masks = imp_round(model, masks, 0.2)
        rewind(model, rewind_state, masks)
    train(model, ..., hooks=MaskHooks(masks))  # the ticket
"""

from __future__ import annotations

import math

import torch
from torch import nn

from prunebench.errors import PruningError
from prunebench.pruning.masks import (
    Masks,
    Scope,
    _check_scope,
    _masks_from_scores,
    _resolve,
    apply_masks,
    prunable_weights,
)

__all__ = ["imp_round", "imp_schedule", "rewind", "snapshot"]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model.state_dict()`` (parameters and BatchNorm buffers).

    Take it at the rewind point; later training does not change it.
    """
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def imp_round(
    model: nn.Module,
    masks: Masks | None,
    fraction: float,
    scope: Scope = "global",
    *,
    include_output: bool = False,
) -> Masks:
    """One IMP round: prune ``fraction`` of the still-kept weights by magnitude.

    ``round(fraction * remaining)`` more weights are pruned, over all masked weights
    (``scope="global"``, Frankle & Carbin's choice for deep nets) or per layer
    (``scope="layer"``); weights pruned before stay pruned. ``masks=None`` starts from a
    dense model (the weights of :func:`prunable_weights` with ``include_output``); given
    masks decide which weights take part. Ties go to the lower position, as in
    :func:`prunebench.pruning.masks.magnitude_masks`.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise PruningError(f"bad IMP fraction {fraction!r}: expected a number in [0, 1)")
    if not math.isfinite(fraction) or not 0.0 <= fraction < 1.0:
        raise PruningError(f"bad IMP fraction {fraction!r}: expected a number in [0, 1)")
    _check_scope(scope)
    if masks is None:
        weights = prunable_weights(model, include_output=include_output)
        keep = {
            name: torch.ones(w.shape, dtype=torch.bool, device=w.device)
            for name, w in weights.items()
        }
    else:
        resolved = _resolve(model, masks)
        weights = {name: p for name, p, _m in resolved}
        keep = {name: m for name, _p, m in resolved}
    scores = {
        name: w.detach().abs().masked_fill(~keep[name], float("-inf"))
        for name, w in weights.items()
    }
    pruned = {name: int((~m).sum()) for name, m in keep.items()}
    if scope == "layer":
        counts = {
            name: pruned[name] + round(fraction * (m.numel() - pruned[name]))
            for name, m in keep.items()
        }
        return _masks_from_scores(scores, counts)
    total = sum(m.numel() for m in keep.values())
    before = sum(pruned.values())
    return _masks_from_scores(scores, before + round(fraction * (total - before)))


@torch.no_grad()
def rewind(model: nn.Module, rewind_state: dict[str, torch.Tensor], masks: Masks) -> None:
    """Load the rewind-point state (weights and BatchNorm statistics), then re-apply masks.

    Afterwards every kept weight equals its rewind-point value exactly and every pruned
    weight is zero (Frankle et al. 2020, weight rewinding; rewind epoch 0 is the original
    lottery-ticket reset of Frankle & Carbin 2019).
    """
    model.load_state_dict(rewind_state, strict=True)
    apply_masks(model, masks)


def imp_schedule(target_sparsity: float, fraction_per_round: float) -> list[float]:
    """Cumulative sparsity after each IMP round, ending exactly at ``target_sparsity``.

    Round ``i`` reaches ``1 - (1 - p)^i``; the last round is cut to the target (so it may
    prune less than ``p`` of the remaining weights). ``imp_schedule(0.36, 0.2)`` is
    ``[0.2, 0.36]``; ``imp_schedule(0.5, 0.2)`` is ``[0.2, 0.36, 0.488, 0.5]``; a target of
    0 needs no round (``[]``).
    """
    for value, what in ((target_sparsity, "target sparsity"), (fraction_per_round, "fraction")):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PruningError(f"bad IMP {what} {value!r}: expected a number")
    if not math.isfinite(target_sparsity) or not 0.0 <= target_sparsity < 1.0:
        raise PruningError(f"bad IMP target sparsity {target_sparsity!r}: expected [0, 1)")
    if not math.isfinite(fraction_per_round) or not 0.0 < fraction_per_round < 1.0:
        raise PruningError(f"bad IMP fraction {fraction_per_round!r}: expected a number in (0, 1)")
    out: list[float] = []
    if target_sparsity == 0:
        return out
    i = 1
    while True:
        s = float(f"{1.0 - (1.0 - fraction_per_round) ** i:.12g}")  # 0.2, not 0.19999999999999996
        if s >= target_sparsity - 1e-9:
            out.append(float(target_sparsity))
            return out
        out.append(s)
        i += 1

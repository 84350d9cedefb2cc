"""Epoch budgets and LR schedules of scratch baselines and PxFy pipelines.

Wang et al., "Why is the State of Neural Network Pruning so Confusing?" (arXiv
2301.05219), section 1 and section 4, after Liu et al., "Rethinking the Value of Network
Pruning" (ICLR 2019):

* Scratch-E trains the pruned architecture from scratch for as many epochs as the dense
  model was trained: ``K1`` (200 in the paper's Tables 6/7, appendix C).
* Scratch-B spends the dense model's training FLOPs: ``K1 * F1 / F2`` epochs, ``F1``/``F2``
  the per-image FLOPs (MACs, :func:`prunebench.models.count_macs`) of the dense and the
  pruned model. The pretraining step schedule is stretched to the longer run.
* Total-budget scratch (the SX-A-fair baseline of Mystery 2): as many epochs as the
  pruning pipeline in total, ``K1 + Kp + K2`` (``x + y`` for PxFy; ``Kp`` the pruning
  phase's epochs); its FLOPs analogue (SX-B-fair) ``(K1 + Kp) * F1 / F2 + K2``.
* A scratch run's own budget never includes the dense pretraining (it does not use it).
* ``PxFy, lr``: prune at epoch ``x`` of the dense run, retrain ``y`` epochs from LR ``lr``;
  the retraining schedule divides the LR by 10 per stage down to 1e-5, each stage but the
  last half of the remaining epochs, at most 30 (:func:`pxfy_schedule`).
"""

from __future__ import annotations

import math

from prunebench.errors import RecipeError
from prunebench.schedule import Schedule, parse_schedule

__all__ = [
    "BUDGETS",
    "pxfy_schedule",
    "scratch_b_epochs",
    "scratch_b_schedule",
    "scratch_budget_epochs",
    "scratch_e_epochs",
]

#: ``retrain.budget`` values: what a scratch run's epochs are matched to
BUDGETS = {
    "E": "Scratch-E: the dense model's epochs, K1",
    "B": "Scratch-B: the dense model's training FLOPs, K1*F1/F2 epochs",
    "total": "the pipeline's total epochs, K1 + Kp + K2 (SX-A-fair)",
    "total_flops": "the pipeline's total training FLOPs, (K1 + Kp)*F1/F2 + K2 (SX-B-fair)",
}


def _epochs(value: int, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecipeError(f"bad {what} {value!r}: expected an int >= {minimum}")
    return value


def _positive(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecipeError(f"bad {what} {value!r}: expected a number > 0")
    if not math.isfinite(value) or value <= 0:
        raise RecipeError(f"bad {what} {value!r}: expected a finite number > 0")
    return float(value)


def scratch_e_epochs(dense_epochs: int) -> int:
    """Scratch-E epochs: as many as the dense model was trained, ``K1``.

    >>> scratch_e_epochs(200)
    200
    """
    return _epochs(dense_epochs, "dense epochs", 1)


def scratch_b_epochs(k1: int, f1: float, f2: float, k2: int = 0) -> int:
    """Epochs that spend ``K1 * F1 / F2 + K2`` epochs' worth of the pruned model's FLOPs,
    rounded to nearest (Python's ``round``: halves to even), at least 1. Scratch-B is
    ``k2 = 0``: the dense model's training FLOPs; ``k2`` > 0 adds epochs already at the
    pruned cost (the total-FLOPs budget of a pipeline). A budget of no epochs at all
    (``k1 = k2 = 0``) is a RecipeError, never a silent 1-epoch run: with ``k2 = 0`` it names
    the dense epochs (``bad dense epochs 0``, as Scratch-E does).

    ``k1``: epochs at the dense cost; ``f1``/``f2``: per-image FLOPs (or MACs, only the ratio
    matters) of the dense and the pruned model. ResNet-56 at PR 0.5:

    >>> scratch_b_epochs(200, 125.49e6, 62.96e6)
    399
    >>> scratch_b_epochs(200, 125.49e6, 62.96e6, 120)
    519
    """
    k2 = _epochs(k2, "retraining epochs")
    k1 = _epochs(k1, "dense epochs", 0 if k2 else 1)
    f1 = _positive(f1, "dense FLOPs")
    f2 = _positive(f2, "pruned FLOPs")
    return max(1, round(k1 * f1 / f2 + k2))


def scratch_budget_epochs(
    budget: str, *, dense_epochs: int, used_epochs: int, prune_epochs: int,
    retrain_epochs: int, f1: float, f2: float,
) -> int:
    """The epochs of a scratch run with ``budget`` (see :data:`BUDGETS`).

    ``dense_epochs``: K1, the dense schedule's length; ``used_epochs``: the pretraining
    epochs the pipeline it is matched to used (``x`` for PxFy, else K1); ``prune_epochs``:
    that pipeline's pruning-phase epochs (dense cost); ``retrain_epochs``: K2.

    Every budget needs a dense schedule of at least one epoch (``K1 >= 1``): a scratch
    baseline matched to a dense model trained 0 epochs is refused with ``bad dense epochs
    0``, whatever the budget (never a silent 1-epoch run).
    """
    if budget not in BUDGETS:
        raise RecipeError(f"bad retrain.budget {budget!r}: allowed {', '.join(BUDGETS)}")
    _epochs(dense_epochs, "dense epochs", 1)
    if budget == "E":
        return scratch_e_epochs(dense_epochs)
    if budget == "B":
        return scratch_b_epochs(dense_epochs, f1, f2)
    if budget == "total":
        return _epochs(used_epochs + prune_epochs + retrain_epochs, "total epochs", 1)
    if budget == "total_flops":
        return scratch_b_epochs(used_epochs + prune_epochs, f1, f2, retrain_epochs)
    raise RecipeError(f"bad retrain.budget {budget!r}: allowed {', '.join(BUDGETS)}")


def scratch_b_schedule(schedule: Schedule | str, k1: int, total_epochs: int) -> Schedule:
    """The pretraining schedule stretched from ``k1`` to ``total_epochs`` epochs (Scratch-B).

    A step schedule has its milestones scaled by ``total_epochs / k1``
    (:meth:`Schedule.scaled`: keys rounded, kept strictly increasing); a cosine schedule is
    returned unchanged, since ``lr_at`` already spans the stage's epochs.

    >>> scratch_b_schedule("0:0.1,100:0.01,150:0.001", 200, 519).canonical()
    '0:0.1,260:0.01,389:0.001'
    """
    parsed = parse_schedule(schedule)
    k1 = _epochs(k1, "pretraining epochs", 1)
    total_epochs = _epochs(total_epochs, "total epochs", 1)
    return parsed.scaled(total_epochs / k1)


def _lr_stages(start_lr: float, end_lr: float) -> list[float]:
    """``start_lr, start_lr/10, ...`` while above ``end_lr``, then ``end_lr`` itself."""
    lrs: list[float] = []
    i = 0
    while True:
        lr = float(f"{start_lr / 10**i:.12g}")  # 0.1 / 1000 -> 1e-4, not 1.0000000000000002e-4
        if lr <= end_lr * (1 + 1e-9):
            break
        lrs.append(lr)
        i += 1
    lrs.append(float(end_lr))
    return lrs


def pxfy_schedule(start_lr: float, epochs: int, end_lr: float = 1e-5, max_stage: int = 30) -> str:
    """The paper's retraining schedule for ``PxFy, lr`` pipelines (arXiv 2301.05219, sec. 4).

    LR stages ``start_lr, start_lr/10, ...``, the last one exactly ``end_lr`` (reached by
    factors of 10; a last step of less than 10x when the ratio is not a power of 10). Each
    stage but the last lasts ``min(max_stage, ceil(remaining / 2))`` epochs of the epochs
    still to go; the last takes the rest. With too few epochs for every stage, a middle
    stage that would get no epoch is dropped (the start and end LR always appear); a single
    epoch runs at ``start_lr``. Returns the canonical step string:

    >>> pxfy_schedule(0.1, 90)
    '0:0.1,30:0.01,60:0.001,75:0.0001,83:1e-05'
    >>> pxfy_schedule(0.01, 60)
    '0:0.01,30:0.001,45:0.0001,53:1e-05'
    """
    start_lr = _positive(start_lr, "start LR")
    end_lr = _positive(end_lr, "end LR")
    epochs = _epochs(epochs, "retraining epochs", 1)
    max_stage = _epochs(max_stage, "max stage epochs", 1)
    if start_lr < end_lr:
        raise RecipeError(f"bad start LR {start_lr!r}: must be >= the end LR {end_lr!r}")
    lrs = _lr_stages(start_lr, end_lr)
    if epochs == 1 or len(lrs) == 1:
        return parse_schedule(f"0:{lrs[0]!r}").canonical()
    steps: list[tuple[int, float]] = []
    at = 0
    for i, lr in enumerate(lrs[:-1]):
        remaining = epochs - at
        # Leave at least one epoch for the last stage; the first stage is always kept.
        length = min(max_stage, math.ceil(remaining / 2), remaining - 1)
        if length <= 0 and i > 0:
            continue
        steps.append((at, lr))
        at += max(length, 0)
    steps.append((at, lrs[-1]))
    return Schedule("step", tuple(steps)).canonical()

"""The paper's comparison setups (spec section 2) as predicates over fingerprints.

Setups are computed from what runs actually trained, never declared. Each run's
*trajectory* lists every epoch its final weights descend from (inherited pretraining
epochs, the pruning phase, retraining), each with its LR and SGD settings. For a pair
``a``, ``b`` with the same base (origin), the first ``c = min(inherited pretraining epochs)``
epochs are the same epochs of the same dense run; the rest of each trajectory is its
*remainder*: its *training* epochs (not in a pruning phase) and its *pruning* epochs.
What two results must share (``~`` means within 2% relative)::

    S1    dataset (+ validation split and data checksum), network, and the rate:
          param sparsity ~ equal OR speedup ~ equal ("compression or speedup rate");
          masked runs' rate is their non-zero sparsity (they have no speedup), and a
          masked run's rate is never a filter-pruned run's (the same granularity)
    S2    S1 + the same base: the same dense run (pretraining key without the pruning
          epoch), base checkpoint (sha256) or initialisation
    S3.1  S2 + the same number of training epochs in the remainders
    S3.2  S3.1 + the same LR and SGD settings epoch by epoch over those epochs, and the same
          run-level recipe: batch size, augmentation, precision, calibrated or not
    S4.1  S3.2 + the same number of pruning-phase epochs in the remainders
    S4.2  S4.1 + the same LR and SGD settings epoch by epoch over those epochs
    SX-A  S2 + the same total epochs (inherited pretraining + pruning + retraining)
    SX-B  S2 + total training MACs ~ equal

For two pipelines from one pretrained model (the usual case) the remainders are the
pruning phase and the retraining, and this is the paper's table word for word (S3.1: same
retraining epochs; S3.2: same retraining LR schedule; S4.x: pruning epochs / LR). It also
judges Mystery 2 (spec section 4) exactly: a scratch run inherits nothing (its remainder is
all its training, and its budget excludes the pretraining it never used) and a PxFy run
inherits x epochs, so ``P30F90, LR 0.01`` meets S4.2 with the 120-epoch scratch run when
its LR follows the scratch schedule epoch by epoch, SX-A when only the total epochs match,
and SX-B when the total training MACs match.

The order used for "strictest": the chain S1 < S2 < S3.1 < S3.2 < S4.1 < S4.2 (each
implies the ones before it). SX-A and SX-B are side branches on top of S2 (equal budgets,
not equal recipes): :func:`strictest_setup` returns the strictest *chain* setup and
:func:`setup_label` appends the SX setups that also hold, e.g. ``"S3.2 +SX-A +SX-B"``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from prunebench.compare.errors import CompareError
from prunebench.compare.fingerprint import Epoch, Fingerprint

CHAIN = ("S1", "S2", "S3.1", "S3.2", "S4.1", "S4.2")
SIDE = ("SX-A", "SX-B")
SETUPS = CHAIN + SIDE
RTOL = 0.02  # speedup / sparsity / FLOPs tolerance, relative

DESCRIPTION = {
    "S1": "same dataset, network, compression or speedup rate",
    "S2": "S1 + the same base (pretrained) model",
    "S3.1": "S2 + the same number of retraining epochs",
    "S3.2": "S3.1 + the same retraining LR schedule (and retraining recipe)",
    "S4.1": "S3.2 + the same number of pruning epochs",
    "S4.2": "S4.1 + the same pruning LR schedule",
    "SX-A": "S2 + the same total epochs of pretraining + pruning + retraining",
    "SX-B": "S2 + the same total FLOPs of pretraining + pruning + retraining (within 2%)",
}


def close(a: float | None, b: float | None, rtol: float = RTOL) -> bool:
    """``a`` and ``b`` within ``rtol`` relative to the larger magnitude (equal zeros match);
    an unknown value (``None``) is close to nothing."""
    if a is None or b is None:
        return False
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def _rate(a: Fingerprint, b: Fingerprint) -> bool:
    return close(a.param_sparsity, b.param_sparsity) or close(a.speedup, b.speedup)


Step = tuple[str, float, bool, float]  # an epoch without its phase: lr, momentum, nesterov, wd


def remainders(
    a: Fingerprint, b: Fingerprint
) -> tuple[tuple[list[Step], list[Step]], tuple[list[Step], list[Step]]]:
    """``((train_a, prune_a), (train_b, prune_b))``: the epochs of each trajectory after
    the pretraining epochs both inherited from their (shared) dense run. Training epochs
    are compared by LR and SGD settings, whatever their phase (a PxFy run's remaining
    pretraining epochs line up with a scratch run's first epochs)."""
    c = min(a.inherited_epochs, b.inherited_epochs)

    def split(f: Fingerprint) -> tuple[list[Step], list[Step]]:
        rest = f.trajectory[c:]
        return ([_step(e) for e in rest if e.phase != "prune"],
                [_step(e) for e in rest if e.phase == "prune"])

    return split(a), split(b)


def _step(e: Epoch) -> Step:
    return (e.lr, e.momentum, e.nesterov, e.weight_decay)


class _Pair:
    """Two fingerprints being compared; their remainders are computed once per pair."""

    def __init__(self, a: Fingerprint, b: Fingerprint) -> None:
        self.a, self.b = a, b

    @functools.cached_property
    def rem(self) -> tuple[tuple[list[Step], list[Step]], tuple[list[Step], list[Step]]]:
        return remainders(self.a, self.b)


def _s1(p: _Pair) -> bool:
    a, b = p.a, p.b
    same = a.dataset == b.dataset and a.split == b.split and a.model == b.model
    # a masked (weight-granularity) rate is non-zero sparsity with no speedup; a filter
    # rate removes structure: equal numbers, different compression, never one rate
    kind = a.granularity == b.granularity
    return same and kind and a.data is not None and a.data == b.data and _rate(a, b)


def _s2(p: _Pair) -> bool:
    return p.a.base is not None and p.a.base == p.b.base


def _s31(p: _Pair) -> bool:
    (ta, _), (tb, _) = p.rem
    return len(ta) == len(tb)


def _s32(p: _Pair) -> bool:
    (ta, _), (tb, _) = p.rem
    a, b = p.a, p.b
    return ta == tb and a.recipe == b.recipe and a.calibrated == b.calibrated


def _s41(p: _Pair) -> bool:
    (_, pa), (_, pb) = p.rem
    return len(pa) == len(pb)


def _s42(p: _Pair) -> bool:
    (_, pa), (_, pb) = p.rem
    return pa == pb


#: what each setup adds to the one it extends (parents come first in SETUPS)
_ADDS: dict[str, tuple[str | None, Callable[[_Pair], bool]]] = {
    "S1": (None, _s1),
    "S2": ("S1", _s2),
    "S3.1": ("S2", _s31),
    "S3.2": ("S3.1", _s32),
    "S4.1": ("S3.2", _s41),
    "S4.2": ("S4.1", _s42),
    "SX-A": ("S2", lambda p: p.a.total_epochs == p.b.total_epochs),
    "SX-B": ("S2", lambda p: close(p.a.total_train_macs, p.b.total_train_macs)),
}


def check_setup(name: str) -> str:
    """``name`` if it is a known setup (case-insensitive), else a one-line error."""
    for s in SETUPS:
        if s.lower() == name.strip().lower():
            return s
    raise CompareError(f"unknown setup {name!r}: allowed {', '.join(SETUPS)}")


def satisfies(setup: str, a: Fingerprint, b: Fingerprint) -> bool:
    """Whether the pair ``a``, ``b`` meets ``setup`` (and everything it extends)."""
    name: str | None = check_setup(setup)
    pair = _Pair(a, b)
    while name is not None:
        parent, pred = _ADDS[name]
        if not pred(pair):
            return False
        name = parent
    return True


def satisfied_setups(a: Fingerprint, b: Fingerprint) -> list[str]:
    """Every setup the pair meets, chain first, then SX-A / SX-B (each predicate is
    evaluated at most once, and only when the setup it extends holds)."""
    pair = _Pair(a, b)
    held: dict[str, bool] = {}
    for name in SETUPS:
        parent, pred = _ADDS[name]
        held[name] = (parent is None or held[parent]) and pred(pair)
    return [name for name in SETUPS if held[name]]


def group_satisfied(fps: Sequence[Fingerprint]) -> list[str]:
    """Setups every pair of a group meets (a group of one meets all of them)."""
    sets = [set(satisfied_setups(a, b)) for a, b in itertools.combinations(fps, 2)]
    common = set.intersection(*sets) if sets else set(SETUPS)
    return [s for s in SETUPS if s in common]


def group_satisfies(setup: str, fps: Sequence[Fingerprint]) -> bool:
    return all(satisfies(setup, a, b) for a, b in itertools.combinations(fps, 2))


def strictest(satisfied: Sequence[str]) -> str | None:
    chain = [s for s in CHAIN if s in satisfied]
    return chain[-1] if chain else None


def strictest_setup(a: Fingerprint, b: Fingerprint) -> str | None:
    """The strictest chain setup (S1 < S2 < S3.1 < S3.2 < S4.1 < S4.2) the pair meets."""
    return strictest(satisfied_setups(a, b))


def setup_label(satisfied: Sequence[str]) -> str:
    """E.g. ``"S3.2 +SX-A"``, or ``"none (not even S1)"``."""
    top = strictest(satisfied)
    if top is None:
        return "none (not even S1)"
    return " ".join([top, *(f"+{s}" for s in SIDE if s in satisfied)])


# -- differences in the paper's standard form --------------------------------------------

_LABELS: list[tuple[str, str]] = [
    ("dataset", "dataset"),
    ("split", "data split"),
    ("data", "data checksum"),
    ("model", "network"),
    ("granularity", "granularity"),
    ("param_sparsity", "param sparsity"),
    ("speedup", "speedup"),
    ("base", "base model"),
    ("pruned_at", "pruned at pretraining epoch"),
    ("inherits", "inherits pretrained weights"),
    ("prune_epochs", "pruning epochs"),
    ("prune_lr", "pruning LR schedule"),
    ("retrain_epochs", "retrain epochs"),
    ("retrain_lr", "retrain LR schedule"),
    ("calibrated", "calibrated"),
    ("total_epochs", "total epochs"),
    ("total_train_macs", "total training MACs"),
    ("seed", "seed"),
]

_CLOSE = ("param_sparsity", "speedup", "total_train_macs")


def _fmt(name: str, v: Any) -> str:
    if v is None:
        return "unknown" if name != "pruned_at" else "the end"
    if name == "param_sparsity":
        return f"{v:.2f}%"
    if name == "speedup":
        return f"{v:.2f}x"
    if name == "total_train_macs":
        return f"{v:.4g}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def _dict_diffs(a: tuple[tuple[str, str], ...], b: tuple[tuple[str, str], ...]) -> list[str]:
    da, db = dict(a), dict(b)
    return [f"{k}: {da.get(k)} vs {db.get(k)}" for k in sorted(set(da) | set(db))
            if da.get(k) != db.get(k)]


_STEP_FIELDS = ("lr", "momentum", "nesterov", "weight_decay")


def _epoch_diffs(what: str, xa: list[Step], xb: list[Step]) -> list[str]:
    if len(xa) != len(xb):
        return [f"{what} epochs after the shared pretraining: {len(xa)} vs {len(xb)}"]
    for i, (ea, eb) in enumerate(zip(xa, xb, strict=True)):
        if ea != eb:
            shown = "; ".join(f"{n} {va} vs {vb}" for n, va, vb in zip(
                _STEP_FIELDS, ea, eb, strict=True) if va != vb)
            return [f"{what} epoch {i + 1} after the shared pretraining differs: {shown}"]
    return []


def differences(a: Fingerprint, b: Fingerprint) -> list[str]:
    """What differs between two setups, ``"field: value_a vs value_b"``; rates and FLOPs
    within the 2% tolerance do not count. Method options, run-level training settings and
    the first epoch where the trajectories part are listed too."""
    out: list[str] = []
    for name, label in _LABELS:
        va, vb = getattr(a, name), getattr(b, name)
        if name in _CLOSE and (close(va, vb) or (va is None and vb is None)):
            continue
        if name not in _CLOSE and va == vb:
            continue
        out.append(f"{label}: {_fmt(name, va)} vs {_fmt(name, vb)}")
    out.extend(_dict_diffs(a.method, b.method))
    out.extend(_dict_diffs(a.recipe, b.recipe))
    if a.base is not None and a.base == b.base:
        (ta, pa), (tb, pb) = remainders(a, b)
        out.extend(_epoch_diffs("training", ta, tb))
        out.extend(_epoch_diffs("pruning-phase", pa, pb))
    return out

"""The paper's comparison setups (spec section 2) as predicates over fingerprints.

What two results must share, loose to strict (``~`` means within 2% relative)::

    S1    dataset (+ validation split and data checksum), network, and the rate:
          param sparsity ~ equal OR speedup ~ equal ("compression or speedup rate")
    S2    S1 + the same base model (pretrain stage key, or base checkpoint sha256)
    S3.1  S2 + the same number of retraining epochs
    S3.2  S3.1 + the same retraining LR schedule and the rest of the retraining recipe:
          batch size, weight decay, momentum, nesterov, augmentation, precision,
          calibrated or not (a schedule is LR *per epoch*, so it includes the epochs)
    S4.1  S3.2 + the same number of pruning epochs
    S4.2  S4.1 + the same pruning LR schedule
    SX-A  S2 + the same total epochs (pretrain + prune + retrain)
    SX-B  S2 + total training FLOPs (pretrain + prune + retrain) ~ equal

The order used for "strictest": the chain S1 < S2 < S3.1 < S3.2 < S4.1 < S4.2 (each
implies the ones before it). SX-A and SX-B are side branches on top of S2 (equal budgets,
not equal recipes): they do not order against S3.x/S4.x, so :func:`strictest_setup`
returns the strictest *chain* setup and :func:`setup_label` appends the SX setups that
also hold, e.g. ``"S3.2 +SX-A +SX-B"``. :func:`satisfied_setups` lists all of them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

from prunebench.compare.errors import CompareError
from prunebench.compare.fingerprint import Fingerprint

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


def close(a: float, b: float, rtol: float = RTOL) -> bool:
    """``a`` and ``b`` within ``rtol`` relative to the larger magnitude (equal zeros match)."""
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def _eq(*names: str) -> Callable[[Fingerprint, Fingerprint], bool]:
    return lambda a, b: all(getattr(a, n) == getattr(b, n) for n in names)


def _rate(a: Fingerprint, b: Fingerprint) -> bool:
    return close(a.param_sparsity, b.param_sparsity) or close(a.speedup, b.speedup)


#: what each setup adds to the one it extends
_ADDS: dict[str, tuple[str | None, Callable[[Fingerprint, Fingerprint], bool]]] = {
    "S1": (None, lambda a, b: _eq("dataset", "split", "data", "model")(a, b) and _rate(a, b)),
    "S2": ("S1", _eq("base")),
    "S3.1": ("S2", _eq("retrain_epochs")),
    "S3.2": ("S3.1", _eq("retrain_lr", "batch_size", "weight_decay", "momentum", "nesterov",
                         "augment", "precision", "calibrated")),
    "S4.1": ("S3.2", _eq("prune_epochs")),
    "S4.2": ("S4.1", _eq("prune_lr")),
    "SX-A": ("S2", _eq("total_epochs")),
    "SX-B": ("S2", lambda a, b: close(a.total_train_macs, b.total_train_macs)),
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
    while name is not None:
        parent, pred = _ADDS[name]
        if not pred(a, b):
            return False
        name = parent
    return True


def satisfied_setups(a: Fingerprint, b: Fingerprint) -> list[str]:
    """Every setup the pair meets, chain first, then SX-A / SX-B."""
    return [s for s in SETUPS if satisfies(s, a, b)]


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
    ("param_sparsity", "param sparsity"),
    ("speedup", "speedup"),
    ("base", "base model"),
    ("prune_method", "pruning method"),
    ("prune_config", "pruning options"),
    ("prune_schedule", "pruning schedule"),
    ("prune_epochs", "pruning epochs"),
    ("prune_lr", "pruning LR schedule"),
    ("retrain_epochs", "retrain epochs"),
    ("retrain_lr", "retrain LR schedule"),
    ("retrain_init", "retrain init"),
    ("batch_size", "batch size"),
    ("weight_decay", "weight decay"),
    ("momentum", "momentum"),
    ("nesterov", "nesterov"),
    ("augment", "augmentation"),
    ("precision", "precision"),
    ("calibrated", "calibrated"),
    ("total_epochs", "total epochs"),
    ("total_train_macs", "total training MACs"),
    ("seed", "seed"),
]


def _fmt(name: str, v: Any) -> str:
    if name in ("param_sparsity",):
        return f"{v:.2f}%"
    if name == "speedup":
        return f"{v:.2f}x"
    if name == "total_train_macs":
        return f"{v:.4g}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def _prune_options(a: str, b: str) -> list[str]:
    try:
        da, db = json.loads(a), json.loads(b)
    except ValueError:
        return [f"pruning options: {a} vs {b}"]
    return [
        f"prune.{k}: {da.get(k)} vs {db.get(k)}"
        for k in sorted(set(da) | set(db))
        if da.get(k) != db.get(k)
    ]


def differences(a: Fingerprint, b: Fingerprint) -> list[str]:
    """What differs between two setups, ``"field: value_a vs value_b"``; rates and FLOPs
    within the 2% tolerance do not count."""
    out: list[str] = []
    for name, label in _LABELS:
        va, vb = getattr(a, name), getattr(b, name)
        if name in ("param_sparsity", "speedup", "total_train_macs"):
            if close(float(va), float(vb)):
                continue
        elif va == vb:
            continue
        if name == "prune_config" and "-" not in (va, vb):
            out.extend(_prune_options(va, vb))
        else:
            out.append(f"{label}: {_fmt(name, va)} vs {_fmt(name, vb)}")
    return out

"""Setup fingerprints: everything about a stored run that decides what it may be compared to.

A :class:`Fingerprint` is built from a run's stored recipe (the effective, fully expanded
recipe dict) and its ``result.json`` dict. Schedules are the canonical strings runs store
("0:0.01,60:0.001", "cosine:0.01:0"), so equal schedules compare equal as strings; the
retraining schedule is the *effective* one (``result.retrain``: Scratch-E/B rewrite it).

Base-model identity: the pretrain stage key ``pretrain:<P>`` (it hashes data, model,
pretraining recipe and seed), ``sha256:<hash>`` of a ``base_model`` checkpoint, or
``init:<key>`` for a network that was never pretrained.

A calibrated result (see :mod:`prunebench.compare.calibrate`) carries ``calibrated=True``
and, as its retraining LR schedule, the *grid* it was tuned over (not the chosen LR): two
methods calibrated over one grid share a retraining recipe; the chosen LR is in
``chosen_lr``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from prunebench.compare.errors import CompareError
from prunebench.recipe import recipe_hash

PRECISION = "fp32"  # runs stored before the precision field trained in fp32

#: recipe keys that never define a configuration (seed is the repeat axis)
_NOT_CONFIG = ("name", "device", "plugins", "seed")


@dataclass(frozen=True)
class Fingerprint:
    """The comparison setup of one stored run (plus its final-epoch accuracies)."""

    run_id: str
    config: str  # the run's configuration: recipe hash without seed (seeds collapse)
    label: str  # a short method label, e.g. "l1", "taylor_fo/greg", "l1+scratch"
    # S1: dataset (and split), network, rate
    dataset: str
    split: str
    data: str  # data checksum (or source when there is none)
    model: str
    param_sparsity: float
    flops_sparsity: float
    speedup: float
    # S2: the base model
    base: str
    dense_acc: float | None
    # the pruning stage
    prune_method: str
    prune_config: str  # every other pruning option, canonical JSON
    prune_schedule: str
    prune_epochs: int
    prune_lr: str
    # S3: the retraining recipe
    retrain_epochs: int
    retrain_lr: str
    retrain_init: str
    batch_size: int
    weight_decay: float
    momentum: float
    nesterov: bool
    augment: bool
    precision: str
    # SX: budgets
    total_epochs: int
    total_train_macs: int
    # repeat and provenance
    seed: int
    calibrated: bool = False
    chosen_lr: float | None = None
    test_acc: float | None = None
    val_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _dig(d: dict[str, Any] | None, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return default
        d = d[k]
    return d


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_key(recipe: dict[str, Any], *, calibrated: bool = False) -> str:
    """A hash of the recipe without seed/name/device/plugins/data_dir (and, when
    ``calibrated``, without the retraining LR, which the calibration chose)."""
    r = {k: v for k, v in recipe.items() if k not in _NOT_CONFIG}
    data = dict(r.get("data") or {})
    data.pop("data_dir", None)
    r["data"] = data
    if calibrated and isinstance(r.get("retrain"), dict):
        r["retrain"] = {k: v for k, v in r["retrain"].items() if k != "lr"}
    return recipe_hash(r, 10)


def method_label(recipe: dict[str, Any]) -> str:
    """A short label of the pruning method: criterion, non-default schedule/scheme, init."""
    prune = recipe.get("prune")
    if not prune:
        label = "dense"
    else:
        label = str(prune.get("method", "l1"))
        if prune.get("granularity") == "weight":
            label += "/weight"
        if prune.get("schedule") not in (None, "oneshot"):
            label += f"/{prune['schedule']}"
        if prune.get("scheme") == "global":
            label += "/global"
    init = _dig(recipe, "retrain", "init")
    if init not in (None, "inherit"):
        label += f"+{init}"
    return label


def base_identity(result: dict[str, Any]) -> str:
    stages = result.get("stages") or {}
    dense = result.get("dense") or {}
    if dense.get("sha256"):
        return f"sha256:{dense['sha256']}"
    for kind in ("pretrain", "base", "init"):
        if stages.get(kind):
            return f"{kind}:{stages[kind]}"
    raise CompareError(f"run {result.get('id')!r}: its result names no base-model stage")


def fingerprint(
    row: dict[str, Any], *, calibration: dict[str, Any] | None = None
) -> Fingerprint:
    """The fingerprint of a stored run: a row of ``RunStore.list_runs()`` / ``load()``
    (``id``, ``recipe`` dict, ``result`` dict). ``calibration``: the run's calibration
    (``{"signature": str, "chosen_lr": float}``) when it is a calibrated pick."""
    rid = row.get("id") or "?"
    recipe, result = row.get("recipe") or {}, row.get("result") or {}
    if result.get("status", "done") != "done" or "test_acc" not in result:
        raise CompareError(f"run {rid!r} is not finished (status {row.get('status')!r})")
    data = recipe.get("data") or {}
    model = recipe.get("model") or {}
    prune = recipe.get("prune") or {}
    retrain_cfg = recipe.get("retrain") or {}
    pruned = result.get("pruned") or {}
    retrain = result.get("retrain") or {}
    epochs = result.get("epochs") or {}
    macs = result.get("train_macs") or {}
    rdata = result.get("data") or {}
    split = (
        f"val_size={data.get('val_size')},data_seed={data.get('seed', 0)},"
        f"train_subset={data.get('train_subset')}"
    )
    model_text = str(model.get("name"))
    if model.get("kwargs"):
        model_text += _canon(model["kwargs"])
    prune_rest = {k: v for k, v in prune.items() if k not in ("method", "schedule", "epochs", "lr")}
    retrain_lr = str(retrain.get("lr") or retrain_cfg.get("lr") or "-")
    calibrated = calibration is not None
    if calibrated:
        assert calibration is not None
        retrain_lr = str(calibration["signature"])
    return Fingerprint(
        run_id=rid,
        config=config_key(recipe, calibrated=calibrated),
        label=method_label(recipe),
        dataset=str(data.get("name") or rdata.get("name")),
        split=split,
        data=str(rdata.get("checksum") or rdata.get("source") or "-"),
        model=model_text,
        param_sparsity=float(pruned.get("param_sparsity") or 0.0),
        flops_sparsity=float(pruned.get("flops_sparsity") or 0.0),
        speedup=float(pruned.get("speedup") or 1.0),
        base=base_identity(result),
        dense_acc=_dig(result, "dense", "test_acc"),
        prune_method=str(prune.get("method")) if prune else "dense",
        prune_config=_canon(prune_rest) if prune else "-",
        prune_schedule=str(pruned.get("schedule") or prune.get("schedule") or "-"),
        prune_epochs=int(epochs.get("prune") or 0),
        prune_lr=str(pruned.get("lr") or prune.get("lr") or "-"),
        retrain_epochs=int(retrain.get("epochs", retrain_cfg.get("epochs", 0)) or 0),
        retrain_lr=retrain_lr,
        retrain_init=str(retrain.get("init") or retrain_cfg.get("init") or "-"),
        batch_size=int(data.get("batch_size") or 0),
        weight_decay=float(retrain_cfg.get("weight_decay") or 0.0),
        momentum=float(retrain_cfg.get("momentum") or 0.0),
        nesterov=bool(retrain_cfg.get("nesterov", False)),
        augment=bool(data.get("augment", False)),
        precision=recipe.get("precision") or PRECISION,
        total_epochs=int(epochs.get("total") or 0),
        total_train_macs=int(macs.get("total") or 0),
        seed=int(recipe.get("seed", 0)),
        calibrated=calibrated,
        chosen_lr=None if calibration is None else float(calibration["chosen_lr"]),
        test_acc=result.get("test_acc"),
        val_acc=result.get("val_acc"),
    )

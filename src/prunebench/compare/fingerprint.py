"""Setup fingerprints: everything about a stored run that decides what it may be compared to.

A :class:`Fingerprint` is built from a run's typed record (:class:`prunebench.record.
RunRecord`) and its stored, effective recipe. Two rules keep it honest:

* **Every recipe field is declared** in :data:`FIELD_ROLES`: either it is part of the
  fingerprint (which part: dataset, split, network, base model, method, training recipe,
  trajectory) or it is declared as not affecting comparability, with the reason. A test
  walks the recipe schema and fails on an undeclared field, so a new option can never
  silently be left out (``retrain.orth_reg`` and ``retrain.init_scheme`` once were).
* **No defaults for missing values**: a value the record does not have is ``None`` and a
  setup that needs it is not met (the masked-run sparsity once fell back to 0 %).

The comparison-relevant training is the run's *trajectory* (record.trajectory): every
epoch its final weights descend from, each with its LR and SGD settings. Setups are
computed from it in :mod:`prunebench.compare.setups`.

A calibrated result (see :mod:`prunebench.compare.calibrate`) carries ``calibrated=True``;
its retraining epochs are compared by the *grid* it was tuned over (not the chosen LR):
two methods calibrated over one grid share a retraining recipe.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from prunebench.compare.errors import CompareError
from prunebench.recipe import recipe_hash
from prunebench.record import RunRecord, Segment

#: roles of recipe fields. Part of the fingerprint: dataset, split, network (S1), base
#: (S2: hashed into the origin key), recipe (S3.2: run-level training settings),
#: trajectory (S3.x/S4.x/SX: per-epoch LR and SGD settings, epochs, pruning epoch),
#: method (what is being compared: shown in labels and differences), seed (the repeat
#: axis). "ignore:<why>" declares a field that does not affect comparability.
FIELD_ROLES: dict[str, str] = {
    "name": "ignore:a label",
    "device": "ignore:where it ran, not what it computed (recorded in the result)",
    "plugins": "ignore:plugin *code* is hashed into the stage keys and the config (record.code)",
    "seed": "seed",
    "precision": "recipe",
    "base_model": "base",
    "data.name": "dataset",
    "data.kwargs": "dataset",
    "data.data_dir": "ignore:the data's identity is its checksum (S1), not its path",
    "data.batch_size": "recipe",
    "data.eval_batch_size": "ignore:evaluation batching does not change the weights",
    "data.val_size": "split",
    "data.seed": "split",
    "data.train_subset": "split",
    "data.augment": "recipe",
    "model.name": "network",
    "model.kwargs": "network",
    "pretrain.epochs": "base",
    "pretrain.lr": "base",
    "pretrain.momentum": "base",
    "pretrain.nesterov": "base",
    "pretrain.weight_decay": "base",
    "prune.granularity": "method",
    "prune.method": "method",
    "prune.layers": "method",
    "prune.skip": "method",
    "prune.scheme": "method",
    "prune.max_layer_ratio": "method",
    "prune.normalize": "method",
    "prune.target_speedup": "method",
    "prune.target_param_sparsity": "method",
    "prune.batches": "method",
    "prune.schedule": "method",
    "prune.epochs": "trajectory",
    "prune.lr": "trajectory",
    "prune.reg_granularity": "method",
    "prune.update_interval": "method",
    "prune.reg_ceiling": "method",
    "prune.reg_bias_bn": "method",
    "prune.stabilize_interval": "method",
    "prune.tpp_gram_weight": "method",
    "prune.tpp_weight_l2": "method",
    "prune.tpp_bn_reg": "method",
    "prune.rounds": "method",
    "prune.rewind_epoch": "method",
    "prune.at_epoch": "trajectory",
    "prune.coupled": "method",
    "retrain.epochs": "trajectory",
    "retrain.lr": "trajectory",
    "retrain.momentum": "trajectory",
    "retrain.nesterov": "trajectory",
    "retrain.weight_decay": "trajectory",
    "retrain.init": "method",
    "retrain.init_scheme": "method",
    "retrain.budget": "method",
    "retrain.orth_reg": "method",
    "measure.jsv_every": "ignore:measurements never change the weights",
    "measure.jsv_samples": "ignore:measurements never change the weights",
    "measure.jsv_mode": "ignore:measurements never change the weights",
    "measure.ta_epochs": "ignore:measurements never change the weights",
    "measure.ta_cosine_fraction": "ignore:measurements never change the weights",
    "speed.compile": "ignore:fast path: how a step runs, not what it computes",
    "speed.cuda_graphs": "ignore:fast path: how a step runs, not what it computes",
    "speed.channels_last": "ignore:fast path: how a step runs, not what it computes",
    "speed.fused_sgd": "ignore:fast path: how a step runs, not what it computes",
    "speed.eval_batch_size": "ignore:evaluation batching does not change the weights",
    "log.to": "ignore:experiment trackers only read metrics",
    "log.dir": "ignore:experiment trackers only read metrics",
    "log.tracking_uri": "ignore:experiment trackers only read metrics",
    "log.project": "ignore:experiment trackers only read metrics",
    "log.wandb_mode": "ignore:experiment trackers only read metrics",
}

ROLES = ("seed", "dataset", "split", "network", "base", "recipe", "trajectory", "method")


def paths_with(role: str) -> list[str]:
    return [p for p, r in FIELD_ROLES.items() if r == role]


class Epoch(NamedTuple):
    """One training epoch as setups see it."""

    phase: str
    lr: str  # the LR to 10 significant digits (or the calibration grid's signature)
    momentum: float
    nesterov: bool
    weight_decay: float


@dataclass(frozen=True)
class Fingerprint:
    """The comparison setup of one stored run (plus its final-epoch accuracies)."""

    run_id: str
    config: str  # the run's configuration: everything but the seed (seeds collapse)
    label: str  # a short method label, e.g. "l1", "taylor_fo/greg", "l1+scratch"
    # S1: dataset (and split, data copy), network, rate
    dataset: str
    split: str
    data: str | None  # the data's checksum (None: unknown, then nothing is S1)
    model: str
    granularity: str
    param_sparsity: float | None  # the compression rate: non-zero sparsity when masked
    flops_sparsity: float | None
    speedup: float | None  # None for masked runs
    # S2: what the weights descend from
    base: str | None
    pruned_at: int | None  # pretraining epoch pruned at (None: the end)
    inherits: bool  # False for scratch: no weights inherited
    inherited_epochs: int  # leading pretraining epochs of the trajectory
    dense_acc: float | None
    # the method (what is compared) and the run-level training recipe
    method: tuple[tuple[str, str], ...]
    recipe: tuple[tuple[str, str], ...]
    # the trajectory: every epoch the final weights descend from
    trajectory: tuple[Epoch, ...]
    total_epochs: int
    total_train_macs: int | None
    # informational (what the trajectory says, in the paper's standard form)
    prune_method: str
    prune_schedule: str
    prune_epochs: int
    prune_lr: str
    retrain_epochs: int
    retrain_lr: str
    retrain_init: str
    # repeat and provenance
    seed: int
    calibrated: bool = False
    chosen_lr: float | None = None
    test_acc: float | None = None
    val_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["method"] = dict(self.method)
        out["recipe"] = dict(self.recipe)
        out["trajectory"] = compress(self.trajectory)
        return out


def compress(traj: tuple[Epoch, ...]) -> list[str]:
    """A trajectory as runs of equal epochs: ``"retrain x3 @ lr 0.01 (m 0.9, wd 0.0005)"``."""
    out: list[str] = []
    prev, n = None, 0
    for e in [*traj, None]:
        if e == prev:
            n += 1
            continue
        if prev is not None:
            nest = ", nesterov" if prev.nesterov else ""
            out.append(f"{prev.phase} x{n} @ lr {prev.lr} (m {prev.momentum:g}, "
                       f"wd {prev.weight_decay:g}{nest})")
        prev, n = e, 1
    return out


def _lr_text(lr: float) -> str:
    return f"{lr:.10g}"


def expand(segments: list[Segment], calibration: str | None = None) -> tuple[Epoch, ...]:
    """Per-epoch rows of a trajectory; with ``calibration``, retraining epochs carry the
    grid's signature instead of the chosen LR."""
    rows: list[Epoch] = []
    for s in segments:
        lrs = s.lrs()
        for i, lr in enumerate(lrs):
            text = (f"{calibration}#{i}" if calibration is not None and s.phase == "retrain"
                    else _lr_text(lr))
            rows.append(Epoch(s.phase, text, s.momentum, s.nesterov, s.weight_decay))
    return tuple(rows)


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


_MISSING = object()


def _get(d: Any, dotted: str) -> Any:
    """The value at a dotted path of nested dicts, or ``_MISSING``."""
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return _MISSING
        d = d[part]
    return d


def get_path(d: Any, dotted: str) -> Any:
    """The value at a dotted path of nested dicts (``model.kwargs.depth``), or ``None``."""
    v = _get(d, dotted)
    return None if v is _MISSING else v


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    """The default recipe as a dict (built once: role_values reads it for every run; its
    values are copied out, never handed over)."""
    from prunebench.recipe import default_values

    # (read off the declarations: no validators, so no pruning registry and no torch)
    return default_values()


def role_values(recipe: dict[str, Any], role: str) -> dict[str, Any]:
    """``{path: value}`` of the recipe's fields with ``role``; a section the recipe switched
    off (``prune: null``) gives ``None`` values, a field an older recipe lacks its default."""
    defaults = _defaults()
    out: dict[str, Any] = {}
    for path in paths_with(role):
        section = path.split(".", 1)[0]
        if "." in path and recipe.get(section, _MISSING) is None:
            out[path] = None
            continue
        v = _get(recipe, path)
        out[path] = copy.deepcopy(_get(defaults, path)) if v is _MISSING else v
    return out


def config_key(recipe: dict[str, Any], record: RunRecord | None = None, *,
               calibrated: bool = False) -> str:
    """A hash of every declared field but the seed and the ignored ones (and, when
    ``calibrated``, without the retraining LR the calibration chose), the plugin code and
    the data checksum."""
    parts: dict[str, Any] = {}
    for role in ROLES:
        if role != "seed":
            parts.update(role_values(recipe, role))
    if calibrated:
        parts.pop("retrain.lr", None)
    if record is not None:
        parts["code"] = record.code
        parts["data"] = record.data.checksum
        if parts.get("base_model") is not None:
            # a checkpoint is what its bytes are, not where it lies: one path rewritten
            # with another model between runs is two bases, hence two configurations
            parts["base_model"] = record.origin or ["unknown checkpoint", parts["base_model"]]
    return recipe_hash(parts, 10)


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
    retrain = recipe.get("retrain") or {}
    init = retrain.get("init")
    if init not in (None, "inherit"):
        label += f"+{init}"
        if retrain.get("budget"):
            label += f"-{retrain['budget']}"
    if retrain.get("orth_reg"):
        label += "+orth_reg"
    return label


def _is_text(v: Any) -> str:
    return v if isinstance(v, str) else _canon(v)


def fingerprint(
    row: dict[str, Any], *, calibration: dict[str, Any] | None = None
) -> Fingerprint:
    """The fingerprint of a stored run: a row of ``RunStore.list_runs()`` / ``load()``
    (``id``, ``recipe`` dict, ``record``). ``calibration``: the run's calibration
    (``{"signature": str, "chosen_lr": float}``) when it is a calibrated pick."""
    rid = row.get("id") or "?"
    recipe = row.get("recipe") or {}
    record = row.get("record")
    if record is None and row.get("result") is not None:
        record = RunRecord.parse(row["result"], recipe)
    if not isinstance(record, RunRecord) or not record.finished:
        status = record.status if isinstance(record, RunRecord) else row.get("status")
        raise CompareError(f"run {rid!r} is not finished (status {status!r}): not comparable")
    pruned = record.pruned
    calibrated = calibration is not None
    signature = str(calibration["signature"]) if calibration is not None else None
    dataset = role_values(recipe, "dataset")
    network = role_values(recipe, "network")
    split = role_values(recipe, "split")
    retrain = record.retrain
    prune_cfg = recipe.get("prune") or {}
    return Fingerprint(
        run_id=rid,
        config=config_key(recipe, record, calibrated=calibrated),
        label=method_label(recipe),
        dataset=str(dataset["data.name"]) + (
            _canon(dataset["data.kwargs"]) if dataset["data.kwargs"] else ""),
        split=",".join(f"{k.split('.')[-1]}={v}" for k, v in split.items()),
        data=record.data.checksum,
        model=str(network["model.name"]) + (
            _canon(network["model.kwargs"]) if network["model.kwargs"] else ""),
        granularity=str(pruned.granularity) if pruned is not None else "dense",
        param_sparsity=record.rate_sparsity,
        flops_sparsity=pruned.flops_sparsity if pruned is not None else 0.0,
        speedup=record.rate_speedup,
        base=record.origin,
        pruned_at=record.pruned_at,
        inherits=record.inherits,
        inherited_epochs=record.inherited_epochs,
        dense_acc=record.dense.test_acc,
        method=tuple((k, _is_text(v)) for k, v in sorted(role_values(recipe, "method").items())),
        recipe=tuple((k, _is_text(v)) for k, v in sorted(role_values(recipe, "recipe").items())),
        trajectory=expand(record.trajectory, signature),
        total_epochs=int(record.epochs.total or 0),
        total_train_macs=record.train_macs.total,
        prune_method=str(prune_cfg.get("method")) if prune_cfg else "dense",
        prune_schedule=str(prune_cfg.get("schedule") or "-") if prune_cfg else "-",
        prune_epochs=int(record.epochs.prune or 0),
        prune_lr=str(pruned.lr) if pruned is not None and pruned.lr else "-",
        retrain_epochs=int(record.epochs.retrain or 0),
        retrain_lr=signature or (str(retrain.lr) if retrain and retrain.lr else "-"),
        retrain_init=str(retrain.init) if retrain and retrain.init else "-",
        seed=int(recipe.get("seed", 0)),
        calibrated=calibrated,
        chosen_lr=None if calibration is None else float(calibration["chosen_lr"]),
        test_acc=record.test_acc,
        val_acc=record.val_acc,
    )

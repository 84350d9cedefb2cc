"""The plan: a recipe as a chain of content-keyed stages (a Merkle chain).

Each stage key hashes the stage's own normalised config plus its parent's key: a dense
model shared by many recipes is trained once, a finished stage is never redone, and the
run id (the last stage's key) is a content hash of the whole effective recipe.

The data is part of it: the dense stage's config holds ``data_id``, the content checksum of
the dataset files the run will load (:func:`data_identity`; ``data.data_dir`` is a path, not
an identity, and stays out of the recipe's identity), so the same recipe pointed at another
copy of a dataset gets other keys, and a corrected copy is never mistaken for the old one.

Plugin code is part of it: when a stage uses a registered component from outside the
prunebench package (a plugin's model, dataset, criterion, prune schedule), the stage's
config gets a ``code`` entry with the hash of that component's source file
(:func:`prunebench.registry.code_of`), so editing the plugin changes the run id. Built-in
components add nothing (the package version covers them), so built-in runs keep their ids.
"""

from __future__ import annotations

import hashlib
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunebench.errors import RecipeError
from prunebench.recipe import MeasureCfg, PretrainCfg, PruneCfg, Recipe, RetrainCfg, recipe_hash
from prunebench.recipe import diff as _diff
from prunebench.registry import Registry


@dataclass(frozen=True)
class Stage:
    kind: str  # pretrain | base | init | prune | retrain
    key: str
    config: dict[str, Any]


def _section(cfg: Any, default: Any) -> dict[str, Any]:
    return _diff(cfg.model_dump(mode="json"), default.model_dump(mode="json"))


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def base_stage(recipe: Recipe, stop_at: int | None = None, *, legacy: bool = False) -> Stage:
    """The dense-model stage: pretrain (optionally stopped at ``stop_at``), a base, or init.

    ``legacy``: the key as schema-1 records computed it (no data identity, no plugin code),
    to name the origin of results written before those entered the keys."""
    ident = recipe.identity()
    base: dict[str, Any] = {
        "seed": recipe.seed,
        "data": ident.get("data", {}),
        "model": ident.get("model", {}),
    }
    data_id = None if legacy else data_identity(recipe)
    if data_id is not None:  # the data's content, not its path: every key downstream changes
        base["data_id"] = data_id
    if recipe.precision != "fp32":  # every stage downstream inherits it through the chain
        base["precision"] = recipe.precision
    if recipe.base_model is not None:
        if not Path(recipe.base_model).is_file():
            raise RecipeError(f"base_model {recipe.base_model!r} is not a file")
        kind = "base"
        base["base_model_sha256"] = file_sha256(recipe.base_model)
    elif recipe.pretrain is None:
        kind = "init"
    else:
        kind = "pretrain"
        base["pretrain"] = _section(recipe.pretrain, PretrainCfg())
        if stop_at is not None:
            base["stop_at"] = stop_at
    code = {} if legacy else base_code(recipe)
    if code:
        base["code"] = code
    return Stage(kind, recipe_hash({"stage": kind, **base}), base)


def data_identity(recipe: Recipe) -> str | None:
    """The identity of the data the recipe will load: a content checksum of the files found
    by the lookup order (``data.data_dir``, ``$PRUNEBENCH_DATA``, the user cache, system paths,
    a download), cached by path, size and mtime; for synthetic data a hash of its parameters.
    None for an unknown dataset (loading it fails later) or a plugin dataset without an
    identity function. Missing or unreadable data raises the loaders' one-line DataError."""
    from prunebench.data import DATASETS
    from prunebench.data.core import data_identity as _identity

    d = recipe.data
    if d.name not in DATASETS:
        return None
    return _identity(d.name, d.data_dir, **d.kwargs)


def base_code(recipe: Recipe) -> dict[str, str]:
    """Code identities of the external (plugin) model and dataset the dense stage builds.

    A model resolved by prefix from another package (``torchvision:resnet18``,
    ``timm:resnet18``) contributes ``"<package>==<version>"``: a new release of the package
    builds another dense model, so it gets another key."""
    from prunebench.data import DATASETS
    from prunebench.models import MODELS

    return _codes({"model": (MODELS, recipe.model.name), "data": (DATASETS, recipe.data.name)})


def prune_code(recipe: Recipe) -> dict[str, str]:
    """Code identities of the external (plugin) criterion and prune schedule the prune
    stage looks up by name."""
    from prunebench.pruning import CRITERIA
    from prunebench.pruning.schedules import PRUNE_SCHEDULES, schedule_key

    prune = recipe.prune
    if prune is None:
        return {}
    return _codes({
        "criterion": (CRITERIA, prune.method),
        "schedule": (PRUNE_SCHEDULES, schedule_key(prune.granularity, prune.schedule)),
    })


def _codes(used: dict[str, tuple[Registry[Any], str]]) -> dict[str, str]:
    out = {}
    for role, (registry, name) in used.items():
        ident = registry.code(name) if name in registry else None  # unknown: fails later
        if ident is not None:
            out[role] = ident
    return out


def plan(recipe: Recipe) -> list[Stage]:
    """The recipe's chain of stages, each with its content key."""
    stop = recipe.prune.at_epoch if recipe.prune is not None else None
    stages = [base_stage(recipe, stop)]
    if recipe.prune is not None:
        from prunebench.pruning.schedules import schedule_for

        cfg = {"parent": stages[-1].key, "prune": _section(recipe.prune, PruneCfg())}
        schedule = schedule_for(recipe.prune)
        if schedule.uses_retrain_sgd:
            # the pruning phase trains with the retraining SGD settings: they belong to it
            cfg["sgd"] = _sgd(recipe.retrain)
        if schedule.rule is not None:
            cfg["rule"] = schedule.rule
        code = prune_code(recipe)
        if code:
            cfg["code"] = code
        stages.append(Stage("prune", recipe_hash({"stage": "prune", **cfg}), cfg))
    if recipe.retrain is not None:
        cfg = {
            "parent": stages[-1].key,
            "retrain": _section(recipe.retrain, RetrainCfg()),
            "measure": _section(recipe.measure, MeasureCfg()),
        }
        stages.append(Stage("retrain", recipe_hash({"stage": "retrain", **cfg}), cfg))
    return stages


def _sgd(cfg: RetrainCfg | None) -> dict[str, Any]:
    cfg = cfg or RetrainCfg()
    return {"momentum": cfg.momentum, "nesterov": cfg.nesterov, "weight_decay": cfg.weight_decay}


def run_id(recipe: Recipe) -> str:
    return plan(recipe)[-1].key


class _CallablePlanModule(types.ModuleType):
    """``prunebench.plan`` is both this module and the public :func:`plan`: once the
    submodule is imported the package attribute is the module, so the module calls
    :func:`plan` (``prunebench.plan(recipe)`` keeps working whichever it is)."""

    def __call__(self, recipe: Recipe) -> list[Stage]:
        return plan(recipe)


sys.modules[__name__].__class__ = _CallablePlanModule

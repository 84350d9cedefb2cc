"""Reading a run store (``prunebench runs`` / ``show``) without importing torch.

The CLI's listing commands use these functions; :mod:`prunebench.api` re-exports them.
Nothing here (nor what it imports at module level) may import torch: ``runs`` and ``show``
must start in a fraction of a second (tests/test_startup.py checks it).
"""

from __future__ import annotations

import os
from typing import Any

from prunebench.store import RunStore

#: what ``runs`` can filter and sort on besides recipe fields (``--where`` / ``--sort``)
RUN_FIELDS = ("id", "status", "variant", "study", "model", "dataset", "method", "ratio",
              "lr", "init", "seed", "test_acc", "ta", "speedup", "param_sparsity",
              "created", "updated")
_SORT_ALIASES = {"test acc": "test_acc", "acc": "test_acc", "retrain lr": "lr",
                 "sparsity": "param_sparsity"}


def runs(out: str | os.PathLike[str] = "runs", *, where: list[str] | None = None,
         sort: str | None = None) -> list[dict[str, Any]]:
    """The indexed runs of a store: id, status, recipe and result of each, with what a
    table shows: ``variant`` / ``study`` (from the store's study manifests), ``method``
    (short summary: criterion, schedule, granularity, init), ``ratio``, ``lr`` (effective
    retraining schedule), ``init``, ``seed``, ``test_acc``, ``ta``, ``speedup``.

    ``where``: ``KEY=VALUE`` filters, on recipe fields (as ``compare --where``) or on the
    fields above (``variant=...``, ``status=done``); all must hold. ``sort``: one of the
    fields (``-field``: descending); runs without the value come last."""
    from prunebench.compare.comparison import matches, parse_where
    from prunebench.errors import PrunebenchError
    from prunebench.report.runinfo import (
        init_text,
        lr_text,
        method_summary,
        ratio_text,
        study_index,
        study_of,
        variant_of,
    )

    index = study_index(out)
    rows = RunStore(out).list_runs()
    for r in rows:
        recipe, rec = r.get("recipe") or {}, r.get("record")
        cells = index.get(r["id"])
        r["store_method"] = r.get("method")
        r.update({
            "variant": variant_of(cells), "study": study_of(cells),
            "method": method_summary(recipe) if recipe else r.get("method"),
            "ratio": ratio_text(recipe, rec) if recipe else r.get("ratio"),
            "lr": lr_text(recipe, rec), "init": init_text(recipe, rec),
            "seed": recipe.get("seed", 0),
        })
    own = [w for w in where or [] if w.partition("=")[0].strip() in RUN_FIELDS]
    recipe_filters = parse_where([w for w in where or [] if w not in own])
    for w in own:
        key, _, value = w.partition("=")
        rows = [r for r in rows if str(r.get(key.strip())) == value.strip()
                or _num_eq(r.get(key.strip()), value.strip())]
    rows = [r for r in rows if matches(r.get("recipe") or {}, recipe_filters)]
    if sort:
        desc = sort.startswith("-")
        key = sort.lstrip("-").strip().lower()
        key = _SORT_ALIASES.get(key, key)
        if key not in RUN_FIELDS:
            raise PrunebenchError(f"bad sort column {sort!r}; columns: {', '.join(RUN_FIELDS)}"
                                  " (prefix - for descending)")
        present = [r for r in rows if r.get(key) is not None]
        missing = [r for r in rows if r.get(key) is None]
        numeric = all(isinstance(r[key], int | float) for r in present)
        present.sort(key=lambda r: r[key] if numeric else str(r[key]), reverse=desc)
        rows = present + missing
    return rows


def _num_eq(v: Any, text: str) -> bool:
    try:
        return v is not None and float(v) == float(text)
    except (TypeError, ValueError):
        return False


def show(run_id: str, out: str | os.PathLike[str] = "runs") -> dict[str, Any]:
    """One run: its id, effective recipe, result and per-epoch metrics."""
    return RunStore(out).load(run_id)


def effective_recipe(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(recipe, notes)``: the stored recipe with the retraining the run actually did
    (a Scratch-E/B run trains the dense model's epochs and LR, not the declared ones), and
    one note per field that differs from the declaration."""
    import copy

    recipe = copy.deepcopy(data.get("recipe") or {})
    rec = data.get("record")
    notes: list[str] = []
    eff = getattr(rec, "retrain", None)
    retrain = recipe.get("retrain")
    if eff is not None and isinstance(retrain, dict):
        for key in ("epochs", "lr"):
            value = getattr(eff, key)
            if value is not None and retrain.get(key) != value:
                notes.append(f"retrain.{key}: declared {retrain.get(key)}, trained {value}"
                             + (f" (Scratch-{eff.budget} budget)" if eff.budget else ""))
                retrain[key] = value
    return recipe, notes


def rounded(value: Any) -> Any:
    """Numbers rounded for reading: 2 decimals from 1 up, 4 significant digits below."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return round(value, 2) if abs(value) >= 1 else float(f"{value:.4g}")
    return value

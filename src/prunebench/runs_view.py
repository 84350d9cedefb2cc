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
    table shows: ``variant`` / ``study`` (from the store's study manifests; a run in several
    studies or rows has them joined, and every one in ``variants`` / ``studies``),
    ``method`` (short summary: criterion, schedule, granularity, init), ``ratio``, ``lr``
    (effective retraining schedule), ``init``, ``seed``, ``test_acc``, ``ta``, ``speedup``.

    ``where``: ``KEY=VALUE`` filters, on recipe fields (as ``compare --where``, but on the
    *effective* recipe, what the run trained and the table shows: a Scratch-E run's
    ``retrain.epochs`` / ``retrain.lr`` are the dense model's) or on the fields above
    (``variant=...`` / ``study=...``: any of the run's; ``status=done``; ``lr=...``: any
    spelling of the schedule); all must hold. ``sort``: one of the fields (``-field``:
    descending; ``ratio`` by param sparsity, ``lr`` by the initial LR); runs without the
    value come last either way."""
    from prunebench.compare.comparison import matches, parse_where
    from prunebench.errors import PrunebenchError
    from prunebench.report.runinfo import (
        init_text,
        lr_text,
        method_summary,
        ratio_text,
        studies_of,
        study_index,
        study_of,
        variant_of,
        variants_of,
    )

    key, desc = None, bool(sort and sort.startswith("-"))
    if sort:  # a bad column is an error before the store is read
        key = sort.lstrip("-").strip().lower()
        key = _SORT_ALIASES.get(key, key)
        if key not in RUN_FIELDS:
            raise PrunebenchError(f"bad sort column {sort!r}; columns: {', '.join(RUN_FIELDS)}"
                                  " (prefix - for descending)")
    index = study_index(out)
    rows = RunStore(out).list_runs()
    for r in rows:
        recipe, rec = r.get("recipe") or {}, r.get("record")
        cells = index.get(r["id"])
        r["store_method"] = r.get("method")
        r.update({
            "variant": variant_of(cells), "study": study_of(cells),
            "variants": variants_of(cells), "studies": studies_of(cells),
            "method": method_summary(recipe) if recipe else r.get("method"),
            "ratio": ratio_text(recipe, rec) if recipe else r.get("ratio"),
            "lr": lr_text(recipe, rec), "init": init_text(recipe, rec),
            "seed": recipe.get("seed", 0),
        })
    own = [w for w in where or [] if w.partition("=")[0].strip() in RUN_FIELDS]
    recipe_filters = parse_where([w for w in where or [] if w not in own])
    for w in own:
        field, _, value = w.partition("=")
        rows = [r for r in rows if _field_matches(r, field.strip(), value.strip())]
    if recipe_filters:  # what the run trained (the table's LR column), not the declaration
        rows = [r for r in rows if matches(effective_recipe(r)[0], recipe_filters)]
    if key is not None:
        values = {id(r): _sort_value(r, key) for r in rows}
        present = [r for r in rows if values[id(r)] is not None]
        missing = [r for r in rows if values[id(r)] is None]
        numeric = all(isinstance(values[id(r)], int | float) for r in present)
        present.sort(key=lambda r: values[id(r)] if numeric else str(values[id(r)]),
                     reverse=desc)
        rows = present + missing
    return rows


def _sort_value(r: dict[str, Any], key: str) -> Any:
    """What ``--sort`` orders by: the number behind a text column (``ratio``: param
    sparsity, ``lr``: the initial LR), else the field itself; None sorts last."""
    from prunebench.report.runinfo import lr_value, ratio_value

    if key == "ratio":
        return ratio_value(r.get("recipe") or {}, r.get("record"))
    if key == "lr":
        return lr_value(r.get("lr"))
    return r.get(key)


def _field_matches(r: dict[str, Any], key: str, value: str) -> bool:
    """A ``--where`` on a column: ``variant`` / ``study`` match any of the run's (a run
    in several studies or rows), ``lr`` any spelling of the schedule, numbers by value."""
    if key in ("variant", "study"):
        return value in (r.get("variants" if key == "variant" else "studies") or [])
    got = r.get(key)
    if key == "lr":
        from prunebench.compare.comparison import _same_schedule

        return got == value or _same_schedule("lr", got, value)
    return str(got) == value or _num_eq(got, value)


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

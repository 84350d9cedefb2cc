"""The library API a notebook user calls; the CLI is a thin layer over these functions."""

from __future__ import annotations

import os
from typing import Any

from prunebench.pipeline import RunResult, run, run_cell, validate_recipes  # noqa: F401
from prunebench.recipe import Recipe, apply_overrides, build_recipe, read_yaml
from prunebench.store import RunStore
from prunebench.studies.grid import expand_grid
from prunebench.train import Reporter, report


def load_recipes(
    source: str | os.PathLike[str] | dict[str, Any], overrides: list[str] | None = None
) -> list[tuple[dict[str, Any], Recipe]]:
    """Every recipe a file (or dict) describes: one, or one per grid cell, validated.

    Overrides apply to every cell after grid expansion, so ``--set`` always wins.
    """
    raw = source if isinstance(source, dict) else read_yaml(source)
    label = "recipe" if isinstance(source, dict) else str(source)
    return [
        (cell, build_recipe(apply_overrides(cell_raw, overrides), source=label))
        for cell, cell_raw in expand_grid(raw)
    ]


def cell_label(index: int, total: int, cell: dict[str, Any]) -> str:
    """How errors name a grid cell: "" for a single recipe, else its number and values."""
    if total <= 1:
        return ""
    values = ", ".join(f"{k}={v!r}" for k, v in cell.items())
    return f"grid cell {index + 1} of {total}" + (f" ({values})" if values else "")


def run_all(
    source: str | os.PathLike[str] | dict[str, Any],
    out: str | os.PathLike[str] = "runs",
    *,
    overrides: list[str] | None = None,
    reporter: Reporter | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    loggers: list[Any] | None = None,
) -> list[tuple[dict[str, Any], RunResult]]:
    """Run every recipe of a file (all grid cells).

    ``loggers``: experiment-tracker objects every run reports to (see
    :mod:`prunebench.loggers`), besides those the recipe's ``log:`` section names.

    Every cell is validated first (recipe, layer patterns against the built model, the
    files it names): bad input raises a one-line error naming the cell and nothing is
    written. Then every cell runs; one that diverges or fails does not stop the others:
    each result's ``status`` is ``done``, ``diverged`` or ``failed``.

    A recipe with ``retrain.calibrate`` runs as an LR calibration (one run per grid LR,
    selection on validation; see :mod:`prunebench.compare.calibrate`).
    """
    from prunebench.compare.calibrate import (
        calibration_requested,
        expand_calibration,
        run_calibration,
    )

    if calibration_requested(source, overrides):
        raw = source if isinstance(source, dict) else read_yaml(source)
        label = "recipe" if isinstance(source, dict) else str(source)
        _, _, points = expand_calibration(raw, overrides, label)
        validate_recipes(
            [(f"calibration run {i + 1} of {len(points)} (lr={p.lr:g})", p.recipe)
             for i, p in enumerate(points)],
            device=device, data_dir=data_dir,
        )
        return run_calibration(
            source, out, overrides=overrides, reporter=reporter, device=device, data_dir=data_dir
        )
    recipes = load_recipes(source, overrides)
    checked = validate_recipes(
        [(cell_label(i, len(recipes), cell), r) for i, (cell, r) in enumerate(recipes)],
        device=device, data_dir=data_dir,
    )
    report(reporter, "begin", len(checked), str(source) if not isinstance(source, dict)
           else "recipe")
    items = []
    for i, ((cell, _), r) in enumerate(zip(recipes, checked, strict=True)):
        label = ", ".join(f"{k}={v}" for k, v in cell.items()) or (r.name or f"run {i + 1}")
        report(reporter, "start_cell", label, 1)
        res = run_cell(r, out, reporter=reporter, loggers=loggers)
        report(reporter, "end_cell", res)
        items.append((cell, res))
    return items


def not_done(items: list[tuple[dict[str, Any], RunResult]]) -> list[tuple[dict[str, Any],
                                                                       RunResult]]:
    """The cells whose run did not finish (``diverged`` or ``failed``)."""
    return [(c, r) for c, r in items if r.status != "done"]


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

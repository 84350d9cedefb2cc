"""The library API a notebook user calls; the CLI is a thin layer over these functions."""

from __future__ import annotations

import os
from typing import Any

from prunebench.pipeline import RunResult, run, run_cell, validate_recipes  # noqa: F401
from prunebench.recipe import Recipe, apply_overrides, build_recipe, read_yaml
from prunebench.runs_view import (  # noqa: F401  (re-exported: torch-free store reading)
    _SORT_ALIASES,
    RUN_FIELDS,
    _num_eq,
    effective_recipe,
    rounded,
    runs,
    show,
)
from prunebench.store import RunStore  # noqa: F401
from prunebench.studies.grid import check_grid_overrides, expand_grid
from prunebench.train import Reporter, report


def load_recipes(
    source: str | os.PathLike[str] | dict[str, Any], overrides: list[str] | None = None
) -> list[tuple[dict[str, Any], Recipe]]:
    """Every recipe a file (or dict) describes: one, or one per grid cell, validated.

    Overrides apply to every cell after grid expansion; one that would replace a grid
    axis (or the seeds of ``seeds: N``) is an error.
    """
    raw = source if isinstance(source, dict) else read_yaml(source)
    label = "recipe" if isinstance(source, dict) else str(source)
    check_grid_overrides(raw, overrides)  # --set never replaces what the grid varies
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

"""The library API a notebook user calls; the CLI is a thin layer over these functions."""

from __future__ import annotations

import os
from typing import Any

from prunebench.pipeline import RunResult, run
from prunebench.recipe import Recipe, apply_overrides, build_recipe, read_yaml
from prunebench.store import RunStore
from prunebench.studies.grid import expand_grid
from prunebench.train import Reporter


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


def run_all(
    source: str | os.PathLike[str] | dict[str, Any],
    out: str | os.PathLike[str] = "runs",
    *,
    overrides: list[str] | None = None,
    reporter: Reporter | None = None,
    device: str | None = None,
    data_dir: str | None = None,
) -> list[tuple[dict[str, Any], RunResult]]:
    """Run every recipe of a file (all grid cells); all are validated before any runs.

    A recipe with ``retrain.calibrate`` runs as an LR calibration (one run per grid LR,
    selection on validation; see :mod:`prunebench.compare.calibrate`).
    """
    from prunebench.compare.calibrate import calibration_requested, run_calibration

    if calibration_requested(source, overrides):
        return run_calibration(
            source, out, overrides=overrides, reporter=reporter, device=device, data_dir=data_dir
        )
    recipes = load_recipes(source, overrides)
    return [
        (cell, run(r, out, reporter=reporter, device=device, data_dir=data_dir))
        for cell, r in recipes
    ]


def runs(out: str | os.PathLike[str] = "runs") -> list[dict[str, Any]]:
    """The indexed runs of a store: id, status, recipe and result of each."""
    return RunStore(out).list_runs()


def show(run_id: str, out: str | os.PathLike[str] = "runs") -> dict[str, Any]:
    """One run: its id, effective recipe, result and per-epoch metrics."""
    return RunStore(out).load(run_id)

"""Grid expansion: a recipe with a ``grid:`` section becomes one recipe per cell.

``grid`` maps dotted recipe keys to lists of values; cells are the product over the axes
in the order given (the last axis varies fastest)::

    grid:
      prune.layers: [0.5, 0.8]
      retrain.lr: ["0:0.01", "0:0.001"]

Cells that share their pretrain stage share its key, so the dense model is trained once.
``seeds: N`` adds a last axis ``seed: [seed, seed + 1, ..., seed + N - 1]``.

Overrides (``--set``) apply to every cell after expansion, so they win over the grid's
values; :func:`check_grid_overrides` refuses the one that would silently undo an axis the
recipe promises, a ``seed`` with ``seeds: N`` or a grid over ``seed`` (all N seeds would
be one run).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from prunebench.errors import RecipeError
from prunebench.recipe import set_path


def expand_grid(raw: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``[(cell, recipe_dict), ...]`` where ``cell`` maps each grid key to its value.

    A recipe without ``grid`` expands to itself (one cell, ``{}``).
    """
    raw = copy.deepcopy(raw)
    grid = raw.pop("grid", None) or {}
    seeds = raw.pop("seeds", None)
    if not isinstance(grid, dict):
        raise RecipeError(f"grid must map recipe keys to lists of values, got {grid!r}")
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise RecipeError(f"seeds must be a whole number >= 1, got {seeds!r}")
        if "seed" in grid:
            raise RecipeError("give seeds: N or a grid over seed, not both")
        first = raw.get("seed", 0)
        grid = {**grid, "seed": list(range(first, first + seeds))}
    if not grid:
        return [({}, raw)]
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise RecipeError(f"grid axis {key!r} must be a non-empty list, got {values!r}")
    cells = []
    for combo in itertools.product(*grid.values()):
        cell = dict(zip(grid.keys(), combo, strict=True))
        recipe = copy.deepcopy(raw)
        for key, value in cell.items():
            set_path(recipe, key, value)
        cells.append((cell, recipe))
    return cells


def check_grid_overrides(raw: dict[str, Any], overrides: list[str] | None) -> None:
    """A one-line error for an override of a grid axis: ``seed`` when ``raw`` has a seed
    axis (``seeds: N`` or ``grid: {seed: [...]}``), or any key the grid varies (or a section
    above it: ``retrain`` replaces ``retrain.lr``). Applied after expansion it would give
    every cell the same value: N cells of one run, each labelled by a value it did not run.
    Call it before :func:`expand_grid`'s cells get the overrides."""
    from prunebench.studies.spec import overlaps

    if not isinstance(raw, dict):
        return
    grid = raw.get("grid")
    axes = [str(k) for k in grid] if isinstance(grid, dict) else []
    if raw.get("seeds") is not None:
        axes.append("seed")
    for item in overrides or []:
        if not isinstance(item, str) or "=" not in item:
            continue  # apply_overrides names the malformed ones
        key = item.partition("=")[0].strip()
        hit = next((a for a in axes if overlaps(key, a)), None)
        if hit == "seed":
            raise RecipeError(
                f"--set {item.strip()}: the recipe's seeds (seeds: N or a grid over seed) "
                "are its seed axis; set the first seed with seed: in the recipe, or drop "
                "seeds: to run one seed")
        if hit is not None:
            raise RecipeError(
                f"--set {item.strip()}: {key!r} replaces the grid axis {hit!r}: every grid "
                "cell would run one value under its own; change the grid in the recipe")

"""prunebench: fair, fast and explainable neural-network pruning comparisons.

The public API is small::

    import prunebench
    result = prunebench.run("examples/tiny.yaml", out="runs")   # -> RunResult
    result.test_acc        # final-epoch test accuracy (%), never the best test epoch
    prunebench.runs("runs")            # the indexed runs
    prunebench.show(result.id, "runs")  # recipe, result, per-epoch metrics

The names are imported on first use (PEP 562), so ``import prunebench`` and the command
line's start-up do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_recipes": "prunebench.api",
    "run_all": "prunebench.api",
    "runs": "prunebench.api",
    "show": "prunebench.api",
    "PrunebenchError": "prunebench.errors",
    "RunResult": "prunebench.pipeline",
    "plan": "prunebench.pipeline",
    "run": "prunebench.pipeline",
    "Recipe": "prunebench.recipe",
    "build_recipe": "prunebench.recipe",
    "load_recipe": "prunebench.recipe",
}

if TYPE_CHECKING:  # pragma: no cover
    from prunebench.api import load_recipes, run_all, runs, show
    from prunebench.errors import PrunebenchError
    from prunebench.pipeline import RunResult, plan, run
    from prunebench.recipe import Recipe, build_recipe, load_recipe


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prunebench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "PrunebenchError",
    "Recipe",
    "RunResult",
    "build_recipe",
    "load_recipe",
    "load_recipes",
    "plan",
    "run",
    "run_all",
    "runs",
    "show",
]

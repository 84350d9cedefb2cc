"""prunebench: fair, fast and explainable neural-network pruning comparisons.

The public API is small::

    import prunebench
    result = prunebench.run("examples/tiny.yaml", out="runs")   # -> RunResult
    result.test_acc        # final-epoch test accuracy (%), never the best test epoch
    prunebench.runs("runs")            # the indexed runs
    prunebench.show(result.id, "runs")  # recipe, result, per-epoch metrics
"""

__version__ = "0.1.0"

from prunebench.api import load_recipes, run_all, runs, show  # noqa: E402
from prunebench.errors import PrunebenchError  # noqa: E402
from prunebench.pipeline import RunResult, plan, run  # noqa: E402
from prunebench.recipe import Recipe, build_recipe, load_recipe  # noqa: E402

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

"""Where a study's cells run: in this process, in a local process pool, or on Ray.

Cells are independent runs; the only thing they share is stages (a dense model), which
the store builds once under a file lock. To avoid workers queueing on that lock, one cell
per distinct pretraining stage runs first, then all the others.

Ray (``backend="ray"``) needs ``pip install 'prunebench[ray]'`` and, across machines, a
run store on a filesystem every worker sees (``--out`` on NFS or similar).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from prunebench.errors import RecipeError

BACKENDS = ("serial", "process", "ray")


def _run_one(recipe: dict[str, Any], out: str, threads: int) -> str:
    """Worker entry point: one run, returns its id (results are in the store)."""
    import torch

    from prunebench.pipeline import run

    torch.set_num_threads(threads)
    return run(recipe, out).id


def run_cells(
    recipes: Sequence[dict[str, Any]],
    groups: Sequence[str],
    out: str,
    *,
    workers: int = 1,
    backend: str = "serial",
    serial: Callable[[int], str] | None = None,
) -> list[str]:
    """Run ``recipes`` (as dicts); ``groups[i]`` is recipe i's pretraining key. Run ids.

    ``serial(i)`` runs cell i in this process (with progress bars) for the serial backend.
    """
    if backend not in BACKENDS:
        raise RecipeError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if workers < 1:
        raise RecipeError(f"workers must be >= 1, got {workers}")
    if backend == "serial" or workers == 1 or len(recipes) <= 1:
        assert serial is not None
        return [serial(i) for i in range(len(recipes))]
    first: dict[str, int] = {}
    for i, g in enumerate(groups):
        first.setdefault(g, i)
    waves = [sorted(first.values()), [i for i in range(len(recipes)) if i not in first.values()]]
    threads = max(1, (os.cpu_count() or 1) // workers)
    ids: dict[int, str] = {}
    if backend == "process":
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for wave in waves:
                futures = {i: pool.submit(_run_one, recipes[i], out, threads) for i in wave}
                ids.update({i: f.result() for i, f in futures.items()})
    else:
        try:
            import ray
        except ImportError:
            raise RecipeError(
                "backend 'ray' needs Ray: pip install 'prunebench[ray]'"
            ) from None
        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True)
        remote = ray.remote(num_cpus=threads)(_run_one)
        for wave in waves:
            refs = {i: remote.remote(recipes[i], out, threads) for i in wave}
            ids.update({i: ray.get(ref) for i, ref in refs.items()})
    return [ids[i] for i in range(len(recipes))]

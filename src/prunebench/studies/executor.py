"""Where a study's cells run: in this process, in a local process pool, or on Ray.

Cells are independent runs; the only thing they share is stages (a dense model), which
the store builds once under a file lock. To avoid workers queueing on that lock, one cell
per distinct pretraining stage runs first, then all the others.

With stacking (``stack`` k > 1) the unit of work is a *job*: up to k cells whose
retraining may train as one fused model (:func:`prunebench.stacked_runs.stack_jobs`); each
worker takes one job and runs it with :func:`prunebench.stacked_runs.run_stacked`.

A cell that diverges or fails never stops the others: every backend returns one
:class:`~prunebench.record.RunResult` per cell (``status`` done / diverged / failed); a
worker process that dies fails the cells in flight at that moment (the pool is renewed for
the rest). ``KeyboardInterrupt`` still stops everything (an interrupted run resumes on
the next call).

Only the driver writes the run index. Worker processes (process and Ray backends) run with
``PRUNEBENCH_INDEX_WRITES=0``: they write their run folders (the truth) and never open
the SQLite index, which is unreliable on shared filesystems; the driver records each
finished job's runs from their folders (:meth:`prunebench.store.RunStore.record_folders`).
Stages are shared through lease locks (:func:`prunebench.store.locked`), which work
across machines and are taken over when their holder dies.

Ray (``backend="ray"``) needs ``pip install 'prunebench[ray]'`` and, across machines, a
run store on a filesystem every worker sees (``--out`` on NFS or similar).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from prunebench.errors import PrunebenchError, RecipeError
from prunebench.record import RunResult

log = logging.getLogger("prunebench.studies")

BACKENDS = ("serial", "process", "ray")
#: set to ``0`` in worker processes: their :class:`~prunebench.store.RunStore` never writes
#: the index
WORKER_ENV = "PRUNEBENCH_INDEX_WRITES"


def run_job(recipes: Sequence[dict[str, Any]], out: str, stack: int = 1,
            reporter: Any = None) -> list[RunResult]:
    """One job: its runs' results (failures included: the results' status says
    ``failed``; only bad input, which validation rules out, is raised). A job of several
    recipes is stacked (at most ``stack`` copies per fused model)."""
    from prunebench.pipeline import run_cell
    from prunebench.stacked_runs import run_stacked

    if stack > 1:
        return run_stacked(recipes, out, max_k=stack, reporter=reporter)
    return [run_cell(r, out, reporter=reporter) for r in recipes]


def _run_one(recipes: Sequence[dict[str, Any]], out: str, threads: int,
             stack: int = 1) -> list[RunResult]:
    """Worker entry point: :func:`run_job` with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    before = os.environ.get(WORKER_ENV)
    os.environ[WORKER_ENV] = "0"  # only the driver writes the index (see the module doc)
    try:
        return run_job(recipes, out, stack)
    finally:  # (Ray's local mode runs this in the driver)
        if before is None:
            os.environ.pop(WORKER_ENV, None)
        else:
            os.environ[WORKER_ENV] = before


def _lost(recipe: dict[str, Any], out: str, exc: BaseException) -> RunResult:
    """The result of a cell whose worker died or raised (the cell failed; nothing to load)."""
    from pathlib import Path

    from prunebench.pipeline import _coerce, _error_text
    from prunebench.plan import plan

    rid = plan(_coerce(recipe, None, None, None))[-1].key
    return RunResult(rid, Path(out) / rid, {"id": rid, "status": "failed",
                                            "error": _error_text(exc)}, recipe)


def _index_runs(out: str, got: Sequence[RunResult]) -> None:
    """Record ``got``'s runs in the index from their folders (in the driver). The folders
    are the truth: a failure here only leaves the index behind, which any later read
    reconciles, so it is logged, never raised."""
    from prunebench.store import RunStore

    try:
        RunStore(out, index_writes=True).record_folders([r.id for r in got])
    except Exception as exc:  # noqa: BLE001 - the index is a cache
        log.warning("warning: could not index runs %s: %s", ", ".join(r.id for r in got), exc)


def _collect(recipes: Sequence[dict[str, Any]], out: str,
             get: Callable[[], list[RunResult]]) -> list[RunResult]:
    try:
        return get()
    except PrunebenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a dead worker fails its cells, not the study
        return [_lost(r, out, exc) for r in recipes]


def run_cells(
    recipes: Sequence[dict[str, Any]],
    groups: Sequence[str],
    out: str,
    *,
    workers: int = 1,
    backend: str = "serial",
    serial: Callable[[list[int]], list[RunResult]] | None = None,
    jobs: Sequence[list[int]] | None = None,
    stack: int = 1,
) -> list[RunResult]:
    """Run ``recipes`` (as dicts); ``groups[i]`` is recipe i's pretraining key. One result
    per recipe, in order.

    ``jobs`` (default: one per recipe) partitions the recipe indices into units of work,
    each run by one worker; with ``stack`` > 1 a job's recipes are stacked.
    ``serial(job)`` runs one job in this process (with progress bars) for the serial
    backend.
    """
    if backend not in BACKENDS:
        raise RecipeError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if workers < 1:
        raise RecipeError(f"workers must be >= 1, got {workers}")
    jobs = [list(j) for j in jobs] if jobs is not None else [[i] for i in range(len(recipes))]
    results: dict[int, RunResult] = {}

    def store(job: list[int], got: list[RunResult], *, index: bool = False) -> None:
        results.update(zip(job, got, strict=True))
        if index:  # a worker wrote these runs' folders: the driver indexes them
            _index_runs(out, got)

    if backend == "serial" or workers == 1 or len(jobs) <= 1:
        assert serial is not None
        for job in jobs:
            store(job, _collect([recipes[i] for i in job], out, lambda job=job: serial(job)))
        return [results[i] for i in range(len(recipes))]
    first: dict[str, int] = {}
    for i, g in enumerate(groups):
        first.setdefault(g, i)
    firsts = set(first.values())
    # one job per distinct pretraining stage first, then all the others
    waves = [[j for j in jobs if firsts & set(j)], [j for j in jobs if not firsts & set(j)]]
    threads = max(1, (os.cpu_count() or 1) // workers)
    if backend == "process":
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
        try:
            for wave in waves:
                futures = []
                for job in wave:
                    args = ([recipes[i] for i in job], out, threads, stack)
                    try:
                        futures.append((job, pool.submit(_run_one, *args)))
                    except BrokenProcessPool:  # a worker died earlier: a fresh pool
                        pool.shutdown(wait=False, cancel_futures=True)
                        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
                        futures.append((job, pool.submit(_run_one, *args)))
                for job, f in futures:
                    store(job, _collect([recipes[i] for i in job], out, f.result), index=True)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
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
            refs = [(job, remote.remote([recipes[i] for i in job], out, threads, stack))
                    for job in wave]
            for job, ref in refs:
                store(job, _collect([recipes[i] for i in job], out,
                                    lambda ref=ref: ray.get(ref)), index=True)
    return [results[i] for i in range(len(recipes))]

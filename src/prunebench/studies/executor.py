"""Where a study's cells run: in this process, in a local process pool, or on Ray.

Cells are independent runs; the only thing they share is stages (a dense model), which
the store builds once under a file lock. To avoid workers queueing on that lock, the first
job of each distinct pretraining stage runs before the other jobs of that stage start.

With stacking (``stack`` k > 1) the unit of work is a *job*: up to k cells whose
retraining may train as one fused model (:func:`prunebench.stacked_runs.stack_jobs`); each
worker (a process, a Ray task) takes one job and runs it with
:func:`prunebench.stacked_runs.run_stacked`.

One scheduling loop (:func:`run_cells`) serves every backend: it submits ready jobs while
there is room, takes each job's results as it finishes (not in submission order), reports
them (``end_cell``) and retries what did not finish. A cell that diverges or fails
(an exception, its worker process or Ray node died) is run again up to ``retries`` times;
then it is recorded ``failed`` / ``diverged`` with its reason while the others finish
(``attempts`` says how often it ran). A retry really re-runs: the store only returns
``done`` runs from their folder and a new attempt replaces a stale ``failed`` /
``diverged`` ``result.json``. ``KeyboardInterrupt`` still stops everything (an
interrupted run resumes on the next call).

Only the driver writes the run index. Worker processes (process and Ray backends) run with
``PRUNEBENCH_INDEX_WRITES=0``: they write their run folders (the truth) and never open
the SQLite index, which is unreliable on shared filesystems; the driver records each
finished job's runs from their folders (:meth:`prunebench.store.RunStore.record_folders`).
Stages are shared through lease locks (:func:`prunebench.store.locked`), which work
across machines and are taken over when their holder dies.

Ray (``backend="ray"``, ``pip install 'prunebench[ray]'``): each job is one Ray task
declaring ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (fractional: several runs share
one GPU). The task trains on the GPU Ray assigned (Ray sets ``CUDA_VISIBLE_DEVICES``;
``device: auto`` / ``cuda`` / ``cuda:N`` all mean that GPU; with no GPU assigned,
``auto`` means the CPU) and appends where it ran (node, ``ray.get_gpu_ids()``,
``CUDA_VISIBLE_DEVICES``, the device) to ``<run>/placement.jsonl``. The driver's copy of
prunebench is shipped to the workers (``runtime_env`` ``py_modules``) with the
``PRUNEBENCH_*`` environment variables; plugin files travel with each task (by content:
the same file gives the same run ids). Across machines the run store must be on a
filesystem every worker sees (``--out`` on NFS or similar); see docs/scale.md.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from prunebench.errors import PrunebenchError, RecipeError
from prunebench.record import RunResult
from prunebench.train import report

log = logging.getLogger("prunebench.studies")

BACKENDS = ("serial", "process", "ray")
#: set to ``0`` in worker processes: their :class:`~prunebench.store.RunStore` never writes
#: the index
WORKER_ENV = "PRUNEBENCH_INDEX_WRITES"
#: seconds to wait for a Ray cluster's address to answer before giving up
CONNECT_TIMEOUT = 5.0


# -- options ------------------------------------------------------------------------------

#: the most CPUs one job may declare on Ray (a cluster decides what it has, but no machine
#: has more cores than this; 1e9 is a typo, and every task would wait forever)
MAX_RAY_CPUS_PER_RUN = 1024
#: local process-pool workers per CPU core: more only queue on the cores (and each worker
#: holds its own torch and data in memory)
WORKERS_PER_CPU = 4


def check_options(*, backend: str = "serial", workers: int | None = None, retries: int = 0,
                  cpus_per_run: float | None = None, gpus_per_run: float | None = None,
                  address: str | None = None) -> None:
    """Raise a one-line :class:`RecipeError` naming a bad value and what is allowed."""
    if backend not in BACKENDS:
        raise RecipeError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    cpus = os.cpu_count() or 1
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise RecipeError(f"workers must be >= 1, got {workers}")
    if workers is not None and backend != "ray" and workers > cpus * WORKERS_PER_CPU:
        raise RecipeError(f"workers {workers} is too many for backend {backend!r}: at most "
                          f"{cpus * WORKERS_PER_CPU} local processes ({WORKERS_PER_CPU} per "
                          f"CPU core, {cpus} here; more machines: --backend ray)")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise RecipeError(f"retries must be an integer >= 0, got {retries!r}")
    if cpus_per_run is not None and not cpus_per_run > 0:
        raise RecipeError(f"cpus-per-run must be > 0, got {cpus_per_run}")
    if cpus_per_run is not None:
        limit, where = ((MAX_RAY_CPUS_PER_RUN, "a Ray job") if backend == "ray"
                        else (cpus, f"backend {backend!r}: the CPU cores of this machine"))
        if cpus_per_run > limit:
            raise RecipeError(f"cpus-per-run {cpus_per_run:g} is too many: at most {limit} for "
                              f"{where}")
    if gpus_per_run is not None and not gpus_per_run >= 0:
        raise RecipeError(f"gpus-per-run must be >= 0 (fractions share a GPU), got "
                          f"{gpus_per_run}")
    if gpus_per_run is not None and gpus_per_run > 1 and gpus_per_run != int(gpus_per_run):
        raise RecipeError(f"gpus-per-run above 1 must be a whole number, got {gpus_per_run}")
    if backend != "ray":
        for name, value in (("gpus-per-run", gpus_per_run), ("address", address)):
            if value is not None:
                raise RecipeError(f"{name} {value!r} needs backend ray, got backend "
                                  f"{backend!r}")
    if address is not None and address != "auto":
        _split_address(address)


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise RecipeError(f"address {address!r} is not 'auto' or HOST:PORT of a Ray cluster "
                          "(e.g. 10.0.0.5:6379)")
    return host, int(port)


def connect_ray(address: str | None, runtime_env: dict[str, Any] | None = None) -> Any:
    """Start (``address`` None) or join (``auto``, ``HOST:PORT``) a Ray cluster; the
    ``ray`` module. Unreachable addresses and a missing Ray are one-line
    :class:`RecipeError` s (raised before anything is written)."""
    try:
        import ray
    except ImportError:
        raise RecipeError("backend 'ray' needs Ray: pip install 'prunebench[ray]'") from None
    if ray.is_initialized():
        return ray
    if address is not None and address != "auto":
        host, port = _split_address(address)
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
        except OSError as exc:
            raise RecipeError(f"address {address!r}: no Ray cluster answers there "
                              f"({exc.strerror or exc}); start one with `ray start --head` "
                              "or give 'auto' / HOST:PORT of a running one") from None
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False,
                              "runtime_env": runtime_env or _runtime_env()}
    if address is None:
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        msg = " ".join(str(exc).split())[:300]
        raise RecipeError(f"address {address!r}: cannot connect to a Ray cluster: {msg}"
                          ) from None
    return ray


def _runtime_env() -> dict[str, Any]:
    """This prunebench (so workers compute the same run ids) and the PRUNEBENCH_* settings."""
    import prunebench

    env = {k: v for k, v in os.environ.items()
           if k.startswith("PRUNEBENCH_") and k != WORKER_ENV}
    return {"py_modules": [str(Path(prunebench.__file__).parent)], "env_vars": env}


# -- plugins --------------------------------------------------------------------------------


def plugins_in_use() -> list[tuple[str, str | None]]:
    """The plugins this process loaded that registered something, for the workers:
    ``(path, source)`` of plugin files, ``(module, None)`` of plugin modules (components
    defined in ``__main__``, e.g. a driver script, cannot travel: put them in a file)."""
    from prunebench.data import DATASETS
    from prunebench.loggers import LOGGERS
    from prunebench.models import MODELS
    from prunebench.pruning.context import CRITERIA
    from prunebench.pruning.schedules import PRUNE_SCHEDULES
    from prunebench.registry import is_builtin

    modules: dict[str, None] = {}
    for reg in (MODELS, DATASETS, CRITERIA, PRUNE_SCHEDULES, LOGGERS):
        for name in reg.names():
            try:
                obj = reg.get(name)
            except Exception:  # noqa: BLE001, S112 - a broken entry is not ours to report
                continue
            mod = getattr(obj, "__module__", None) or type(obj).__module__
            if not is_builtin(obj) and isinstance(mod, str) and mod != "__main__":
                modules[mod] = None
    out: list[tuple[str, str | None]] = []
    for mod in modules:
        path = getattr(sys.modules.get(mod), "__file__", None)
        if mod.startswith("prunebench_plugin_"):  # a plugin file (see load_plugins)
            if path:
                out.append((path, Path(path).read_text()))
        else:  # an importable module: installed on the workers too
            out.append((mod, None))
    return out


def _load_plugins(plugins: Sequence[tuple[str, str | None]]) -> None:
    """In a worker: import the driver's plugins (a file missing here or different is
    written from the driver's source to a temp folder first: same content, same ids)."""
    import hashlib
    import tempfile

    from prunebench.recipe import load_plugins

    items = []
    for path, source in plugins:
        if source is None:
            items.append(path)
            continue
        p = Path(path)
        try:
            same = p.read_text() == source
        except OSError:
            same = False
        if not same:
            digest = hashlib.sha256(source.encode()).hexdigest()[:16]
            p = Path(tempfile.gettempdir()) / "prunebench-plugins" / digest / p.name
            if not p.is_file():
                p.parent.mkdir(parents=True, exist_ok=True)
                tmp = p.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(source)
                tmp.replace(p)
        items.append(str(p))
    if items:
        load_plugins(items)


# -- workers --------------------------------------------------------------------------------


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
             stack: int = 1, plugins: Sequence[tuple[str, str | None]] = (),
             attempt: int = 1) -> list[RunResult]:
    """Worker entry point (process pool): :func:`run_job` with ``threads`` torch threads."""
    import torch

    _load_plugins(plugins)  # (files unchanged since the last load are not imported again)
    torch.set_num_threads(max(1, threads))
    before = os.environ.get(WORKER_ENV)
    os.environ[WORKER_ENV] = "0"  # only the driver writes the index (see the module doc)
    try:
        return run_job(recipes, out, stack)
    finally:  # (Ray's local mode runs this in the driver)
        if before is None:
            os.environ.pop(WORKER_ENV, None)
        else:
            os.environ[WORKER_ENV] = before


def _ray_task(recipes: Sequence[dict[str, Any]], out: str, threads: int, stack: int,
              plugins: Sequence[tuple[str, str | None]], attempt: int, gpus: float
              ) -> list[RunResult]:
    """Ray entry point: the job on the device Ray assigned, its placement logged per run."""
    import json

    import ray

    _load_plugins(plugins)  # before the recipes are read: they may name a plugin's parts
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not (gpus > 0 and gpu_ids):  # no GPU of ours: never one Ray did not give us
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    recipes = [{**r, "device": _ray_device(str(r.get("device", "auto")), gpus > 0)}
               for r in recipes]
    ids = [_run_id(r) for r in recipes]
    finished = [_stored_done(out, rid) for rid in ids]
    t0 = time.time()
    got = _run_one(recipes, out, threads, stack, plugins, attempt)
    import torch

    device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
    place = {"attempt": attempt, "node": ray.util.get_node_ip_address(),
             "node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": gpu_ids,
             "cuda_visible_devices": visible, "device": device, "pid": os.getpid(),
             "started": round(t0, 3), "seconds": round(time.time() - t0, 3)}
    for res, was_done in zip(got, finished, strict=True):
        res.result = {**res.result, "placement": place}
        if was_done or not res.dir.is_dir():
            continue
        try:
            with open(res.dir / "placement.jsonl", "a") as fh:
                fh.write(json.dumps({**place, "status": res.status}) + "\n")
        except OSError as exc:  # a log only
            log.warning("warning: could not write %s: %s", res.dir / "placement.jsonl", exc)
    return got


def _ray_device(device: str, gpu: bool) -> str:
    """A recipe's device inside a Ray task: with a GPU assigned, Ray made it the only
    visible one, so ``cuda:N`` (an index on some host) means ``cuda``; without one,
    ``auto`` means the CPU."""
    if gpu:
        return "cuda" if device.startswith("cuda") else device
    return "cpu" if device == "auto" else device


def _run_id(recipe: dict[str, Any]) -> str:
    from prunebench.pipeline import _coerce
    from prunebench.plan import plan

    return plan(_coerce(recipe, None, None, None))[-1].key


def _stored_done(out: str, rid: str) -> bool:
    from prunebench.store import RunStore, clear_stale_lock

    store = RunStore(out, index_writes=False)
    rec = store.result(rid)
    done = rec is not None and rec.status == "done"
    if done:  # a kill between its result and the release of its lock left a lease
        clear_stale_lock(store.run_dir(rid) / ".lock")
    return done


def _lost(recipe: dict[str, Any], out: str, exc: BaseException) -> RunResult:
    """The result of a cell whose worker died or raised (the cell failed; nothing to load)."""
    from prunebench.pipeline import _error_text

    rid = _run_id(recipe)
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


# -- progress -------------------------------------------------------------------------------


@dataclass
class RunProgress:
    """What a parallel study's display shows with each finished run (``end_cell``'s
    second argument): its label and attempts, and the study's counts and ETA."""

    label: str
    attempts: int
    done: int
    total: int
    running: int
    failed: int
    eta_s: float | None

    @property
    def eta(self) -> str:
        if self.eta_s is None:
            return "?"
        s = round(self.eta_s)
        return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (
            f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


@dataclass
class _Tally:
    total: int
    t0: float = field(default_factory=time.monotonic)
    done: int = 0
    ran: int = 0  # finished runs that trained here (not returned from the store)
    failed: int = 0

    def eta(self) -> float | None:
        """Seconds left at the rate runs have finished so far (None: no rate yet)."""
        remaining = self.total - self.done
        if not remaining:
            return 0.0
        if not self.ran:
            return None
        return (time.monotonic() - self.t0) / self.ran * remaining


# -- the scheduling loop ---------------------------------------------------------------------


@dataclass
class _Job:
    idx: list[int]
    attempt: int = 1


def run_cells(
    recipes: Sequence[dict[str, Any]],
    groups: Sequence[str],
    out: str,
    *,
    workers: int | None = None,
    backend: str = "serial",
    serial: Callable[[list[int]], list[RunResult]] | None = None,
    jobs: Sequence[list[int]] | None = None,
    stack: int = 1,
    retries: int = 0,
    reporter: Any = None,
    labels: Sequence[str] | None = None,
    finished: Sequence[bool] | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
    address: str | None = None,
    attempts: dict[int, int] | None = None,
) -> list[RunResult]:
    """Run ``recipes`` (as dicts); ``groups[i]`` is recipe i's pretraining key. One result
    per recipe, in order; ``attempts`` (when given) gets how often each recipe ran.

    ``jobs`` (default: one per recipe) partitions the recipe indices into units of work,
    each run by one worker; with ``stack`` > 1 a job's recipes are stacked.
    ``serial(job)`` runs one job in this process (with progress bars) for the serial
    backend; the others report ``end_cell(result, RunProgress)`` per finished run
    (``labels[i]`` names recipe i). ``finished[i]``: recipe i is done in the store (a job
    of finished recipes is read here, never sent to a worker). A job whose runs did not
    all finish runs again (its unfinished runs) up to ``retries`` times.

    ``workers``: jobs in flight at once (Ray: None = as many as the cluster's free
    resources allow); ``cpus_per_run`` (default: CPUs // workers) is also the torch thread
    count; ``gpus_per_run`` and ``address``: Ray only (see the module doc).
    """
    check_options(backend=backend, workers=workers, retries=retries,
                  cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, address=address)
    jobs = [list(j) for j in jobs] if jobs is not None else [[i] for i in range(len(recipes))]
    labels = list(labels) if labels is not None else [f"run {i + 1}" for i in
                                                      range(len(recipes))]
    results: dict[int, RunResult] = {}
    tries: dict[int, int] = attempts if attempts is not None else {}
    parallel = backend == "ray" or (backend == "process" and (workers or 1) > 1
                                    and len(jobs) > 1)
    if not parallel:
        assert serial is not None
    tally = _Tally(total=len(recipes))
    runner = (_SerialRunner(serial, recipes, out) if not parallel  # type: ignore[arg-type]
              else _ProcessRunner(recipes, out, workers or 1, stack, cpus_per_run)
              if backend == "process"
              else _RayRunner(recipes, out, workers, stack, cpus_per_run, gpus_per_run,
                              address))
    # the first job of each pretraining stage goes before the others of that stage
    first_of: dict[str, int] = {}
    for j, job in enumerate(jobs):
        for i in job:
            first_of.setdefault(groups[i], j)
    blocked_by = [{first_of[groups[i]] for i in job} - {j} for j, job in enumerate(jobs)]
    started: set[int] = set()  # jobs whose first attempt came back
    pending: list[tuple[int, _Job]] = []
    for j, job in enumerate(jobs):
        if finished is not None and all(finished[i] for i in job) and parallel:
            got = _collect([recipes[i] for i in job], out,
                           lambda job=job: run_job([recipes[i] for i in job], out, 1))
            started.add(j)
            for i, res in zip(job, got, strict=True):
                results[i] = res
                tries[i] = 0
                tally.done += 1
                report(reporter, "end_cell", res, RunProgress(
                    labels[i], 0, tally.done, tally.total, 0, tally.failed, None))
        else:
            pending.append((j, _Job(job)))
    inflight: dict[Any, tuple[int, _Job]] = {}

    def running() -> int:
        return sum(len(job.idx) for _, job in inflight.values())

    try:
        while pending or inflight:
            room = runner.capacity()
            for item in list(pending):
                if len(inflight) >= room:
                    break
                j, job = item
                if job.attempt == 1 and not blocked_by[j] <= started:
                    continue
                pending.remove(item)
                inflight[runner.submit(job)] = item
            handle, got = runner.next_done()
            j, job = inflight.pop(handle)
            started.add(j)
            if parallel:
                _index_runs(out, got)
            again = []
            for i, res in zip(job.idx, got, strict=True):
                was_done = finished is not None and finished[i] and job.attempt == 1
                tries[i] = 0 if was_done else job.attempt
                if res.status != "done" and job.attempt <= retries:
                    again.append(i)
                    report(reporter, "warn", f"run {res.id} ({labels[i]}) {res.status} on "
                           f"attempt {job.attempt} of {retries + 1}"
                           + (f": {res.result['error']}" if res.result.get("error") else "")
                           + "; retrying")
                    continue
                results[i] = res
                tally.done += 1
                tally.failed += res.status != "done"
                tally.ran += 1
                if parallel:
                    report(reporter, "end_cell", res, RunProgress(
                        labels[i], job.attempt, tally.done, tally.total,
                        running() + len(again), tally.failed, tally.eta()))
                else:
                    report(reporter, "end_cell", res)
            if again:  # retried at once, ahead of jobs not yet started
                pending.insert(0, (j, _Job(again, job.attempt + 1)))
    except BaseException:
        runner.abort()
        raise
    runner.close()
    return [results[i] for i in range(len(recipes))]


class _SerialRunner:
    """Jobs in this process, one at a time (``serial`` reports their epochs)."""

    def __init__(self, serial: Callable[[list[int]], list[RunResult]],
                 recipes: Sequence[dict[str, Any]], out: str) -> None:
        self.serial, self.recipes, self.out = serial, recipes, out
        self.queue: list[tuple[int, _Job]] = []
        self.n = 0

    def capacity(self) -> int:
        return 1

    def submit(self, job: _Job) -> int:
        self.n += 1
        self.queue.append((self.n, job))
        return self.n

    def next_done(self) -> tuple[int, list[RunResult]]:
        n, job = self.queue.pop(0)
        return n, _collect([self.recipes[i] for i in job.idx], self.out,
                           lambda: self.serial(job.idx))

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


class _ProcessRunner:
    """Jobs in a pool of spawned processes; a pool broken by a dead worker is renewed
    (the jobs in flight on it come back failed, and are retried)."""

    def __init__(self, recipes: Sequence[dict[str, Any]], out: str, workers: int, stack: int,
                 cpus_per_run: float | None) -> None:
        self.recipes, self.out, self.workers, self.stack = recipes, out, workers, stack
        self.threads = int(cpus_per_run) if cpus_per_run else \
            max(1, (os.cpu_count() or 1) // workers)
        self.plugins = plugins_in_use()
        self.pool = self._pool()
        self.futures: dict[Future[list[RunResult]], _Job] = {}

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))

    def capacity(self) -> int:
        return self.workers

    def submit(self, job: _Job) -> Future[list[RunResult]]:
        args = ([self.recipes[i] for i in job.idx], self.out, self.threads, self.stack,
                self.plugins, job.attempt)
        try:
            f = self.pool.submit(_run_one, *args)
        except BrokenProcessPool:  # a worker died earlier: a fresh pool
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._pool()
            f = self.pool.submit(_run_one, *args)
        self.futures[f] = job
        return f

    def next_done(self) -> tuple[Future[list[RunResult]], list[RunResult]]:
        done, _ = wait_futures(list(self.futures), return_when=FIRST_COMPLETED)
        f = next(iter(done))
        job = self.futures.pop(f)
        return f, _collect([self.recipes[i] for i in job.idx], self.out, f.result)

    def abort(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class _RayRunner:
    """Jobs as Ray tasks with declared resources; results taken as they finish."""

    def __init__(self, recipes: Sequence[dict[str, Any]], out: str, workers: int | None,
                 stack: int, cpus_per_run: float | None, gpus_per_run: float | None,
                 address: str | None) -> None:
        self.ray = connect_ray(address)
        self.recipes, self.out, self.workers, self.stack = recipes, out, workers, stack
        self.cpus = cpus_per_run if cpus_per_run else (
            max(1, (os.cpu_count() or 1) // workers) if workers else 1)
        self.gpus = ray_gpus(self.ray, recipes, gpus_per_run)
        self.plugins = plugins_in_use()
        # SPREAD: a study's runs are independent and heavy; packing them onto the first
        # node (Ray's default below 50% use) leaves the other nodes idle
        self.remote = self.ray.remote(_ray_task).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0, scheduling_strategy="SPREAD")
        self.refs: dict[Any, _Job] = {}

    def capacity(self) -> int:
        if self.workers:
            return self.workers
        res = self.ray.cluster_resources()
        slots = int(res.get("CPU", 1) // self.cpus)
        if self.gpus:
            slots = min(slots, int(res.get("GPU", 0) // self.gpus))
        return max(1, slots)

    def submit(self, job: _Job) -> Any:
        ref = self.remote.remote([self.recipes[i] for i in job.idx], self.out,
                                 max(1, int(self.cpus)), self.stack, self.plugins,
                                 job.attempt, self.gpus)
        self.refs[ref] = job
        return ref

    def next_done(self) -> tuple[Any, list[RunResult]]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        ref = ready[0]
        job = self.refs.pop(ref)
        return ref, _collect([self.recipes[i] for i in job.idx], self.out,
                             lambda: self.ray.get(ref))

    def abort(self) -> None:
        import contextlib

        for ref in self.refs:
            with contextlib.suppress(Exception):  # best effort on the way out
                self.ray.cancel(ref, force=True)

    def close(self) -> None:
        pass


def ray_gpus(ray: Any, recipes: Sequence[dict[str, Any]], gpus_per_run: float | None
             ) -> float:
    """GPUs per Ray task: ``gpus_per_run``, else :func:`default_gpus` for this cluster; a
    recipe on device cuda with 0 GPUs per task is a :class:`RecipeError`."""
    gpus = gpus_per_run if gpus_per_run is not None else default_gpus(
        ray.cluster_resources(), recipes)
    if gpus == 0 and any(str(r.get("device", "auto")).startswith("cuda") for r in recipes):
        raise RecipeError("a recipe asks for device cuda but gpus-per-run is 0 (or the "
                          "cluster has no GPU): give --gpus-per-run > 0 or device auto")
    return gpus


def default_gpus(cluster: dict[str, float], recipes: Sequence[dict[str, Any]]) -> float:
    """``gpus_per_run`` when not given: 1 when the cluster has GPUs and a recipe's device
    is auto or cuda, else 0."""
    wants = any(str(r.get("device", "auto")) == "auto" or str(r.get("device")).startswith(
        "cuda") for r in recipes)
    return 1.0 if cluster.get("GPU", 0) > 0 and wants else 0.0

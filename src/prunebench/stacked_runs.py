"""Stacked runs: the cells of a study whose retraining can stack train as one fused model.

:func:`run_stacked` runs a set of recipes like :func:`prunebench.pipeline.run` runs one:
each run's shared stages (pretraining, pruning) are built or loaded as usual, each run's
retraining is prepared as usual (init, effective config, starting measurements), and then
the retrainings that :func:`prunebench.stack.group_stackable` finds compatible (same
architecture after pruning, data shape, batch size, epochs, start epoch, precision; no step
hooks) are trained together by :func:`prunebench.stack.train_stacked`, k copies per fused
model. Each copy is still its own run: the same id, folder (``recipe.yaml``,
``metrics.jsonl``, ``checkpoints/latest.pt`` every epoch, ``final.pt``, ``result.json``)
and index row as when run alone, plus ``stack: k`` in its record (the copies trained
together; 1 for a run that fell back to training alone).

What falls back to training alone: runs with step hooks (unstructured masks, the
orthogonality regulariser), runs whose architecture, epochs or resume epoch match no other
run of the set, and runs without retraining (dense references). Finished runs are
returned from the store; partially trained ones resume from their own ``latest.pt``
(copies are grouped by the epoch they resume from). A copy that diverges is stored as
``diverged`` while the others finish; a copy that fails before training fails alone.

:func:`stack_jobs` splits a study's recipes into jobs of at most k that *may* stack (a
necessary condition read from the recipes alone), so parallel workers each take one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from prunebench.context import Context, prepare, resolve_device
from prunebench.errors import TrainingDiverged
from prunebench.pipeline import (
    Prepared,
    RunBook,
    _coerce,
    check_recipe,
    finish_run,
    prepare_run,
    retrain_alone,
)
from prunebench.plan import plan
from prunebench.recipe import Recipe
from prunebench.record import RunResult
from prunebench.stages import epoch_saver, resume_state
from prunebench.store import RunStore, locked
from prunebench.train import Reporter, TrainState

#: copies per stack when stacking is automatic (on CUDA)
DEFAULT_STACK = 8


def auto_stack(recipes: Sequence[Recipe], stack: int | None) -> int:
    """The stack size to use: ``stack`` when given, else :data:`DEFAULT_STACK` when the
    recipes train on CUDA and 1 (off) on CPU, where stacking is no faster."""
    if stack is not None:
        return stack
    if recipes and resolve_device(recipes[0].device).type == "cuda":
        return DEFAULT_STACK
    return 1


def stack_hint(recipe: Recipe) -> str | None:
    """A key equal for recipes whose retraining may stack (read from the recipes alone:
    model, data shape, batch size, precision, device, prune section, retraining epochs or
    budget); ``None`` for a recipe that never stacks (no retraining, unstructured masks,
    the orthogonality regulariser). :func:`run_stacked` checks the built models."""
    r = recipe
    if r.retrain is None or r.retrain.orth_reg > 0:
        return None
    if r.prune is not None and r.prune.granularity == "weight":
        return None
    data = r.data.model_dump(mode="json", exclude={"seed", "data_dir"})
    budget = r.retrain.budget
    return json.dumps({
        "model": r.model.model_dump(mode="json"), "data": data, "precision": r.precision,
        "device": r.device, "prune": r.prune.model_dump(mode="json") if r.prune else None,
        "epochs": r.retrain.epochs, "budget": budget,
        "pretrain": r.pretrain.epochs if budget is not None and r.pretrain else None,
    }, sort_keys=True)


def stack_jobs(recipes: Sequence[Recipe], k: int, skip: Sequence[bool] = ()) -> list[list[int]]:
    """Recipe indices in jobs of at most ``k`` that may stack (first-appearance order);
    recipes that never stack, and those flagged in ``skip`` (finished runs), get a job
    each."""
    jobs: list[list[int]] = []
    open_jobs: dict[str, list[int]] = {}
    for i, r in enumerate(recipes):
        hint = None if (i < len(skip) and skip[i]) else stack_hint(r)
        if hint is None or k <= 1:
            jobs.append([i])
            continue
        job = open_jobs.get(hint)
        if job is None or len(job) >= k:
            job = open_jobs[hint] = []
            jobs.append(job)
        job.append(i)
    return jobs


def _contexts(reporter: Reporter | None) -> Any:
    """A ``recipe -> Context`` function loading each dataset once: recipes with the same
    data section share its tensors (so copies with the same seed share one batch stream)."""
    cache: dict[tuple[str, str], Context] = {}

    def get(recipe: Recipe) -> Context:
        key = (json.dumps(recipe.data.model_dump(mode="json"), sort_keys=True), recipe.device)
        if key not in cache:
            cache[key] = prepare(recipe, resolve_device(recipe.device), reporter)
        ctx = dataclasses.replace(cache[key], recipe=recipe)
        ctx.loaders = ctx.loaders_for("pretrain")  # as prepare() does: this seed's order
        return ctx

    return get


class _Copies:
    """The runs of one :func:`run_stacked` call: open ones (running, locked) and results."""

    def __init__(self, books: list[RunBook]) -> None:
        self.books = books
        self.open: set[int] = set()
        self.results: dict[int, RunResult] = {}

    def end(self, i: int, result: RunResult) -> None:
        self.results[i] = result
        self.open.discard(i)

    @contextlib.contextmanager
    def guard(self, i: int) -> Iterator[None]:
        """Run i's work: divergence stores it ``diverged``, an exception ``failed`` (the
        other runs go on); KeyboardInterrupt propagates."""
        try:
            yield
        except TrainingDiverged as exc:
            self.end(i, self.books[i].diverged(exc))
        except Exception as exc:  # noqa: BLE001 - one failing run never stops the others
            self.end(i, self.books[i].aborted(exc))

    def finish(self, i: int, prep: Prepared, state: TrainState | TrainingDiverged | None
               ) -> None:
        with self.guard(i):
            if isinstance(state, TrainingDiverged):
                raise state
            self.end(i, self.books[i].done(finish_run(prep, state)))


def run_stacked(
    recipes: Sequence[Recipe | dict[str, Any]],
    out: str | os.PathLike[str] = "runs",
    *,
    max_k: int | None = None,
    reporter: Reporter | None = None,
) -> list[RunResult]:
    """Run ``recipes`` (one result each, in order), training the retrainings that can
    stack as fused models of at most ``max_k`` copies (see the module doc).

    As :func:`prunebench.pipeline.run_cell`: bad input raises before anything is written,
    a run that diverges or fails comes back with that status, KeyboardInterrupt marks
    the runs in progress ``interrupted`` (resumable) and propagates.
    """
    from prunebench.stack import group_stackable, train_stacked

    store = RunStore(out)
    rs = [_coerce(r, None, None, None) for r in recipes]
    books = [RunBook(store, r, plan(r)) for r in rs]
    runs = _Copies(books)
    todo, first = [], {}
    for i, book in enumerate(books):
        stored = book.stored()
        if stored is not None:
            runs.results[i] = stored
        elif first.setdefault(book.rid, i) == i:  # a repeated recipe runs once
            todo.append(i)
    context = _contexts(reporter)
    ctxs = {i: context(rs[i]) for i in todo}
    for i in todo:  # everything a user can get wrong, before anything is written
        check_recipe(ctxs[i])
    if todo:  # as a single run: a store it cannot write to stops it before any folder
        store.check_writable()
        store.open_index()
    preps: dict[int, Prepared] = {}
    with contextlib.ExitStack() as locks:
        try:
            for i in todo:
                book = books[i]
                locks.enter_context(locked(book.rdir / ".lock"))
                stored = book.stored()
                if stored is not None:
                    runs.results[i] = stored
                    continue
                book.open()
                runs.open.add(i)
                with runs.guard(i):
                    preps[i] = prepare_run(ctxs[i], store, book.stages, book.rdir,
                                           book.progress)
            ready = [i for i in preps if i in runs.open]
            stackable = [i for i in ready
                         if preps[i].cfg is not None and preps[i].hooks is None]
            for i in ready:
                if i not in stackable:  # no retraining, or step hooks: alone
                    prep = preps[i]
                    if prep.cfg is not None:
                        prep.result["stack"] = 1
                    with runs.guard(i):
                        runs.finish(i, prep, retrain_alone(prep) if prep.cfg else None)
            loaders = {i: preps[i].ctx.loaders_for("retrain") for i in stackable}
            members = []  # each with its resume state (copies stack at one epoch)
            for i in stackable:
                p = preps[i]
                members.append((p.model, p.cfg, loaders[i],
                                resume_state(p.latest, p.model, p.ctx)))
            for group in group_stackable(members, max_k):
                idx = [stackable[j] for j in group]
                for i in idx:
                    preps[i].result["stack"] = len(idx)
                if len(idx) == 1:
                    with runs.guard(idx[0]):
                        runs.finish(idx[0], preps[idx[0]], retrain_alone(preps[idx[0]]))
                    continue
                ps = [preps[i] for i in idx]
                try:
                    states = train_stacked(
                        [p.model for p in ps], [loaders[i] for i in idx],
                        [p.cfg for p in ps], phase="retrain",
                        states=[members[j][3] for j in group], reporter=reporter,
                        on_epoch_end=[epoch_saver(p.latest, p.write_metrics) for p in ps],
                        extra_metrics=[p.extra_metrics for p in ps],
                    )
                except Exception as exc:  # noqa: BLE001 - the stack's runs fail, not the set
                    for i in idx:
                        runs.end(i, books[i].aborted(exc))
                    continue
                for i, state in zip(idx, states, strict=True):
                    runs.finish(i, preps[i], state)
        except BaseException as exc:
            for i in sorted(runs.open):
                with contextlib.suppress(Exception):
                    books[i].aborted(exc)
            raise
    return [runs.results[i if i in runs.results else first[books[i].rid]]
            for i in range(len(rs))]


__all__ = ["DEFAULT_STACK", "auto_stack", "run_stacked", "stack_hint", "stack_jobs"]

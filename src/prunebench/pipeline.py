"""Running a recipe: plan its stages, build the missing ones, store the result.

``run`` is the one entry point: finished runs return at once from the store, interrupted
ones resume from their last epoch, and everything a user can get wrong is checked before
anything is written (:func:`validate_recipes` does the same for every cell of a grid or
study before the first cell runs).

A run whose training loss (or weights) becomes non-finite stops at the end of that epoch
and is stored as ``diverged`` (with the phase, epoch and reason; the finished epochs'
metrics are kept); it is returned, not raised. :func:`run_cell` also returns a run that
fails with an exception as a ``failed`` result, so one bad cell never ends a grid or study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench import __version__, distributed, io
from prunebench.context import Context, prepare, resolve_device
from prunebench.errors import (
    NonFiniteMeasurement,
    PrunebenchError,
    RecipeError,
    TrainingDiverged,
)
from prunebench.plan import Stage, plan, run_id
from prunebench.recipe import Recipe, RetrainCfg
from prunebench.record import Budget, RunRecord, RunResult, budgets, build_trajectory, origin
from prunebench.stages import (
    check_base_model,
    check_prune,
    cpu_state,
    effective_retrain,
    prepare_retrain,
    run_base_stage,
    run_prune_stage,
    ta_epochs,
    train_resumable,
)
from prunebench.store import RunStore, clear_stale_lock, locked
from prunebench.train import Reporter, StepHooks, TrainState, finite_weights


def _best_val(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    rows = [h for h in history if h.get("val_acc") is not None]
    if not rows:
        return None
    best = max(rows, key=lambda h: (h["val_acc"], -h["epoch"]))
    return {"epoch": best["epoch"], "val_acc": best["val_acc"], "test_acc": best.get("test_acc")}


def _coerce(
    recipe: Recipe | dict[str, Any] | str | os.PathLike[str],
    overrides: list[str] | None,
    device: str | None,
    data_dir: str | None,
) -> Recipe:
    from prunebench.recipe import apply_overrides, build_recipe, load_recipe

    if isinstance(recipe, str | os.PathLike):
        recipe = load_recipe(recipe, overrides)
    elif isinstance(recipe, dict):
        recipe = build_recipe(apply_overrides(recipe, overrides))
    elif overrides:
        recipe = build_recipe(apply_overrides(recipe.model_dump(mode="json"), overrides))
    if device is not None:
        recipe = recipe.model_copy(update={"device": device})
    if data_dir is not None:
        data = recipe.data.model_copy(update={"data_dir": data_dir})
        recipe = recipe.model_copy(update={"data": data})
    return recipe


def check_recipe(ctx: Context) -> None:
    """Check one prepared recipe against the built model before anything is written: the
    prune section (criterion, layer patterns, budgets) and the ``base_model`` file (a
    weights-only state dict whose keys and shapes fit the model)."""
    dense = ctx.build_dense()
    check_prune(ctx, dense)
    r = ctx.recipe
    distributed.check_batch(r.data.batch_size)  # several processes: the global batch
    if r.base_model is not None:
        check_base_model(r.base_model, dense, r.model.name)
    if r.log.to:
        from prunebench.loggers import check_loggers

        check_loggers(r.log.to)  # an unknown name or a missing extra, before any run


def _relabel(exc: PrunebenchError, label: str) -> PrunebenchError:
    msg = f"{label}: {exc}"
    try:
        new = type(exc)(msg)
    except Exception:  # noqa: BLE001 - an error type with another constructor
        new = RecipeError(msg)
    new.exit_code = exc.exit_code
    return new


def validate_recipes(
    recipes: Sequence[tuple[str, Recipe]],
    *,
    device: str | None = None,
    data_dir: str | None = None,
) -> list[Recipe]:
    """Check every ``(label, recipe)`` (its plan, data, prune section against the built
    model, base_model file) before any of them runs; returns the recipes with ``device`` /
    ``data_dir`` applied. The first problem raises a one-line error prefixed with the
    cell's label ("" for none). Nothing is written (the data may be downloaded to its
    cache)."""
    contexts: dict[tuple[str, str], Context] = {}
    out = []
    for label, recipe in recipes:
        try:
            r = _coerce(recipe, None, device, data_dir)
            plan(r)  # the base_model file exists (hashed for the stage key)
            key = (json.dumps(r.data.model_dump(mode="json"), sort_keys=True), r.device)
            if key not in contexts:
                contexts[key] = prepare(r, resolve_device(r.device))
            check_recipe(dataclasses.replace(contexts[key], recipe=r))
        except PrunebenchError as exc:
            if not label:
                raise
            raise _relabel(exc, label) from None
        out.append(r)
    return out


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    head = text[0] if text else ""
    if isinstance(exc, PrunebenchError):
        return head[:500]
    return f"{type(exc).__name__}: {head}"[:500] if head else type(exc).__name__


def run(
    recipe: Recipe | dict[str, Any] | str | os.PathLike[str],
    out: str | os.PathLike[str] = "runs",
    *,
    overrides: list[str] | None = None,
    reporter: Reporter | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    loggers: Sequence[Any] | None = None,
) -> RunResult:
    """Run one recipe (pretrain -> prune -> retrain) and return its result.

    Finished runs return at once from the store; interrupted ones resume. A run that
    diverges is stored and returned with ``status == "diverged"``; any other exception
    during the run is stored as ``failed`` and raised.

    ``loggers``: objects with ``start(run_id, recipe)``, ``log(metrics, step, phase)``,
    ``finish(record)`` (:mod:`prunebench.loggers`), used with those the recipe's ``log:``
    section names. They see every epoch trained here; they never change the results.
    """
    recipe = _coerce(recipe, overrides, device, data_dir)
    # several processes (torchrun, --nproc): rank 0 owns the store, the others write into
    # a private scratch store and take every store decision from rank 0
    distributed.init(recipe.device)
    main = distributed.is_main()
    store = RunStore(out) if main else RunStore(distributed.store_root(out), index_writes=False)
    stages = plan(recipe)
    book = RunBook(store, recipe, stages)
    done = distributed.from_main(book.stored)
    if done is not None:
        return done
    # a store that cannot be written (read-only, --out below a file, the index a folder)
    # is a one-line error now, not a failed run once its folder exists
    distributed.from_main(store.check_writable)
    from prunebench.loggers import LoggingReporter, make_loggers

    active = [*make_loggers(recipe.log, out), *(loggers or [])] if main else []
    reporter = reporter if main else None
    if active:
        reporter = LoggingReporter(reporter, active)
    # everything a user can get wrong is checked before anything is written
    ctx = prepare(recipe, distributed.run_device(recipe.device) or resolve_device(recipe.device),
                  reporter)
    distributed.adjust_speed(ctx.speed)
    check_recipe(ctx)
    distributed.from_main(store.open_index)  # before the run's folder (its lock) is made
    with locked(book.rdir / ".lock"):
        done = distributed.from_main(book.stored)
        if done is not None:
            return done
        book.open()
        for lg in active:
            lg.start(book.rid, book.recipe_dict)
        try:
            result = _execute(ctx, store, stages, book.rdir, book.progress)
        except TrainingDiverged as exc:
            return distributed.share(_finish_loggers(active, book.diverged(exc)))
        except BaseException as exc:
            _finish_loggers(active, book.aborted(exc))
            raise
        return distributed.share(_finish_loggers(active, book.done(result)))


def _finish_loggers(loggers: Sequence[Any], res: RunResult) -> RunResult:
    for lg in loggers:
        lg.finish(dict(res.result))
    return res


class RunBook:
    """One run's bookkeeping in the store (its folder, ``result.json``, the index row),
    shared by :func:`run` and stacked training (:mod:`prunebench.stacked_runs`); the caller
    holds the run's lock."""

    def __init__(self, store: RunStore, recipe: Recipe, stages: list[Stage]) -> None:
        self.store, self.recipe, self.stages = store, recipe, stages
        self.rid = stages[-1].key
        self.rdir = store.run_dir(self.rid)
        self.recipe_dict = recipe.model_dump(mode="json")
        self.progress = _Progress()

    def result(self, record: RunRecord) -> RunResult:
        return RunResult(self.rid, self.rdir, record.to_json(), self.recipe_dict)

    def stored(self) -> RunResult | None:
        """The stored result when the run is done already."""
        existing = self.store.result(self.rid)
        if existing is not None and existing.status == "done":
            clear_stale_lock(self.rdir / ".lock")  # killed after its result, before release
            return self.result(existing)
        return None

    def open(self) -> None:
        """Mark the run running (a stale failed / diverged outcome is removed). The index
        is opened first: one that cannot be written is an error before anything is."""
        self.store.open_index()
        (self.rdir / "result.json").unlink(missing_ok=True)
        io.write_text(self.rdir / "recipe.yaml", self.recipe.to_yaml())
        self.store.record(self.rid, "running", self.recipe_dict)

    def diverged(self, exc: TrainingDiverged) -> RunResult:
        record = diverged_record(self.progress, exc, self.recipe)
        io.write_jsonl(self.rdir / "metrics.jsonl", self.progress.lines + exc.history)
        io.write_json(self.rdir / "result.json", record.to_json())
        self.store.record(self.rid, "diverged", self.recipe_dict, record)
        return self.result(record)

    def aborted(self, exc: BaseException) -> RunResult:
        """Record an exception: ``interrupted`` (KeyboardInterrupt: the run stays
        resumable, with no outcome) or ``failed`` (with ``result.json``)."""
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        record = RunRecord(id=self.rid, status=status, error=_error_text(exc))
        if status == "failed":
            with contextlib.suppress(Exception):
                io.write_json(self.rdir / "result.json", record.to_json())
            with contextlib.suppress(Exception):
                exc.prunebench_run = self.rid  # type: ignore[attr-defined]
        self.store.record(self.rid, status, self.recipe_dict, record)
        return self.result(record)

    def done(self, result: dict[str, Any]) -> RunResult:
        record = finish_record(result, self.recipe)
        io.write_json(self.rdir / "result.json", record.to_json())
        self.store.record(self.rid, "done", self.recipe_dict, record)
        return self.result(record)


def run_cell(
    recipe: Recipe | dict[str, Any],
    out: str | os.PathLike[str] = "runs",
    *,
    reporter: Reporter | None = None,
    loggers: Sequence[Any] | None = None,
) -> RunResult:
    """:func:`run` for one cell of a grid or study: a run that fails during execution
    (any exception once its folder exists) comes back as a ``failed`` result instead of
    being raised, so the other cells still run. Bad input found before anything is
    written (a :class:`PrunebenchError`) and ``KeyboardInterrupt`` still propagate."""
    try:
        return run(recipe, out, reporter=reporter, loggers=loggers)
    except Exception as exc:
        rid = getattr(exc, "prunebench_run", None)
        if rid is None and isinstance(exc, PrunebenchError):
            raise
        r = _coerce(recipe, None, None, None)
        rid = rid or plan(r)[-1].key
        return RunResult(rid, RunStore(out).run_dir(rid),
                         {"id": rid, "status": "failed", "error": _error_text(exc)},
                         r.model_dump(mode="json"))


# -- trainability measurements --------------------------------------------------------------


class _JSV:
    """Mean Jacobian singular values on a fixed, seeded set of training inputs."""

    def __init__(self, ctx: Context, model: nn.Module) -> None:
        from prunebench.models import count_params

        m = ctx.recipe.measure
        every = m.jsv_every
        if every is None:
            every = 1 if count_params(model) < 1_000_000 else 0
        self.every, self.mode, self.seconds, self.calls = every, m.jsv_mode, 0.0, 0
        # train mode: the authors' batched computation (one-hot per class over the whole
        # batch, BN on batch statistics); the exact per-sample blocks cost n_samples times more
        self.method = "batched" if self.mode == "train" else "auto"
        n = min(m.jsv_samples, ctx.train_x.shape[0])
        idx = torch.randperm(ctx.train_x.shape[0], generator=torch.Generator().manual_seed(
            ctx.recipe.seed + 7))[:n]
        from prunebench.data import BatchLoader

        loader = BatchLoader(ctx.train_x[idx], ctx.train_y[idx], batch_size=n,
                             mean=ctx.dataset.mean, std=ctx.dataset.std, device=ctx.device)
        self.inputs = next(iter(loader.epoch(0)))[0] if n else None

    @property
    def enabled(self) -> bool:
        return self.every > 0 and self.inputs is not None

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        from prunebench.trainability import jsv

        t0 = time.perf_counter()
        stats = jsv(model, self.inputs, mode=self.mode, method=self.method).to_dict()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return stats

    def measure(self, model: nn.Module, phase: str, epoch: int) -> dict[str, Any]:
        """:meth:`__call__` outside a training loop: a non-finite Jacobian (weights that
        have blown up) is the run's divergence at ``phase`` / ``epoch``."""
        try:
            return self(model)
        except NonFiniteMeasurement as exc:
            raise TrainingDiverged(phase, epoch, str(exc)) from None

    def per_epoch(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        if not self.enabled or epoch % self.every:
            return {}
        s = self(model)
        return {"jsv_mean": s["mean"], "jsv_cv": s["cv"]}


# -- the run --------------------------------------------------------------------------------

_PRUNE_LINE = ("val_acc", "test_acc", "params_pruned", "macs_pruned", "param_sparsity",
               "speedup")


@dataclasses.dataclass
class _Progress:
    """What a run has produced so far (its result fields, its metrics lines): a diverged
    run keeps them."""

    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    lines: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _require_finite(model: nn.Module, phase: str, epoch: int, what: str) -> None:
    """A stored stage with non-finite weights (from before divergence was detected) is a
    diverged run too; the JSV and isometry measurements never see NaN weights."""
    if not finite_weights(model):
        raise TrainingDiverged(phase, epoch, f"non-finite weights in the {what}")


def diverged_record(progress: _Progress, exc: TrainingDiverged, recipe: Recipe) -> RunRecord:
    """The record of a diverged run: what its finished stages measured, the divergence
    (phase, epoch, reason) and no final accuracy (it is never ranked)."""
    keep = {k: v for k, v in progress.result.items()
            if k not in ("test_acc", "val_acc", "test_top5", "best_val", "ta", "status")}
    rec = RunRecord.model_validate({
        **keep, "id": progress.result.get("id") or plan(recipe)[-1].key,
        "status": "diverged", "error": str(exc),
        "diverged": {**exc.to_dict(), "finished_epochs": len(exc.history)},
    })
    rec.origin = origin(recipe)
    rec.pruned_at = recipe.prune.at_epoch if recipe.prune is not None else None
    unknown = Budget(pretrain=None, prune=None, retrain=None, total=None)
    rec.epochs, rec.train_macs = unknown, unknown  # it never finished: no budget to compare
    return RunRecord.model_validate(rec.to_json())


@dataclasses.dataclass
class Prepared:
    """A run up to its retraining (stages built or loaded, retraining prepared): what
    :func:`finish_run` completes once the retraining state is known. ``cfg`` is None for
    a run without retraining."""

    ctx: Context
    rdir: Path
    model: nn.Module
    result: dict[str, Any]
    lines: list[dict[str, Any]]
    final_info: dict[str, Any]
    history: list[dict[str, Any]]  # the dense stage's (a pretrained run's best_val)
    base_kind: str
    t0: float
    cfg: RetrainCfg | None = None
    hooks: StepHooks | None = None
    meter: _JSV | None = None

    @property
    def latest(self) -> Path:
        return self.rdir / "checkpoints" / "latest.pt"

    @property
    def extra_metrics(self) -> Callable[[nn.Module, int], dict[str, Any]] | None:
        return self.meter.per_epoch if self.meter is not None and self.meter.enabled else None

    def write_metrics(self, state: TrainState) -> None:
        io.write_jsonl(self.rdir / "metrics.jsonl", self.lines + state.history)


def prepare_run(
    ctx: Context, store: RunStore, stages: list[Stage], rdir: Path, progress: _Progress
) -> Prepared:
    """Build or load the run's shared stages and prepare its retraining (init, hooks,
    effective config, the starting measurements); ``progress`` follows along."""
    from prunebench.trainability import layer_isometry

    t0 = time.perf_counter()
    recipe = ctx.recipe
    ckpt = rdir / "checkpoints"
    by_kind = {s.kind: s for s in stages}
    progress.result.update({"id": stages[-1].key, "stages": {s.kind: s.key for s in stages}})
    model, dense_info, history = run_base_stage(ctx, store, stages[0])
    _require_finite(model, "pretrain", int(dense_info.get("epochs") or 0), "dense model")
    result: dict[str, Any] = {
        "id": stages[-1].key,
        "status": "done",
        "stages": {s.kind: s.key for s in stages},
        "data": {"name": recipe.data.name, "source": ctx.dataset.source,
                 # the data identity the stage keys hold (a plugin dataset without one: the
                 # tensors' checksum), so a result's label never disagrees with its key
                 "checksum": stages[0].config.get("data_id", ctx.dataset.checksum),
                 "train_images": int(ctx.train_x.shape[0])},
        "device": str(ctx.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "prunebench": __version__,
        # the fast path's knobs, requested and actually used (never part of the id)
        "speed": ctx.speed.record() if ctx.speed is not None else None,
        **distributed.record(),  # several processes: how many (never part of the id)
        "dense": dense_info,
    }
    progress.result = result
    lines = list(history)
    progress.lines = lines
    prep = Prepared(ctx, rdir, model, result, lines, dense_info, history, stages[0].kind, t0)
    masks = None
    meter = _JSV(ctx, model) if "retrain" in by_kind else None
    jsv_dense = (meter.measure(model, "pretrain", int(dense_info.get("epochs") or 0))
                 if meter is not None and meter.enabled else None)
    if "prune" in by_kind:
        pdir = store.stage_dir("prune", by_kind["prune"].key)
        model, prune_info, masks = run_prune_stage(ctx, store, by_kind["prune"], model)
        _require_finite(model, "prune", 0, "pruned model")
        prep.model = model
        result["pruned"] = prune_info
        prep.final_info = prune_info
        lines.append({"phase": "prune", "epoch": 0, **{k: prune_info.get(k) for k in _PRUNE_LINE}})
        for name in ("pruned.pt", "structure.json", "masks.pt"):
            if (pdir / name).is_file():
                _link_or_copy(pdir / name, ckpt / name)
    io.write_jsonl(rdir / "metrics.jsonl", lines)
    if "retrain" in by_kind:
        prep.hooks = prepare_retrain(ctx, model, masks)
        prep.cfg = effective_retrain(ctx, dense_info, result.get("pruned"))
        # per-layer isometry of the weights retraining starts from (after scratch / OrthP)
        result["isometry"] = {"start": layer_isometry(model)}
        assert meter is not None
        prep.meter = meter
        if meter.enabled:
            result["jsv"] = {"mode": meter.mode, "method": meter.method, "dense": jsv_dense,
                             "pruned": meter.measure(model, "prune", 0)}
            lines[-1]["jsv_mean"] = result["jsv"]["pruned"]["mean"]
    return prep


def retrain_alone(prep: Prepared) -> TrainState:
    """A prepared run's retraining on its own (checkpointed, resumable)."""
    assert prep.cfg is not None
    return train_resumable(
        prep.ctx, prep.model, prep.cfg, "retrain", prep.latest, hooks=prep.hooks,
        extra_metrics=prep.extra_metrics, on_epoch=prep.write_metrics,
    )


def finish_run(prep: Prepared, state: TrainState | None) -> dict[str, Any]:
    """The result of a prepared run whose retraining (if any) ended in ``state``: TA,
    best validation epoch, final measurements, ``final.pt``."""
    from prunebench.trainability import layer_isometry, trainability_accuracy

    ctx, rdir, model, result = prep.ctx, prep.rdir, prep.model, prep.result
    final_info = prep.final_info
    if prep.cfg is not None:
        assert state is not None and prep.meter is not None
        cfg, meter = prep.cfg, prep.meter
        io.write_jsonl(rdir / "metrics.jsonl", prep.lines + state.history)
        n = ta_epochs(ctx, cfg)
        result["retrain"] = {"epochs": cfg.epochs, "lr": cfg.lr, "init": cfg.init,
                             "budget": cfg.budget}
        ta_start = cfg.schedule.warmup  # TA: 1-based retraining epochs start+1 .. start+n
        result["ta"] = {"epochs": n, "start": ta_start, **{
            k: trainability_accuracy(state.history, n, f"{k}_acc", start=ta_start) if n else None
            for k in ("test", "val")}}
        result["best_val"] = _best_val(state.history)
        if meter.enabled:
            result["jsv"]["final"] = state.history[-1].get("jsv_mean") if state.history else None
            result["jsv"]["seconds"] = round(meter.seconds, 3)
            result["jsv"]["calls"] = meter.calls
            result["jsv"]["seconds_per_call"] = round(meter.seconds / max(meter.calls, 1), 4)
        result["isometry"]["final"] = layer_isometry(model)
        final_info = state.history[-1] if state.history else final_info
    elif prep.base_kind == "pretrain" and prep.history:
        result["best_val"] = _best_val(prep.history)
    io.save_torch(rdir / "checkpoints" / "final.pt", cpu_state(model))
    for key in ("test_acc", "val_acc", "test_top5"):
        if final_info.get(key) is not None:
            result[key] = final_info[key]
    if ctx.speed is not None:  # again: a failed compile during retraining fell back to eager
        result["speed"] = ctx.speed.record()
        k = int(result.get("stack") or 1)
        if k > 1:  # the stacked step is vmap'd eager: say so rather than claim the fast path
            result["speed"]["retrain"] = {"stacked": k, "compile": False, "cuda_graphs": False,
                                          "channels_last": False, "fused_sgd": False}
    result["seconds"] = round(time.perf_counter() - prep.t0, 3)
    return result


def _execute(
    ctx: Context, store: RunStore, stages: list[Stage], rdir: Path, progress: _Progress
) -> dict[str, Any]:
    prep = prepare_run(ctx, store, stages, rdir, progress)
    return finish_run(prep, retrain_alone(prep) if prep.cfg is not None else None)


def finish_record(result: dict[str, Any], recipe: Recipe) -> RunRecord:
    """The typed record of a finished run: the stages' results plus what setups are
    computed from (origin, pruning epoch, trajectory, budgets), validated once."""
    rec = RunRecord.model_validate({**result, "epochs": {}, "train_macs": {}})
    rec.origin = origin(recipe)
    rec.pruned_at = recipe.prune.at_epoch if recipe.prune is not None else None
    if rec.pruned is not None and recipe.prune is not None:
        rec.pruned.granularity = recipe.prune.granularity
    raw = recipe.model_dump(mode="json")
    phase = None
    if rec.pruned is not None and recipe.prune is not None:
        from prunebench.pruning.schedules import phase_segments

        phase = phase_segments(recipe.prune, rec.pruned, raw, macs=rec.dense.macs,
                               images=rec.data.train_images)
    rec.trajectory = build_trajectory(
        raw, images=rec.data.train_images, dense=rec.dense, pruned=rec.pruned,
        retrain=rec.retrain, prune_segments=phase,
    )
    rec.epochs, rec.train_macs = budgets(rec.trajectory)
    return RunRecord.model_validate(rec.to_json())


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        with contextlib.suppress(OSError):
            if os.path.samefile(src, dst) or dst.read_bytes() == src.read_bytes():
                return
        dst.unlink()  # a redone stage (its old file was unreadable): link the new one
    try:
        os.link(src, dst)
    except OSError:
        io.write_bytes(dst, src.read_bytes())


__all__ = ["RunResult", "Stage", "plan", "run", "run_cell", "run_id", "validate_recipes",
           "PrunebenchError"]

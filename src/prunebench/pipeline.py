"""Running a recipe: plan its stages, build the missing ones, store the result.

``run`` is the one entry point: finished runs return at once from the store, interrupted
ones resume from their last epoch, and everything a user can get wrong is checked before
anything is written.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench import __version__, io
from prunebench.context import Context, prepare, resolve_device
from prunebench.errors import PrunebenchError
from prunebench.plan import Stage, plan, run_id
from prunebench.recipe import Recipe
from prunebench.record import RunRecord, RunResult, budgets, build_trajectory, origin
from prunebench.stages import (
    check_prune,
    cpu_state,
    effective_retrain,
    prepare_retrain,
    run_base_stage,
    run_prune_stage,
    ta_epochs,
    train_resumable,
)
from prunebench.store import RunStore, locked
from prunebench.train import Reporter


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


def run(
    recipe: Recipe | dict[str, Any] | str | os.PathLike[str],
    out: str | os.PathLike[str] = "runs",
    *,
    overrides: list[str] | None = None,
    reporter: Reporter | None = None,
    device: str | None = None,
    data_dir: str | None = None,
) -> RunResult:
    """Run one recipe (pretrain -> prune -> retrain) and return its result.

    Finished runs return at once from the store; interrupted ones resume.
    """
    recipe = _coerce(recipe, overrides, device, data_dir)
    store = RunStore(out)
    stages = plan(recipe)
    rid = stages[-1].key
    rdir = store.run_dir(rid)
    recipe_dict = recipe.model_dump(mode="json")
    existing = store.result(rid)
    if existing is not None and existing.status == "done":
        return RunResult(rid, rdir, existing.to_json(), recipe_dict)
    # everything a user can get wrong is checked before anything is written
    ctx = prepare(recipe, resolve_device(recipe.device), reporter)
    check_prune(ctx, ctx.build_dense())
    with locked(rdir / ".lock"):
        existing = store.result(rid)
        if existing is not None and existing.status == "done":
            return RunResult(rid, rdir, existing.to_json(), recipe_dict)
        io.write_text(rdir / "recipe.yaml", recipe.to_yaml())
        store.record(rid, "running", recipe_dict)
        try:
            result = _execute(ctx, store, stages, rdir)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            store.record(rid, status, recipe_dict,
                         RunRecord(id=rid, status=status, error=str(exc)[:500]))
            raise
        record = finish_record(result, recipe)
        io.write_json(rdir / "result.json", record.to_json())
        store.record(rid, "done", recipe_dict, record)
    return RunResult(rid, rdir, record.to_json(), recipe_dict)


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

    def per_epoch(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        if not self.enabled or epoch % self.every:
            return {}
        s = self(model)
        return {"jsv_mean": s["mean"], "jsv_cv": s["cv"]}


# -- the run --------------------------------------------------------------------------------

_PRUNE_LINE = ("val_acc", "test_acc", "params_pruned", "macs_pruned", "param_sparsity",
               "speedup")


def _execute(ctx: Context, store: RunStore, stages: list[Stage], rdir: Path) -> dict[str, Any]:
    from prunebench.trainability import layer_isometry, trainability_accuracy

    t0 = time.perf_counter()
    recipe = ctx.recipe
    ckpt = rdir / "checkpoints"
    by_kind = {s.kind: s for s in stages}
    model, dense_info, history = run_base_stage(ctx, store, stages[0])
    result: dict[str, Any] = {
        "id": stages[-1].key,
        "status": "done",
        "stages": {s.kind: s.key for s in stages},
        "data": {"name": recipe.data.name, "source": ctx.dataset.source,
                 "checksum": ctx.dataset.checksum, "train_images": int(ctx.train_x.shape[0])},
        "device": str(ctx.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "prunebench": __version__,
        "dense": dense_info,
    }
    final_info = dense_info
    lines = list(history)
    masks = None
    meter = _JSV(ctx, model) if "retrain" in by_kind else None
    jsv_dense = meter(model) if meter is not None and meter.enabled else None
    if "prune" in by_kind:
        pdir = store.stage_dir("prune", by_kind["prune"].key)
        model, prune_info, masks = run_prune_stage(ctx, store, by_kind["prune"], model)
        result["pruned"] = prune_info
        final_info = prune_info
        lines.append({"phase": "prune", "epoch": 0, **{k: prune_info.get(k) for k in _PRUNE_LINE}})
        for name in ("pruned.pt", "structure.json", "masks.pt"):
            if (pdir / name).is_file():
                _link_or_copy(pdir / name, ckpt / name)
    io.write_jsonl(rdir / "metrics.jsonl", lines)
    if "retrain" in by_kind:
        hooks = prepare_retrain(ctx, model, masks)
        cfg = effective_retrain(ctx, dense_info, result.get("pruned"))
        # per-layer isometry of the weights retraining starts from (after scratch / OrthP)
        result["isometry"] = {"start": layer_isometry(model)}
        assert meter is not None
        if meter.enabled:
            result["jsv"] = {"mode": meter.mode, "method": meter.method, "dense": jsv_dense,
                             "pruned": meter(model)}
            lines[-1]["jsv_mean"] = result["jsv"]["pruned"]["mean"]
        state = train_resumable(
            ctx, model, cfg, "retrain", ckpt / "latest.pt", hooks=hooks,
            extra_metrics=meter.per_epoch if meter.enabled else None,
            on_epoch=lambda s: io.write_jsonl(rdir / "metrics.jsonl", lines + s.history),
        )
        io.write_jsonl(rdir / "metrics.jsonl", lines + state.history)
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
    elif stages[0].kind == "pretrain" and history:
        result["best_val"] = _best_val(history)
    io.save_torch(ckpt / "final.pt", cpu_state(model))
    for key in ("test_acc", "val_acc", "test_top5"):
        if final_info.get(key) is not None:
            result[key] = final_info[key]
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def finish_record(result: dict[str, Any], recipe: Recipe) -> RunRecord:
    """The typed record of a finished run: the stages' results plus what setups are
    computed from (origin, pruning epoch, trajectory, budgets), validated once."""
    rec = RunRecord.model_validate({**result, "epochs": {}, "train_macs": {}})
    rec.origin = origin(recipe)
    rec.pruned_at = recipe.prune.at_epoch if recipe.prune is not None else None
    if rec.pruned is not None and recipe.prune is not None:
        rec.pruned.granularity = recipe.prune.granularity
    rec.trajectory = build_trajectory(
        recipe.model_dump(mode="json"), images=rec.data.train_images,
        dense=rec.dense, pruned=rec.pruned, retrain=rec.retrain,
    )
    rec.epochs, rec.train_macs = budgets(rec.trajectory)
    return RunRecord.model_validate(rec.to_json())


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        io.write_bytes(dst, src.read_bytes())


__all__ = ["RunResult", "Stage", "plan", "run", "run_id", "PrunebenchError"]

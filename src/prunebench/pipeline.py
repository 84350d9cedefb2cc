"""Runs as chains of content-keyed stages: pretrain (P) -> prune (Q) -> retrain (R).

Each stage key hashes the stage's own normalised config plus its parent's key (a Merkle
chain), so a dense model shared by many recipes is trained once, a finished stage is never
redone, and an interrupted stage resumes from its last epoch checkpoint. The run id is the
key of the chain's last stage: two identical recipes share an id.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench import io
from prunebench.errors import PrunebenchError, RecipeError
from prunebench.recipe import (
    PretrainCfg,
    PruneCfg,
    Recipe,
    RetrainCfg,
    TrainCfg,
    _diff,
    recipe_hash,
)
from prunebench.store import RunStore, locked
from prunebench.train import Loaders, Reporter, TrainState, evaluate_all, train

# -- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    kind: str  # pretrain | base | init | prune | retrain
    key: str
    config: dict[str, Any]


def _section(cfg: Any, default: Any) -> dict[str, Any]:
    return _diff(cfg.model_dump(mode="json"), default.model_dump(mode="json"))


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def plan(recipe: Recipe) -> list[Stage]:
    """The recipe's chain of stages, each with its content key."""
    ident = recipe.identity()
    base: dict[str, Any] = {
        "seed": recipe.seed,
        "data": ident.get("data", {}),
        "model": ident.get("model", {}),
    }
    if recipe.base_model is not None:
        if not Path(recipe.base_model).is_file():
            raise RecipeError(f"base_model {recipe.base_model!r} is not a file")
        kind = "base"
        base["base_model_sha256"] = file_sha256(recipe.base_model)
    elif recipe.pretrain is None:
        kind = "init"
    else:
        kind = "pretrain"
        base["pretrain"] = _section(recipe.pretrain, PretrainCfg())
        if recipe.prune is not None and recipe.prune.at_epoch is not None:
            base["stop_at"] = recipe.prune.at_epoch
    stages = [Stage(kind, recipe_hash({"stage": kind, **base}), base)]
    if recipe.prune is not None:
        cfg = {"parent": stages[-1].key, "prune": _section(recipe.prune, PruneCfg())}
        stages.append(Stage("prune", recipe_hash({"stage": "prune", **cfg}), cfg))
    if recipe.retrain is not None:
        cfg = {"parent": stages[-1].key, "retrain": _section(recipe.retrain, RetrainCfg())}
        stages.append(Stage("retrain", recipe_hash({"stage": "retrain", **cfg}), cfg))
    return stages


def run_id(recipe: Recipe) -> str:
    return plan(recipe)[-1].key


# -- data, model ----------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise RecipeError(f"bad device {name!r}: allowed auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"device {name!r} requested but CUDA is not available; use cpu or auto")
    return dev


@dataclass
class Context:
    recipe: Recipe
    device: torch.device
    dataset: Any
    loaders: Loaders
    example: torch.Tensor  # a small batch of real (normalised) training inputs
    input_shape: tuple[int, int, int]
    train_x: torch.Tensor
    train_y: torch.Tensor
    augment: str
    reporter: Reporter | None = None

    def build_dense(self) -> nn.Module:
        from prunebench.models import build_model

        r = self.recipe
        torch.manual_seed(r.seed)
        model = build_model(
            r.model.name,
            in_channels=self.dataset.in_channels,
            num_classes=self.dataset.num_classes,
            input_size=self.dataset.input_size,
            **r.model.kwargs,
        )
        return model.to(self.device)

    def loaders_for(self, phase: str) -> Loaders:
        """The eval loaders plus a train loader whose shuffle seed depends on the phase."""
        from prunebench.data import BatchLoader

        offset = {"pretrain": 0, "retrain": 1}.get(phase, 2)
        d = self.recipe.data
        train_loader = BatchLoader(
            self.train_x,
            self.train_y,
            batch_size=d.batch_size,
            mean=self.dataset.mean,
            std=self.dataset.std,
            shuffle=True,
            augment=self.augment,
            seed=self.recipe.seed * 1000 + offset,
            device=self.device,
        )
        return Loaders(train_loader, self.loaders.val, self.loaders.test, self.loaders.num_classes)


def prepare(recipe: Recipe, device: torch.device, reporter: Reporter | None = None) -> Context:
    """Load the dataset, carve the validation split, build the loaders (data on ``device``)."""
    from prunebench.data import BatchLoader, load_dataset, split_train_val

    d = recipe.data
    ds = load_dataset(d.name, d.data_dir, **d.kwargs)
    n = int(ds.train_y.shape[0])
    train_idx, val_idx = split_train_val(n, d.val_size, seed=d.seed)
    if d.train_subset is not None:
        if d.train_subset > len(train_idx):
            raise RecipeError(
                f"data.train_subset {d.train_subset} exceeds the {len(train_idx)} training images"
            )
        gen = torch.Generator().manual_seed(d.seed + 1)
        pick = torch.randperm(len(train_idx), generator=gen)[: d.train_subset]
        train_idx = train_idx[pick.sort().values]
    common = {"mean": ds.mean, "std": ds.std, "device": device}

    def eval_loader(x: torch.Tensor, y: torch.Tensor) -> BatchLoader:
        return BatchLoader(x, y, batch_size=d.eval_batch_size, **common)

    val_loader = eval_loader(ds.train_x[val_idx], ds.train_y[val_idx]) if len(val_idx) else None
    test_loader = eval_loader(ds.test_x, ds.test_y)
    train_x, train_y = ds.train_x[train_idx], ds.train_y[train_idx]
    example = next(iter(eval_loader(train_x[:8], train_y[:8]).epoch(0)))[0]
    ctx = Context(
        recipe,
        device,
        ds,
        Loaders(test_loader, val_loader, test_loader, ds.num_classes),
        example,
        (ds.in_channels, *ds.input_size),
        train_x,
        train_y,
        ds.augment if d.augment else "none",
        reporter,
    )
    ctx.loaders = ctx.loaders_for("pretrain")
    return ctx


# -- checkpoints ----------------------------------------------------------------------------


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def _save_latest(path: Path, state: TrainState, model: nn.Module) -> None:
    io.save_torch(
        path,
        {
            "model": _cpu_state(model),
            "optimizer": state.optimizer,
            "epoch": state.epoch,
            "history": state.history,
        },
    )


def _resume(path: Path, model: nn.Module) -> TrainState | None:
    if not path.is_file():
        return None
    ckpt = _load(path)
    model.load_state_dict(ckpt["model"])
    return TrainState(ckpt["epoch"], list(ckpt["history"]), ckpt["optimizer"])


def _train_resumable(
    ctx: Context,
    model: nn.Module,
    cfg: TrainCfg,
    phase: str,
    latest: Path,
    stop_at: int | None = None,
    on_epoch: Any = None,
) -> TrainState:
    def save(state: TrainState, m: nn.Module, _opt: Any) -> None:
        _save_latest(latest, state, m)
        if on_epoch is not None:
            on_epoch(state)

    state = _resume(latest, model)
    return train(
        model,
        ctx.loaders_for(phase),
        cfg,
        phase=phase,
        state=state,
        stop_at=stop_at,
        reporter=ctx.reporter,
        on_epoch_end=save,
    )


def _model_info(ctx: Context, model: nn.Module) -> dict[str, Any]:
    from prunebench.models import count_macs, count_params

    info: dict[str, Any] = evaluate_all(model, ctx.loaders)
    info["params"] = count_params(model)
    info["macs"] = count_macs(model, ctx.input_shape)
    return info


# -- stages ---------------------------------------------------------------------------------


def run_base_stage(ctx: Context, store: RunStore, stage: Stage) -> tuple[nn.Module, dict, list]:
    """Pretrain (or load / initialise) the dense model; shared by every recipe with key P."""
    model = ctx.build_dense()
    r = ctx.recipe
    if stage.kind == "init":
        return model, {**_model_info(ctx, model), "epochs": 0, "kind": "init"}, []
    if stage.kind == "base":
        assert r.base_model is not None
        state = _load(Path(r.base_model))
        state = state.get("model", state) if isinstance(state, dict) else state
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise RecipeError(
                f"base_model {r.base_model!r} does not fit {r.model.name}: {first}"
            ) from None
        return model, {**_model_info(ctx, model), "epochs": 0, "kind": "base"}, []
    assert r.pretrain is not None
    sdir = store.stage_dir("pretrain", stage.key)
    with locked(sdir / ".lock"):
        done = sdir / "done.json"
        if done.is_file():
            model.load_state_dict(_load(sdir / "model.pt"))
            info = io.read_json(done)
            return model, info, io.read_jsonl(sdir / "metrics.jsonl")
        io.write_json(sdir / "stage.json", {"kind": stage.kind, "key": stage.key, **stage.config})
        t0 = time.perf_counter()
        state = _train_resumable(
            ctx,
            model,
            r.pretrain,
            "pretrain",
            sdir / "latest.pt",
            stop_at=stage.config.get("stop_at"),
            on_epoch=lambda s: io.write_jsonl(sdir / "metrics.jsonl", s.history),
        )
        info = {
            **_model_info(ctx, model),
            "epochs": state.epoch,
            "kind": "pretrain",
            "seconds": round(time.perf_counter() - t0, 3),
        }
        io.save_torch(sdir / "model.pt", _cpu_state(model))
        io.write_jsonl(sdir / "metrics.jsonl", state.history)
        io.write_json(done, info)
        (sdir / "latest.pt").unlink(missing_ok=True)
        return model, info, state.history


def run_prune_stage(
    ctx: Context, store: RunStore, stage: Stage, dense: nn.Module
) -> tuple[nn.Module, dict]:
    from prunebench.pruning import (
        apply_structure,
        parse_layer_ratios,
        prunable_layers,
        prune_structured,
        prune_summary,
        resolve_layer_ratios,
    )

    cfg = ctx.recipe.prune
    assert cfg is not None
    sdir = store.stage_dir("prune", stage.key)
    with locked(sdir / ".lock"):
        done = sdir / "done.json"
        if done.is_file():
            structure = io.read_json(sdir / "structure.json")
            model = apply_structure(ctx.build_dense(), structure["kept"], ctx.example)
            model.load_state_dict(_load(sdir / "pruned.pt"))
            return model.to(ctx.device), io.read_json(done)
        t0 = time.perf_counter()
        model = copy.deepcopy(dense)
        spec = parse_layer_ratios(cfg.layers, cfg.skip)
        ratios = resolve_layer_ratios(spec, model, prunable_layers(model, ctx.example))
        outcome = prune_structured(model, ratios, cfg.method, ctx.example, seed=ctx.recipe.seed)
        summary = prune_summary(dense, model, ctx.input_shape)
        info = {
            **summary,
            **evaluate_all(model, ctx.loaders),
            "layers": {
                k: [outcome.n_total[k] - outcome.n_pruned[k], outcome.n_total[k]]
                for k in outcome.kept
            },
            "seconds": round(time.perf_counter() - t0, 3),
        }
        io.write_json(sdir / "structure.json", {"kept": outcome.kept})
        io.save_torch(sdir / "pruned.pt", _cpu_state(model))
        io.write_json(done, info)
        return model, info


# -- the run --------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What :func:`run` returns: the run id, its folder and the stored result."""

    id: str
    dir: Path
    result: dict[str, Any]
    recipe: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.result.get("status", "unknown")

    @property
    def test_acc(self) -> float | None:
        """Final-epoch top-1 test accuracy in percent (never the best test epoch)."""
        return self.result.get("test_acc")

    def metrics(self) -> list[dict[str, Any]]:
        return io.read_jsonl(self.dir / "metrics.jsonl")


def _best_val(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    rows = [h for h in history if h.get("val_acc") is not None]
    if not rows:
        return None
    best = max(rows, key=lambda h: (h["val_acc"], -h["epoch"]))
    return {"epoch": best["epoch"], "val_acc": best["val_acc"], "test_acc": best.get("test_acc")}


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
        recipe = recipe.model_copy(
            update={"data": recipe.data.model_copy(update={"data_dir": data_dir})}
        )
    store = RunStore(out)
    stages = plan(recipe)
    rid = stages[-1].key
    rdir = store.run_dir(rid)
    recipe_dict = recipe.model_dump(mode="json")
    existing = store.result(rid)
    if existing is not None and existing.get("status") == "done":
        return RunResult(rid, rdir, existing, recipe_dict)
    # everything a user can get wrong is checked before anything is written
    ctx = prepare(recipe, resolve_device(recipe.device), reporter)
    check(ctx)
    with locked(rdir / ".lock"):
        existing = store.result(rid)
        if existing is not None and existing.get("status") == "done":
            return RunResult(rid, rdir, existing, recipe_dict)
        io.write_text(rdir / "recipe.yaml", recipe.to_yaml())
        store.record(rid, "running", recipe_dict)
        try:
            result = _execute(ctx, store, stages, rdir)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            store.record(rid, status, recipe_dict, {"status": status, "error": str(exc)[:500]})
            raise
        io.write_json(rdir / "result.json", result)
        store.record(rid, "done", recipe_dict, result)
    return RunResult(rid, rdir, result, recipe_dict)


def check(ctx: Context) -> None:
    """Validate what only the model can tell (names, layer patterns, criterion) up front."""
    from prunebench.pruning import (
        CRITERIA,
        parse_layer_ratios,
        prunable_layers,
        resolve_layer_ratios,
    )

    model = ctx.build_dense()
    cfg = ctx.recipe.prune
    if cfg is not None:
        CRITERIA.get(cfg.method)
        spec = parse_layer_ratios(cfg.layers, cfg.skip)
        resolve_layer_ratios(spec, model, prunable_layers(model, ctx.example))


def _execute(ctx: Context, store: RunStore, stages: list[Stage], rdir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    recipe, device = ctx.recipe, ctx.device
    ckpt = rdir / "checkpoints"
    by_kind = {s.kind: s for s in stages}
    base_stage = stages[0]
    model, dense_info, history = run_base_stage(ctx, store, base_stage)
    result: dict[str, Any] = {
        "id": stages[-1].key,
        "status": "done",
        "stages": {s.kind: s.key for s in stages},
        "data": {
            "name": recipe.data.name,
            "source": ctx.dataset.source,
            "checksum": ctx.dataset.checksum,
        },
        "device": str(device),
        "dense": dense_info,
        "epochs": {"pretrain": dense_info.get("epochs", 0)},
    }
    final_info = dense_info
    lines = list(history)
    if "prune" in by_kind:
        dense = model
        model, prune_info = run_prune_stage(ctx, store, by_kind["prune"], dense)
        result["pruned"] = prune_info
        final_info = prune_info
        lines.append(
            {
                "phase": "prune",
                "epoch": 0,
                **{
                    k: prune_info.get(k)
                    for k in (
                        "val_acc",
                        "test_acc",
                        "params_pruned",
                        "macs_pruned",
                        "param_sparsity",
                        "speedup",
                    )
                },
            }
        )
        if "retrain" not in by_kind:
            io.save_torch(ckpt / "pruned.pt", _cpu_state(model))
        else:
            _link_or_copy(
                store.stage_dir("prune", by_kind["prune"].key) / "pruned.pt", ckpt / "pruned.pt"
            )
        _link_or_copy(
            store.stage_dir("prune", by_kind["prune"].key) / "structure.json",
            ckpt / "structure.json",
        )
    io.write_jsonl(rdir / "metrics.jsonl", lines)
    if "retrain" in by_kind:
        cfg = recipe.retrain
        assert cfg is not None
        state = _train_resumable(
            ctx,
            model,
            cfg,
            "retrain",
            ckpt / "latest.pt",
            on_epoch=lambda s: io.write_jsonl(rdir / "metrics.jsonl", lines + s.history),
        )
        io.write_jsonl(rdir / "metrics.jsonl", lines + state.history)
        result["epochs"]["retrain"] = state.epoch
        result["best_val"] = _best_val(state.history)
        final_info = state.history[-1] if state.history else final_info
    elif base_stage.kind == "pretrain" and history:
        result["best_val"] = _best_val(history)
    io.save_torch(ckpt / "final.pt", _cpu_state(model))
    for key in ("test_acc", "val_acc", "test_top5"):
        if final_info.get(key) is not None:
            result[key] = final_info[key]
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        io.write_bytes(dst, src.read_bytes())


__all__ = ["RunResult", "Stage", "plan", "run", "run_id", "PrunebenchError"]

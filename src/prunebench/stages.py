"""Stage runners: dense (pretrain / base / init), prune (every schedule), retrain.

Each runner first asks the store whether its output exists (then loads it), else builds
it under a lock, checkpointing every epoch so a kill loses at most the epoch in progress.
Nothing here knows about studies or comparisons.
"""

from __future__ import annotations

import copy
import pickle
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench import distributed, io
from prunebench.context import Context
from prunebench.errors import RecipeError
from prunebench.plan import Stage
from prunebench.recipe import RetrainCfg, TrainCfg
from prunebench.store import RunStore, locked
from prunebench.train import ChainHooks, StepHooks, TrainState, evaluate_all, train

#: forward + backward ~ 3x the forward multiply-accumulates (the usual convention)
TRAIN_MACS_FACTOR = 3

# -- checkpoints ----------------------------------------------------------------------------


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def warn(ctx: Context | None, message: str) -> None:
    """A warning the user should see (a discarded checkpoint): the reporter's ``warn`` when
    it has one, else one line on stderr."""
    reporter = getattr(ctx, "reporter", None) if ctx is not None else None
    hook = getattr(reporter, "warn", None)
    if callable(hook):
        hook(message)
    else:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0].split(". ")[0][:160] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def try_load(path: Path) -> tuple[Any, str | None]:
    """``(object, None)``, or ``(None, why)`` when the file is unreadable (truncated,
    corrupt, or refused by the weights-only unpickler)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load(path), None
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is discarded
        return None, _why(exc)


def _discard(ctx: Context | None, path: Path, why: str, redo: str) -> None:
    warn(ctx, f"discarding unreadable checkpoint {path} ({why}); {redo}")
    path.unlink(missing_ok=True)


# -- base models (a checkpoint a recipe names) ----------------------------------------------


def read_base_model(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a ``base_model`` file (a state dict or ``{"model": state_dict}``),
    loaded with ``weights_only=True``; a one-line RecipeError when it is not one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            obj = load(Path(path))
        except pickle.UnpicklingError:
            raise RecipeError(
                f"base_model {str(path)!r} is refused: it is a pickle of Python objects, not a "
                "state dict of tensors (only torch.load(weights_only=True) files are loaded)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any other unreadable file
            raise RecipeError(
                f"base_model {str(path)!r} is not a readable torch checkpoint (empty, "
                f"truncated or another format; {_why(exc)})"
            ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise RecipeError(
            f"base_model {str(path)!r} holds a {type(obj).__name__}, not a state dict "
            "(a mapping of parameter names to tensors, or {'model': state_dict})"
        )
    return obj


def check_base_model(path: str | Path, model: nn.Module, model_name: str) -> dict[str, Any]:
    """Validate a ``base_model`` file against the built dense model: loadable, a state dict
    whose keys and shapes fit, finite values. Returns the state dict."""
    state = read_base_model(path)
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in want.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys ({', '.join(missing[:3])})")
    if extra:
        problems.append(f"{len(extra)} unexpected keys ({', '.join(extra[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({'; '.join(shapes[:2])})")
    if problems:
        raise RecipeError(
            f"base_model {str(path)!r} does not fit {model_name}: {'; '.join(problems)}"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise RecipeError(
            f"base_model {str(path)!r} has non-finite values (NaN/inf) in {', '.join(bad[:3])}"
        )
    return state


def _save_latest(path: Path, state: TrainState, model: nn.Module) -> None:
    io.save_torch(
        path,
        {
            "model": cpu_state(model),
            "optimizer": state.optimizer,
            "epoch": state.epoch,
            "history": state.history,
        },
    )


def _resume(path: Path, model: nn.Module, ctx: Context | None = None) -> TrainState | None:
    """The state saved in ``path`` (weights loaded into ``model``); ``None`` when there is
    none. An unreadable or inconsistent checkpoint (truncated, another shape) is discarded
    with a warning and training starts over (the model is left untouched)."""
    if not path.is_file():
        return None
    ckpt, why = try_load(path)
    if why is None:
        try:
            backup = copy.deepcopy(model.state_dict())
            model.load_state_dict(ckpt["model"])
            return TrainState(int(ckpt["epoch"]), list(ckpt["history"]), ckpt["optimizer"])
        except Exception as exc:  # noqa: BLE001 - a checkpoint that does not fit
            model.load_state_dict(backup)
            why = _why(exc)
    _discard(ctx, path, why, "restarting this stage's training from its start")
    return None


def resume_state(latest: Path, model: nn.Module, ctx: Context | None = None) -> TrainState | None:
    """The training state checkpointed in ``latest`` (weights loaded into ``model``), or
    ``None`` (an unreadable checkpoint is discarded with a warning). Several processes:
    rank 0 reads it and every rank gets its weights and state."""
    if distributed.world() <= 1:
        return _resume(latest, model, ctx)

    def read() -> tuple[dict[str, torch.Tensor], TrainState] | None:
        state = _resume(latest, model, ctx)
        return None if state is None else (cpu_state(model), state)

    got = distributed.from_main(read)
    if got is None:
        return None
    if not distributed.is_main():
        model.load_state_dict(got[0])
    return got[1]


def epoch_saver(
    latest: Path, on_epoch: Callable[[TrainState], None] | None = None
) -> Callable[[TrainState, nn.Module, Any], None]:
    """An ``on_epoch_end`` callback (``train`` / ``train_stacked``) that checkpoints the
    epoch into ``latest``, then calls ``on_epoch(state)``."""

    def save(state: TrainState, m: nn.Module, _opt: Any) -> None:
        if not distributed.is_main():  # rank 0 checkpoints (several processes)
            return
        _save_latest(latest, state, m)
        if on_epoch is not None:
            on_epoch(state)

    return save


def train_resumable(
    ctx: Context,
    model: nn.Module,
    cfg: TrainCfg,
    phase: str,
    latest: Path,
    *,
    stop_at: int | None = None,
    start: TrainState | None = None,
    on_epoch: Callable[[TrainState], None] | None = None,
    hooks: StepHooks | None = None,
    extra_metrics: Callable[[nn.Module, int], dict[str, Any]] | None = None,
) -> TrainState:
    """Train with a checkpoint (``latest``) after every epoch; resume from it if present."""
    state = resume_state(latest, model, ctx) or start
    return train(
        model,
        ctx.loaders_for(phase),
        cfg,
        phase=phase,
        state=state,
        stop_at=stop_at,
        reporter=ctx.reporter,
        on_epoch_end=epoch_saver(latest, on_epoch),
        hooks=hooks,
        extra_metrics=extra_metrics,
    )


def model_info(ctx: Context, model: nn.Module) -> dict[str, Any]:
    from prunebench.models import count_macs, count_nonzero_params, count_params

    info: dict[str, Any] = evaluate_all(model, ctx.loaders)
    info["params"] = count_params(model)
    info["nonzero_params"] = count_nonzero_params(model)
    info["macs"] = count_macs(model, ctx.input_shape)
    return info


def train_macs(ctx: Context, epochs: int, macs: int) -> int:
    """Training multiply-accumulates of ``epochs`` epochs at ``macs`` per image."""
    return int(epochs * ctx.train_x.shape[0] * macs * TRAIN_MACS_FACTOR)


# -- the dense model ------------------------------------------------------------------------


def run_base_stage(
    ctx: Context, store: RunStore, stage: Stage
) -> tuple[nn.Module, dict[str, Any], list[dict[str, Any]]]:
    """Pretrain (or load / initialise) the dense model; shared by every recipe with key P."""
    model = ctx.build_dense()
    r = ctx.recipe
    if stage.kind == "init":
        return model, {**model_info(ctx, model), "epochs": 0, "kind": "init", "train_macs": 0}, []
    if stage.kind == "base":
        assert r.base_model is not None
        model.load_state_dict(check_base_model(r.base_model, model, r.model.name))
        info = {**model_info(ctx, model), "epochs": 0, "kind": "base", "train_macs": 0,
                "sha256": stage.config["base_model_sha256"]}
        return model, info, []
    assert r.pretrain is not None
    sdir = store.stage_dir("pretrain", stage.key)
    with locked(sdir / ".lock"):
        done = sdir / "done.json"
        stored = distributed.from_main(lambda: _stored_base(ctx, sdir, model))
        if stored is not None:
            if not distributed.is_main():
                model.load_state_dict(stored[2])
            return model, stored[0], stored[1]
        io.write_json(sdir / "stage.json", {"kind": stage.kind, "key": stage.key, **stage.config})
        t0 = time.perf_counter()
        state = train_resumable(
            ctx, model, r.pretrain, "pretrain", sdir / "latest.pt",
            stop_at=stage.config.get("stop_at"),
            on_epoch=lambda s: io.write_jsonl(sdir / "metrics.jsonl", s.history),
        )
        info = {**model_info(ctx, model), "epochs": state.epoch, "kind": "pretrain",
                "seconds": round(time.perf_counter() - t0, 3)}
        info["train_macs"] = train_macs(ctx, state.epoch, info["macs"])
        io.save_torch(sdir / "model.pt", cpu_state(model))
        io.write_jsonl(sdir / "metrics.jsonl", state.history)
        io.write_json(done, info)
        (sdir / "latest.pt").unlink(missing_ok=True)
        return model, info, state.history


def _stored_base(
    ctx: Context, sdir: Path, model: nn.Module
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, torch.Tensor] | None] | None:
    """A finished dense stage (info, metrics, and its weights for the other ranks when
    there are several processes), its weights loaded into ``model``; ``None`` to build it."""
    if not (sdir / "done.json").is_file():
        return None
    # the metrics first: a damaged metrics file is a damaged stage, rebuilt like one with an
    # unreadable checkpoint (before any weights are loaded into ``model``)
    metrics = sdir / "metrics.jsonl"
    try:
        history = io.read_jsonl(metrics)
        bad = next((f"line {n} is a {type(h).__name__}, not an object"
                    for n, h in enumerate(history, 1) if not isinstance(h, dict)), None)
    except (io.CorruptFileError, OSError) as exc:
        bad = (str(exc).removeprefix(repr(str(metrics))).strip()
               if isinstance(exc, io.CorruptFileError) else _why(exc))
    if bad is not None:
        warn(ctx, f"discarding unreadable stage metrics {metrics} ({bad}); rebuilding stage "
                  f"{sdir.name}")
        (sdir / "done.json").unlink(missing_ok=True)
        metrics.unlink(missing_ok=True)
        return None
    info = _load_done(ctx, sdir, model, "model.pt")
    if info is None:
        return None
    weights = cpu_state(model) if distributed.world() > 1 else None
    return info, history, weights


def _load_done(
    ctx: Context, sdir: Path, model: nn.Module, weights: str
) -> dict[str, Any] | None:
    """A finished stage's info with its weights loaded into ``model``; ``None`` (after a
    warning, with the stage's done marker removed so it is rebuilt) when they are unreadable."""
    state, why = try_load(sdir / weights)
    if why is None:
        try:
            info = io.read_json(sdir / "done.json")
            model.load_state_dict(state)
            return dict(info)
        except Exception as exc:  # noqa: BLE001 - truncated done.json, wrong shapes
            why = _why(exc)
    _discard(ctx, sdir / weights, why, f"rebuilding stage {sdir.name}")
    (sdir / "done.json").unlink(missing_ok=True)
    return None


# -- pruning --------------------------------------------------------------------------------


def check_prune(ctx: Context, model: nn.Module) -> None:
    """Validate the prune section against the built model and the data, before any write.

    The registered schedule checks what it needs (:mod:`prunebench.pruning.schedules`):
    criterion and layer patterns for filter schedules, the pruning-phase budget of GReg/TPP.
    """
    from prunebench.pruning.schedules import schedule_for

    cfg = ctx.recipe.prune
    if cfg is None:
        return
    schedule_for(cfg).check(ctx, model)


def _summary(ctx: Context, dense: nn.Module, model: nn.Module) -> dict[str, Any]:
    from prunebench.models import count_nonzero_params
    from prunebench.pruning import prune_summary

    s = prune_summary(dense, model, ctx.input_shape)
    nz_dense, nz = count_nonzero_params(dense), count_nonzero_params(model)
    s["nonzero_params_pruned"] = nz
    s["nonzero_sparsity"] = 100.0 * (1 - nz / nz_dense) if nz_dense else 0.0
    return s


def run_prune_stage(
    ctx: Context, store: RunStore, stage: Stage, dense: nn.Module
) -> tuple[nn.Module, dict[str, Any], dict[str, torch.Tensor] | None]:
    """Prune the dense model; returns the pruned model, its info, and masks (unstructured).

    The registered schedule of ``prune.granularity`` / ``prune.schedule`` does the work.
    """
    from prunebench.pruning.schedules import schedule_for

    cfg = ctx.recipe.prune
    assert cfg is not None
    entry = schedule_for(cfg)
    sdir = store.stage_dir("prune", stage.key)
    with locked(sdir / ".lock"):
        done = sdir / "done.json"
        if distributed.world() > 1:  # rank 0 reads the stored stage; every rank adopts it
            mine = _load_pruned(ctx, sdir) if distributed.is_main() and done.is_file() else None
            if distributed.share(mine is not None):
                return _adopt_main(ctx, sdir, mine)
        elif done.is_file():
            loaded = _load_pruned(ctx, sdir)
            if loaded is not None:
                return loaded
        io.write_json(sdir / "stage.json", {"kind": stage.kind, "key": stage.key, **stage.config})
        t0 = time.perf_counter()
        model = copy.deepcopy(dense)
        pruned, extra = entry.run(ctx, store, model, sdir)
        masks = pruned if entry.granularity == "weight" else None
        kept = pruned
        info: dict[str, Any] = {**_summary(ctx, dense, model), **evaluate_all(model, ctx.loaders)}
        if masks is None:
            n_pruned, n_total = extra.pop("n_pruned"), extra.pop("n_total")
            info["layers"] = {k: [n_total[k] - n_pruned[k], n_total[k]] for k in kept}
            io.write_json(sdir / "structure.json", {"kept": kept})
        else:
            io.save_torch(sdir / "masks.pt", {k: v.cpu() for k, v in masks.items()})
        info.update(extra)
        info["schedule"] = cfg.schedule
        info["train_macs"] = _prune_train_macs(ctx, info, dense)
        info["seconds"] = round(time.perf_counter() - t0, 3)
        io.save_torch(sdir / "pruned.pt", cpu_state(model))
        io.write_json(done, info)
        if distributed.world() > 1:  # every rank continues from rank 0's pruned model
            return _adopt_main(ctx, sdir, (model, info, masks))
        return model, info, masks


def _adopt_main(
    ctx: Context,
    sdir: Path,
    mine: tuple[nn.Module, dict[str, Any], dict[str, torch.Tensor] | None] | None,
) -> tuple[nn.Module, dict[str, Any], dict[str, torch.Tensor] | None]:
    """Rank 0's pruned model (``mine`` there: model, info, masks, stored in ``sdir``): its
    structure, weights, info and masks are broadcast and rebuilt on the other ranks, so
    every rank holds exactly rank 0's architecture, masks and weights."""
    from prunebench.pruning import apply_structure

    def payload() -> tuple[Any, ...]:
        assert mine is not None
        model, info, masks = mine
        structure = (io.read_json(sdir / "structure.json")["kept"]
                     if (sdir / "structure.json").is_file() else None)
        return (structure, cpu_state(model), info,
                None if masks is None else {k: v.cpu() for k, v in masks.items()})

    structure, state, info, masks = distributed.from_main(payload)
    if distributed.is_main():
        assert mine is not None
        return mine
    model = ctx.build_dense()
    if structure is not None:
        model = apply_structure(model, structure, ctx.example)
    model.load_state_dict(state)
    return model.to(ctx.device), info, masks


def _load_pruned(
    ctx: Context, sdir: Path
) -> tuple[nn.Module, dict[str, Any], dict[str, torch.Tensor] | None] | None:
    """A finished prune stage (model, info, masks); ``None`` (after a warning, with the done
    marker removed so the stage is redone) when one of its files is unreadable."""
    from prunebench.pruning import apply_structure

    bad = sdir / "pruned.pt"
    try:
        model = ctx.build_dense()
        if (sdir / "structure.json").is_file():
            bad = sdir / "structure.json"
            model = apply_structure(model, io.read_json(bad)["kept"], ctx.example)
        masks = None
        if (sdir / "masks.pt").is_file():
            bad = sdir / "masks.pt"
            masks, why = try_load(bad)
            if why is not None:
                raise RuntimeError(why)
        bad = sdir / "pruned.pt"
        state, why = try_load(bad)
        if why is not None:
            raise RuntimeError(why)
        model.load_state_dict(state)
        info = io.read_json(sdir / "done.json")
        return model.to(ctx.device), info, masks
    except Exception as exc:  # noqa: BLE001 - any unreadable stage file: redo the stage
        _discard(ctx, bad, _why(exc), f"redoing prune stage {sdir.name}")
        (sdir / "done.json").unlink(missing_ok=True)
        return None


def _prune_train_macs(ctx: Context, info: dict[str, Any], dense: nn.Module) -> int:
    """Training spent inside the pruning stage (GReg/TPP phase, IMP rounds) at dense cost."""
    from prunebench.pruning.schedules import schedule_for

    cfg = ctx.recipe.prune
    assert cfg is not None
    return train_macs(ctx, schedule_for(cfg).train_epochs(info), info["macs_dense"])


# -- retraining -----------------------------------------------------------------------------


def effective_retrain(
    ctx: Context, dense_info: dict[str, Any], prune_info: dict[str, Any] | None
) -> RetrainCfg:
    """The retraining config actually run: scratch budgets derive epochs and LR.

    With ``retrain.budget`` (:data:`prunebench.pruning.scratch.BUDGETS`) the epochs come
    from the dense run and the pipeline: E: K1; B: K1 F1/F2; total: K1 + Kp + K2 (x + y for
    PxFy); total_flops: (K1 + Kp) F1/F2 + K2. A step ``retrain.lr`` is replaced by the
    pretraining schedule with its milestones stretched to those epochs (E: exactly the
    pretraining schedule); a cosine ``retrain.lr`` is kept and spans them.
    """
    from prunebench.pruning.scratch import scratch_b_schedule, scratch_budget_epochs

    r = ctx.recipe
    cfg = r.retrain
    assert cfg is not None
    if cfg.budget is None:
        return cfg
    assert r.pretrain is not None
    info = prune_info or {}
    f1 = dense_info["macs"]
    from prunebench.pruning.schedules import schedule_for

    prune_epochs = (schedule_for(r.prune).train_epochs(info)
                    if r.prune is not None and prune_info is not None else 0)
    epochs = scratch_budget_epochs(
        cfg.budget, dense_epochs=r.pretrain.epochs, used_epochs=int(dense_info["epochs"]),
        prune_epochs=prune_epochs, retrain_epochs=cfg.epochs, f1=f1,
        f2=info.get("macs_pruned", f1),
    )
    if cfg.schedule.kind == "cosine":
        lr = cfg.lr  # a cosine schedule simply spans the budget's epochs
    else:
        lr = scratch_b_schedule(r.pretrain.lr, r.pretrain.epochs, epochs).canonical()
    return cfg.model_copy(update={"epochs": epochs, "lr": lr})


def prepare_retrain(
    ctx: Context, model: nn.Module, masks: dict[str, torch.Tensor] | None
) -> StepHooks | None:
    """Apply ``retrain.init`` (scratch / orthp) and build the step hooks (masks, orth_reg)."""
    from prunebench.pruning.masks import MaskHooks, apply_masks
    from prunebench.pruning.orth_reg import OrthReg
    from prunebench.pruning.reinit import orthp, reinit_scratch

    r = ctx.recipe
    cfg = r.retrain
    assert cfg is not None
    if cfg.init == "scratch":
        reinit_scratch(model, cfg.init_scheme, seed=r.seed)
    elif cfg.init == "orthp":
        orthp(model)
    if masks is not None:
        apply_masks(model, masks)
    hooks: list[StepHooks] = []
    if cfg.orth_reg > 0:
        hooks.append(OrthReg(cfg.orth_reg))
    if masks is not None:
        hooks.append(MaskHooks(masks))  # last: re-zero after every other change
    return ChainHooks(*hooks) if hooks else None


def ta_epochs(ctx: Context, cfg: TrainCfg) -> int:
    """N of trainability accuracy, counted from the end of warm-up: TA averages the 1-based
    retraining epochs ``warmup + 1 .. warmup + N`` (``warmup`` = ``cfg.schedule.warmup``).

    ``measure.ta_epochs`` when given (at most the epochs left after warm-up), else the first
    LR stage's length (:meth:`prunebench.schedule.Schedule.first_stage`). 0 when warm-up
    takes every retraining epoch (TA is then not measured).
    """
    m = ctx.recipe.measure
    start, n = cfg.schedule.first_stage(cfg.epochs, m.ta_cosine_fraction)
    if m.ta_epochs is not None:
        return min(m.ta_epochs, max(cfg.epochs - start, 0)) if cfg.epochs else m.ta_epochs
    return n

"""The epoch loop: SGD, LR schedule, evaluation, resumable state. Knows nothing of stores.

Everything stays on tensors on the training device: batches come from
:class:`prunebench.data.BatchLoader`, loss and correct counts accumulate on the device and
are read once per epoch (no per-batch host sync). That one read also checks for divergence:
a non-finite epoch loss (or non-finite weights) stops training with
:class:`prunebench.errors.TrainingDiverged`, before the epoch is checkpointed, so the last
checkpoint always holds finite weights.

The fast path (:class:`SpeedPlan`, from the recipe's ``speed:`` section; on by default on
CUDA, off on CPU) changes how a step runs, never what it computes:

* ``torch.compile`` of the forward pass + loss + correct count (its backward is compiled
  with it), with CUDA graphs (mode ``"reduce-overhead"``) on CUDA. Only full batches take
  the compiled step (``dynamic=False``: one compile per model shape); the last, partial
  batch of an epoch runs through the *eager* step on the same weights, so no batch shape
  is ever recompiled and no sample is dropped or repeated. The first compiled steps of a
  stage (compilation, CUDA-graph warm-up and recording) are timed apart:
  ``compile_seconds`` in the metrics row, not counted in ``train_seconds``.
* ``channels_last`` weights and inputs for conv nets (restored to the contiguous layout at
  the end of the stage, so checkpoints, pruning and stacking see the usual tensors).
* fused SGD (``torch.optim.SGD(fused=True)``): the same update formula in one kernel.
* bf16 autocast is the recipe's ``precision`` (part of the id), not a speed knob.
* the divergence check still reads the loss once per epoch: no host sync per step.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from prunebench import distributed
from prunebench.errors import NonFiniteMeasurement, TrainingDiverged
from prunebench.recipe import TrainCfg


class Reporter(Protocol):
    """Progress sink (the CLI shows one study-level display on a terminal and one plain
    line per epoch otherwise; the library default is silent).

    Optional, called through :func:`report` when the reporter has them: ``begin(total,
    title)`` (a study or grid of ``total`` runs starts), ``start_cell(label, n)`` (the next
    ``n`` runs start: ``n`` > 1 when stacked), ``end_cell(result, progress=None)`` (a run
    finished: its :class:`~prunebench.record.RunResult`; parallel study backends add a
    :class:`~prunebench.studies.executor.RunProgress` with the study's counts and ETA),
    ``warn(text)``.
    """

    def start_epoch(self, phase: str, epoch: int, total: int, n_batches: int) -> None: ...
    def advance(self) -> None: ...
    def end_epoch(self, metrics: dict[str, Any]) -> None: ...


def report(reporter: Any, event: str, *args: Any) -> None:
    """``reporter.<event>(*args)`` when the reporter exists and has that event."""
    hook = getattr(reporter, event, None) if reporter is not None else None
    if hook is not None:
        hook(*args)


class StepHooks:
    """Per-step hooks of a training stage (pruning schedules, masks, regularisers).

    ``after_backward`` may change gradients (a growing penalty, a Gram-matrix term);
    ``after_step`` may change weights (re-apply masks). ``step`` counts optimiser steps
    from the start of the stage, resumes included.
    """

    def after_backward(self, model: nn.Module, step: int) -> None:
        pass

    def after_step(self, model: nn.Module, step: int) -> None:
        pass


class ChainHooks(StepHooks):
    """Several hooks in order (e.g. unstructured masks + the orthogonality regulariser).

    Gradient hooks run in the given order; weight hooks too, so put masks last.
    """

    def __init__(self, *hooks: StepHooks) -> None:
        self.hooks = [h for h in hooks if h is not None]

    def after_backward(self, model: nn.Module, step: int) -> None:
        for h in self.hooks:
            h.after_backward(model, step)

    def after_step(self, model: nn.Module, step: int) -> None:
        for h in self.hooks:
            h.after_step(model, step)


class SilentReporter:
    def start_epoch(self, phase: str, epoch: int, total: int, n_batches: int) -> None:
        pass

    def advance(self) -> None:
        pass

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        pass


class Loader(Protocol):
    num_samples: int

    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...


@dataclass
class SpeedPlan:
    """The fast path's settings as resolved for one device: what is actually used.

    Built by :func:`resolve_speed` from the recipe's ``speed:`` section; ``notes`` say why a
    requested knob is not used (no CUDA, no compiler, a failed compile that fell back to
    eager). :meth:`record` is what the result record stores under ``speed``.
    """

    compile: bool = False
    cuda_graphs: bool = False
    channels_last: bool = False
    fused_sgd: bool = False
    eval_batch_size: int | None = None
    requested: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    compile_seconds: float = 0.0  # all stages of this process, compile + warm-up steps

    @property
    def compile_mode(self) -> str:
        return "reduce-overhead" if self.cuda_graphs else "default"

    def record(self) -> dict[str, Any]:
        """The deterministic part (settings requested and used, fallbacks): no timings."""
        used = {"compile": self.compile, "cuda_graphs": self.cuda_graphs,
                "channels_last": self.channels_last, "fused_sgd": self.fused_sgd,
                "eval_batch_size": self.eval_batch_size}
        if self.compile:
            used["compile_mode"] = self.compile_mode
        return {"requested": dict(self.requested), "used": used, "notes": list(self.notes)}


def _fused_sgd_supported(device: torch.device) -> bool:
    try:
        p = torch.zeros(1, device=device, requires_grad=True)
        torch.optim.SGD([p], lr=0.1, momentum=0.9, fused=True)
    except (RuntimeError, TypeError, ValueError, AssertionError):
        return False
    return True


def resolve_speed(
    cfg: Any, device: torch.device, default_eval_batch_size: int | None = None
) -> SpeedPlan:
    """The knobs of ``cfg`` (a :class:`prunebench.recipe.SpeedCfg` or None: all ``auto``)
    resolved for ``device``: ``auto`` means on for CUDA, off elsewhere."""
    get = (lambda name: getattr(cfg, name)) if cfg is not None else (lambda name: None)
    cuda = device.type == "cuda"
    plan = SpeedPlan()
    for name in ("compile", "cuda_graphs", "channels_last", "fused_sgd"):
        value = get(name) or "auto"
        plan.requested[name] = value
        setattr(plan, name, cuda if value == "auto" else value == "on")
    plan.requested["eval_batch_size"] = get("eval_batch_size") or "auto"
    if plan.cuda_graphs and not cuda:
        plan.cuda_graphs = False
        plan.notes.append("cuda_graphs: needs a CUDA device; not used")
    if plan.cuda_graphs and not plan.compile:
        plan.cuda_graphs = False
        if plan.requested["cuda_graphs"] == "on":
            plan.notes.append("cuda_graphs: come from torch.compile (reduce-overhead); "
                              "compile is off, so not used")
    if plan.fused_sgd and not _fused_sgd_supported(device):
        plan.fused_sgd = False
        plan.notes.append(f"fused_sgd: not supported on {device.type} by torch "
                          f"{torch.__version__}; foreach SGD used")
    explicit = get("eval_batch_size")
    if explicit is not None:
        plan.eval_batch_size = int(explicit)
    elif default_eval_batch_size is not None:
        plan.eval_batch_size = (max(int(default_eval_batch_size), LARGE_EVAL_BATCH) if cuda
                                else int(default_eval_batch_size))
    return plan


#: the evaluation batch size ``speed.eval_batch_size: auto`` uses on CUDA (at least)
LARGE_EVAL_BATCH = 2048
#: compiled steps per stage timed as compilation / CUDA-graph warm-up and recording
COMPILE_WARMUP_STEPS = 3


@dataclass
class Loaders:
    train: Loader
    val: Loader | None
    test: Loader
    num_classes: int
    precision: str = "fp32"
    speed: SpeedPlan | None = None  # None: the plain eager loop


@dataclass
class TrainState:
    """What a resumed stage needs: the epochs done so far and their metrics."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    optimizer: dict[str, Any] | None = None


def make_optimizer(model: nn.Module, cfg: TrainCfg, *, fused: bool = False) -> torch.optim.SGD:
    """SGD of ``cfg``; ``fused``: torch's fused kernel (same formula, one launch per group)."""
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.schedule.lr_at(0, cfg.epochs),
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
        **({"fused": True} if fused else {}),
    )


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimiser buffers their parameter's memory layout (a checkpoint saved
    with channels_last weights resumed without it, or the other way round)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if isinstance(buf, torch.Tensor) and buf.stride() != p.stride():
                optimizer.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(buf)


def _forward_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's forward part: mean cross-entropy (float32) and the correct count."""
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, precision):
        logits = model(x)
        if y.shape[0] == 0:  # a rank's empty slice of a small last batch (several processes)
            return logits.float().sum(), y.new_zeros(())
        loss = F.cross_entropy(logits.float(), y)
    correct = (logits.detach().argmax(1) == y).sum()
    return loss, correct


class _Stepper:
    """Runs the forward part of a step compiled (full batches) or eager (the rest)."""

    def __init__(self, model: nn.Module, loaders: Loaders) -> None:
        plan = loaders.speed
        self.model, self.precision = model, loaders.precision
        self.plan = plan
        self.channels_last = bool(plan and plan.channels_last and _has_conv(model))
        self.full = getattr(loaders.train, "batch_size", None)
        self.compiled: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
        self.warm = 0  # compiled steps done in this stage
        if plan is not None and plan.compile and self.full is not None:
            import torch._dynamo

            cfg = torch._dynamo.config
            # a study compiles one graph per (pruned) shape in one process
            cfg.cache_size_limit = max(cfg.cache_size_limit, 64)
            if hasattr(cfg, "accumulated_cache_size_limit"):
                cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 512)
            self.compiled = torch.compile(_forward_loss, mode=plan.compile_mode, dynamic=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        args = (self.model, x, y, self.precision, self.channels_last)
        if self.compiled is None or y.shape[0] != self.full:
            return _forward_loss(*args)
        if self.plan is not None and self.plan.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        if self.warm > 0:
            return self.compiled(*args)
        try:
            return self.compiled(*args)
        except Exception as exc:  # noqa: BLE001 - no compiler, no triton: eager, recorded
            self.compiled = None
            if self.plan is not None:
                self.plan.compile = self.plan.cuda_graphs = False
                self.plan.notes.append(f"compile: failed ({type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"
                                       "; fell back to eager")
            return _forward_loss(*args)

    @property
    def warming(self) -> bool:
        """Whether the next full-batch step is one of the timed compile / warm-up steps."""
        return self.compiled is not None and self.warm < COMPILE_WARMUP_STEPS


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for ``precision == "bf16"`` (weights and optimiser stay fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Loader | None, num_classes: int, precision: str = "fp32"
) -> dict[str, float]:
    """Top-1 (and top-5 when classes > 10) accuracy in percent and mean loss."""
    if loader is None or loader.num_samples == 0:
        return {}
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long)
    correct5 = torch.zeros((), dtype=torch.long)
    loss_sum = torch.zeros(())
    first = True
    for x, y in loader.epoch(0):
        if first:
            correct, correct5, loss_sum = (t.to(x.device) for t in (correct, correct5, loss_sum))
            first = False
        with autocast(x.device, precision):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        if num_classes > 10:
            top5 = logits.topk(5, dim=1).indices
            correct5 += (top5 == y[:, None]).any(1).sum()
    model.train(was_training)
    reduce = getattr(loader, "reduce_sums", None)  # a rank's slices (several processes)
    if reduce is not None:
        correct, correct5, loss_sum = reduce(correct, correct5, loss_sum)
    n = loader.num_samples
    out = {"acc": 100.0 * correct.item() / n, "loss": loss_sum.item() / n}
    if num_classes > 10:
        out["top5"] = 100.0 * correct5.item() / n
    return out


def evaluate_all(model: nn.Module, loaders: Loaders) -> dict[str, float]:
    """Validation and test metrics under the keys of a metrics line."""
    out: dict[str, float] = {}
    for split, loader in (("val", loaders.val), ("test", loaders.test)):
        for k, v in evaluate(model, loader, loaders.num_classes, loaders.precision).items():
            out[f"{split}_{k}"] = round(v, 4)
    return out


def finite_weights(model: nn.Module) -> bool:
    """Whether every parameter and floating buffer is finite (one host sync)."""
    flags = [torch.isfinite(t).all() for t in (*model.parameters(), *model.buffers())
             if t.is_floating_point() and t.numel()]
    return bool(torch.stack(flags).all().item()) if flags else True


def _finite_or_none(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: a non-finite measurement (an overflowing eval loss) is None."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in metrics.items()}


def train(
    model: nn.Module,
    loaders: Loaders,
    cfg: TrainCfg,
    *,
    phase: str,
    state: TrainState | None = None,
    stop_at: int | None = None,
    reporter: Reporter | None = None,
    on_epoch_end: Callable[[TrainState, nn.Module, torch.optim.Optimizer], None] | None = None,
    extra_metrics: Callable[[nn.Module, int], dict[str, Any]] | None = None,
    hooks: StepHooks | None = None,
) -> TrainState:
    """Train ``model`` for ``cfg.epochs`` (or until ``stop_at``), resuming from ``state``.

    ``on_epoch_end`` is called after every epoch with the new state (the stage runner saves
    its checkpoint there), so a kill loses at most the epoch in progress.

    Raises :class:`~prunebench.errors.TrainingDiverged` (with the finished epochs' history)
    when an epoch's summed training loss or the weights after it are not finite; the
    check reads the loss the epoch summary reads anyway, so it costs no extra host sync
    per step.
    """
    reporter = reporter or SilentReporter()
    state = state or TrainState()
    plan = loaders.speed
    par = distributed.for_training(model, loaders)  # None in one process
    if par is not None:
        loaders = par.loaders  # each rank's slice of every batch
    stepper = _Stepper(model, loaders)
    if stepper.channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        return _train_epochs(model, loaders, cfg, phase, state, stop_at, reporter,
                             on_epoch_end, extra_metrics, hooks, stepper,
                             bool(plan and plan.fused_sgd), par)
    finally:
        if par is not None:
            par.close()
        if stepper.channels_last:
            model.to(memory_format=torch.contiguous_format)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_epochs(
    model: nn.Module,
    loaders: Loaders,
    cfg: TrainCfg,
    phase: str,
    state: TrainState,
    stop_at: int | None,
    reporter: Reporter,
    on_epoch_end: Callable[[TrainState, nn.Module, torch.optim.Optimizer], None] | None,
    extra_metrics: Callable[[nn.Module, int], dict[str, Any]] | None,
    hooks: StepHooks | None,
    stepper: _Stepper,
    fused: bool,
    par: distributed.Parallel | None = None,
) -> TrainState:
    optimizer = make_optimizer(model, cfg, fused=fused)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
        for group in optimizer.param_groups:  # the implementation is this run's, not the
            group["fused"] = True if fused else None  # checkpoint's (fused on a GPU, ...)
            if fused:
                group["foreach"] = None
        _match_layouts(optimizer)
    schedule = cfg.schedule
    end = cfg.epochs if stop_at is None else min(stop_at, cfg.epochs)
    model.train()
    step = state.epoch * len(loaders.train)
    for epoch in range(state.epoch, end):
        t0 = time.perf_counter()
        compile_seconds = 0.0
        lr = schedule.lr_at(epoch, cfg.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        reporter.start_epoch(phase, epoch, end, len(loaders.train))
        loss_sum = correct = None
        seen = 0
        if par is not None:
            par.begin_epoch()
        for x, y in loaders.train.epoch(epoch):
            warming = stepper.warming and y.shape[0] == stepper.full
            if warming:  # a compile / CUDA-graph warm-up step: timed apart (synchronised)
                _sync(x.device)
                tw = time.perf_counter()
            loss, batch_correct = stepper.forward(x, y)
            optimizer.zero_grad(set_to_none=True)
            if par is None:
                loss.backward()
            else:  # the weighted local loss, then gradients averaged over the ranks
                par.backward(loss, y)
            if hooks is not None:
                hooks.after_backward(model, step)
            optimizer.step()
            if hooks is not None:
                hooks.after_step(model, step)
            step += 1
            with torch.no_grad():
                batch_loss = loss.detach() * y.numel()
                loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
                # clone: a CUDA-graph output is overwritten by the next replay
                correct = batch_correct.clone() if correct is None else correct + batch_correct
            if warming:
                _sync(x.device)
                compile_seconds += time.perf_counter() - tw
                stepper.warm += 1
            seen += y.numel()
            reporter.advance()
        if par is not None:  # the epoch's sums over every rank (one all_reduce per epoch)
            loss_sum, correct, seen = par.epoch_totals(model, loss_sum, correct, seen, epoch)
        train_seconds = time.perf_counter() - t0 - compile_seconds
        total_loss = loss_sum.item() if seen else 0.0
        if not math.isfinite(total_loss):
            raise TrainingDiverged(phase, epoch + 1, "non-finite training loss", state.history)
        if not finite_weights(model):
            raise TrainingDiverged(phase, epoch + 1, "non-finite weights", state.history)
        metrics: dict[str, Any] = {
            "phase": phase,
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": round(total_loss / max(seen, 1), 6) if seen else None,
            "train_acc": round(100.0 * correct.item() / max(seen, 1), 4) if seen else None,
        }
        metrics.update(evaluate_all(model, loaders))
        model.train()
        if extra_metrics is not None:
            try:
                metrics.update(extra_metrics(model, epoch + 1))
            except NonFiniteMeasurement as exc:  # finite weights that have blown up
                raise TrainingDiverged(phase, epoch + 1, str(exc), state.history) from None
            model.train()
        metrics["train_seconds"] = round(train_seconds, 3)
        if stepper.compiled is not None or compile_seconds:
            metrics["compile_seconds"] = round(compile_seconds, 3)
            if stepper.plan is not None:
                stepper.plan.compile_seconds += compile_seconds
        metrics["seconds"] = round(time.perf_counter() - t0, 3)
        metrics = _finite_or_none(metrics)
        state = TrainState(epoch + 1, [*state.history, metrics], optimizer.state_dict())
        if on_epoch_end is not None:
            on_epoch_end(state, model, optimizer)
        reporter.end_epoch(metrics)
    return state

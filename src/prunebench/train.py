"""The epoch loop: SGD, LR schedule, evaluation, resumable state. Knows nothing of stores.

Everything stays on tensors on the training device: batches come from
:class:`prunebench.data.BatchLoader`, loss and correct counts accumulate on the device and
are read once per epoch (no per-batch host sync).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.recipe import TrainCfg


class Reporter(Protocol):
    """Progress sink (the CLI shows a rich bar; the library default is silent)."""

    def start_epoch(self, phase: str, epoch: int, total: int, n_batches: int) -> None: ...
    def advance(self) -> None: ...
    def end_epoch(self, metrics: dict[str, Any]) -> None: ...


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
class Loaders:
    train: Loader
    val: Loader | None
    test: Loader
    num_classes: int
    precision: str = "fp32"


@dataclass
class TrainState:
    """What a resumed stage needs: the epochs done so far and their metrics."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    optimizer: dict[str, Any] | None = None


def make_optimizer(model: nn.Module, cfg: TrainCfg) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.schedule.lr_at(0, cfg.epochs),
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


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
    """
    reporter = reporter or SilentReporter()
    state = state or TrainState()
    optimizer = make_optimizer(model, cfg)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    schedule = cfg.schedule
    end = cfg.epochs if stop_at is None else min(stop_at, cfg.epochs)
    model.train()
    step = state.epoch * len(loaders.train)
    for epoch in range(state.epoch, end):
        t0 = time.perf_counter()
        lr = schedule.lr_at(epoch, cfg.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        reporter.start_epoch(phase, epoch, end, len(loaders.train))
        loss_sum = correct = None
        seen = 0
        for x, y in loaders.train.epoch(epoch):
            with autocast(x.device, loaders.precision):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hooks is not None:
                hooks.after_backward(model, step)
            optimizer.step()
            if hooks is not None:
                hooks.after_step(model, step)
            step += 1
            with torch.no_grad():
                batch_loss = loss.detach() * y.numel()
                batch_correct = (logits.argmax(1) == y).sum()
                loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
                correct = batch_correct if correct is None else correct + batch_correct
            seen += y.numel()
            reporter.advance()
        train_seconds = time.perf_counter() - t0
        metrics: dict[str, Any] = {
            "phase": phase,
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": round(loss_sum.item() / max(seen, 1), 6) if seen else None,
            "train_acc": round(100.0 * correct.item() / max(seen, 1), 4) if seen else None,
        }
        metrics.update(evaluate_all(model, loaders))
        model.train()
        if extra_metrics is not None:
            metrics.update(extra_metrics(model, epoch + 1))
            model.train()
        metrics["train_seconds"] = round(train_seconds, 3)
        metrics["seconds"] = round(time.perf_counter() - t0, 3)
        state = TrainState(epoch + 1, [*state.history, metrics], optimizer.state_dict())
        if on_epoch_end is not None:
            on_epoch_end(state, model, optimizer)
        reporter.end_epoch(metrics)
    return state

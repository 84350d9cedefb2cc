"""Stacked runs: train k copies of one architecture as one fused model, each copy exact.

A study's cells that share the (pruned) architecture, batch size and epoch count are a job
array: HFTA (Wang et al., MLSys 2021) showed that fusing such jobs into one model beats
running them one by one on a GPU. :func:`train_stacked` does that for prunebench: it
reproduces, per copy, what :func:`prunebench.train.train` does for one model (SGD with
momentum / Nesterov / weight decay in torch's formula, the per-epoch LR of
``cfg.schedule.lr_at``, the batch order of each copy's own loader, evaluation at epoch end,
the metrics rows, the optimiser state dict of a resumable :class:`TrainState`), and writes
each copy's weights and BatchNorm buffers back into its own ``nn.Module``.

How it is fused (the choice, and why)
-------------------------------------
The forward pass is ``torch.func.vmap(torch.func.functional_call)`` over *stacked*
parameters and buffers (every tensor gets a leading copy dimension ``k``), applied to a
weightless ``meta``-device copy of the first model. Hand-written HFTA-style fused layers
were the alternative; vmap was chosen because

* it is **general**: any model of the zoo (MLP, LeNet-5, CIFAR ResNets with the option-A
  ``PadShortcut`` slicing and zero-padding, BN-VGGs) runs unchanged, pruned or not, with no
  per-layer fused re-implementation to keep in sync with the models;
* it is **exact**: vmap's batching rules turn a batched ``conv2d`` into one grouped
  convolution (``groups = k``; with a shared input, one convolution with ``k x`` output
  channels), a batched ``linear`` into one batched matmul, and ``batch_norm`` into one call
  on ``k x C`` channels whose per-channel statistics are exactly the per-copy ones -- the
  same maths per copy, so float64 results agree with separate runs to rounding (bitwise on
  CPU in the tests);
* it is **few large kernels**: each layer of the k copies is one kernel, which is what makes
  the fusion pay on a GPU (the HFTA argument), and it composes with ``torch.compile``;
* **BatchNorm statistics work per copy**: the running mean / variance / batch count are
  stacked buffers updated in place by the batched ``batch_norm`` in train mode and used in
  eval mode (tested against separate runs in ``tests/test_stack.py``).

The optimiser is fused too. All parameters of the k copies live in one ``(k, N)`` tensor
(each parameter is a view of a column block, with its gradient a view of a ``(k, N)``
gradient tensor into which autograd accumulates), so one SGD step is a handful of
element-wise kernels over ``(k, N)`` with per-copy ``(k, 1)`` columns of LR, weight decay,
momentum and the Nesterov flag -- torch's formula (``d = g + wd * p``;
``buf = m * buf + d``; ``d = d + m * buf`` if Nesterov else ``buf``; ``p -= lr * d``), with
one momentum buffer row per copy.

What must be shared, what may differ
------------------------------------
Shared (checked by :func:`stack_problems`): the architecture (module types and settings,
parameter and buffer names, shapes, dtypes, device), the number of epochs and the epoch to
start from, the number of training samples, batch size and batches per epoch (so every step
has the same batch shape), the number of classes and the precision. Per copy: initial
weights and BN buffers, LR schedule, weight decay, momentum (and its buffers), Nesterov,
the training loader (seed, hence data order and augmentation; even the data itself), the
evaluation loaders (fused when their batch shapes agree, else evaluated copy by copy).
Copies whose train loaders are the same stream (the same object, or BatchLoaders over the
same tensors with the same seed and settings) share one batch instead of k.

Divergence is per copy (the copies never mix): a copy for which ``train()`` would raise
:class:`~prunebench.errors.TrainingDiverged` gets that exception in its result slot while
the others train on.

Limits: step hooks (``StepHooks``: masks, regularisers, pruning schedules) are not supported
yet and raise :class:`StackError`; randomness inside the model (dropout) raises (vmap's
``randomness="error"``; no zoo model has any); so does BatchNorm with ``momentum=None``
(cumulative averages read the batch count as a Python number); every parameter is assumed
to receive a gradient (true for the zoo; torch's SGD would skip a gradient-less parameter,
including its weight decay); callbacks see each copy's module with the weights of the epoch
just finished, but changes they make to it are not read back. On CPU the fusion is no
faster than separate runs (0.9x measured on 2 cores): it is a correctness feature there.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from prunebench.errors import PrunebenchError, TrainingDiverged
from prunebench.recipe import TrainCfg
from prunebench.train import (
    Loader,
    Loaders,
    Reporter,
    SilentReporter,
    StepHooks,
    TrainState,
    autocast,
    evaluate,
    make_optimizer,
)

__all__ = [
    "StackError",
    "StackedModel",
    "arch_signature",
    "can_stack",
    "group_stackable",
    "stack_key",
    "stack_problems",
    "train_stacked",
]

EpochEnd = Callable[[TrainState, nn.Module, torch.optim.Optimizer], None]
ExtraMetrics = Callable[[nn.Module, int], dict[str, Any]]


class StackError(PrunebenchError):
    """Copies that cannot train as one stacked model (the message says why)."""


# --------------------------------------------------------------------------- compatibility


def arch_signature(model: nn.Module) -> tuple[Any, ...]:
    """A hashable description of everything the fused forward pass takes from the model.

    Module names, types and ``extra_repr`` (conv stride/padding/groups, BN eps/momentum,
    shortcut widths, ...), and the name, shape, dtype and device of every parameter and
    buffer. Two models with equal signatures run the same computation with different
    tensors, so they can be stacked.
    """
    modules = tuple(
        (name, f"{type(m).__module__}.{type(m).__qualname__}", m.extra_repr())
        for name, m in model.named_modules()
    )
    tensors = tuple(
        (kind, name, tuple(t.shape), str(t.dtype), str(t.device))
        for kind, items in (("param", model.named_parameters()), ("buffer", model.named_buffers()))
        for name, t in items
    )
    return modules, tensors


def _train_shape(loader: Loader) -> tuple[Any, ...]:
    return (
        int(loader.num_samples),
        len(loader),
        getattr(loader, "batch_size", None),
        getattr(loader, "drop_last", None),
    )


def stack_key(
    model: nn.Module, cfg: TrainCfg, loaders: Loaders, state: TrainState | None = None
) -> tuple[Any, ...]:
    """Copies with equal keys can be stacked (see :func:`stack_problems` for the reasons)."""
    return (
        arch_signature(model),
        int(cfg.epochs),
        state.epoch if state is not None else 0,
        _train_shape(loaders.train),
        int(loaders.num_classes),
        loaders.precision,
    )


def stack_problems(
    models: Sequence[nn.Module],
    loaders: Sequence[Loaders],
    cfgs: Sequence[TrainCfg],
    *,
    states: Sequence[TrainState | None] | None = None,
    hooks: Sequence[StepHooks | None] | StepHooks | None = None,
) -> list[str]:
    """Why these copies cannot train as one stacked model; an empty list if they can."""
    k = len(models)
    out: list[str] = []
    if k == 0:
        return ["no models given"]
    if len(loaders) != k or len(cfgs) != k or (states is not None and len(states) != k):
        return [
            f"need one cfg, Loaders (and state) per model: {k} models, {len(cfgs)} cfgs, "
            f"{len(loaders)} loaders" + (f", {len(states)} states" if states is not None else "")
        ]
    hook_list = [hooks] if isinstance(hooks, StepHooks) else list(hooks or [])
    if any(h is not None for h in hook_list):
        out.append("step hooks (masks, regularisers, pruning schedules) are not supported by "
                   "stacked training yet; train these runs one by one")
    params = list(models[0].parameters())
    if not params:
        out.append("model 0 has no parameters")
    elif len({(p.dtype, p.device) for p in params}) > 1:
        out.append("model 0 mixes parameter dtypes or devices")
    ref_arch = arch_signature(models[0])
    for i in range(1, k):
        if arch_signature(models[i]) != ref_arch:
            diff = _arch_diff(models[0], models[i])
            out.append(f"model {i} differs from model 0 in architecture ({diff})")
    checks: list[tuple[str, Callable[[int], Any]]] = [
        ("epochs", lambda i: int(cfgs[i].epochs)),
        ("start epoch (resume state)",
         lambda i: (states[i].epoch if states is not None and states[i] is not None else 0)),
        ("training samples, batches per epoch, batch size, drop_last",
         lambda i: _train_shape(loaders[i].train)),
        ("num_classes", lambda i: int(loaders[i].num_classes)),
        ("precision", lambda i: loaders[i].precision),
    ]
    for what, get in checks:
        ref = get(0)
        for i in range(1, k):
            if get(i) != ref:
                out.append(f"copy {i} has {what} {get(i)!r}, copy 0 has {ref!r}")
    return out


def _arch_diff(a: nn.Module, b: nn.Module) -> str:
    ma, ta = arch_signature(a)
    mb, tb = arch_signature(b)
    for x, y in zip(ma, mb, strict=False):
        if x != y:
            return f"module {x[0]!r}: {x[1:]} vs {y[1:]}"
    for x, y in zip(ta, tb, strict=False):
        if x != y:
            return f"{x[0]} {x[1]!r}: {x[2:]} vs {y[1]!r} {y[2:]}"
    return f"{len(ma)}/{len(ta)} vs {len(mb)}/{len(tb)} modules/tensors"


def can_stack(
    models: Sequence[nn.Module],
    loaders: Sequence[Loaders],
    cfgs: Sequence[TrainCfg],
    **kwargs: Any,
) -> tuple[bool, str]:
    """``(True, "")`` if the copies can be stacked, else ``(False, reasons)``."""
    problems = stack_problems(models, loaders, cfgs, **kwargs)
    return (not problems, "; ".join(problems))


def group_stackable(
    members: Sequence[tuple[nn.Module, TrainCfg, Loaders]]
    | Sequence[tuple[nn.Module, TrainCfg, Loaders, TrainState | None]],
    max_k: int | None = None,
) -> list[list[int]]:
    """Partition ``members`` (``(model, cfg, loaders[, state])``) into stackable groups.

    Returns lists of member indices, in first-appearance order, each at most ``max_k`` long
    (a group of one is trained with ``train()`` as usual).
    """
    groups: dict[Any, list[list[int]]] = {}
    order: list[list[int]] = []
    for i, member in enumerate(members):
        model, cfg, loaders = member[0], member[1], member[2]
        state = member[3] if len(member) > 3 else None  # type: ignore[misc]
        key = stack_key(model, cfg, loaders, state)
        bucket = groups.setdefault(key, [])
        if not bucket or (max_k is not None and len(bucket[-1]) >= max_k):
            bucket.append([])
            order.append(bucket[-1])
        bucket[-1].append(i)
    return order


# --------------------------------------------------------------------------- the fused model


def _bn_input_like_stats(module: nn.Module, args: tuple[torch.Tensor, ...]) -> Any:
    """Under autocast on CUDA a BatchNorm gets bf16/fp16 activations but keeps fp32 running
    statistics; eager cuDNN accepts the mix, vmap's batched batch_norm does not ("Expected
    running_mean to have type BFloat16"). Normalise in the statistics' dtype instead (the
    next conv casts back to the autocast dtype)."""
    x = args[0]
    if x.dtype in (torch.bfloat16, torch.float16):
        return (x.float(), *args[1:])
    return None


class StackedModel:
    """k copies of one architecture as stacked tensors, run with vmap; fused SGD state.

    ``params[name]`` is a ``(k, *shape)`` view into ``flat`` (``(k, N)``), its ``.grad`` a
    view into ``flat_grad``; ``buffers[name]`` are ``(k, *shape)`` tensors (BN statistics).
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        self.k = len(models)
        self.models = list(models)
        ref = models[0]
        self.param_names = [n for n, _ in ref.named_parameters()]
        self.buffer_names = [n for n, _ in ref.named_buffers()]
        first = next(ref.parameters())
        self.dtype, self.device = first.dtype, first.device
        shapes = [p.shape for p in ref.parameters()]
        sizes = [math.prod(s) for s in shapes]
        self.n = sum(sizes)
        k = self.k
        with torch.no_grad():
            self.flat = torch.cat(
                [torch.cat([p.detach().reshape(1, -1) for p in m.parameters()], 1)
                 for m in models], 0
            ).to(self.device, self.dtype)
        self.flat_grad = torch.zeros_like(self.flat)
        self.momentum_buf = torch.zeros_like(self.flat)
        self.params: dict[str, torch.Tensor] = {}
        off = 0
        for name, shape, size in zip(self.param_names, shapes, sizes, strict=True):
            p = self.flat[:, off : off + size].view(k, *shape).detach().requires_grad_()
            p.grad = self.flat_grad[:, off : off + size].view(k, *shape)
            self.params[name] = p
            off += size
        self.buffers: dict[str, torch.Tensor] = {
            name: torch.stack([dict(m.named_buffers())[name].detach() for m in models]).clone()
            for name in self.buffer_names
        }
        self.base = copy.deepcopy(ref).to("meta")
        for m in self.base.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.register_forward_pre_hook(_bn_input_like_stats)

    # ---- forward
    def _call(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
              x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor, *, shared: bool, train: bool) -> torch.Tensor:
        """Logits ``(k, B, classes)``; ``x`` is ``(B, ...)`` if ``shared`` else ``(k, B, ...)``."""
        self.base.train(train)
        fn = vmap(self._call, in_dims=(0, 0, None if shared else 0), randomness="error")
        return fn(self.params, self.buffers, x)

    def train_step(
        self, x: torch.Tensor, ys: torch.Tensor, *, shared: bool, precision: str,
        lr: torch.Tensor, wd: torch.Tensor | None, mom: torch.Tensor,
        nesterov: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, per-copy loss, backward and SGD step; returns ``(losses (k,), logits)``.

        ``x`` is ``(B, ...)`` if ``shared`` else ``(k, B, ...)``; ``ys`` is ``(k, B)``;
        ``lr``, ``wd``, ``mom`` and ``nesterov`` (bool) are ``(k, 1)`` columns (see
        :meth:`sgd_step` for None).
        """
        with autocast(x.device, precision):
            logits = self.forward(x, shared=shared, train=True)
            flogits = logits.float()
            # one mean cross-entropy per copy, as train() computes it: the same float32
            # reduction, so the per-step losses agree bitwise (one fused (k*B)-row loss has
            # the same gradients but rounds the mean differently, ~1e-7 relative)
            losses = torch.stack([F.cross_entropy(flogits[i], ys[i]) for i in range(self.k)])
        self.flat_grad.zero_()
        with warnings.catch_warnings():
            # the (k, N) column-block grads are strided on purpose (in-place accumulation)
            warnings.filterwarnings("ignore", message="grad and param do not obey")
            losses.sum().backward()
        self.sgd_step(lr, wd, mom, nesterov)
        return losses, logits

    # ---- optimiser
    def sgd_step(self, lr: torch.Tensor, wd: torch.Tensor | None, mom: torch.Tensor,
                 nesterov: torch.Tensor | None) -> None:
        """One SGD step of every copy (torch's formula, dampening 0); columns are ``(k, 1)``.

        ``wd`` None: no copy has weight decay; ``nesterov`` None: no copy uses Nesterov.
        No host synchronisation.
        """
        with torch.no_grad():
            d = self.flat_grad
            if wd is not None:
                d = d + wd * self.flat
            buf = self.momentum_buf
            buf.mul_(mom).add_(d)
            d = buf if nesterov is None else torch.where(nesterov, d + mom * buf, buf)
            self.flat.sub_(lr * d)

    def finite_copies(self) -> list[bool]:
        """Per copy: are all its parameters and floating buffers finite (one host sync)."""
        with torch.no_grad():
            flags = torch.isfinite(self.flat).all(1)
            for b in self.buffers.values():
                if b.is_floating_point() and b[0].numel():
                    flags &= torch.isfinite(b.reshape(self.k, -1)).all(1)
            return [bool(f) for f in flags.tolist()]

    def momentum_row(self, i: int) -> list[torch.Tensor]:
        return self._split(self.momentum_buf[i])

    def _split(self, row: torch.Tensor) -> list[torch.Tensor]:
        out, off = [], 0
        for p in self.params.values():
            size = p[0].numel()
            out.append(row[off : off + size].view(p.shape[1:]))
            off += size
        return out

    def load_momentum(self, i: int, buffers: Sequence[torch.Tensor | None]) -> None:
        with torch.no_grad():
            for view, buf in zip(self._split(self.momentum_buf[i]), buffers, strict=True):
                if buf is None:
                    view.zero_()
                else:
                    view.copy_(buf)

    def write_back(self) -> None:
        """Copy each copy's parameters and buffers into its own module."""
        with torch.no_grad():
            for i, m in enumerate(self.models):
                for p, src in zip(m.parameters(), self.params.values(), strict=True):
                    p.copy_(src[i])
                named = dict(m.named_buffers())
                for name in self.buffer_names:
                    named[name].copy_(self.buffers[name][i])


# --------------------------------------------------------------------------- batches


def _stream_key(loader: Loader) -> tuple[Any, ...]:
    """Loaders with equal keys yield identical batches for every epoch."""
    from prunebench.data import BatchLoader

    if isinstance(loader, BatchLoader):
        return (
            "batchloader", loader.x.data_ptr(), tuple(loader.x.shape), tuple(loader.x.stride()),
            loader.y.data_ptr(), tuple(loader.y.shape), loader.seed, loader.shuffle,
            loader.augment, loader.batch_size, loader.drop_last, str(loader.device),
            tuple(loader._mean.flatten().tolist()), tuple(loader._std.flatten().tolist()),
        )
    return ("object", id(loader))


class _Batches:
    """Per-step batches of k copies: one shared batch if all streams agree, else stacked."""

    def __init__(self, loaders: Sequence[Loader]) -> None:
        self.loaders = list(loaders)
        keys = [_stream_key(ld) for ld in loaders]
        uniq: dict[tuple[Any, ...], int] = {}
        self.group = [uniq.setdefault(key, len(uniq)) for key in keys]
        self.sources = [self.loaders[self.group.index(g)] for g in range(len(uniq))]
        self.shared = len(uniq) == 1

    def epoch(self, epoch: int) -> Any:
        iters = [src.epoch(epoch) for src in self.sources]
        for batches in zip(*iters, strict=True):
            if self.shared:
                x, y = batches[0]
                yield x, y, True
            else:
                xs = torch.stack([batches[g][0] for g in self.group])
                ys = torch.stack([batches[g][1] for g in self.group])
                yield xs, ys, False


# --------------------------------------------------------------------------- evaluation


def _fusable_eval(loaders: Sequence[Loader | None]) -> bool:
    if any(ld is None for ld in loaders):
        return all(ld is None for ld in loaders)
    shapes = {(int(ld.num_samples), len(ld)) for ld in loaders}  # type: ignore[union-attr]
    return len(shapes) == 1


@torch.no_grad()
def _evaluate_stacked(
    net: StackedModel, loaders: Sequence[Loader | None], num_classes: int, precision: str
) -> list[dict[str, float]]:
    """:func:`prunebench.train.evaluate` for every copy, in one fused pass per batch."""
    k = net.k
    if loaders[0] is None or loaders[0].num_samples == 0:
        return [{} for _ in range(k)]
    batches = _Batches(loaders)  # type: ignore[arg-type]
    correct = torch.zeros(k, dtype=torch.long, device=net.device)
    correct5 = torch.zeros(k, dtype=torch.long, device=net.device)
    loss_sum = torch.zeros(k, device=net.device)
    for x, y, shared in batches.epoch(0):
        with autocast(x.device, precision):
            logits = net.forward(x, shared=shared, train=False).float()
        ys = y.expand(k, *y.shape) if shared else y
        for i in range(k):  # per copy, as evaluate() does it (the same float32 sums)
            loss_sum[i] += F.cross_entropy(logits[i], ys[i], reduction="sum")
        correct += (logits.argmax(-1) == ys).sum(-1)
        if num_classes > 10:
            top5 = logits.topk(5, dim=-1).indices
            correct5 += (top5 == ys[..., None]).any(-1).sum(-1)
    n = loaders[0].num_samples  # type: ignore[union-attr]
    out = []
    for c, c5, ls in zip(correct.tolist(), correct5.tolist(), loss_sum.tolist(), strict=True):
        row = {"acc": 100.0 * c / n, "loss": ls / n}
        if num_classes > 10:
            row["top5"] = 100.0 * c5 / n
        out.append(row)
    return out


def _evaluate_all(net: StackedModel, loaders: Sequence[Loaders]) -> list[dict[str, float]]:
    out: list[dict[str, float]] = [{} for _ in range(net.k)]
    ref = loaders[0]
    for split in ("val", "test"):
        split_loaders = [getattr(ld, split) for ld in loaders]
        if _fusable_eval(split_loaders):
            rows = _evaluate_stacked(net, split_loaders, ref.num_classes, ref.precision)
        else:  # different eval batch shapes: copy by copy on the written-back modules
            rows = [evaluate(m, ld, ref.num_classes, ref.precision)
                    for m, ld in zip(net.models, split_loaders, strict=True)]
            for m in net.models:
                m.train()
        for i, row in enumerate(rows):
            for key, v in row.items():
                out[i][f"{split}_{key}"] = round(v, 4)
    return out


# --------------------------------------------------------------------------- training


def _column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, 1)


def _optimizer_for(net: StackedModel, i: int, cfg: TrainCfg, lr: float) -> torch.optim.SGD:
    """A torch SGD over copy ``i``'s module holding its momentum buffers (a copy)."""
    model = net.models[i]
    opt = make_optimizer(model, cfg)
    for group in opt.param_groups:
        group["lr"] = lr
    if cfg.momentum != 0:
        for p, buf in zip(model.parameters(), net.momentum_row(i), strict=True):
            opt.state[p]["momentum_buffer"] = buf.detach().clone()
    return opt


def _load_optimizer(net: StackedModel, i: int, cfg: TrainCfg, state_dict: dict[str, Any]) -> None:
    model = net.models[i]
    opt = make_optimizer(model, cfg)
    opt.load_state_dict(state_dict)
    bufs = [opt.state.get(p, {}).get("momentum_buffer") for p in model.parameters()]
    net.load_momentum(i, bufs)


def _finite_or_none(metrics: dict[str, Any]) -> dict[str, Any]:
    """As ``train()``: JSON has no NaN/inf, so a non-finite measurement becomes None."""
    return {key: None if isinstance(v, float) and not math.isfinite(v) else v
            for key, v in metrics.items()}


def _per_copy(value: Any, k: int, what: str) -> list[Any]:
    if value is None:
        return [None] * k
    if callable(value):
        return [value] * k
    items = list(value)
    if len(items) != k:
        raise StackError(f"{what}: need one per copy ({k}), got {len(items)}")
    return items


def train_stacked(
    models: Sequence[nn.Module],
    loaders: Sequence[Loaders],
    cfgs: Sequence[TrainCfg],
    *,
    phase: str,
    states: Sequence[TrainState | None] | None = None,
    stop_at: int | None = None,
    reporter: Reporter | None = None,
    on_epoch_end: Sequence[EpochEnd | None] | EpochEnd | None = None,
    extra_metrics: Sequence[ExtraMetrics | None] | ExtraMetrics | None = None,
    hooks: Sequence[StepHooks | None] | StepHooks | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> list[TrainState | TrainingDiverged]:
    """Train k copies as one fused model; per copy the same as ``train(models[i], ...)``.

    ``models[i]`` is trained with ``loaders[i]`` and ``cfgs[i]``, resuming from
    ``states[i]``; the arguments mirror :func:`prunebench.train.train`, with one callback
    per copy (``on_epoch_end[i](state, model, optimizer)`` receives copy ``i``'s new state,
    its module with the weights just written back, and a torch SGD holding its momentum
    buffers; a single callable is used for every copy). ``on_step(step, losses)`` gets the
    0-based step and the ``(k,)`` float32 tensor of this step's mean batch losses (not
    synchronised with the host). ``reporter`` sees one bar for the stack; its
    ``end_epoch`` gets copy 0's metrics with ``copies`` (all rows) added.

    History rows are those of ``train()`` plus ``"stack": k``; ``train_seconds`` and
    ``seconds`` are the wall time of the fused epoch (all k copies together). Returns the
    k new states; each copy's weights and BN buffers are in its module at the end.

    Divergence is per copy: where ``train()`` would raise
    :class:`~prunebench.errors.TrainingDiverged` (a non-finite epoch loss, or non-finite
    weights after the epoch) that copy's slot of the result holds the exception instead of
    a state (with the finished epochs' history; its callbacks are not called for that
    epoch, its module holds the non-finite weights, as after ``train()`` raised) and the
    other copies train on unaffected (copies never mix). Training stops when every copy
    has diverged. Raises :class:`StackError` (with every reason) if the copies cannot be
    stacked.
    """
    k = len(models)
    problems = stack_problems(models, loaders, cfgs, states=states, hooks=hooks)
    if problems:
        raise StackError("cannot train these runs stacked: " + "; ".join(problems))
    reporter = reporter or SilentReporter()
    epoch_end = _per_copy(on_epoch_end, k, "on_epoch_end")
    extras = _per_copy(extra_metrics, k, "extra_metrics")
    cur = [s or TrainState() for s in (states or [None] * k)]
    net = StackedModel(models)
    for i, s in enumerate(cur):
        if s.optimizer is not None:
            _load_optimizer(net, i, cfgs[i], s.optimizer)
    like = net.flat
    wd = (_column([c.weight_decay for c in cfgs], like)
          if any(c.weight_decay != 0 for c in cfgs) else None)
    mom = _column([c.momentum for c in cfgs], like)
    nes_flags = [bool(c.nesterov and c.momentum > 0) for c in cfgs]
    nesterov = (torch.tensor(nes_flags, device=like.device).view(-1, 1)
                if any(nes_flags) else None)
    epochs = cfgs[0].epochs
    end = epochs if stop_at is None else min(stop_at, epochs)
    start = cur[0].epoch
    train_batches = _Batches([ld.train for ld in loaders])
    n_batches = len(loaders[0].train)
    precision = loaders[0].precision
    step = start * n_batches
    active = list(range(k))
    result: list[TrainState | TrainingDiverged] = list(cur)
    for m in models:
        m.train()
    for epoch in range(start, end):
        t0 = time.perf_counter()
        lrs = [c.schedule.lr_at(epoch, c.epochs) for c in cfgs]
        lr = _column(lrs, like)
        reporter.start_epoch(phase, epoch, end, n_batches)
        loss_sum = correct = None
        seen = 0
        for x, y, shared in train_batches.epoch(epoch):
            ys = y.expand(k, *y.shape) if shared else y
            losses, logits = net.train_step(x, ys, shared=shared, precision=precision,
                                            lr=lr, wd=wd, mom=mom, nesterov=nesterov)
            if on_step is not None:
                on_step(step, losses.detach())
            step += 1
            with torch.no_grad():
                batch_loss = losses.detach() * ys.shape[1]
                batch_correct = (logits.argmax(-1) == ys).sum(-1)
                loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
                correct = batch_correct if correct is None else correct + batch_correct
            seen += ys.shape[1]
            reporter.advance()
        train_seconds = time.perf_counter() - t0
        losses_l = loss_sum.tolist() if loss_sum is not None else [0.0] * k
        correct_l = correct.tolist() if correct is not None else [0] * k
        finite = net.finite_copies()
        for i in list(active):  # train()'s divergence checks, per copy
            reason = ("non-finite training loss" if not math.isfinite(losses_l[i])
                      else None if finite[i] else "non-finite weights")
            if reason is not None:
                result[i] = TrainingDiverged(phase, epoch + 1, reason, cur[i].history)
                active.remove(i)
        net.write_back()
        if not active:
            break
        evals = _evaluate_all(net, loaders)
        rows: dict[int, dict[str, Any]] = {}
        for i in active:
            metrics: dict[str, Any] = {
                "phase": phase,
                "epoch": epoch + 1,
                "lr": lrs[i],
                "train_loss": round(losses_l[i] / max(seen, 1), 6) if seen else None,
                "train_acc": round(100.0 * correct_l[i] / max(seen, 1), 4) if seen else None,
            }
            metrics.update(evals[i])
            if extras[i] is not None:
                metrics.update(extras[i](models[i], epoch + 1))
                models[i].train()
            rows[i] = metrics
        seconds = time.perf_counter() - t0
        for i, metrics in rows.items():
            metrics["train_seconds"] = round(train_seconds, 3)
            metrics["seconds"] = round(seconds, 3)
            metrics["stack"] = k
            metrics = rows[i] = _finite_or_none(metrics)
            opt = _optimizer_for(net, i, cfgs[i], lrs[i])
            cur[i] = TrainState(epoch + 1, [*cur[i].history, metrics], opt.state_dict())
            result[i] = cur[i]
            if epoch_end[i] is not None:
                epoch_end[i](cur[i], models[i], opt)
        first = rows[active[0]]
        reporter.end_epoch({**first, "copies": [rows.get(i) for i in range(k)]})
    net.write_back()
    return result

"""Trainability measurements: mean JSV, layer isometry and trainability accuracy (TA).

The paper (Wang et al., arXiv 2301.05219) explains the "larger retraining LR helps"
mystery by pruning damaging *trainability*. Three measurements make that visible:

* :func:`jsv` -- statistics of the singular values of the per-sample input-output
  Jacobian of the logits (the authors' TPP code calls the mean "JSV_mean"; a dynamically
  isometric network has all of them near 1).
* :func:`layer_isometry` -- how far each Conv/Linear weight is from orthogonal.
* :func:`trainability_accuracy` -- paper Eq. (1): the mean test accuracy over the ``N``
  retraining epochs of the first LR stage, which starts after warm-up (``N`` and the start:
  :meth:`prunebench.schedule.Schedule.first_stage`).

How the Jacobian is computed (exact, vectorised with :mod:`torch.func`, no Python loop over
samples or classes; the only loop is over chunks of samples, to bound memory):

``"jacrev"``
    ``vmap`` over samples of ``jacrev`` of the one-sample forward (``functional_call`` with
    the model's detached parameters and buffers): ``num_classes`` backward passes, batched.
``"jacfwd"``
    ``vmap`` over samples of ``jacfwd``: ``input_dim`` forward passes, batched. Cheaper only
    when the input has fewer features than there are classes.
``"batched"``
    The authors' TPP computation: one forward of the whole batch, then one backward per
    class with a one-hot cotangent on ``y[:, c]`` for every sample at once (``jacrev`` of
    the batch-summed logits, batched over classes). Row ``c`` for sample ``b`` is then
    ``sum_b' d y[b', c] / d x[b]``: exactly the per-sample Jacobian whenever samples do not
    interact (eval mode, or no BatchNorm); in train mode with BatchNorm it also holds the
    (O(1/batch)) cross-sample terms through the batch statistics, as the authors' numbers do.
``"auto"`` (default)
    ``"jacrev"`` when ``num_classes < input_dim`` (always, for images), else ``"jacfwd"``.
    It is the fastest of the vectorised methods and exact in both modes: on the quiet 2-core
    dev CPU, ResNet-56 with 32 CIFAR inputs takes 0.74 s in chunks of 12 samples (1.0 s with
    all 32 at once, 1.2 s with ``"batched"``). The authors' row-by-row loop (one
    ``autograd.grad`` per class on the whole batch) takes 0.58 s there: on a CPU it is
    already batched over samples, and wider vmapped batches cost cache (docs/benchmarks.md).

Modes. ``mode="eval"`` (default) puts the model in eval mode: BatchNorm uses its running
statistics, dropout is off, and each sample's Jacobian is a well-defined function of that
sample alone. ``mode="train"`` puts it in train mode, as the authors' code did: BatchNorm
normalises with the statistics of the batch ``inputs`` (running statistics are *not*
updated) and dropout is active (a fresh mask per sample). Batch statistics couple the
samples, so with ``"jacrev"``/``"jacfwd"`` the train-mode Jacobian of sample ``b`` is the
exact diagonal block ``d y_b / d x_b`` of the whole batch's Jacobian, derivatives through
the batch statistics included: for each ``b`` the whole batch is run with ``x_b`` as the
variable (vmapped over ``b``), which costs ``batch`` times the eval-mode computation.
``"batched"`` gives the authors' cheaper (cross-terms-included) version instead. Models
without BatchNorm need no coupling and take the per-sample path in either mode.

Precision: the Jacobian is computed in the model's dtype (float32 normally) and matches a
float64 brute force to ~1e-6 relative on the native kernels; with oneDNN (PyTorch's CPU
default) a few ReLU gates sitting near zero can flip against float64, which moved ResNet-20's
singular values by ~3e-4 relative -- the row-by-row float32 loop moves identically.

Every function leaves the model as it found it: per-module train/eval flags restored,
parameters, BatchNorm running statistics and ``num_batches_tracked`` unchanged, and no
``.grad`` written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, jacfwd, jacrev, vmap
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from prunebench.errors import NonFiniteMeasurement

__all__ = [
    "JSVStats",
    "METHODS",
    "MODES",
    "jacobian_singular_values",
    "jsv",
    "jsv_inputs",
    "layer_isometry",
    "trainability_accuracy",
]

MODES = ("eval", "train")
METHODS = ("auto", "jacrev", "jacfwd", "batched")
RETRAIN_PHASES = ("retrain", "finetune")

#: Chunking budget: at most this many (sample, class) Jacobian rows are back-propagated in
#: one vmapped call (the 2-core dev CPU, ResNet-56, 10 classes, 32 samples: chunks of 8-16
#: samples 0.74-0.8 s, all 32 at once 1.0 s, chunks of 4 1.15 s; not tuned for GPUs) ...
_ROWS_PER_CHUNK = 128
#: ... and at most this many Jacobian entries are materialised per chunk (1 GiB of float32).
_ENTRIES_PER_CHUNK = 2**28


@dataclass(frozen=True)
class JSVStats:
    """Statistics of the Jacobian singular values of ``n_samples`` inputs.

    ``mean``/``std``/``min``/``max``/``sq_dev_mean`` are over all singular values of all
    samples (``std`` is the population std, numpy's default, as in the authors' code);
    ``cond_mean`` is the mean over samples of ``max(s) / min(s)`` (``inf`` when a sample's
    Jacobian is rank-deficient).
    """

    mean: float
    std: float
    cv: float
    min: float
    max: float
    cond_mean: float
    sq_dev_mean: float
    n_samples: int
    mode: str

    def to_dict(self) -> dict[str, float | int | str]:
        """The fields as a plain dict (keys are the field names)."""
        return asdict(self)

    @classmethod
    def from_singular_values(cls, s: torch.Tensor, mode: str) -> JSVStats:
        """Statistics of ``s``, shaped ``(n_samples, k)`` (one row per sample)."""
        if s.dim() != 2 or s.shape[0] < 1 or s.shape[1] < 1:
            raise ValueError(f"singular values must be (n_samples >= 1, k >= 1), got {s.shape}")
        s = s.detach().to("cpu", torch.float64)
        mean = s.mean().item()
        std = s.std(correction=0).item()
        smin = s.min(dim=1).values
        cond = torch.where(smin > 0, s.max(dim=1).values / smin, torch.inf)
        return cls(
            mean=mean,
            std=std,
            cv=std / mean if mean != 0 else math.inf,
            min=s.min().item(),
            max=s.max().item(),
            cond_mean=cond.mean().item(),
            sq_dev_mean=(s - 1).square().mean().item(),
            n_samples=int(s.shape[0]),
            mode=mode,
        )


def jacobian_singular_values(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    mode: str = "eval",
    method: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Singular values of each sample's logits-vs-input Jacobian (see the module docstring).

    ``inputs`` is a float batch ``(n, *input_shape)`` exactly as the model sees it
    (normalised). The Jacobian of sample ``b`` is ``num_classes x input_dim`` (input
    flattened). Returns float32 ``(n, min(num_classes, input_dim))``, descending per row,
    on the CPU. ``chunk_size`` bounds how many samples are processed per vmapped call
    (default: a budget of 128 back-propagated rows and 2**28 Jacobian entries per chunk,
    so 12 samples at a time for 10 classes); it never changes the result.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is invalid; allowed: {', '.join(MODES)}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is invalid; allowed: {', '.join(METHODS)}")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2 or inputs.shape[0] < 1:
        raise ValueError("inputs must be a tensor (n >= 1, *input_shape)")
    if not inputs.is_floating_point():
        raise TypeError(
            f"inputs must be floating point (normalised as for training), got {inputs.dtype}"
        )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} is invalid; expected an int >= 1")

    with _measuring(model, train=mode == "train") as call:
        dtype, device = _dtype_device(model, inputs)
        x = inputs.detach().to(device=device, dtype=dtype)
        n = x.shape[0]
        input_dim = math.prod(x.shape[1:])
        with torch.no_grad():  # a full batch: train-mode BatchNorm1d rejects batches of 1
            num_classes = call(x).reshape(n, -1).shape[1]
        if method == "auto":
            method = "jacrev" if num_classes < input_dim else "jacfwd"
        coupled = mode == "train" and any(isinstance(m, _BatchNorm) for m in model.modules())
        if method == "batched":
            jac = _batched_jacobian(call, x)
            s = _svdvals(jac.reshape(n, num_classes, input_dim))
        else:
            rows = n * num_classes if coupled else num_classes
            chunk = chunk_size or _default_chunk(rows, num_classes * input_dim)
            s = torch.cat(
                [
                    _svdvals(jac.reshape(len(jac), num_classes, input_dim))
                    for jac in _per_sample_jacobians(call, x, method, coupled, chunk, mode)
                ]
            )
    return s.detach().to("cpu", torch.float32)


def _svdvals(jac: torch.Tensor) -> torch.Tensor:
    """Singular values of Jacobian blocks; a non-finite block (finite weights that have
    blown up) is :class:`NonFiniteMeasurement`, not a LinAlgError from the SVD."""
    if not bool(torch.isfinite(jac).all()):
        raise NonFiniteMeasurement("input-output Jacobian (JSV measurement)")
    return torch.linalg.svdvals(jac)


def jsv(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    mode: str = "eval",
    method: str = "auto",
    chunk_size: int | None = None,
) -> JSVStats:
    """Mean-JSV statistics (TPP convention) of ``model`` at ``inputs``; see
    :func:`jacobian_singular_values` for the arguments."""
    s = jacobian_singular_values(model, inputs, mode=mode, method=method, chunk_size=chunk_size)
    return JSVStats.from_singular_values(s, mode)


def jsv_inputs(x: torch.Tensor, n: int = 32, seed: int = 0) -> torch.Tensor:
    """A fixed subset of ``n`` rows of ``x`` (all rows when ``n >= len(x)``), chosen by a
    private generator seeded with ``seed``: the same rows every call, so JSV is comparable
    across epochs and runs; the global RNG is untouched. Rows keep their original order."""
    if n < 1:
        raise ValueError(f"n={n!r} is invalid; expected an int >= 1")
    if len(x) == 0:
        raise ValueError("x is empty")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=gen)[:n].sort().values
    return x[idx.to(x.device)].clone()


def layer_isometry(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per Conv/Linear layer (by module name): how close its weight is to orthogonal.

    The weight is reshaped ``(out, -1)`` and measured in float64: ``sv_mean``, ``sv_min``,
    ``sv_max`` (its singular values) and ``orth_dev``, the mean absolute entry of
    ``W W^T - I`` (``W^T W - I`` when ``out > in``, the smaller Gram matrix): 0 exactly for a
    weight with orthonormal rows (columns).
    """
    out: dict[str, dict[str, float]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear | _ConvNd):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.numel() == 0:
            continue
        w = weight.detach().to(torch.float64).reshape(weight.shape[0], -1)
        s = torch.linalg.svdvals(w)
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        out[name] = {
            "sv_mean": s.mean().item(),
            "sv_min": s.min().item(),
            "sv_max": s.max().item(),
            "orth_dev": (gram - eye).abs().mean().item(),
        }
    return out


def trainability_accuracy(
    history: list[dict], n: int, key: str = "test_acc", start: int = 0
) -> float | None:
    """Paper Eq. (1): the mean of ``key`` over retraining epochs ``start + 1 .. start + n``.

    ``start`` is the number of retraining epochs before the first LR stage (the warm-up
    epochs; :meth:`prunebench.schedule.Schedule.first_stage` gives ``(start, n)``), so the
    default ``start=0`` averages epochs ``1..n``.

    Only rows whose ``phase`` is ``"retrain"`` (or its alias ``"finetune"``), or that have
    no ``phase``, count; ``epoch`` is 1-based (a row without one takes its position among
    the counted rows). When an epoch appears twice (a resumed run), the later row wins.
    Returns None when any of those ``n`` epochs is missing or has no ``key`` value.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is invalid; expected an int >= 1")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start={start!r} is invalid; expected an int >= 0")
    by_epoch: dict[int, Any] = {}
    rows = [r for r in history if r.get("phase", "retrain") in RETRAIN_PHASES]
    for pos, row in enumerate(rows, start=1):
        by_epoch[int(row.get("epoch", pos))] = row.get(key)
    values = [by_epoch.get(epoch) for epoch in range(start + 1, start + n + 1)]
    if any(v is None for v in values):
        return None
    return sum(float(v) for v in values) / n


# --------------------------------------------------------------------------- internals

Call = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def _measuring(model: nn.Module, *, train: bool) -> Iterator[Call]:
    """Set the mode, stop BatchNorm from updating running stats, and yield a stateless
    ``call(x) -> logits`` (functional_call with detached params and buffers). Restores the
    per-module training flags and ``track_running_stats`` on exit."""
    flags = {m: m.training for m in model.modules()}
    tracking = {m: m.track_running_stats for m in model.modules() if isinstance(m, _BatchNorm)}
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    try:
        model.train(train)
        if train:
            # Train-mode BN with track_running_stats=False normalises with batch statistics
            # and passes no running buffers, so nothing is updated (and vmap has no
            # in-place write to an unbatched buffer).
            for bn in tracking:
                bn.track_running_stats = False

        def call(x: torch.Tensor) -> torch.Tensor:
            return functional_call(model, (params, buffers), (x,))

        yield call
    finally:
        for bn, value in tracking.items():
            bn.track_running_stats = value
        for module, flag in flags.items():
            module.training = flag


def _dtype_device(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.dtype, torch.device]:
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return inputs.dtype, inputs.device


def _default_chunk(rows_per_sample: int, entries_per_sample: int) -> int:
    return max(1, min(_ROWS_PER_CHUNK // rows_per_sample, _ENTRIES_PER_CHUNK // entries_per_sample))


def _per_sample_jacobians(
    call: Call, x: torch.Tensor, method: str, coupled: bool, chunk: int, mode: str
) -> Iterator[torch.Tensor]:
    """Yield the Jacobians ``(chunk, num_classes, *input_shape)`` chunk by chunk."""
    transform = jacrev if method == "jacrev" else jacfwd
    randomness = "different" if mode == "train" else "error"
    if not coupled:

        def one(xi: torch.Tensor) -> torch.Tensor:
            return call(xi.unsqueeze(0)).reshape(-1)

        per_sample = vmap(transform(one), randomness=randomness)
        for xs in x.split(chunk):
            yield per_sample(xs)
        return

    # Coupled (train mode with BatchNorm): the diagonal block d y_b / d x_b of the whole
    # batch's Jacobian. For sample b the whole batch runs with row b replaced by the
    # variable, so derivatives through the batch statistics are included.
    n = x.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    view = (n,) + (1,) * (x.dim() - 1)

    def diag(xi: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        batch = torch.where(onehot.reshape(view), xi.unsqueeze(0), x)
        logits = call(batch).reshape(n, -1)
        return (logits * onehot.unsqueeze(1).to(logits.dtype)).sum(0)

    per_sample = vmap(transform(diag, argnums=0), randomness=randomness)
    for xs, onehots in zip(x.split(chunk), eye.split(chunk), strict=True):
        yield per_sample(xs, onehots)


def _batched_jacobian(call: Call, x: torch.Tensor) -> torch.Tensor:
    """The authors' TPP Jacobian: ``J[b, c] = d (sum_b' y[b', c]) / d x[b]``."""

    def summed(xs: torch.Tensor) -> torch.Tensor:
        return call(xs).reshape(xs.shape[0], -1).sum(0)

    jac = jacrev(summed)(x)  # (num_classes, n, *input_shape)
    return jac.movedim(0, 1)

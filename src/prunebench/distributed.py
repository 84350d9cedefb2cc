"""One run on several processes (data parallel): torchrun / ``prunebench run --nproc N``.

Every rank runs the whole pipeline with the same recipe, data and seeds, so every rank
builds the same model and draws the same global batches; what differs:

* **data**: each rank trains on its slice of every global batch (:class:`ShardedLoader`:
  contiguous slices whose sizes differ by at most one), so the global sample order and the
  batch size (``data.batch_size`` is the *global* batch) are those of one process;
* **gradients**: the local loss is weighted by ``local_n * world / global_n`` and the
  gradients are summed over ranks and divided by ``world`` after ``backward`` (one flat
  all_reduce per step), so every step applies the one-process update of that global batch,
  also for the last, partial batch and for batches that do not divide by the world size.
  The step hooks (masks, regularisers) then see the averaged gradient, as in one process;
* **BatchNorm**: synchronised during the training steps (batch statistics over the global
  batch, gradients through them): ``torch.nn.SyncBatchNorm`` on CUDA, :class:`GlooSyncBatchNorm`
  on CPU (torch's SyncBatchNorm refuses CPU tensors), so results do not depend on the world
  size;
* **evaluation** inside training: each rank evaluates its slice of every batch and the sums
  (correct counts, loss) are all-reduced;
* **the store**: rank 0 reads and writes it; every decision taken from it (a finished run
  or stage, a checkpoint to resume from) is rank 0's and is broadcast with its content
  (:func:`from_main`), and the other ranks write into a private scratch folder
  (:func:`store_root`) that is deleted when they exit.

Once per epoch the ranks compare a fingerprint of their weights (an exact integer sum of
their bits); ranks that drifted apart (a nondeterministic data-driven criterion, say) stop
the run with an error instead of producing a silently wrong result.

In one process (``WORLD_SIZE`` unset or 1) every function here is a no-op.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunebench.errors import RecipeError

T = TypeVar("T")

#: seconds a rank waits in a collective (rank 0 holding a stage lock another process builds
#: counts): ``PRUNEBENCH_DIST_TIMEOUT`` overrides
DEFAULT_TIMEOUT = 1800.0

_scratch: list[Path] = []


def env_world() -> int:
    """The world size torchrun (or ``--nproc``) put in the environment (1 without)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def env_rank() -> int:
    """This process's rank as the environment gives it (0 without)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def pin_device() -> None:
    """Make ``cuda`` mean ``cuda:LOCAL_RANK`` in this rank (before any data is placed)."""
    if env_world() > 1 and torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())


def world() -> int:
    """Processes of this run (1 in one process)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world() > 1 else 0


def is_main() -> bool:
    """Whether this process writes (rank 0, or the only process)."""
    return rank() == 0


def local_rank() -> int:
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def _wants_cuda(device: str | None) -> bool:
    name = (device or "auto").strip()
    if name == "auto":
        return torch.cuda.is_available()
    return name.startswith("cuda")


def init(device: str | None = "auto") -> bool:
    """Join the process group when the environment says ``WORLD_SIZE > 1`` (idempotent):
    NCCL with ``cuda:LOCAL_RANK`` as this rank's device when ``device`` is (or ``auto``
    resolves to) CUDA, else gloo. Returns whether this process is one of several."""
    if env_world() <= 1:
        return False
    if dist.is_initialized():
        return True
    timeout = datetime.timedelta(
        seconds=float(os.environ.get("PRUNEBENCH_DIST_TIMEOUT", DEFAULT_TIMEOUT)))
    if _wants_cuda(device):
        if not torch.cuda.is_available():
            raise RecipeError(f"device {device!r} requested but CUDA is not available")
        torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl", timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    atexit.register(cleanup)
    return True


def run_device(name: str) -> torch.device | None:
    """This rank's training device for the recipe's ``device`` under several processes
    (``cuda:LOCAL_RANK`` for CUDA, the CPU otherwise); ``None`` in one process."""
    if world() <= 1:
        return None
    if dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def cleanup() -> None:
    """Leave the process group and delete this rank's scratch store."""
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    while _scratch:
        shutil.rmtree(_scratch.pop(), ignore_errors=True)


def store_root(out: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """The store a rank writes into: ``out`` for rank 0, a private scratch folder (deleted
    at exit) for the others, so nothing but rank 0 ever writes into the real store."""
    if is_main():
        return out
    if not _scratch:
        _scratch.append(Path(tempfile.mkdtemp(prefix=f"prunebench-rank{rank()}-")))
    return _scratch[0]


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def from_main(fn: Callable[[], T]) -> T:
    """``fn()`` computed on rank 0 and broadcast (pickled) to every rank; an exception on
    rank 0 is raised on every rank. In one process: ``fn()``."""
    if world() <= 1:
        return fn()
    box: list[Any] = [None]
    error: BaseException | None = None
    if is_main():
        try:
            box[0] = ("ok", fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised below, on every rank
            error = exc
            box[0] = ("error", _portable(exc))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if error is not None:
        raise error
    if kind == "error":
        raise value
    return value


def share(value: T) -> T:
    """Rank 0's ``value`` on every rank."""
    return from_main(lambda: value)


def _portable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
        return RuntimeError(f"rank 0: {type(exc).__name__}: {exc}")


# -- data ------------------------------------------------------------------------------------


def bounds(n: int, r: int, w: int) -> tuple[int, int]:
    """Rank ``r``'s slice ``[lo, hi)`` of a global batch of ``n`` samples among ``w`` ranks."""
    return n * r // w, n * (r + 1) // w


class ShardedLoader:
    """This rank's slice of every global batch of ``inner`` (same batches, same order).

    ``batch_size`` is the local size of a full batch on this rank; ``num_samples`` and
    ``len()`` are the global ones; ``global_n`` is the size of the global batch last
    yielded. :meth:`reduce_sums` all-reduces per-rank sums (evaluation).
    """

    sharded = True

    def __init__(self, inner: Any, r: int, w: int) -> None:
        self.inner, self.rank, self.world = inner, r, w
        self.num_samples = inner.num_samples
        full = getattr(inner, "batch_size", None)
        self.global_batch_size = full
        self.batch_size: int | None = None
        if full is not None:
            lo, hi = bounds(full, r, w)
            self.batch_size = hi - lo
        self.global_n = 0

    def __len__(self) -> int:
        return len(self.inner)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.inner.epoch(epoch):
            n = int(y.shape[0])
            lo, hi = bounds(n, self.rank, self.world)
            self.global_n = n
            yield x[lo:hi], y[lo:hi]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)

    @staticmethod
    def reduce_sums(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Sums over ranks (float64 on the wire, each returned in its own dtype)."""
        packed = torch.stack([t.detach().to(torch.float64).reshape(()) for t in tensors])
        dist.all_reduce(packed)
        return tuple(packed[i].to(t.dtype) for i, t in enumerate(tensors))


def shard_loaders(loaders: Any) -> Any:
    """``loaders`` (a :class:`prunebench.train.Loaders`) with every loader sharded over the
    ranks; the same object in one process."""
    w = world()
    if w <= 1:
        return loaders
    r = rank()

    def wrap(loader: Any) -> Any:
        if loader is None or isinstance(loader, ShardedLoader):
            return loader
        return ShardedLoader(loader, r, w)

    return dataclasses.replace(loaders, train=wrap(loaders.train), val=wrap(loaders.val),
                               test=wrap(loaders.test))


def check_batch(batch_size: int) -> None:
    """A full global batch must give every rank at least one sample."""
    w = world()
    if w > 1 and batch_size < w:
        raise RecipeError(f"data.batch_size {batch_size} is the global batch: it must be at "
                          f"least the number of processes ({w})")


# -- BatchNorm -------------------------------------------------------------------------------


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum over ranks of the gradients."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlooSyncBatchNorm(_BatchNorm):
    """BatchNorm with batch statistics over every rank (CPU / gloo): local sums and sums of
    squares (float64) are all-reduced with autograd, so the gradient flows through the
    global statistics as in one process. Shares the parameters and buffers of the
    BatchNorm it stands in for (:meth:`of`); ``eval()`` uses the running statistics."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    @classmethod
    def of(cls, bn: _BatchNorm) -> GlooSyncBatchNorm:
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                  device=bn.running_mean.device if bn.running_mean is not None else None)
        with torch.no_grad():
            if bn.affine:
                new.weight, new.bias = bn.weight, bn.bias
        new.running_mean, new.running_var = bn.running_mean, bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
        new.train(bn.training)
        return new

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        use_batch = self.training or self.running_mean is None
        if not use_batch:
            return F.batch_norm(input, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        local_n = input.numel() // c if c else 0
        s = input.sum(dims, dtype=torch.float64)
        ss = (input.to(torch.float64) ** 2).sum(dims)
        count = torch.full((1,), float(local_n), dtype=torch.float64, device=input.device)
        stats = _AllReduceSum.apply(torch.cat([s, ss, count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0.0)
        if self.training and self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                          else self.momentum)
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype),
                                                        alpha=factor)
                self.running_var.mul_(1 - factor).add_(  # type: ignore[union-attr]
                    unbiased.to(self.running_var.dtype), alpha=factor)  # type: ignore[union-attr]
        shape = [1, c] + [1] * (input.dim() - 2)
        out = ((input - mean.to(input.dtype).view(shape))
               * torch.rsqrt(var + self.eps).to(input.dtype).view(shape))
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def _synced(bn: _BatchNorm, cuda: bool) -> nn.Module:
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(bn)
    return GlooSyncBatchNorm.of(bn)


# -- the training hooks ----------------------------------------------------------------------


def _fingerprint(model: nn.Module) -> torch.Tensor:
    """An exact integer sum of the bits of every parameter and buffer (order-free, so the
    same on every rank iff the weights are; int64 wrap-around is deterministic)."""
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    total: torch.Tensor | None = None
    for t in (*model.parameters(), *model.buffers()):
        if not t.numel():
            continue
        v = t.detach().contiguous()
        if v.is_floating_point():
            v = v.view(ints[v.element_size()])
        s = v.to(torch.int64).sum()
        total = s if total is None else total + s
    return total if total is not None else torch.zeros((), dtype=torch.int64)


class Parallel:
    """The data-parallel side of one training stage (``train()`` on several ranks)."""

    def __init__(self, model: nn.Module, loaders: Any) -> None:
        self.world = world()
        self.model = model
        self.loaders = shard_loaders(loaders)
        self.train: ShardedLoader = self.loaders.train
        check_batch(int(self.train.global_batch_size or self.world))
        cuda = dist.get_backend() == "nccl"
        self.swaps: list[tuple[nn.Module, str, nn.Module, nn.Module]] = []
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, _BatchNorm) and not isinstance(
                        child, nn.SyncBatchNorm | GlooSyncBatchNorm):
                    self.swaps.append((parent, name, child, _synced(child, cuda)))

    def begin_epoch(self) -> None:
        """Synchronised BatchNorm for the training steps (never for evaluation or the
        measurements between epochs, which see the model as it is)."""
        for parent, name, plain, synced in self.swaps:
            synced.train(plain.training)
            setattr(parent, name, synced)

    def end_steps(self) -> None:
        for parent, name, plain, synced in self.swaps:
            plain.train(synced.training)
            setattr(parent, name, plain)

    def backward(self, loss: torch.Tensor, y: torch.Tensor) -> None:
        """Backward of the weighted local loss, then the gradients averaged over ranks."""
        weight = y.shape[0] * self.world / max(self.train.global_n, 1)
        (loss * weight).backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad for p in params]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat.div_(self.world)
        for g, avg in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
            g.copy_(avg)  # type: ignore[union-attr]

    def epoch_totals(self, model: nn.Module, loss_sum: torch.Tensor | None,
                     correct: torch.Tensor | None, seen: int, epoch: int
                     ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The epoch's summed loss, correct count and samples over every rank; checks
        that every rank holds the same weights."""
        self.end_steps()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        zero = torch.zeros((), device=device)
        loss_sum = zero if loss_sum is None else loss_sum
        correct = zero.long() if correct is None else correct
        seen_t = torch.tensor(float(seen), device=device)
        loss_sum, correct, seen_t = ShardedLoader.reduce_sums(loss_sum, correct, seen_t)
        fp = _fingerprint(model).to(device)
        both = torch.stack([fp, -fp])
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        if int(both[0]) != -int(both[1]):
            raise RuntimeError(
                f"the ranks hold different weights after epoch {epoch + 1} (a nondeterministic "
                "step or criterion): stopped rather than continue with inconsistent replicas")
        return loss_sum, correct, int(round(float(seen_t)))

    def close(self) -> None:
        self.end_steps()


def for_training(model: nn.Module, loaders: Any) -> Parallel | None:
    """The data-parallel hooks of a training stage; ``None`` in one process."""
    return Parallel(model, loaders) if world() > 1 else None


# -- launching -------------------------------------------------------------------------------


#: local processes per CPU core ``--nproc`` may start on CPU (gloo): more only slows a run
#: down (and runs the machine out of memory long before it helps)
PROCS_PER_CPU = 4


def max_local_procs(device: str | None) -> tuple[int, str]:
    """The most processes ``--nproc`` may start on this machine for ``device`` and why:
    with CUDA (NCCL) one per visible GPU, else :data:`PROCS_PER_CPU` per CPU core."""
    if _wants_cuda(device):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return n, (f"the {n} visible GPU{'s' if n != 1 else ''} (on CUDA each process "
                   "needs its own GPU; --device cpu runs on CPU processes)")
    cpus = os.cpu_count() or 1
    return cpus * PROCS_PER_CPU, (f"{PROCS_PER_CPU} per CPU core ({cpus} core"
                                  f"{'s' if cpus != 1 else ''} here)")


def check_nproc(nproc: int, recipes: Sequence[Any], device: str | None = None) -> None:
    """Before any process is started: ``nproc`` local processes must fit this machine
    (:func:`max_local_procs` for each recipe's device, ``device`` overriding it) and every
    recipe's global batch (``data.batch_size`` >= ``nproc``: each process gets at least one
    sample of every full batch). A one-line :class:`RecipeError` otherwise."""
    for recipe in recipes:
        limit, why = max_local_procs(device if device is not None else recipe.device)
        if nproc > limit:
            raise RecipeError(f"--nproc {nproc} is too many: at most {limit} local processes, "
                              f"{why}")
        batch = int(recipe.data.batch_size)
        if nproc > batch:
            raise RecipeError(f"--nproc {nproc} is more than data.batch_size {batch} (the "
                              "global batch, split over the processes: each needs at least "
                              f"one sample); use --nproc <= {batch}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run ``python -m prunebench *args`` as ``nproc`` local ranks (the environment
    torchrun would give them) and return rank 0's exit status; when a rank fails, the
    others are stopped and its status is returned."""
    port = _free_port()
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0",
            "ROLE_RANK": "0", "NODE_RANK": "0"}
    if "OMP_NUM_THREADS" not in os.environ:
        base["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    procs: list[subprocess.Popen[bytes]] = []
    for r in range(nproc):
        env = {**base, "RANK": str(r), "LOCAL_RANK": str(r)}
        procs.append(subprocess.Popen([sys.executable, "-m", "prunebench", *args], env=env))

    def stop(sig: int = signal.SIGTERM) -> None:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.send_signal(sig)

    failed: int | None = None
    try:
        while any(p.poll() is None for p in procs):
            bad = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if bad and failed is None:
                failed = bad[0]
                stop()
                deadline = time.monotonic() + 30
                while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                    time.sleep(0.1)
                stop(signal.SIGKILL)
            time.sleep(0.1)
    except KeyboardInterrupt:
        stop(signal.SIGINT)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)
        stop(signal.SIGKILL)
        return 130
    codes = [p.wait() for p in procs]
    if codes[0] > 0:
        return codes[0]
    if failed is None:
        failed = next((c for c in codes if c != 0), 0)
    return failed if failed >= 0 else 128 - failed  # a rank killed by a signal


# -- the record ------------------------------------------------------------------------------


def adjust_speed(plan: Any) -> None:
    """CUDA graphs are not used with several processes (collectives in the step)."""
    if world() > 1 and plan is not None and plan.cuda_graphs:
        plan.cuda_graphs = False
        plan.notes.append("cuda_graphs: not used with several processes (collectives in "
                          "the training step)")


def record() -> dict[str, Any]:
    """``{"distributed": {...}}`` for a run's record when several processes run it (world
    size, backend, global batch semantics); ``{}`` in one process. An execution detail,
    never part of the run id: BatchNorm is synchronised, so results do not depend on it."""
    if world() <= 1:
        return {}
    return {"distributed": {"world_size": world(), "backend": dist.get_backend(),
                            "batch_norm": "synchronised", "batch": "global"}}

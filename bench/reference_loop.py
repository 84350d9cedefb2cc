"""A training loop written the way the pruning papers' code trains: the baseline for speed.

The papers' CIFAR code (the rethinking-pruning repos, TPP, GReg, ...) trains with a
``torch.utils.data.DataLoader`` over a dataset whose ``__getitem__`` applies
torchvision-style per-sample transforms (``RandomCrop(32, padding=4)``,
``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``) in worker processes, copies each
batch to the GPU, and runs an eager fp32 step with ``torch.optim.SGD``; it logs the running
loss and accuracy with ``loss.item()`` every step (a host synchronisation per step). This
module does exactly that, so the benchmarks can measure the baseline *in the same process*
as prunebench's loops (honest ratios: same GPU, same data, same moment).

torchvision is used for the transforms when it is installed; otherwise the same transforms
are implemented per sample in torch (zero padding, a random crop offset and a coin flip per
sample drawn with Python's ``random``, as torchvision does), so the bare GPU machine needs
nothing beyond torch and numpy. The images are held as a uint8 ``(N, C, H, W)`` tensor;
torchvision's pipeline would convert each to a PIL image first, which costs more, so this
baseline is if anything *faster* than the papers' code.

    python bench/reference_loop.py --cpu-smoke      # a few batches on tiny random data
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

try:  # the papers' own transforms when available
    from torchvision import transforms as _tv  # type: ignore[import-not-found]
except Exception:  # noqa: BLE001 - not installed (the bare GPU machine): our per-sample copy
    _tv = None

PADDING = 4


class PerSampleTransform:
    """``RandomCrop(size, padding=4)`` + ``RandomHorizontalFlip()`` + ``ToTensor()`` +
    ``Normalize(mean, std)`` on one uint8 ``(C, H, W)`` image, per sample, in torch."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], augment: bool) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        x = img.to(torch.float32).div_(255.0)  # ToTensor
        if self.augment:
            _, h, w = x.shape
            padded = F.pad(x, (PADDING, PADDING, PADDING, PADDING))  # RandomCrop(padding=4)
            i = random.randint(0, 2 * PADDING)
            j = random.randint(0, 2 * PADDING)
            x = padded[:, i:i + h, j:j + w]
            if random.random() < 0.5:  # RandomHorizontalFlip
                x = x.flip(-1)
        return (x - self.mean) / self.std  # Normalize


def _torchvision_transform(mean: Sequence[float], std: Sequence[float], augment: bool) -> Any:
    assert _tv is not None
    steps: list[Any] = [_tv.ToPILImage()]
    if augment:
        steps += [_tv.RandomCrop(32, padding=PADDING), _tv.RandomHorizontalFlip()]
    steps += [_tv.ToTensor(), _tv.Normalize(mean, std)]
    return _tv.Compose(steps)


class ImageDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` and labels with a per-sample transform."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Any) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.x[i]), int(self.y[i])


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)


def make_loader(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    train: bool,
    workers: int,
    seed: int = 0,
    use_torchvision: bool | None = None,
) -> DataLoader:
    """The papers' DataLoader: shuffled, per-sample transforms in ``workers`` processes."""
    tv = _tv is not None if use_torchvision is None else use_torchvision
    size_ok = x.shape[-1] == 32 and x.shape[-2] == 32
    if tv and _tv is not None and size_ok:
        transform = _torchvision_transform(mean, std, train)
    else:
        transform = PerSampleTransform(mean, std, train)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        ImageDataset(x.cpu(), y.cpu(), transform),
        batch_size=batch_size,
        shuffle=train,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
        worker_init_fn=_seed_worker,
        generator=g,
    )


def transforms_kind() -> str:
    return "torchvision" if _tv is not None else "per-sample torch (torchvision not installed)"


class _Deadline(Exception):
    pass


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    max_batches: int | None = None,
    deadline: float | None = None,
) -> dict[str, float]:
    """One epoch the papers' way: eager fp32, ``loss.item()`` logged every step."""
    model.train()
    t0 = time.perf_counter()
    loss_sum, correct, seen, batches = 0.0, 0, 0, 0
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        out = model(x)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * y.size(0)  # the per-step logging of the papers' code
        correct += int((out.argmax(1) == y).sum().item())
        seen += y.size(0)
        batches += 1
        if max_batches is not None and batches >= max_batches:
            break
        if deadline is not None and time.perf_counter() > deadline:
            raise _Deadline(f"reference loop stopped by its time limit after {batches} batches")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"seconds": time.perf_counter() - t0, "batches": batches, "samples": seen,
            "train_loss": loss_sum / max(seen, 1), "train_acc": 100.0 * correct / max(seen, 1)}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    correct, seen = 0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        correct += int((model(x).argmax(1) == y).sum().item())
        seen += y.size(0)
    model.train()
    return 100.0 * correct / max(seen, 1)


def measure(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    batch_size: int = 128,
    workers: int = 12,
    epochs: int = 1,
    warmup_batches: int = 10,
    max_batches: int | None = None,
    lr: float = 0.1,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Seconds per epoch of the reference loop (after ``warmup_batches`` untimed batches).

    Every timed epoch is a full pass (worker start-up included, as in the papers' loops,
    whose DataLoaders are not persistent) unless ``max_batches`` cuts it short (smoke runs).
    """
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    loader = make_loader(x, y, mean=mean, std=std, batch_size=batch_size, train=True,
                         workers=workers)
    if warmup_batches:
        train_epoch(model, loader, opt, device, max_batches=warmup_batches, deadline=deadline)
    rows = []
    for _ in range(epochs):
        rows.append(train_epoch(model, loader, opt, device, max_batches=max_batches,
                                deadline=deadline))
    secs = [r["seconds"] for r in rows]
    return {"epoch_seconds": secs, "seconds_per_epoch": min(secs), "workers": workers,
            "batch_size": batch_size, "transforms": transforms_kind(),
            "samples_per_epoch": rows[-1]["samples"], "last": rows[-1]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--images", type=int, default=50000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cpu-smoke", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from prunebench.models import build_model

    if args.cpu_smoke:
        args.model, args.images, args.batch_size, args.workers = "resnet20", 64, 16, 2
        args.device = "cpu"
    size = 16 if args.cpu_smoke else 32
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (args.images,), generator=g)
    model = build_model(args.model, in_channels=3, num_classes=10, input_size=(size, size))
    r = measure(model, x, y, mean=(0.5,) * 3, std=(0.25,) * 3, device=torch.device(args.device),
                batch_size=args.batch_size, workers=args.workers,
                warmup_batches=1 if args.cpu_smoke else 10,
                max_batches=3 if args.cpu_smoke else None)
    print(json.dumps(r))
    return r


if __name__ == "__main__":
    main()

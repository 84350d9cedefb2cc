"""What every stage of a run needs: the device, the data on it, a model builder.

Data is loaded once per run, moved to the training device once, and batched with tensor
ops (:class:`prunebench.data.BatchLoader`); the test set is only ever evaluated. The
recipe's ``speed:`` knobs are resolved for the device once (:attr:`Context.speed`) and
travel with every :class:`~prunebench.train.Loaders` to ``train()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunebench.errors import RecipeError
from prunebench.recipe import Recipe
from prunebench.train import Loaders, Reporter, SpeedPlan, resolve_speed


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
    speed: SpeedPlan | None = None  # the fast path as resolved for ``device``

    @property
    def streaming(self) -> bool:
        """Data read from a memory-mapped store (ImageNet), not held in memory: ``train_x``
        is then a :class:`~prunebench.data.shards.StoreView` of the training rows."""
        return bool(getattr(self.dataset, "streaming", False))

    def _stream_loader(self, offset: int) -> Any:
        from prunebench.data.shards import ShardLoader

        view = self.train_x
        return ShardLoader(
            view.images,  # type: ignore[attr-defined]
            self.dataset.train_y,
            view.rows,  # type: ignore[attr-defined]
            crop=self.dataset.crop,
            batch_size=self.recipe.data.batch_size,
            mean=self.dataset.mean,
            std=self.dataset.std,
            shuffle=True,
            augment=self.augment,
            seed=self.recipe.seed * 1000 + offset,
            device=self.device,
        )

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
        if self.streaming:
            return Loaders(self._stream_loader(offset), self.loaders.val, self.loaders.test,
                           self.loaders.num_classes, self.recipe.precision, self.speed)
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
        return Loaders(train_loader, self.loaders.val, self.loaders.test,
                       self.loaders.num_classes, self.recipe.precision, self.speed)


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
    if getattr(ds, "streaming", False):
        return _prepare_streaming(recipe, device, reporter, ds, train_idx, val_idx)
    common = {"mean": ds.mean, "std": ds.std, "device": device}
    speed = resolve_speed(recipe.speed, device, d.eval_batch_size)
    eval_batch = speed.eval_batch_size or d.eval_batch_size

    def eval_loader(x: torch.Tensor, y: torch.Tensor) -> BatchLoader:
        return BatchLoader(x, y, batch_size=eval_batch, **common)

    val_loader = eval_loader(ds.train_x[val_idx], ds.train_y[val_idx]) if len(val_idx) else None
    test_loader = eval_loader(ds.test_x, ds.test_y)
    train_x, train_y = ds.train_x[train_idx], ds.train_y[train_idx]
    example = next(iter(eval_loader(train_x[:8], train_y[:8]).epoch(0)))[0]
    return _context(recipe, device, reporter, ds, speed, (val_loader, test_loader), example,
                    train_x, train_y)


def _context(recipe: Recipe, device: torch.device, reporter: Reporter | None, ds: Any,
             speed: SpeedPlan, eval_loaders: tuple[Any, Any], example: torch.Tensor,
             train_x: Any, train_y: torch.Tensor) -> Context:
    """The Context of prepared data, its loaders set for pretraining."""
    val_loader, test_loader = eval_loaders
    ctx = Context(
        recipe,
        device,
        ds,
        Loaders(test_loader, val_loader, test_loader, ds.num_classes, recipe.precision),
        example,
        (ds.in_channels, *ds.input_size),
        train_x,
        train_y,
        ds.augment if recipe.data.augment else "none",
        reporter,
        speed,
    )
    ctx.loaders = ctx.loaders_for("pretrain")
    return ctx


def _prepare_streaming(
    recipe: Recipe,
    device: torch.device,
    reporter: Reporter | None,
    ds: Any,
    train_idx: torch.Tensor,
    val_idx: torch.Tensor,
) -> Context:
    """``prepare`` for a store-backed dataset (:class:`~prunebench.data.StreamDataset`):
    nothing is sliced or copied; the splits are index arrays into the memory-mapped training
    images (validation carved from them as for in-memory data), the test set is the store's
    val split, and every loader gathers its rows per chunk."""
    from prunebench.data.shards import ShardLoader, StoreView

    d = recipe.data
    speed = resolve_speed(recipe.speed, device, d.eval_batch_size)
    eval_batch = speed.eval_batch_size or d.eval_batch_size
    store = ds.store
    common: dict[str, Any] = {"crop": ds.crop, "mean": ds.mean, "std": ds.std,
                              "device": device}

    def eval_loader(split: str, rows: torch.Tensor, batch: int = eval_batch) -> ShardLoader:
        return ShardLoader(store.images[split], store.labels[split], rows, batch_size=batch,
                           **common)

    val_loader = eval_loader("train", val_idx) if len(val_idx) else None
    test_loader = eval_loader("val", torch.arange(len(store.labels["val"])))
    train_x = StoreView(store.images["train"], train_idx, ds.crop)
    train_y = ds.train_y[train_idx]
    example = next(iter(eval_loader("train", train_idx[:8], 8).epoch(0)))[0]
    return _context(recipe, device, reporter, ds, speed, (val_loader, test_loader), example,
                    train_x, train_y)




def data_batches(ctx: Context, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` shuffled training batches (for data-driven criteria like taylor_fo)."""
    batches = []
    for i, batch in enumerate(ctx.loaders_for("prune").train.epoch(0)):
        if i >= n:
            break
        batches.append(batch)
    return batches

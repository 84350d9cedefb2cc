"""The Dataset record, the dataset registry and the memoised ``load_dataset``."""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunebench.errors import DataError, RegistryError
from prunebench.registry import Registry

Loader = Callable[..., "Dataset"]

DATASETS: Registry[Loader] = Registry("dataset")

AUGMENTS = ("none", "crop_flip")

#: Static (in_channels, (height, width), num_classes) per dataset name, to build a model
#: without loading data (``prunebench describe``); ``synthetic`` uses its loader defaults.
DATASET_SHAPES: dict[str, tuple[int, tuple[int, int], int]] = {
    "fashion_mnist": (1, (28, 28), 10),
    "mnist": (1, (28, 28), 10),
    "cifar10": (3, (32, 32), 10),
    "cifar100": (3, (32, 32), 100),
    "synthetic": (1, (8, 8), 4),
    "imagenet": (3, (224, 224), 1000),
    "imagenet100": (3, (224, 224), 100),
}


def dataset_shape(name: str) -> tuple[int, tuple[int, int], int]:
    """``(in_channels, (H, W), num_classes)`` of a dataset, from :data:`DATASET_SHAPES`."""
    try:
        return DATASET_SHAPES[name]
    except KeyError:
        known = ", ".join(sorted(DATASET_SHAPES))
        raise RegistryError(f"unknown dataset {name!r} for shapes; known: {known}") from None


@dataclass
class Dataset:
    """A whole dataset held in memory as uint8 image tensors plus int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    source: str
    checksum: str
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x = getattr(self, f"{split}_x")
            y = getattr(self, f"{split}_y")
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(
                    f"{self.name}: {split}_x must be uint8 (N, C, H, W), "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
                raise DataError(
                    f"{self.name}: {split}_y must be int64 (N,) matching {split}_x, "
                    f"got {y.dtype} {tuple(y.shape)}"
                )
            setattr(self, f"{split}_x", x.cpu().contiguous())
            setattr(self, f"{split}_y", y.cpu().contiguous())
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(
                f"{self.name}: train images {tuple(self.train_x.shape[1:])} and test images "
                f"{tuple(self.test_x.shape[1:])} differ in shape"
            )
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise DataError(
                f"{self.name}: mean/std need {self.in_channels} values, "
                f"got {len(self.mean)}/{len(self.std)}"
            )
        if self.augment not in AUGMENTS:
            raise DataError(
                f"{self.name}: augment {self.augment!r} not allowed; allowed: {', '.join(AUGMENTS)}"
            )
        for y in (self.train_y, self.test_y):
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(
                    f"{self.name}: labels must lie in [0, {self.num_classes}), "
                    f"got [{int(y.min())}, {int(y.max())}]"
                )
        if not self.classes:
            self.classes = [str(i) for i in range(self.num_classes)]
        if len(self.classes) != self.num_classes:
            raise DataError(
                f"{self.name}: {len(self.classes)} class names for {self.num_classes} classes"
            )

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.train_x)}, test={len(self.test_x)}, "
            f"shape={tuple(self.train_x.shape[1:])}, classes={self.num_classes}, "
            f"source={self.source!r}, checksum={self.checksum!r})"
        )


def tensor_checksum(*tensors: torch.Tensor) -> str:
    """Short sha256 (16 hex chars) of the tensors' dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(memoryview(np.ascontiguousarray(t.numpy())).cast("B"))
    return h.hexdigest()[:16]


_MEMO: dict[tuple[Any, ...], Dataset] = {}


def _memo_key(name: str, data_dir: str | Path | None, kwargs: dict[str, Any]) -> tuple[Any, ...]:
    resolved = str(Path(data_dir).expanduser().resolve()) if data_dir is not None else None
    env = os.environ.get("PRUNEBENCH_DATA")
    return (name, resolved, env, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))


def identify_with(identify: Callable[..., str]) -> Callable[[Loader], Loader]:
    """Give a dataset loader its identity function: called like the loader
    (``identify(data_dir, **kwargs)``), it returns the identity of the copy the loader would
    read (a content checksum of its files, see :mod:`prunebench.data.identity`) without
    decoding it. A plugin dataset may use it too; without one its runs carry no data
    identity in their keys."""

    def deco(loader: Loader) -> Loader:
        loader.identify = identify  # type: ignore[attr-defined]
        return loader

    return deco


def _register_builtins() -> None:
    """Import the built-in loaders (they register themselves), for callers that imported
    this module without the package's names (``prunebench.data`` imports lazily)."""
    import importlib

    for module in ("cifar", "imagenet", "mnist", "synthetic"):
        importlib.import_module(f"prunebench.data.{module}")


def _checked_loader(name: str, data_dir: str | Path | None, kwargs: dict[str, Any]) -> Loader:
    _register_builtins()
    loader = DATASETS.get(name)
    try:
        inspect.signature(loader).bind(data_dir, **kwargs)
    except TypeError:
        params = [p for p in inspect.signature(loader).parameters if p != "data_dir"]
        allowed = ", ".join(params) or "(none)"
        raise DataError(
            f"dataset {name!r} got options {sorted(kwargs)}; allowed: {allowed}"
        ) from None
    return loader


def data_identity(name: str, data_dir: str | Path | None = None, **kwargs: Any) -> str | None:
    """The identity (16 hex) of the copy of dataset ``name`` that ``load_dataset`` with the
    same arguments would read: a content checksum of its files (cached by path, size and
    mtime, never decoded), or a hash of the generation parameters for synthetic data.
    None for a dataset without an identity function (a plugin, see :func:`identify_with`).

    Follows the loaders' lookup order, so missing data raises their one-line DataError.
    """
    loader = _checked_loader(name, data_dir, kwargs)
    identify = getattr(loader, "identify", None)
    if identify is None:
        return None
    path = Path(data_dir).expanduser() if data_dir is not None else None
    return str(identify(path, **kwargs))


def load_dataset(name: str, data_dir: str | Path | None = None, **kwargs: Any) -> Dataset:
    """Load a registered dataset (memoised per process on name, resolved dir, kwargs and the
    data's identity, so files changed in place are read again).

    Raises RegistryError for an unknown name (listing the registered ones) and DataError when
    the data cannot be found, downloaded, verified or parsed.
    """
    loader = _checked_loader(name, data_dir, kwargs)
    key = (*_memo_key(name, data_dir, kwargs), data_identity(name, data_dir, **kwargs))
    if key not in _MEMO:
        path = Path(data_dir).expanduser() if data_dir is not None else None
        _MEMO[key] = loader(path, **kwargs)
    return _MEMO[key]


def clear_memo() -> None:
    """Forget every dataset memoised by load_dataset and every in-memory file checksum
    (tests, long-lived processes)."""
    from prunebench.data import identity

    _MEMO.clear()
    identity.clear_memo()

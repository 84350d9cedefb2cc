"""Datasets as in-memory uint8 tensors, and a loop-free batch loader.

Registered datasets (``DATASETS``): ``fashion_mnist``, ``mnist`` (IDX files), ``cifar10``,
``cifar100`` (official python batches / ``.tar.gz``, or an ImageFolder copy as folder or
``.zip``), ``synthetic`` (generated, for tests), and ``imagenet`` / ``imagenet100``: a store
prepared once by ``prunebench data prepare`` (:mod:`prunebench.data.imagenet`), memory-mapped
and streamed by :class:`~prunebench.data.shards.ShardLoader` instead of held in memory.
``load_dataset(name, data_dir, **kwargs)`` returns a :class:`Dataset`, memoised per process.

Where the files are looked for (first hit wins):

1. the explicit ``data_dir`` argument (``--data-dir``): a folder holding the files directly or a
   root holding ``<name>/``; for CIFAR also the ``.tar.gz`` / ``.zip`` file itself (e.g.
   ``/work/shared/data/cifar10-jpeg.zip``). An explicit path without usable data is an error.
2. ``$PRUNEBENCH_DATA/<name>/`` (also ``$PRUNEBENCH_DATA/fashion-mnist/`` style names).
3. the user cache dir ``platformdirs.user_cache_dir("prunebench")/<name>`` (e.g.
   ``~/.cache/prunebench/fashion_mnist``).
4. system paths ``/usr/share/datasets/<debian-name>`` (Debian's ``dataset-fashion-mnist``
   installs ``/usr/share/datasets/fashion-mnist``).
5. a download from the official source into the cache dir (temp file, md5 check against the
   official checksum, then rename); any failure raises a one-line DataError saying where to put
   the files by hand.

Archives (``.tar.gz``) are extracted into the cache dir (temp folder, then rename); decoded
ImageFolder copies are cached as uint8 tensors in ``<cache>/decoded/`` keyed by the source path,
size and mtime.

``Dataset.source`` names the copy that was read (e.g. "CIFAR-10 (JPEG q75 copy, ImageFolder at
...)") and ``Dataset.checksum`` is a 16-hex sha256 of the loaded tensors.

``data_identity(name, data_dir, **kwargs)`` is the identity of the copy ``load_dataset`` would
read, found by the same lookup order but never decoded: a content checksum of its files (cached
by absolute path, size and mtime in ``<cache>/checksums.json``), or a hash of the generation
parameters for ``synthetic``. The plan puts it into the dense stage's key (so into every run id)
and runs record it as ``data.checksum`` (see :mod:`prunebench.data.identity`).

The package imports lazily (PEP 562): ``import prunebench.data`` (and so ``prunebench data
--help``, whose commands live in :mod:`prunebench.data.cli`) costs no torch import; the
first use of any name below imports the loaders and registers the datasets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunebench.lazy import lazy_exports

if TYPE_CHECKING:
    from prunebench.data.core import (
        DATASET_SHAPES,
        DATASETS,
        Dataset,
        clear_memo,
        data_identity,
        dataset_shape,
        load_dataset,
        tensor_checksum,
    )
    from prunebench.data.loader import BatchLoader, crop_flip, derive_seed, split_train_val
    from prunebench.data.paths import cache_root, find_data
    from prunebench.data.shards import ShardLoader, StreamDataset, open_store

_EXPORTS = {
    "DATASET_SHAPES": "core",
    "DATASETS": "core",
    "Dataset": "core",
    "clear_memo": "core",
    "data_identity": "core",
    "dataset_shape": "core",
    "load_dataset": "core",
    "tensor_checksum": "core",
    "BatchLoader": "loader",
    "crop_flip": "loader",
    "derive_seed": "loader",
    "split_train_val": "loader",
    "cache_root": "paths",
    "find_data": "paths",
    "ShardLoader": "shards",
    "StreamDataset": "shards",
    "open_store": "shards",
}


def _register_builtins() -> None:
    from prunebench.data.core import _register_builtins as register

    register()


__getattr__ = lazy_exports(
    __name__, {k: f"prunebench.data.{v}" for k, v in _EXPORTS.items()}, _register_builtins)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "DATASET_SHAPES",
    "DATASETS",
    "BatchLoader",
    "Dataset",
    "ShardLoader",
    "StreamDataset",
    "cache_root",
    "clear_memo",
    "crop_flip",
    "data_identity",
    "dataset_shape",
    "derive_seed",
    "find_data",
    "load_dataset",
    "open_store",
    "split_train_val",
    "tensor_checksum",
]

"""MNIST and Fashion-MNIST from the original IDX files (gzipped or not)."""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prunebench.data.core import DATASETS, Dataset, identify_with, tensor_checksum
from prunebench.data.identity import identity_of
from prunebench.data.paths import dataset_cache_dir, download, find_data
from prunebench.errors import DataError

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


@dataclass(frozen=True)
class IdxSpec:
    name: str
    label: str
    debian: str
    mean: float
    std: float
    classes: tuple[str, ...]
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # official md5 of each .gz file


FASHION_MNIST = IdxSpec(
    name="fashion_mnist",
    label="Fashion-MNIST",
    debian="fashion-mnist",
    mean=0.2860,
    std=0.3530,
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)

MNIST = IdxSpec(
    name="mnist",
    label="MNIST",
    debian="mnist",
    mean=0.1307,
    std=0.3081,
    classes=tuple(str(i) for i in range(10)),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)

WHAT = "the four IDX .gz files (train-images-idx3-ubyte.gz, ...)"


def _idx_paths(folder: Path) -> list[Path] | None:
    """The four IDX files in ``folder`` (each gzipped or plain), or None if any is missing."""
    if not folder.is_dir():
        return None
    found = []
    for stem in IDX_FILES:
        for cand in (folder / f"{stem}.gz", folder / stem):
            if cand.is_file():
                found.append(cand)
                break
        else:
            return None
    return found


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file (uint8 data) into an array; DataError naming the file when invalid."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc.strerror or exc}") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise DataError(f"gzip file {path} is truncated (ends before its data)") from None
        except (OSError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise DataError(f"gzip file {path} is corrupt: {exc}") from None
    if len(raw) < 8:
        raise DataError(f"IDX file {path} is truncated ({len(raw)} bytes)")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(f"IDX file {path} has magic number {got}, expected {magic}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated ({len(raw)} bytes, header needs {header})")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    count = math.prod(dims)
    if len(raw) != header + count:
        raise DataError(
            f"IDX file {path} holds {len(raw) - header} data bytes, header says {count} {dims}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _locate(spec: IdxSpec, data_dir: Path | None) -> list[Path]:
    """The four IDX files the loader reads (lookup order, then a download)."""
    files = find_data(spec.name, data_dir, _idx_paths, aliases=(spec.debian,), expected=WHAT)
    if files is None:
        folder = dataset_cache_dir(spec.name)
        for fname, md5 in spec.md5.items():
            dest = folder / fname
            if not dest.is_file():
                download(spec.name, [m + fname for m in spec.mirrors], dest, md5, what=WHAT)
        files = _idx_paths(folder)
        assert files is not None
    return files


def _identify_idx(spec: IdxSpec, data_dir: Path | None) -> str:
    """The content checksum of the four IDX files (their names and bytes, not their folder)."""
    return identity_of(spec.name, "idx", {p.name: p for p in _locate(spec, data_dir)})


def _load_idx(spec: IdxSpec, data_dir: Path | None) -> Dataset:
    files = _locate(spec, data_dir)
    arrays = []
    for path, magic in zip(files, (IMAGES_MAGIC, LABELS_MAGIC) * 2, strict=True):
        arrays.append(read_idx(path, magic))
    tr_x, tr_y, te_x, te_y = arrays
    for x, y, xp, yp in ((tr_x, tr_y, files[0], files[1]), (te_x, te_y, files[2], files[3])):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(
                f"IDX files {xp} {tuple(x.shape)} and {yp} {tuple(y.shape)} do not match"
            )
    train_x = torch.from_numpy(tr_x.copy()).unsqueeze(1).contiguous()
    test_x = torch.from_numpy(te_x.copy()).unsqueeze(1).contiguous()
    train_y = torch.from_numpy(tr_y.astype(np.int64))
    test_y = torch.from_numpy(te_y.astype(np.int64))
    num_classes = len(spec.classes)
    labels = ((files[1], train_y), (files[3], test_y))
    bad = [p for p, y in labels if len(y) and y.max() >= num_classes]
    if bad:
        raise DataError(f"IDX label file {bad[0]} holds labels >= {num_classes}")
    return Dataset(
        name=spec.name,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=num_classes,
        mean=(spec.mean,),
        std=(spec.std,),
        augment="none",
        source=f"{spec.label} (IDX, {files[0].parent})",
        checksum=tensor_checksum(train_x, train_y, test_x, test_y),
        classes=list(spec.classes),
    )


@DATASETS.register("fashion_mnist")
@identify_with(lambda data_dir=None: _identify_idx(FASHION_MNIST, data_dir))
def fashion_mnist(data_dir: Path | None = None) -> Dataset:
    """Fashion-MNIST: 60k/10k 1x28x28 grey images of clothing, 10 classes (IDX files)."""
    return _load_idx(FASHION_MNIST, data_dir)


@DATASETS.register("mnist")
@identify_with(lambda data_dir=None: _identify_idx(MNIST, data_dir))
def mnist(data_dir: Path | None = None) -> Dataset:
    """MNIST: 60k/10k 1x28x28 grey handwritten digits, 10 classes (IDX files)."""
    return _load_idx(MNIST, data_dir)

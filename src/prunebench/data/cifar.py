"""CIFAR-10 and CIFAR-100: official python pickle batches (folder or ``.tar.gz``) or an
ImageFolder copy (folder or ``.zip``, e.g. the JPEG q75 copy ``cifar10-jpeg.zip``).

Accepted sources, checked in this order inside each searched folder:
``cifar-10-batches-py/`` (or the batch files directly), ``cifar-10-python.tar.gz`` (extracted
once into the cache dir, atomically), an ImageFolder tree (``train/<class>/``, ``test/<class>/``,
possibly under one top folder), a ``<name>-*.zip`` ImageFolder copy. An explicit ``data_dir``
may also be the ``.tar.gz`` or ``.zip`` file itself.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunebench.data.core import DATASETS, Dataset, identify_with, tensor_checksum
from prunebench.data.identity import identity_of, params_identity, tree_checksum
from prunebench.data.imagefolder import folder_entries, is_image_folder, load_image_folder
from prunebench.data.paths import dataset_cache_dir, download, find_data
from prunebench.errors import DataError


@dataclass(frozen=True)
class CifarSpec:
    name: str
    label: str
    folder: str  # top folder inside the official archive
    archive: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR10 = CifarSpec(
    name="cifar10",
    label="CIFAR-10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)

CIFAR100 = CifarSpec(
    name="cifar100",
    label="CIFAR-100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)

_SAFE_NUMPY = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}
_SAFE_GLOBALS = {("_codecs", "encode")}  # protocol-2 pickles of bytes written by Python 3


class _SafeUnpickler(pickle.Unpickler):
    """Unpickle only plain containers and numpy arrays (the official batches need no more)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = module.split(".")[0] == "numpy" and name in _SAFE_NUMPY
        if allowed or (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _unpickle(path: Path) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as fh:
            obj = _SafeUnpickler(fh, encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"cannot read CIFAR batch {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR batch {path} is a {type(obj).__name__}, expected a dict")
    return obj


def _read_batch(spec: CifarSpec, path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if b"data" not in d or spec.label_key not in d:
        raise DataError(
            f"CIFAR batch {path} lacks key b'data' or {spec.label_key!r}; "
            f"has {sorted(k for k in d if isinstance(k, bytes))}"
        )
    try:
        data = np.asarray(d[b"data"])
        labels = np.asarray(d[spec.label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"CIFAR batch {path}: unusable data or labels: {exc}") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"CIFAR batch {path}: data is {data.dtype} {data.shape}, expected uint8 (N, 3072)"
        )
    if labels.shape != (len(data),):
        raise DataError(f"CIFAR batch {path}: {labels.shape} labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataError(f"CIFAR batch {path}: labels outside [0, {spec.num_classes})")
    return data.reshape(-1, 3, 32, 32), labels


def _batches_dir(spec: CifarSpec, folder: Path) -> Path | None:
    for cand in (folder, folder / spec.folder):
        needed = [*spec.train_files, spec.test_file]
        if all((cand / f).is_file() for f in needed):
            return cand
    return None


def _archive_key(path: Path) -> str:
    st = path.stat()
    text = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def extract_archive(spec: CifarSpec, archive: Path) -> Path:
    """Extract an official ``.tar.gz`` once into the cache dir; returns the batches folder.

    Extracts into a temp folder next to the target and renames it into place, so a crash never
    leaves a half-extracted copy that looks complete.
    """
    root = dataset_cache_dir(spec.name)
    target = root / f"extracted-{_archive_key(archive)}"
    if (hit := _batches_dir(spec, target)) is not None:
        return hit
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except EOFError:
            raise DataError(f"archive {archive} is truncated (ends before its data)") from None
        except (tarfile.TarError, OSError, zlib.error) as exc:
            raise DataError(f"cannot extract {archive}: {type(exc).__name__}: {exc}") from None
        if _batches_dir(spec, tmp) is None:
            raise DataError(
                f"archive {archive} holds no {spec.folder}/ with "
                f"{', '.join([*spec.train_files, spec.test_file])}"
            )
        if target.exists():  # extracted meanwhile by another process
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    hit = _batches_dir(spec, target)
    assert hit is not None
    return hit


def _probe(spec: CifarSpec):  # -> Callable[[Path], tuple[str, Path] | None]
    zip_re = re.compile(rf"^{re.escape(spec.name)}([-_.].*)?\.zip$", re.IGNORECASE)

    def probe(path: Path) -> tuple[str, Path] | None:
        if path.is_file():
            name = path.name.lower()
            if name.endswith((".tar.gz", ".tgz", ".tar")):
                return ("tar", path)
            if name.endswith(".zip"):
                return ("zip", path)
            return None
        if (hit := _batches_dir(spec, path)) is not None:
            return ("batches", hit)
        if (path / spec.archive).is_file():
            return ("tar", path / spec.archive)
        if is_image_folder(path):
            return ("imagefolder", path)
        zips = sorted(p for p in path.iterdir() if p.is_file() and zip_re.match(p.name))
        if zips:
            return ("zip", zips[0])
        return None

    return probe


def _class_names(spec: CifarSpec, folder: Path) -> list[str]:
    meta = folder / spec.meta_file
    if meta.is_file():
        names = _unpickle(meta).get(spec.names_key)
        if isinstance(names, list) and len(names) == spec.num_classes:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return [str(i) for i in range(spec.num_classes)]


def _load_batches(spec: CifarSpec, folder: Path, origin: Path) -> Dataset:
    parts = [_read_batch(spec, folder / f) for f in spec.train_files]
    tr_x = np.concatenate([p[0] for p in parts])
    tr_y = np.concatenate([p[1] for p in parts])
    te_x, te_y = _read_batch(spec, folder / spec.test_file)
    train_x, train_y = torch.from_numpy(np.ascontiguousarray(tr_x)), torch.from_numpy(tr_y)
    test_x, test_y = torch.from_numpy(np.ascontiguousarray(te_x)), torch.from_numpy(te_y)
    return Dataset(
        name=spec.name,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
        augment="crop_flip",
        source=f"{spec.label} (official python batches, {origin})",
        checksum=tensor_checksum(train_x, train_y, test_x, test_y),
        classes=_class_names(spec, folder),
    )


def _load_image_folder(spec: CifarSpec, path: Path) -> Dataset:
    data = load_image_folder(path)
    if len(data.classes) != spec.num_classes:
        raise DataError(
            f"{spec.name}: ImageFolder {path} has {len(data.classes)} class folders, "
            f"expected {spec.num_classes}"
        )
    if "jpeg" in f"{path.name} {data.root_name}".lower():
        kind = "JPEG q75 copy"
    elif data.is_jpeg:
        kind = "JPEG copy"
    else:
        kind = "image copy"
    return Dataset(
        name=spec.name,
        train_x=data.train_x,
        train_y=data.train_y,
        test_x=data.test_x,
        test_y=data.test_y,
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
        augment="crop_flip",
        source=f"{spec.label} ({kind}, ImageFolder at {path})",
        checksum=tensor_checksum(data.train_x, data.train_y, data.test_x, data.test_y),
        classes=data.classes,
    )


def _locate(spec: CifarSpec, data_dir: Path | None) -> tuple[str, Path]:
    """What the loader reads: (kind, path), kind one of batches, tar, imagefolder, zip."""
    expected = (
        f"{spec.folder}/ (official python batches), {spec.archive}, "
        "or an ImageFolder tree train/<class>/, test/<class>/ (folder or .zip)"
    )
    hit = find_data(spec.name, data_dir, _probe(spec), expected=expected)
    if hit is None:
        dest = dataset_cache_dir(spec.name) / spec.archive
        download(spec.name, [spec.url], dest, spec.md5, what=spec.archive)
        hit = ("tar", dest)
    return hit


def _identify_cifar(spec: CifarSpec, data_dir: Path | None) -> str:
    """The content checksum of the files the loader reads: the batch files, the archive,
    the zip, or every image of a folder tree (names relative to the copy, never its path)."""
    kind, path = _locate(spec, data_dir)
    if kind == "batches":
        names = [*spec.train_files, spec.test_file]
        if (path / spec.meta_file).is_file():  # the class names come from it
            names.append(spec.meta_file)
        return identity_of(spec.name, kind, {n: path / n for n in names})
    if kind in ("tar", "zip"):
        return identity_of(spec.name, kind, {kind: path})
    root, entries = folder_entries(path)
    rels = [r for split in entries.values() for _c, r in split]
    return params_identity(spec.name, {"kind": kind, "tree": tree_checksum(root, rels)})


def _load_cifar(spec: CifarSpec, data_dir: Path | None) -> Dataset:
    kind, path = _locate(spec, data_dir)
    if kind == "batches":
        return _load_batches(spec, path, path)
    if kind == "tar":
        return _load_batches(spec, extract_archive(spec, path), path)
    return _load_image_folder(spec, path)


@DATASETS.register("cifar10")
@identify_with(lambda data_dir=None: _identify_cifar(CIFAR10, data_dir))
def cifar10(data_dir: Path | None = None) -> Dataset:
    """CIFAR-10: 50k/10k 3x32x32 colour images, 10 classes (python batches or ImageFolder)."""
    return _load_cifar(CIFAR10, data_dir)


@DATASETS.register("cifar100")
@identify_with(lambda data_dir=None: _identify_cifar(CIFAR100, data_dir))
def cifar100(data_dir: Path | None = None) -> Dataset:
    """CIFAR-100: 50k/10k 3x32x32 colour images, 100 fine classes (batches or ImageFolder)."""
    return _load_cifar(CIFAR100, data_dir)

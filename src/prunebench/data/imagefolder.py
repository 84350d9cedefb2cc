"""ImageFolder trees (``train/<class>/*.png|jpg|jpeg`` and ``test/<class>/...``), as a folder or
a ``.zip`` (possibly under one top folder), decoded once with Pillow and cached as uint8 tensors.

The decoded cache lives in ``<user cache>/decoded/`` and is keyed by the source's resolved path,
size and mtime (for a folder: file count, total size and newest mtime of its images), so a
changed source is decoded again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from prunebench.data.paths import cache_root
from prunebench.errors import DataError
from prunebench.io import save_torch

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")
CACHE_VERSION = "imagefolder-v3"


@dataclass
class ImageFolderData:
    train_x: torch.Tensor  # uint8 (N, 3, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    path: Path
    is_jpeg: bool
    root_name: str  # name of the folder holding train/ and test/ ("" when at the zip's root)


def _is_image(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTS)


def _split_entries(rel_paths: list[str]) -> dict[str, list[tuple[str, str]]] | None:
    """Group ``split/class/file`` paths (posix, relative) by split: [(class, path), ...]."""
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for rel in rel_paths:
        parts = PurePosixPath(rel).parts
        if len(parts) == 3 and parts[0] in SPLITS and _is_image(rel):
            out[parts[0]].append((parts[1], rel))
    if not out["train"] or not out["test"]:
        return None
    return out


def _folder_root(folder: Path) -> Path | None:
    """``folder`` itself or its single sub-folder, whichever holds ``train/`` and ``test/``."""
    if all((folder / s).is_dir() for s in SPLITS):
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))]
    if len(subs) == 1 and all((subs[0] / s).is_dir() for s in SPLITS):
        return subs[0]
    return None


def is_image_folder(path: Path) -> bool:
    """Cheap test: a folder (or its single sub-folder) with train/ and test/ sub-folders."""
    return path.is_dir() and _folder_root(path) is not None


def _zip_prefix(names: list[str]) -> str | None:
    tops = {n.split("/", 1)[0] for n in names if "/" in n and not n.startswith("__MACOSX")}
    if {"train", "test"} <= tops:
        return ""
    if len(tops) == 1:
        top = next(iter(tops))
        subs = {n.split("/", 2)[1] for n in names if n.startswith(top + "/") and n.count("/") >= 2}
        if {"train", "test"} <= subs:
            return top + "/"
    return None


def _source_key(path: Path) -> str:
    """The key of the decoded-tensor cache: the *content* checksum of the source, the same
    digest the data identity (and so the run id) is made of (:mod:`prunebench.data.identity`:
    every image by its relative path and sha256, a zip by its sha256). A stat-only key once
    missed files swapped between class folders (same count, sizes and mtimes): the run id
    changed, the decoded tensors did not."""
    from prunebench.data.identity import file_checksum, tree_checksum

    if path.is_file():
        digest = file_checksum(path)
    else:
        root, entries = folder_entries(path)
        digest = tree_checksum(root, [r for split in entries.values() for _c, r in split])
    return hashlib.sha256(f"{CACHE_VERSION}\0{digest}".encode()).hexdigest()[:16]


def _decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode one image file to an (H, W, 3) uint8 array."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:
        raise DataError(f"cannot decode image {name}: {exc}") from None


def _decode_all(blobs: list[bytes], names: list[str]) -> np.ndarray:
    """Decode every blob into one (N, H, W, 3) array, in order, with a small thread pool."""
    n = len(blobs)
    first = _decode_image(blobs[0], names[0])
    out = np.empty((n, *first.shape), dtype=np.uint8)
    out[0] = first

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            img = _decode_image(blobs[i], names[i])
            if img.shape != first.shape:
                raise DataError(
                    f"image {names[i]} has shape {img.shape}, expected {first.shape} "
                    f"(like {names[0]}); all images must have the same size"
                )
            out[i] = img

    workers = max(1, min(8, os.cpu_count() or 1, n // 256))
    bounds = np.linspace(1, n, workers + 1).astype(int)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(work, int(lo), int(hi)) for lo, hi in pairwise(bounds)]
        for fut in futures:
            fut.result()
    return out


def _read_source(
    path: Path,
) -> tuple[dict[str, list[tuple[str, str]]], dict[str, bytes], str]:
    """Entries per split, the raw bytes of every image file and the name of the folder holding
    train/ and test/, for a folder or a zip."""
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                prefix = _zip_prefix(names)
                if prefix is None:
                    raise DataError(
                        f"zip {path} holds no train/<class>/ and test/<class>/ image folders"
                    )
                rel = [n[len(prefix) :] for n in names if n.startswith(prefix)]
                entries = _split_entries(rel)
                if entries is None:
                    raise DataError(f"zip {path} holds no images under train/ and test/")
                data = {}
                for r in (r for s in SPLITS for _c, r in entries[s]):
                    try:
                        data[r] = zf.read(prefix + r)
                    except (
                        zipfile.BadZipFile,
                        EOFError,
                        zlib.error,
                        NotImplementedError,
                        RuntimeError,
                    ) as exc:  # bad CRC, truncated, odd or encrypted
                        raise DataError(f"cannot read {prefix + r} in zip {path}: {exc}") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataError(f"cannot read zip {path}: {exc}") from None
        return entries, data, prefix.rstrip("/")
    root, entries = folder_entries(path)
    data = {}
    for r in (r for s in SPLITS for _c, r in entries[s]):
        try:
            data[r] = (root / r).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read image {root / r}: {exc.strerror or exc}") from None
    return entries, data, root.name


def folder_entries(path: Path) -> tuple[Path, dict[str, list[tuple[str, str]]]]:
    """The folder holding train/ and test/, and its image files per split (class, relative
    path): what a folder copy is made of, listed without reading any image."""
    root = _folder_root(path)
    if root is None:
        raise DataError(f"{path} holds no train/<class>/ and test/<class>/ image folders")
    rel = []
    try:
        for split in SPLITS:
            for cls_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
                rel += [
                    f"{split}/{cls_dir.name}/{f.name}" for f in cls_dir.iterdir() if f.is_file()
                ]
    except OSError as exc:
        raise DataError(f"cannot list image folder {root}: {exc.strerror or exc}") from None
    entries = _split_entries(rel)
    if entries is None:
        raise DataError(f"{root} holds no images under train/ and test/")
    return root, entries


def _decode_source(path: Path) -> dict[str, object]:
    entries, data, root_name = _read_source(path)
    classes = sorted({c for c, _ in entries["train"]})
    unknown = sorted({c for c, _ in entries["test"]} - set(classes))
    if unknown:
        raise DataError(f"{path}: test classes {unknown} have no train folder")
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, object] = {"classes": classes, "root_name": root_name}
    for split in SPLITS:
        items = sorted(entries[split])  # (class, path): deterministic order
        names = [r for _c, r in items]
        arr = _decode_all([data[r] for r in names], [f"{path}/{r}" for r in names])
        out[f"{split}_x"] = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_y"] = torch.tensor([index[c] for c, _r in items], dtype=torch.int64)
    shapes = {tuple(out[f"{s}_x"].shape[1:]) for s in SPLITS}  # type: ignore[attr-defined]
    if len(shapes) != 1:
        raise DataError(f"{path}: train and test images differ in size {sorted(shapes)}")
    out["is_jpeg"] = any(r.lower().endswith((".jpg", ".jpeg")) for r in data)
    return out


def load_image_folder(path: Path) -> ImageFolderData:
    """Load an ImageFolder tree (folder or zip), decoding once and caching the tensors."""
    path = Path(path)
    cache_file = cache_root() / "decoded" / f"{path.stem}-{_source_key(path)}.pt"
    blob: dict[str, object] | None = None
    if cache_file.is_file():
        try:
            blob = torch.load(cache_file, weights_only=True)
            if not {"train_x", "train_y", "test_x", "test_y", "classes"} <= set(blob):
                blob = None
        except Exception:  # corrupt or incompatible cache: decode again
            blob = None
    if blob is None:
        blob = _decode_source(path)
        with contextlib.suppress(OSError):  # a read-only cache only costs speed
            save_torch(cache_file, blob)
    return ImageFolderData(
        train_x=blob["train_x"],  # type: ignore[arg-type]
        train_y=blob["train_y"],  # type: ignore[arg-type]
        test_x=blob["test_x"],  # type: ignore[arg-type]
        test_y=blob["test_y"],  # type: ignore[arg-type]
        classes=list(blob["classes"]),  # type: ignore[call-overload]
        path=path,
        is_jpeg=bool(blob.get("is_jpeg", False)),
        root_name=str(blob.get("root_name", "")),
    )

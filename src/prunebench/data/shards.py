"""Prepared image stores read through memory maps, and a streaming loader that augments on the
device.

A *store* (written once by :func:`prunebench.data.imagenet.prepare_store`) is a folder::

    manifest.json            written last: its presence means the store is complete
    classes.txt              one class name (wnid) per line, label i = line i
    train/labels.npy         int64 (N,)
    train/shard-00000.npy    uint8 (n_i, 3, S, S), S the stored size (shard_images each)
    val/labels.npy, val/shard-*.npy

:func:`open_store` checks the manifest against the files (names, counts, shapes, byte sizes:
cheap; ``verify=True`` also re-hashes every file) and maps each shard with ``np.load(...,
mmap_mode="r")``: nothing is read until a batch asks for it.

:class:`ShardLoader` satisfies the ``Loader`` protocol of ``train()``: for each chunk of the
epoch's order it gathers those rows from the memory maps (sorted per shard, so reads are
ascending), pins them and moves them to the device, where one batched op does the
random-resized-crop and horizontal flip (training) or the centre crop (evaluation), then
normalises. Its randomness comes from ``derive_seed(seed, epoch)`` exactly as
:class:`~prunebench.data.loader.BatchLoader`'s, so an epoch's batches are a pure function of
(data, seed, epoch), and a resumed run sees the same batches.

Crop maths (images are stored as the central SxS square of the image resized to short side
S):

* training, ``rrc_flip``: torchvision's ``RandomResizedCrop(scale=(0.08, 1), ratio=(3/4,
  4/3))`` sampling (10 attempts, else the whole image), vectorised over the epoch
  (:func:`sample_crop_boxes`), then one ``F.grid_sample`` (bilinear) with per-image affine
  grids maps each box (mirrored for a flip) onto the ``crop`` x ``crop`` output.
* evaluation: the standard "resize to 256, centre-crop 224" takes the central 224/256 = 0.875
  of the short side; here the central ``round(0.875 * S)`` pixels of the stored square are cut
  and resized to ``crop`` (antialiased bilinear, rounded to uint8 like the PIL pipeline); with
  ``S = 256, crop = 224`` it is a pure crop.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from prunebench.data.loader import Batching, _generator
from prunebench.errors import DataError

STORE_FORMAT = "prunebench-image-store-v1"
MANIFEST = "manifest.json"
PLAN = "plan.json"
CLASSES = "classes.txt"
SPLITS = ("train", "val")
#: the standard evaluation keeps the central 224/256 of the short side
EVAL_FRACTION = 224 / 256
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
RRC_ATTEMPTS = 10
STREAM_AUGMENTS = ("none", "rrc_flip")


def prepare_hint(name: str) -> str:
    return (
        f"prepare it once with `prunebench data prepare {name} /path/to/imagenet --out DIR` "
        f"(an ImageFolder tree with train/<wnid>/ and val/<wnid>/) and point the recipe at "
        f"DIR with data.data_dir (--set data.data_dir=DIR) or $PRUNEBENCH_DATA/{name}"
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def is_store(path: Path) -> bool:
    """A folder with a store's manifest or an interrupted conversion's plan."""
    return path.is_dir() and ((path / MANIFEST).is_file() or (path / PLAN).is_file())


def content_identity(manifest: dict[str, Any]) -> str:
    """The sha256 of what a store holds (format, size, classes, every file's sha256 and
    counts), never where it came from: two conversions of the same images agree."""
    splits = {
        s: {
            "count": info["count"],
            "labels": info["labels"]["sha256"],
            "shards": [[sh["count"], sh["sha256"]] for sh in info["shards"]],
        }
        for s, info in manifest["splits"].items()
    }
    payload = {
        "format": manifest["format"],
        "size": manifest["size"],
        "classes": manifest["classes"],
        "resize": manifest.get("resize"),
        "splits": splits,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class ShardedImages:
    """The uint8 (N, 3, S, S) images of one split, as memory-mapped shards of ``shard_images``
    rows (the last may be shorter). Nothing is read until :meth:`gather`."""

    def __init__(self, shards: Sequence[np.ndarray], shard_images: int) -> None:
        self.shards = list(shards)
        self.shard_images = int(shard_images)
        self.count = sum(len(s) for s in self.shards)
        first = self.shards[0].shape[1:] if self.shards else (3, 0, 0)
        self.image_shape: tuple[int, int, int] = tuple(int(v) for v in first)  # type: ignore[assignment]

    def __len__(self) -> int:
        return self.count

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.count, *self.image_shape)

    def gather(self, idx: np.ndarray | torch.Tensor) -> np.ndarray:
        """The rows ``idx`` (any order) as one fresh (len, 3, S, S) uint8 array: each shard is
        read once, at its rows in ascending order."""
        idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
        out = np.empty((len(idx), *self.image_shape), dtype=np.uint8)
        if not len(idx):
            return out
        if idx.min() < 0 or idx.max() >= self.count:
            raise DataError(f"image index out of range [0, {self.count})")
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        shard_of = sorted_idx // self.shard_images
        bounds = np.flatnonzero(np.diff(shard_of)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(idx)], strict=True):
            s = int(shard_of[lo])
            local = sorted_idx[lo:hi] - s * self.shard_images
            out[order[lo:hi]] = self.shards[s][local]
        return out


@dataclass
class Store:
    """An opened store: per split its images (memory-mapped) and labels (in RAM)."""

    path: Path
    manifest: dict[str, Any]
    classes: list[str]
    images: dict[str, ShardedImages]
    labels: dict[str, torch.Tensor]

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def identity(self) -> str:
        return content_identity(self.manifest)


def _corrupt(path: Path, what: str) -> DataError:
    return DataError(
        f"store {path} is corrupt or incomplete: {what}; delete it and prepare it again "
        "with `prunebench data prepare`"
    )


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the store at ``path`` (one-line DataError when there is none or it is
    unreadable, naming an interrupted conversion as such)."""
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        if (path / PLAN).is_file():
            raise DataError(
                f"store {path} is incomplete (its conversion was interrupted: {PLAN} but no "
                f"{MANIFEST}); rerun the same `prunebench data prepare` command to finish it"
            )
        raise DataError(f"{path} holds no prepared store ({MANIFEST} missing)")
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, ValueError) as exc:
        raise _corrupt(path, f"unreadable {MANIFEST} ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise _corrupt(path, f"{MANIFEST} format {got!r}, expected {STORE_FORMAT!r}")
    try:
        for s in SPLITS:
            info = manifest["splits"][s]
            int(info["count"])
            str(info["labels"]["sha256"])
            for sh in info["shards"]:
                str(sh["file"]), int(sh["count"]), int(sh["bytes"]), str(sh["sha256"])
        int(manifest["size"])
        int(manifest["shard_images"])
        list(manifest["classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(path, f"{MANIFEST} lacks or mangles {exc}") from None
    return manifest


def _open_npy(path: Path, root: Path, nbytes: int, verify_sha: str | None) -> np.ndarray:
    if not path.is_file():
        raise _corrupt(root, f"{path.relative_to(root)} is missing")
    size = path.stat().st_size
    if size != nbytes:
        raise _corrupt(root, f"{path.relative_to(root)} has {size} bytes, manifest says {nbytes}")
    if verify_sha is not None and sha256_file(path) != verify_sha:
        raise _corrupt(root, f"{path.relative_to(root)} does not match its sha256 in {MANIFEST}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise _corrupt(root, f"cannot map {path.relative_to(root)} ({exc})") from None


def open_store(path: Path, *, verify: bool = False) -> Store:
    """Open a complete store: every file named by the manifest must exist with its byte size
    and shape (``verify``: and its sha256). Raises a one-line DataError otherwise."""
    path = Path(path)
    manifest = read_manifest(path)
    size, k = int(manifest["size"]), int(manifest["shard_images"])
    classes = [str(c) for c in manifest["classes"]]
    images: dict[str, ShardedImages] = {}
    labels: dict[str, torch.Tensor] = {}
    for s in SPLITS:
        info = manifest["splits"][s]
        lab = info["labels"]
        y = np.asarray(_open_npy(path / lab["file"], path, int(lab["bytes"]),
                                 lab["sha256"] if verify else None))
        if y.dtype != np.int64 or y.shape != (int(info["count"]),):
            raise _corrupt(path, f"{lab['file']} is {y.dtype} {y.shape}, expected int64 "
                                 f"({info['count']},)")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise _corrupt(path, f"{lab['file']} has labels outside [0, {len(classes)})")
        shards = []
        for i, sh in enumerate(info["shards"]):
            arr = _open_npy(path / sh["file"], path, int(sh["bytes"]),
                            sh["sha256"] if verify else None)
            want = (int(sh["count"]), 3, size, size)
            last = i == len(info["shards"]) - 1
            if arr.dtype != np.uint8 or arr.shape != want or (not last and want[0] != k):
                raise _corrupt(path, f"{sh['file']} is {arr.dtype} {arr.shape}, expected "
                                     f"uint8 {want}")
            shards.append(arr)
        imgs = ShardedImages(shards, k)
        if imgs.count != int(info["count"]) or not shards:
            raise _corrupt(path, f"{s} shards hold {imgs.count} images, manifest says "
                                 f"{info['count']}")
        images[s] = imgs
        labels[s] = torch.from_numpy(y.copy())
    return Store(path, manifest, classes, images, labels)


# -- crop maths ------------------------------------------------------------------------------


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = RRC_SCALE,
    ratio: tuple[float, float] = RRC_RATIO,
) -> torch.Tensor:
    """``n`` RandomResizedCrop boxes (top, left, h, w) as int64 (n, 4), torchvision's rule
    vectorised: up to 10 attempts of area ~ U(scale) * H * W and log-aspect ~ U(log ratio),
    the first that fits wins, at a uniform position; else the whole image clipped to the
    ratio range, centred. Always draws the same amount of randomness for a given ``n``."""
    area = height * width
    a = torch.rand(n, RRC_ATTEMPTS, generator=generator, dtype=torch.float64)
    r = torch.rand(n, RRC_ATTEMPTS, generator=generator, dtype=torch.float64)
    pos = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    target = area * (scale[0] + a * (scale[1] - scale[0]))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + r * (hi - lo))
    w = torch.round(torch.sqrt(target * aspect)).to(torch.int64)
    h = torch.round(torch.sqrt(target / aspect)).to(torch.int64)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.to(torch.int8).argmax(1), -1)
    pick = first.clamp(min=0)[:, None]
    w = w.gather(1, pick)[:, 0]
    h = h.gather(1, pick)[:, 0]
    # fallback: the whole image, its aspect clipped into the ratio range, centred
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    fallback = first < 0
    w = torch.where(fallback, fw, w)
    h = torch.where(fallback, fh, h)
    top = torch.floor(pos[:, 0] * (height - h + 1)).to(torch.int64).clamp(max=height - h)
    left = torch.floor(pos[:, 1] * (width - w + 1)).to(torch.int64).clamp(max=width - w)
    top = torch.where(fallback, (height - fh) // 2, top)
    left = torch.where(fallback, (width - fw) // 2, left)
    return torch.stack([top, left, h, w], 1)


def crop_resize(
    x: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int
) -> torch.Tensor:
    """Float (B, C, size, size): box ``(top, left, h, w)`` of each image of ``x`` (B, C, H,
    W; any dtype) resized bilinearly to ``size`` x ``size`` (mirrored where ``flips``), in one
    ``grid_sample``. Output pixel u samples input x = left + (u + 0.5) * w / size - 0.5."""
    b, _c, height, width = x.shape
    dev = x.device
    boxes = boxes.to(dev, torch.float32)
    top, left, h, w = boxes.unbind(1)
    sx = w / width
    sy = h / height
    tx = (2 * left + w) / width - 1
    ty = (2 * top + h) / height - 1
    sx = torch.where(flips.to(dev), -sx, sx)
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
    grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)
    xf = x if x.is_floating_point() else x.to(torch.float32)
    return F.grid_sample(xf, grid, mode="bilinear", padding_mode="border", align_corners=False)


def eval_window(stored: int, fraction: float = EVAL_FRACTION) -> tuple[int, int]:
    """(offset, side) of the evaluation window inside a stored ``stored`` x ``stored`` image:
    the central ``round(fraction * stored)`` pixels."""
    side = max(1, min(stored, round(fraction * stored)))
    return (stored - side) // 2, side


def center_crop(x: torch.Tensor, size: int, fraction: float = EVAL_FRACTION) -> torch.Tensor:
    """uint8 (B, C, size, size): the evaluation view of uint8 stored images (B, C, S, S), the
    central window (:func:`eval_window`) resized to ``size`` with antialiased bilinear
    interpolation and rounded (a pure crop when the window is already ``size``)."""
    off, side = eval_window(int(x.shape[-1]), fraction)
    win = x[..., off:off + side, off:off + side]
    if side == size:
        return win.contiguous()
    out = F.interpolate(win.to(torch.float32), size=(size, size), mode="bilinear",
                        align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


# -- what a run sees -----------------------------------------------------------------------


class StoreView:
    """Some rows of one split of a store, looking like a uint8 (N, C, crop, crop) tensor of
    evaluation views: ``shape``, ``len`` and indexing (``view[idx]`` reads only those rows and
    returns their centre crops as a real tensor). Used where a run wants a few training
    images as a tensor (the example batch, JSV inputs)."""

    def __init__(self, images: ShardedImages, rows: torch.Tensor, crop: int) -> None:
        self.images = images
        self.rows = rows.to(torch.int64).cpu()
        self.crop = int(crop)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), self.images.image_shape[0], self.crop, self.crop))

    def __len__(self) -> int:
        return len(self.rows)

    def dim(self) -> int:
        return 4

    def __getitem__(self, key: Any) -> torch.Tensor:
        rows = self.rows[key]
        if rows.dim() == 0:
            rows = rows[None]
            return center_crop(torch.from_numpy(self.images.gather(rows)), self.crop)[0]
        return center_crop(torch.from_numpy(self.images.gather(rows)), self.crop)

    def subset(self, key: Any) -> StoreView:
        return StoreView(self.images, self.rows[key], self.crop)


class ShardLoader(Batching):
    """Batches of (normalised float32 images, int64 labels) on ``device`` from rows ``rows`` of
    a memory-mapped split, augmented on the device (see the module doc).

    ``augment``: ``"rrc_flip"`` (training) or ``"none"`` (the evaluation centre crop).
    ``chunk_batches`` batches are gathered, moved and augmented together (default 1 on CPU,
    ~8k images on CUDA); the next chunk is read from the memory maps in a background thread
    while the current one is used. Batches are a pure function of (data, rows, seed, epoch,
    batch_size); the chunking only changes how many are computed per op.
    """

    def __init__(
        self,
        images: ShardedImages,
        labels: torch.Tensor,
        rows: torch.Tensor,
        *,
        crop: int,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        augment: str = "none",
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        chunk_batches: int | None = None,
        prefetch: bool = True,
    ) -> None:
        if augment not in STREAM_AUGMENTS:
            raise DataError(
                f"ShardLoader: augment {augment!r} not allowed; allowed: "
                f"{', '.join(STREAM_AUGMENTS)}"
            )
        self.device = torch.device(device)
        self._batching("ShardLoader", images.image_shape[0], batch_size, mean, std,
                       chunk_batches)
        self.images = images
        self.rows = rows.to(torch.int64).cpu()
        self.y = labels.to(torch.int64).cpu()[self.rows]
        self.crop = int(crop)
        self.shuffle = shuffle
        self.augment = augment
        self.seed = int(seed)
        self.drop_last = drop_last
        self.prefetch = prefetch
        self.num_samples = len(self.rows)

    def _read(self, idx: torch.Tensor) -> torch.Tensor:
        """The stored images of dataset positions ``idx`` (CPU, pinned for CUDA)."""
        x = torch.from_numpy(self.images.gather(self.rows[idx].numpy()))
        return x.pin_memory() if self.device.type == "cuda" else x

    def plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The epoch's order (positions into ``rows``), crop boxes and flips (CPU): a pure
        function of (seed, epoch, number of rows)."""
        n = self.num_samples
        g = _generator(self.seed, int(epoch))
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if self.augment != "rrc_flip":
            return order, None, None
        size = self.images.image_shape[1]
        boxes = sample_crop_boxes(n, size, size, g)
        flips = torch.rand(n, generator=g) < 0.5
        return order, boxes, flips

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of epoch ``epoch``: a pure function of (data, seed, epoch)."""
        order, boxes, flips = self.plan(epoch)
        n, bs, nb, step = self.num_samples, self.batch_size, len(self), self.chunk_batches
        chunks = [(f * bs, min((f + step) * bs, n), f) for f in range(0, nb, step)]
        pool = ThreadPoolExecutor(max_workers=1) if self.prefetch and len(chunks) > 1 else None
        try:
            pending: Future[torch.Tensor] | None = None
            for ci, (clo, chi, first) in enumerate(chunks):
                idx = order[clo:chi]
                raw = pending.result() if pending is not None else self._read(idx)
                pending = None
                if pool is not None and ci + 1 < len(chunks):
                    nlo, nhi, _ = chunks[ci + 1]
                    pending = pool.submit(self._read, order[nlo:nhi])
                xc = raw.to(self.device, non_blocking=True)
                if boxes is not None and flips is not None:
                    xc = self.normalise(crop_resize(xc, boxes[clo:chi], flips[clo:chi],
                                                    self.crop))
                else:
                    xc = self.normalise(center_crop(xc, self.crop))
                yc = self.y[idx].to(self.device, non_blocking=True)
                for i in range(first, min(first + step, nb)):
                    lo, hi = i * bs - clo, min((i + 1) * bs, n) - clo
                    yield xc[lo:hi], yc[lo:hi]
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)


@dataclass
class StreamDataset:
    """A dataset read from a store, never materialised: the counterpart of
    :class:`~prunebench.data.core.Dataset` for data too large for memory. ``train_x`` and
    ``test_x`` are :class:`StoreView` objects (their rows read on demand); ``context.prepare``
    builds :class:`ShardLoader` objects for it (``streaming`` is True)."""

    name: str
    store: Store
    crop: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    source: str
    checksum: str
    classes: list[str]
    streaming: bool = True

    @property
    def train_y(self) -> torch.Tensor:
        return self.store.labels["train"]

    @property
    def test_y(self) -> torch.Tensor:
        return self.store.labels["val"]

    @property
    def train_x(self) -> StoreView:
        return StoreView(self.store.images["train"], torch.arange(len(self.train_y)), self.crop)

    @property
    def test_x(self) -> StoreView:
        return StoreView(self.store.images["val"], torch.arange(len(self.test_y)), self.crop)

    @property
    def in_channels(self) -> int:
        return int(self.store.images["train"].image_shape[0])

    @property
    def input_size(self) -> tuple[int, int]:
        return self.crop, self.crop

    def __repr__(self) -> str:
        return (
            f"StreamDataset(name={self.name!r}, train={len(self.train_y)}, "
            f"test={len(self.test_y)}, stored={self.store.size}px, crop={self.crop}, "
            f"classes={self.num_classes}, source={self.source!r}, checksum={self.checksum!r})"
        )

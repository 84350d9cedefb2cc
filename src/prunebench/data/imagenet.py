"""ImageNet and ImageNet-100: a one-time conversion of the JPEG tree into a memory-mapped
store (:mod:`prunebench.data.shards`), and the registered datasets ``imagenet`` and
``imagenet100`` that open it.

Source layout (the standard one): ``SRC/train/<wnid>/*.JPEG`` and ``SRC/val/<wnid>/*.JPEG``
(the validation images sorted into class folders, e.g. by the usual ``valprep.sh``). The
training classes may also be the per-class tars of ``ILSVRC2012_img_train.tar``
(``SRC/train/<wnid>.tar``), read without unpacking. ImageNet's val is the test set; the
validation split is carved from train at run time (``data.val_size``).

Each image is decoded with Pillow (JPEG DCT-domain draft scaling to at least the target
size, then RGB), its central square is resized to ``S x S`` (antialiased bilinear: the same as
"resize the short side to S, centre-crop S x S"), and stored uint8 (3, S, S). Default S = 160
(:data:`DEFAULT_SIZE`): ImageNet-100 takes ~10.1 GB (126,689 + 5,000 images x 76.8 KB), all
of ImageNet ~102 GB; the default training crop 128 (``data.kwargs.crop``) comes out of it with
the standard random-resized-crop, and the evaluation view is the central 0.875 (= 224/256)
of it resized to 128. ``--size 256`` with ``crop: 224`` is the paper-resolution protocol
(2.56x the disk; the evaluation is then an exact 224 centre crop of the 256 short side).

The conversion is parallel (threads: Pillow decodes and resizes without the GIL), resumable
(a shard file is written atomically and kept; rerunning the same command skips finished
shards) and its result is deterministic (same images -> same bytes, whatever the workers or
interruptions). ``manifest.json`` is written last; a folder without it is refused.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import shutil
import tarfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from prunebench import io as pio
from prunebench.data.core import DATASETS, identify_with
from prunebench.data.identity import params_identity
from prunebench.data.paths import find_data
from prunebench.data.shards import (
    CLASSES,
    MANIFEST,
    PLAN,
    SPLITS,
    STORE_FORMAT,
    Store,
    content_identity,
    is_store,
    open_store,
    prepare_hint,
    read_manifest,
)
from prunebench.errors import DataError

DEFAULT_SIZE = 160
DEFAULT_CROP = 128
SHARD_IMAGES = 1024
IMAGE_EXTS = (".jpeg", ".jpg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RULE = "central square -> SxS, PIL bilinear (antialiased), JPEG draft >= S; v1"
_WNID = re.compile(r"^[A-Za-z0-9_.-]+$")

#: The ImageNet-100 classes of CMC (Tian, Krishnan, Isola, "Contrastive Multiview Coding",
#: 2019; github.com/HobbitLong/CMC/blob/master/imagenet100.txt), the subset used by this line
#: of work. Copied from that file's order; labels are assigned in sorted wnid order.
IMAGENET100_CLASSES: tuple[str, ...] = (
    "n02869837", "n01749939", "n02488291", "n02107142", "n13037406",
    "n02091831", "n04517823", "n04589890", "n03062245", "n01773797",
    "n01735189", "n07831146", "n07753275", "n03085013", "n04485082",
    "n02105505", "n01983481", "n02788148", "n03530642", "n04435653",
    "n02086910", "n02859443", "n13040303", "n03594734", "n02085620",
    "n02099849", "n01558993", "n04493381", "n02109047", "n04111531",
    "n02877765", "n04429376", "n02009229", "n01978455", "n02106550",
    "n01820546", "n01692333", "n07714571", "n02974003", "n02114855",
    "n03785016", "n03764736", "n03775546", "n02087046", "n07836838",
    "n04099969", "n04592741", "n03891251", "n02701002", "n03379051",
    "n02259212", "n07715103", "n03947888", "n04026417", "n02326432",
    "n03637318", "n01980166", "n02113799", "n02086240", "n03903868",
    "n02483362", "n04127249", "n02089973", "n03017168", "n02093428",
    "n02804414", "n02396427", "n04418357", "n02172182", "n01729322",
    "n02113978", "n03787032", "n02089867", "n02119022", "n03777754",
    "n04238763", "n02231487", "n03032252", "n02138441", "n02104029",
    "n03837869", "n03494278", "n04136333", "n03794056", "n03492542",
    "n02018207", "n04067472", "n03930630", "n03584829", "n02123045",
    "n04229816", "n02100583", "n03642806", "n04336792", "n03259280",
    "n02116738", "n02108089", "n03424325", "n01855672", "n02090622",
)
#: the names ``--classes`` accepts for a built-in list
BUILTIN_CLASS_LISTS = {"imagenet100": IMAGENET100_CLASSES}


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTS)


# -- the class list ---------------------------------------------------------------------------


def read_class_list(spec: str | Path) -> list[str]:
    """A class list: a built-in name (``imagenet100``) or a text file of wnids, one a line
    (blank lines and ``#`` comments ignored). Raises a one-line DataError naming the file."""
    if str(spec) in BUILTIN_CLASS_LISTS:
        return list(BUILTIN_CLASS_LISTS[str(spec)])
    path = Path(spec).expanduser()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read class list {path}: {getattr(exc, 'strerror', None) or exc}; expected "
            f"a text file with one wnid per line or one of {', '.join(BUILTIN_CLASS_LISTS)}"
        ) from None
    names = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DataError(f"class list {path} is empty; expected one wnid per line")
    bad = [n for n in names if not _WNID.match(n)]
    if bad:
        raise DataError(f"class list {path}: {bad[0]!r} is not a class folder name "
                        "(expected e.g. n01440764)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"class list {path} names {dup[0]!r} more than once")
    return names


# -- listing the source -----------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """What a conversion reads: the classes (label order) and per split ``(label, ref)``
    entries, ``ref`` a path relative to the source (``train/n01/x.JPEG``) or a tar member
    (``train/n01.tar::x.JPEG``)."""

    root: Path
    classes: list[str]
    entries: dict[str, list[tuple[int, str]]]
    sha256: str  # of the refs, labels and file sizes: a changed source is another plan


def _class_sources(split_dir: Path) -> dict[str, Path]:
    """class name -> folder or ``.tar`` under ``split_dir``."""
    out: dict[str, Path] = {}
    for p in sorted(split_dir.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            out[p.name] = p
        elif p.is_file() and p.name.lower().endswith(".tar"):
            out.setdefault(p.name[: -len(".tar")], p)
    return out


def _list_class(src: Path, root: Path) -> list[tuple[str, int]]:
    """(ref, size) of every image of one class folder or tar, sorted by name."""
    rel = src.relative_to(root).as_posix()
    try:
        if src.is_dir():
            items = [(f"{rel}/{f.name}", f.stat().st_size) for f in src.iterdir()
                     if f.is_file() and _is_image(f.name)]
        else:
            with tarfile.open(src, "r:") as tar:
                items = [(f"{rel}::{m.name}", m.size) for m in tar.getmembers()
                         if m.isfile() and _is_image(Path(m.name).name)]
    except (OSError, tarfile.TarError) as exc:
        raise DataError(f"cannot list {src}: {getattr(exc, 'strerror', None) or exc}") from None
    return sorted(items)


def list_source(src: Path, classes: Sequence[str] | None = None) -> Listing:
    """List an ImageNet tree (never decoding an image): its classes (``classes`` if given,
    in sorted order, each one required in train/ and val/; else every class of train/) and
    image files. One-line DataError for anything that is not the expected layout."""
    src = Path(src).expanduser()
    expected = "an ImageNet tree with train/<wnid>/*.JPEG (or train/<wnid>.tar) and val/<wnid>/"
    if not src.is_dir():
        raise DataError(f"source {src} is not a folder; expected {expected}")
    for split in SPLITS:
        if not (src / split).is_dir():
            raise DataError(f"source {src} has no {split}/ folder; expected {expected}")
    train = _class_sources(src / "train")
    val = {k: v for k, v in _class_sources(src / "val").items() if v.is_dir()}
    if not train:
        raise DataError(f"{src / 'train'} holds no class folders; expected {expected}")
    if not val:
        loose = any(f.is_file() and _is_image(f.name) for f in (src / "val").iterdir())
        why = ("holds its images directly: sort them into val/<wnid>/ folders first (e.g. with "
               "the usual valprep.sh)") if loose else "holds no class folders"
        raise DataError(f"{src / 'val'} {why}; expected {expected}")
    if classes is None:
        names = sorted(train)
        extra = sorted(set(val) - set(train))
        if extra:
            raise DataError(f"{src / 'val'} has class {extra[0]!r} that train/ lacks")
        lacking = sorted(set(train) - set(val))
        if lacking:
            raise DataError(f"class {lacking[0]!r} of {src / 'train'} is not in {src / 'val'} "
                            f"(expected val/{lacking[0]}/)")
    else:
        names = sorted(classes)
        for c in classes:
            if c not in train:
                raise DataError(f"class {c!r} of the class list is not in {src / 'train'} "
                                f"(expected train/{c}/ or train/{c}.tar)")
            if c not in val:
                raise DataError(f"class {c!r} of the class list is not in {src / 'val'} "
                                f"(expected val/{c}/)")
    entries: dict[str, list[tuple[int, str]]] = {}
    h = hashlib.sha256()
    for split, found in (("train", train), ("val", val)):
        rows: list[tuple[int, str]] = []
        for label, c in enumerate(names):
            items = _list_class(found[c], src)
            if not items:
                raise DataError(f"{found[c]} holds no images (.JPEG/.jpg/.png)")
            for ref, size in items:
                rows.append((label, ref))
                h.update(f"{split}\0{label}\0{ref}\0{size}\n".encode())
        entries[split] = rows
    return Listing(src, names, entries, h.hexdigest())


# -- decoding ---------------------------------------------------------------------------------


def decode_resize(data: bytes, name: str, size: int) -> np.ndarray:
    """One image file's bytes -> uint8 (3, size, size): its central square resized to ``size``
    (Pillow bilinear with antialiasing; JPEGs are first draft-decoded at the smallest DCT
    scale that keeps the short side >= ``size``)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            short = min(w, h)
            if short <= 0:
                raise ValueError("empty image")
            img.draft("RGB", (math.ceil(w * size / short), math.ceil(h * size / short)))
            rgb = img.convert("RGB")
    except Exception as exc:
        raise DataError(f"cannot decode image {name}: {exc}".replace("\n", " ")) from None
    w, h = rgb.size
    short = min(w, h)
    left, top = (w - short) / 2, (h - short) / 2
    out = rgb.resize((size, size), Image.Resampling.BILINEAR,
                     box=(left, top, left + short, top + short))
    return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)


def _read_error(root: Path, ref: str, exc: Exception) -> DataError:
    return DataError(f"cannot read image {root / ref}: {getattr(exc, 'strerror', None) or exc}")


def read_images(root: Path, refs: Sequence[str]) -> Iterator[bytes]:
    """The bytes of each ref in order (files, or members of per-class tars: each tar is
    opened once per run of consecutive refs into it)."""
    tar: tarfile.TarFile | None = None
    tar_rel = ""
    try:
        for ref in refs:
            try:
                if "::" not in ref:
                    yield (root / ref).read_bytes()
                    continue
                rel, member = ref.split("::", 1)
                if tar is None or rel != tar_rel:
                    if tar is not None:
                        tar.close()
                    tar, tar_rel = tarfile.open(root / rel, "r:"), rel  # noqa: SIM115
                fh = tar.extractfile(member)
                if fh is None:
                    raise OSError(f"{member} is not a file")
                yield fh.read()
            except (OSError, tarfile.TarError, KeyError) as exc:
                raise _read_error(root, ref, exc) from None
    finally:
        if tar is not None:
            tar.close()


# -- the conversion ---------------------------------------------------------------------------


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _write_array(path: Path, arr: np.ndarray) -> dict[str, Any]:
    data = _npy_bytes(arr)
    pio.write_bytes(path, data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _existing_shard(path: Path, count: int, size: int) -> dict[str, Any] | None:
    """A finished shard of an interrupted conversion, if it is whole (atomic writes make a
    present file a complete one; its shape is checked anyway)."""
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        ok = arr.dtype == np.uint8 and arr.shape == (count, 3, size, size)
        del arr
    except (OSError, ValueError):
        ok = False
    if not ok:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


@dataclass
class PrepareResult:
    path: Path
    manifest: dict[str, Any]
    shards_written: int
    shards_kept: int
    already_complete: bool


def prepare_store(
    src: Path,
    out: Path,
    *,
    classes: Sequence[str] | None = None,
    size: int = DEFAULT_SIZE,
    workers: int | None = None,
    shard_images: int = SHARD_IMAGES,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareResult:
    """Convert the ImageNet tree ``src`` (or its ``classes`` subset) into a store at ``out``.

    Everything about the input is checked before anything is written (layout, class list);
    an unreadable image stops the conversion with a one-line DataError and, if ``out`` was
    created by this call, removes it. An interruption keeps the finished shards: rerunning
    the same conversion skips them (the plan must match: same source listing, classes, size,
    shard size), and gives the same bytes as an uninterrupted run."""
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 1024:
        raise DataError(f"store size {size!r} must be an int in [8, 1024] (e.g. 160 or 256)")
    if isinstance(shard_images, bool) or not isinstance(shard_images, int) or shard_images < 1:
        raise DataError(f"shard_images {shard_images!r} must be an int >= 1")
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DataError(f"workers {workers!r} must be an int >= 1")
    listing = list_source(src, classes)
    out = Path(out).expanduser()
    plan = {
        "format": STORE_FORMAT,
        "size": size,
        "shard_images": shard_images,
        "classes": listing.classes,
        "listing_sha256": listing.sha256,
        "resize": RESIZE_RULE,
        "counts": {s: len(listing.entries[s]) for s in SPLITS},
    }
    created = not out.exists()
    if not created:
        if not out.is_dir():
            raise DataError(f"--out {out} is a file; expected a new or empty folder")
        if (out / PLAN).is_file():
            try:
                old = pio.read_json(out / PLAN)
            except Exception:
                old = None
            if old != plan:
                raise DataError(
                    f"--out {out} holds a store of another source, class list or size; "
                    "choose a new --out or delete it"
                )
            if (out / MANIFEST).is_file():
                store = open_store(out)
                return PrepareResult(out, store.manifest, 0, 0, True)
        elif any(out.iterdir()):
            raise DataError(f"--out {out} is not empty and holds no store; choose a new or "
                            "empty folder")
    try:
        return _convert(listing, out, plan, workers, progress)
    except DataError:  # bad input (an unreadable image): leave no store behind
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    # an interruption (Ctrl-C, kill) keeps the finished shards for the rerun


def _convert(
    listing: Listing,
    out: Path,
    plan: dict[str, Any],
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> PrepareResult:
    size, k = int(plan["size"]), int(plan["shard_images"])
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:  # temp files of writes a kill interrupted
        for tmp in (out / split).glob(".*.tmp") if (out / split).is_dir() else ():
            tmp.unlink(missing_ok=True)
    pio.write_json(out / PLAN, plan)
    pio.write_text(out / CLASSES, "".join(f"{c}\n" for c in listing.classes))
    splits: dict[str, Any] = {}
    jobs: list[tuple[str, int, list[tuple[int, str]]]] = []
    for split in SPLITS:
        rows = listing.entries[split]
        labels = np.array([lab for lab, _ref in rows], dtype=np.int64)
        info = _write_array(out / split / "labels.npy", labels)
        splits[split] = {
            "count": len(rows),
            "labels": {"file": f"{split}/labels.npy", **info},
            "shards": [None] * math.ceil(len(rows) / k),
        }
        jobs += [(split, i, rows[i * k:(i + 1) * k]) for i in range(len(splits[split]["shards"]))]
    written = kept = 0

    def work(split: str, index: int, rows: list[tuple[int, str]]) -> tuple[dict[str, Any], bool]:
        name = f"{split}/shard-{index:05d}.npy"
        meta = {"file": name, "count": len(rows)}
        old = _existing_shard(out / name, len(rows), size)
        if old is not None:
            return {**meta, **old}, False
        arr = np.empty((len(rows), 3, size, size), dtype=np.uint8)
        refs = [ref for _lab, ref in rows]
        for j, data in enumerate(read_images(listing.root, refs)):
            arr[j] = decode_resize(data, str(listing.root / refs[j]), size)
        return {**meta, **_write_array(out / name, arr)}, True

    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(work, *job): job for job in jobs}
        try:
            for fut in as_completed(futures):
                split, index, _rows = futures[fut]
                meta, new = fut.result()
                splits[split]["shards"][index] = meta
                written, kept = written + new, kept + (not new)
                done += 1
                if progress is not None:
                    progress(done, len(jobs))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    manifest = {
        "format": STORE_FORMAT,
        "size": size,
        "layout": "uint8 (N, 3, S, S) per shard, row-major",
        "shard_images": k,
        "classes": listing.classes,
        "num_classes": len(listing.classes),
        "resize": RESIZE_RULE,
        "source_listing_sha256": listing.sha256,
        "splits": splits,
    }
    pio.write_json(out / MANIFEST, manifest)
    open_store(out)  # what was written opens
    return PrepareResult(out, manifest, written, kept, False)


def store_bytes(manifest: dict[str, Any]) -> int:
    """Bytes on disk of a store's data files."""
    return sum(int(sh["bytes"]) for s in manifest["splits"].values() for sh in s["shards"]) + \
        sum(int(s["labels"]["bytes"]) for s in manifest["splits"].values())


# -- the registered datasets ------------------------------------------------------------------


def _probe(path: Path) -> Path | None:
    return path if is_store(path) else None


def locate_store(name: str, data_dir: Path | None) -> Path:
    """The store a dataset reads: ``data_dir`` (the store itself or a root holding
    ``<name>/``), else ``$PRUNEBENCH_DATA/<name>``, the user cache, system paths. One-line
    DataError saying how to prepare it when there is none."""
    expected = f"a store made by `prunebench data prepare {name} SRC --out DIR`"
    hit = find_data(name, data_dir, _probe, expected=expected)
    if hit is None:
        raise DataError(f"{name}: no prepared store found; {prepare_hint(name)}")
    return hit


def _identify(name: str, data_dir: Path | None) -> str:
    """The store's content identity from its manifest (the sha256 of every data file as
    written by the conversion): cheap, and another conversion gives another identity."""
    manifest = read_manifest(locate_store(name, data_dir))
    return params_identity(name, {"kind": "store", "content": content_identity(manifest)})


def _check_crop(name: str, crop: object, store: Store) -> int:
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < 8:
        raise DataError(f"{name}: crop must be an int >= 8, got {crop!r}")
    if crop > store.size:
        raise DataError(
            f"{name}: crop {crop} exceeds the store's image size {store.size} ({store.path}); "
            f"prepare a store with --size >= {math.ceil(crop / 0.875)} or lower data.kwargs.crop"
        )
    return crop


def _load(name: str, data_dir: Path | None, crop: int, classes: int | None) -> Any:
    from prunebench.data.shards import StreamDataset

    store = open_store(locate_store(name, data_dir))
    if classes is not None and len(store.classes) != classes:
        raise DataError(
            f"{name}: store {store.path} has {len(store.classes)} classes, expected {classes}; "
            f"prepare it with `prunebench data prepare {name} SRC --out DIR` "
            "(the built-in ImageNet-100 list, or --classes FILE)"
        )
    crop = _check_crop(name, crop, store)
    ident = content_identity(store.manifest)
    subset = "ImageNet-100 (CMC list)" if sorted(store.classes) == sorted(
        IMAGENET100_CLASSES) else f"ImageNet ({len(store.classes)} classes)"
    return StreamDataset(
        name=name,
        store=store,
        crop=crop,
        num_classes=len(store.classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        augment="rrc_flip",
        source=(f"{subset}, store at {store.path} ({store.size}px, "
                f"{len(store.labels['train'])}/{len(store.labels['val'])} images)"),
        checksum=ident[:16],
        classes=store.classes,
    )


@DATASETS.register("imagenet")
@identify_with(lambda data_dir=None, crop=DEFAULT_CROP: _identify("imagenet", data_dir))
def imagenet(data_dir: Path | None = None, crop: int = DEFAULT_CROP) -> Any:
    """ImageNet (or any class subset) from a store made by ``prunebench data prepare``:
    streamed from memory maps, random-resized-crop + flip to ``crop`` on the device."""
    return _load("imagenet", data_dir, crop, None)


@DATASETS.register("imagenet100")
@identify_with(lambda data_dir=None, crop=DEFAULT_CROP: _identify("imagenet100", data_dir))
def imagenet100(data_dir: Path | None = None, crop: int = DEFAULT_CROP) -> Any:
    """ImageNet-100 (a 100-class store, by default CMC's list) made by ``prunebench data
    prepare imagenet100``: streamed like ``imagenet``."""
    return _load("imagenet100", data_dir, crop, 100)


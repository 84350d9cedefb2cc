"""Tests of prunebench.data: loaders for every format, lookup order, splits and BatchLoader."""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import prunebench.data.imagefolder as imagefolder_mod
import prunebench.data.paths as paths_mod
from prunebench.data import (
    DATASETS,
    BatchLoader,
    Dataset,
    cache_root,
    clear_memo,
    crop_flip,
    derive_seed,
    load_dataset,
    split_train_val,
)
from prunebench.errors import DataError, RegistryError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SHARED_ZIP = Path("/work/shared/data/cifar10-jpeg.zip")


def _no_network(*args: object, **kwargs: object) -> object:
    raise OSError("network disabled in tests")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Private cache dir, no PRUNEBENCH_DATA, no network, fresh memo for every test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("PRUNEBENCH_DATA", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    clear_memo()
    yield
    clear_memo()


# -- writers of tiny files in the official formats -----------------------------------------------


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, *, n_train: int = 20, n_test: int = 10, gz: bool = True) -> dict:
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28)), 2051),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10, 2049),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28)), 2051),
        "t10k-labels-idx1-ubyte": (np.arange(n_test)[::-1] % 10, 2049),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, (arr, magic) in arrays.items():
        raw = _idx_bytes(arr, magic)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return {k: v[0].astype(np.uint8) for k, v in arrays.items()}


CIFAR_FORMATS = {
    # name: (top folder, train files, test file, meta file, label key, names key, classes)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "batches.meta",
        b"labels",
        b"label_names",
        10,
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        "test",
        "meta",
        b"fine_labels",
        b"fine_label_names",
        100,
    ),
}


def write_cifar(root: Path, name: str, per_batch: int = 3) -> tuple[np.ndarray, ...]:
    """Official-format pickle batches under root/<top>/; returns (train_flat, y, test_flat, y)."""
    top, train_files, test_file, meta_file, label_key, names_key, k = CIFAR_FORMATS[name]
    folder = root / top
    folder.mkdir(parents=True)
    rng = np.random.default_rng(hash(name) % 1000)
    xs, ys = [], []
    for i, f in enumerate(train_files):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [(i * per_batch + j) % k for j in range(per_batch)]
        (folder / f).write_bytes(pickle.dumps({b"data": data, label_key: labels}, protocol=2))
        xs.append(data)
        ys += labels
    test = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    test_labels = [k - 1, 0, 1, 2]
    (folder / test_file).write_bytes(pickle.dumps({b"data": test, label_key: test_labels}))
    names = [f"class{i}".encode() for i in range(k)]
    (folder / meta_file).write_bytes(pickle.dumps({names_key: names}))
    return np.concatenate(xs), np.array(ys), test, np.array(test_labels)


def make_tar(src_root: Path, top: str, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src_root / top, arcname=top)
    return archive


def write_image_tree(
    root: Path, classes: list[str], n_train: int, n_test: int, ext: str = "png", flat: bool = False
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """train/<class>/*.ext and test/<class>/*.ext; returns {split: [(class, array)] sorted}."""
    rng = np.random.default_rng(7)
    out: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    for split, count in (("train", n_train), ("test", n_test)):
        for cls in classes:
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(count):
                shape = (1, 1, 3) if flat else (32, 32, 3)  # flat colours survive JPEG
                arr = np.broadcast_to(rng.integers(0, 256, shape, dtype=np.uint8), (32, 32, 3))
                Image.fromarray(arr).save(d / f"{i:04d}.{ext}")
                out[split].append((cls, arr))
    return out


def zip_tree(root: Path, archive: Path, top: str | None) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                rel = p.relative_to(root).as_posix()
                zf.write(p, f"{top}/{rel}" if top else rel)
    return archive


# -- Fashion-MNIST from the Debian package --------------------------------------------------------


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_path() -> None:
    ds = load_dataset("fashion_mnist")
    assert isinstance(ds, Dataset)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_x.is_contiguous()
    assert ds.num_classes == 10 and len(ds.classes) == 10 and ds.classes[0] == "T-shirt/top"
    assert torch.bincount(ds.train_y, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(ds.test_y, minlength=10).tolist() == [1000] * 10
    assert ds.in_channels == 1 and ds.input_size == (28, 28)
    assert ds.mean == (0.2860,) and ds.std == (0.3530,) and ds.augment == "none"
    assert str(FASHION_DIR) in ds.source and ds.source.startswith("Fashion-MNIST (IDX")
    assert len(ds.checksum) == 16 and int(ds.checksum, 16) >= 0
    # the published statistics match the pixels
    assert abs(ds.train_x.float().mean().item() / 255 - 0.2860) < 1e-3
    # memoised, and an explicit path to the same files gives the same content
    assert load_dataset("fashion_mnist") is ds
    explicit = load_dataset("fashion_mnist", FASHION_DIR)
    assert explicit.checksum == ds.checksum


# -- IDX parsing and the lookup order -------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip_explicit_dir(tmp_path: Path, gz: bool) -> None:
    arrays = write_idx_set(tmp_path / "m", gz=gz)
    ds = load_dataset("mnist", tmp_path / "m")
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert torch.equal(ds.test_x[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert ds.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert ds.mean == (0.1307,) and ds.std == (0.3081,)
    assert ds.source == f"MNIST (IDX, {tmp_path / 'm'})"


def test_idx_bad_magic_names_file(tmp_path: Path) -> None:
    write_idx_set(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(_idx_bytes(np.zeros(20), 2051)))  # image magic on a label file
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz.*magic number 2051"):
        load_dataset("mnist", tmp_path)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path)


def test_lookup_order_env_cache_explicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths_mod, "SYSTEM_ROOTS", ())
    write_idx_set(cache_root() / "mnist", n_train=10)
    assert len(load_dataset("mnist").train_x) == 10  # cache dir
    assert str(cache_root() / "mnist") in load_dataset("mnist").source

    write_idx_set(tmp_path / "root" / "mnist", n_train=12)
    monkeypatch.setenv("PRUNEBENCH_DATA", str(tmp_path / "root"))
    assert len(load_dataset("mnist").train_x) == 12  # env beats cache

    write_idx_set(tmp_path / "explicit", n_train=14)
    assert len(load_dataset("mnist", tmp_path / "explicit").train_x) == 14  # explicit beats env
    assert len(load_dataset("mnist", tmp_path / "root").train_x) == 12  # explicit root/<name>/

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable data in .*empty"):
        load_dataset("mnist", tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", tmp_path / "missing")


# -- downloads (never real: urlopen is patched) ---------------------------------------------------


def test_download_failure_says_where_to_put_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths_mod, "SYSTEM_ROOTS", ())
    calls: list[str] = []

    def fail(url: str, timeout: float) -> object:
        calls.append(url)
        assert timeout > 0
        raise OSError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("could not download fashion_mnist")
    assert "no route to host" in msg
    assert str(cache_root() / "fashion_mnist") in msg and "PRUNEBENCH_DATA" in msg
    assert "IDX .gz files" in msg and "--data-dir" in msg
    assert calls and calls[0].endswith("train-images-idx3-ubyte.gz")
    folder = cache_root() / "fashion_mnist"
    assert not folder.exists() or list(folder.iterdir()) == []  # no partial files

    with pytest.raises(DataError, match=r"could not download cifar10 .*cifar-10-python\.tar\.gz"):
        load_dataset("cifar10")
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in calls
    assert list((cache_root() / "cifar10").iterdir()) == []


def test_download_checksum_mismatch_deletes_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths_mod, "SYSTEM_ROOTS", ())
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"garbage"))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("mnist")
    assert list((cache_root() / "mnist").iterdir()) == []


# -- CIFAR python batches (folder and .tar.gz) ----------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_batches_folder_and_targz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    top = CIFAR_FORMATS[name][0]
    k = CIFAR_FORMATS[name][-1]
    tr, tr_y, te, te_y = write_cifar(tmp_path / "src", name)
    ds = load_dataset(name, tmp_path / "src")
    assert ds.train_x.shape == (len(tr), 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    # row-major 3072 vector = 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    flat = ds.train_x.reshape(len(tr), -1).numpy()
    assert np.array_equal(flat, tr)
    assert int(ds.train_x[1, 2, 5, 7]) == int(tr[1, 2 * 1024 + 5 * 32 + 7])
    assert np.array_equal(ds.test_x.reshape(4, -1).numpy(), te)
    assert ds.train_y.tolist() == tr_y.tolist() and ds.test_y.tolist() == te_y.tolist()
    assert ds.num_classes == k and ds.classes[:2] == ["class0", "class1"]
    assert ds.augment == "crop_flip" and len(ds.mean) == 3
    assert "official python batches" in ds.source

    archive = make_tar(tmp_path / "src", top, tmp_path / f"{name}.tar.gz")
    from_tar = load_dataset(name, archive)
    assert from_tar.checksum == ds.checksum
    assert torch.equal(from_tar.train_x, ds.train_x) and torch.equal(from_tar.test_y, ds.test_y)
    assert str(archive) in from_tar.source
    extracted = [p.name for p in (cache_root() / name).iterdir()]
    assert len(extracted) == 1 and extracted[0].startswith("extracted-")  # no temp dirs left
    clear_memo()
    assert load_dataset(name, archive).checksum == ds.checksum  # reuses the extraction

    # the archive in a searched folder is found too (PRUNEBENCH_DATA/<name>/<archive name>)
    env_root = tmp_path / "env"
    (env_root / name).mkdir(parents=True)
    archive.rename(
        env_root / name / {"cifar10": "cifar-10-python.tar.gz"}.get(name, "cifar-100-python.tar.gz")
    )
    monkeypatch.setenv("PRUNEBENCH_DATA", str(env_root))
    assert load_dataset(name).checksum == ds.checksum


def test_cifar_bad_batch_and_unsafe_pickle(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10")
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]})
    )
    with pytest.raises(DataError, match="data_batch_3.*expected uint8"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": os.system}))
    with pytest.raises(DataError, match="data_batch_3.*not allowed"):
        load_dataset("cifar10", tmp_path)


# -- ImageFolder copies (folder and zip), decoded-tensor cache ------------------------------------


CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _expected(tree: dict, split: str) -> tuple[torch.Tensor, list[int]]:
    items = tree[split]  # written class by class in sorted order, files in name order
    x = torch.from_numpy(np.stack([a for _c, a in items])).permute(0, 3, 1, 2)
    y = [CIFAR10_CLASSES.index(c) for c, _a in items]
    return x, y


def test_image_folder_png_folder_zip_and_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = write_image_tree(tmp_path / "tree", CIFAR10_CLASSES, n_train=2, n_test=1)
    ds = load_dataset("cifar10", tmp_path / "tree")
    exp_x, exp_y = _expected(tree, "train")
    assert torch.equal(ds.train_x, exp_x) and ds.train_y.tolist() == exp_y
    exp_tx, exp_ty = _expected(tree, "test")
    assert torch.equal(ds.test_x, exp_tx) and ds.test_y.tolist() == exp_ty
    assert ds.classes == CIFAR10_CLASSES and ds.augment == "crop_flip"
    assert ds.source == f"CIFAR-10 (image copy, ImageFolder at {tmp_path / 'tree'})"

    archive = zip_tree(tmp_path / "tree", tmp_path / "cifar10-jpeg-ish.zip", top="cifar10-png")
    from_zip = load_dataset("cifar10", archive)
    assert from_zip.checksum == ds.checksum and torch.equal(from_zip.train_x, ds.train_x)
    assert from_zip.source.startswith("CIFAR-10 (JPEG q75 copy, ImageFolder at")
    flat_zip = zip_tree(tmp_path / "tree", tmp_path / "flat.zip", top=None)
    assert load_dataset("cifar10", flat_zip).checksum == ds.checksum
    # a folder holding a cifar10-*.zip is searched too
    (tmp_path / "holder").mkdir()
    archive.rename(tmp_path / "holder" / "cifar10-copy.zip")
    assert load_dataset("cifar10", tmp_path / "holder").checksum == ds.checksum
    assert len(list((cache_root() / "decoded").glob("*.pt"))) == 4

    # second load comes from the decoded cache: the decoder must not run
    def boom(data: bytes, name: str) -> np.ndarray:
        raise AssertionError(f"decoded {name} again")

    monkeypatch.setattr(imagefolder_mod, "_decode_image", boom)
    clear_memo()
    assert torch.equal(load_dataset("cifar10", tmp_path / "tree").train_x, ds.train_x)
    assert load_dataset("cifar10", flat_zip).checksum == ds.checksum
    # a changed source is decoded again
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "tree/test/cat/0009.png")
    clear_memo()
    with pytest.raises(AssertionError, match="decoded"):
        load_dataset("cifar10", tmp_path / "tree")


def test_image_folder_cache_follows_the_content_not_the_stats(tmp_path: Path) -> None:
    """Swapping the files of two class folders keeps the count, sizes and newest mtime: the
    decoded cache once answered with the old labels under the new run id. The cache key is
    the content checksum the identity is made of, so data and id change together."""
    write_image_tree(tmp_path / "tree", CIFAR10_CLASSES, n_train=2, n_test=2)
    before = load_dataset("cifar10", tmp_path / "tree")
    a, b = tmp_path / "tree/test/cat", tmp_path / "tree/test/dog"
    swap = tmp_path / "swap"
    a.rename(swap)
    b.rename(a)
    swap.rename(b)  # the cat and dog test images trade folders; every file keeps its stat
    clear_memo()
    after = load_dataset("cifar10", tmp_path / "tree")
    assert after.checksum != before.checksum
    cat, dog = (before.test_y == 3), (before.test_y == 5)
    # the images now labelled cat are the former dog images (and the other way round)
    assert torch.equal(after.test_x[cat], before.test_x[dog])
    assert torch.equal(after.test_x[dog], before.test_x[cat])
    assert not torch.equal(after.test_x, before.test_x)


def test_an_edit_that_puts_the_mtime_back_is_seen(tmp_path: Path) -> None:
    """``cp -p`` / ``rsync -t`` / ``os.utime`` restore an edited file's size and mtime, not
    its ctime: the checksum cache's stamp includes the ctime, so the edit is hashed."""
    from prunebench.data.identity import file_checksum

    f = tmp_path / "labels.bin"
    f.write_bytes(b"\x00\x01\x02\x03")
    first = file_checksum(f)
    st = f.stat()
    f.write_bytes(b"\x03\x02\x01\x00")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
    clear_memo()
    assert file_checksum(f) != first


def test_image_folder_lossy_copy_and_errors(tmp_path: Path) -> None:
    tree = write_image_tree(
        tmp_path / "j", CIFAR10_CLASSES, n_train=1, n_test=1, ext="jpg", flat=True
    )
    ds = load_dataset("cifar10", tmp_path / "j")
    assert ds.source.startswith("CIFAR-10 (JPEG copy, ImageFolder at")
    exp_x, _ = _expected(tree, "train")
    assert ds.train_x.shape == exp_x.shape  # lossy: only the shape and rough content match
    assert (ds.train_x.float() - exp_x.float()).abs().max() <= 8

    write_image_tree(tmp_path / "few", ["a", "b"], n_train=1, n_test=1)
    with pytest.raises(DataError, match="2 class folders, expected 10"):
        load_dataset("cifar10", tmp_path / "few")
    (tmp_path / "few/test/zzz").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "few/test/zzz/0.png")
    with pytest.raises(DataError, match="test classes"):
        load_dataset("cifar100", tmp_path / "few")
    shutil.rmtree(tmp_path / "few/test/zzz")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "few/train/a/9.png")
    with pytest.raises(DataError, match="same size"):
        load_dataset("cifar100", tmp_path / "few")


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_ZIP.is_file(), reason="shared cifar10-jpeg.zip absent")
def test_shared_cifar10_jpeg_zip() -> None:
    ds = load_dataset("cifar10", SHARED_ZIP)
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert torch.bincount(ds.train_y).tolist() == [5000] * 10
    assert ds.classes == CIFAR10_CLASSES
    assert ds.source.startswith("CIFAR-10 (JPEG q75 copy")


# -- synthetic ------------------------------------------------------------------------------------


def test_synthetic_deterministic_and_learnable() -> None:
    a = load_dataset("synthetic")
    clear_memo()
    b = load_dataset("synthetic")
    assert a is not b and a.checksum == b.checksum and torch.equal(a.train_x, b.train_x)
    assert load_dataset("synthetic", seed=1).checksum != a.checksum
    assert a.train_x.shape == (512, 1, 8, 8) and a.test_x.shape == (256, 1, 8, 8)
    assert a.train_x.dtype == torch.uint8 and a.num_classes == 4 and a.augment == "none"
    assert torch.bincount(a.train_y).tolist() == [128] * 4
    c = load_dataset("synthetic", n_train=30, n_test=9, channels=3, size=5, num_classes=3)
    assert c.train_x.shape == (30, 3, 5, 5) and c.num_classes == 3 and len(c.mean) == 3
    with pytest.raises(DataError, match="num_classes"):
        load_dataset("synthetic", num_classes=1)
    with pytest.raises(DataError, match="allowed: n_train, n_test, channels"):
        load_dataset("synthetic", n_val=3)
    with pytest.raises(DataError, match=r"'mnist' got options \['foo'\]; allowed: \(none\)"):
        load_dataset("mnist", foo=1)

    # nearest class mean separates the classes
    xf = a.train_x.float().flatten(1)
    centroids = torch.stack([xf[a.train_y == k].mean(0) for k in range(4)])
    pred = torch.cdist(a.test_x.float().flatten(1), centroids).argmin(1)
    assert (pred == a.test_y).float().mean() > 0.95

    # and a linear model learns it in a few epochs through BatchLoader
    model = torch.nn.Linear(64, 4)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    test = BatchLoader(a.test_x, a.test_y, batch_size=256, mean=a.mean, std=a.std)

    def accuracy() -> float:
        x, y = next(iter(test.epoch(0)))
        return (model(x.flatten(1)).argmax(1) == y).float().mean().item()

    before = accuracy()
    train = BatchLoader(a.train_x, a.train_y, batch_size=32, mean=a.mean, std=a.std, shuffle=True)
    for epoch in range(3):
        for x, y in train.epoch(epoch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x.flatten(1)), y).backward()
            opt.step()
    assert accuracy() > 0.8 and accuracy() > before


# -- split_train_val ------------------------------------------------------------------------------


def test_split_train_val_basic() -> None:
    tr, va = split_train_val(1000, 100, seed=0)
    assert tr.dtype == torch.int64 and va.dtype == torch.int64
    assert len(tr) == 900 and len(va) == 100
    assert torch.equal(torch.cat([tr, va]).sort().values, torch.arange(1000))
    tr2, va2 = split_train_val(1000, 100, seed=0)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert not torch.equal(va, split_train_val(1000, 100, seed=1)[1])
    assert len(split_train_val(1000, 0.25, seed=0)[1]) == 250
    tr0, va0 = split_train_val(50, 0, seed=3)
    assert torch.equal(tr0, torch.arange(50)) and len(va0) == 0
    assert len(split_train_val(10, 0.0, seed=3)[1]) == 0
    assert split_train_val(0, 0, seed=0)[0].numel() == 0


@pytest.mark.parametrize("bad", [-1, 10, 11, 1.0, 1.5, -0.1, float("nan"), "5", True, None])
def test_split_train_val_rejects(bad: object) -> None:
    with pytest.raises(DataError, match="val_size"):
        split_train_val(10, bad, seed=0)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 2000),
    val=st.one_of(st.integers(0, 2000), st.floats(0.01, 0.99)),
    seed=st.integers(-(2**40), 2**40),
)
def test_split_train_val_property(n: int, val: int | float, seed: int) -> None:
    if isinstance(val, int) and val >= n and val > 0:
        with pytest.raises(DataError):
            split_train_val(n, val, seed)
        return
    tr, va = split_train_val(n, val, seed)
    expected_val = val if isinstance(val, int) else min(round(val * n), n - 1)
    assert len(va) == expected_val and len(tr) == n - expected_val
    assert not set(tr.tolist()) & set(va.tolist())
    assert torch.equal(torch.cat([tr, va]).sort().values, torch.arange(n))
    tr2, va2 = split_train_val(n, val, seed)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)


# -- BatchLoader ----------------------------------------------------------------------------------


def _data(n: int = 50, c: int = 3, h: int = 6, w: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    return x, torch.arange(n)


def test_batch_loader_covers_each_sample_once_and_is_deterministic() -> None:
    x, y = _data()
    kw = dict(batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True, seed=3)
    loader = BatchLoader(x, y, **kw)
    assert len(loader) == 7 and loader.num_samples == 50
    batches = list(loader.epoch(0))
    assert [len(b[1]) for b in batches] == [8] * 6 + [2]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(50)) and seen.tolist() != list(range(50))
    again = list(BatchLoader(x, y, **kw).epoch(0))
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(batches, again, strict=True)
    )
    ep1 = torch.cat([b[1] for b in loader.epoch(1)])
    assert ep1.tolist() != seen.tolist() and sorted(ep1.tolist()) == list(range(50))
    # epoch 5 is the same whether or not epochs 0-4 ran before (resume)
    fresh = torch.cat([b[1] for b in BatchLoader(x, y, **kw).epoch(5)])
    for e in range(5):
        list(loader.epoch(e))
    assert torch.equal(fresh, torch.cat([b[1] for b in loader.epoch(5)]))
    other_seed = torch.cat([b[1] for b in BatchLoader(x, y, **{**kw, "seed": 4}).epoch(0)])
    assert other_seed.tolist() != seen.tolist()
    # no shuffle: in order; drop_last drops the short batch
    plain = BatchLoader(x, y, batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, drop_last=True)
    assert len(plain) == 6
    assert torch.cat([b[1] for b in plain.epoch(0)]).tolist() == list(range(48))
    assert derive_seed(1, 2) != derive_seed(2, 1) and 0 <= derive_seed(-5, 7) < 2**63


def test_batch_loader_normalisation() -> None:
    x, y = _data(n=10)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    xb, yb = next(iter(BatchLoader(x, y, batch_size=10, mean=mean, std=std).epoch(0)))
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(xb, (x.float() / 255 - m) / s)
    assert torch.equal(yb, y)


def test_batch_loader_rejects_bad_arguments() -> None:
    x, y = _data(n=4)
    with pytest.raises(DataError, match="allowed: none, crop_flip"):
        BatchLoader(x, y, batch_size=2, mean=(0,) * 3, std=(1,) * 3, augment="flip")
    with pytest.raises(DataError, match="batch_size"):
        BatchLoader(x, y, batch_size=0, mean=(0,) * 3, std=(1,) * 3)
    with pytest.raises(DataError, match="mean/std"):
        BatchLoader(x, y, batch_size=2, mean=(0,), std=(1,))
    with pytest.raises(DataError, match="uint8"):
        BatchLoader(x.float(), y, batch_size=2, mean=(0,) * 3, std=(1,) * 3)


def test_crop_flip_identity_flip_and_windows() -> None:
    x, _ = _data(n=16, h=7, w=5)
    p = 4
    centre = torch.full((16, 2), p, dtype=torch.int64)
    no_flip = torch.zeros(16, dtype=torch.bool)
    assert torch.equal(crop_flip(x, centre, no_flip, p), x)  # zero shift, no flip: identity
    assert torch.equal(crop_flip(x, centre, ~no_flip, p), x.flip(-1))  # flip only
    g = torch.Generator().manual_seed(1)
    offsets = torch.randint(0, 2 * p + 1, (16, 2), generator=g)
    flips = torch.rand(16, generator=g) < 0.5
    out = crop_flip(x, offsets, flips, p)
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    for i in range(16):  # reference: the padded window, flipped where asked
        r, c = offsets[i].tolist()
        window = padded[i, :, r : r + 7, c : c + 5]
        assert torch.equal(out[i], window.flip(-1) if flips[i] else window)
    corner = crop_flip(x, torch.zeros(16, 2, dtype=torch.int64), no_flip, p)
    assert (corner[:, :, :p, :] == 0).all() and torch.equal(corner[:, :, p:, p:], x[:, :, :-p, :-p])


def test_batch_loader_crop_flip_is_deterministic() -> None:
    x, y = _data(n=40, h=32, w=32)
    kw = dict(
        batch_size=16, mean=(0.5,) * 3, std=(0.5,) * 3, shuffle=True, augment="crop_flip", seed=9
    )
    a = list(BatchLoader(x, y, **kw).epoch(2))
    b = list(BatchLoader(x, y, **kw).epoch(2))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b, strict=True))
    assert a[0][0].shape == (16, 3, 32, 32)
    c = list(BatchLoader(x, y, **kw).epoch(3))
    assert not torch.equal(a[0][0], c[0][0])
    # augmentation changes images but keeps labels; the pixels all come from the image or padding
    plain = BatchLoader(x, y, **{**kw, "augment": "none"})
    xa, ya = a[0]
    xp, yp = next(iter(plain.epoch(2)))
    assert torch.equal(ya, yp) and not torch.equal(xa, xp)
    # each augmented image is exactly one padded window of its source, flipped or not
    raw = ((xa * 0.5 + 0.5) * 255).round().to(torch.uint8)
    grid = torch.cartesian_prod(torch.arange(9), torch.arange(9))  # all 81 offsets
    for img, label in zip(raw, ya, strict=True):
        src = x[label].expand(81, -1, -1, -1)
        cands = torch.cat([crop_flip(src, grid, torch.full((81,), f)) for f in (False, True)])
        assert (cands == img).flatten(1).all(1).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_loader_same_batches_on_gpu() -> None:
    x, y = _data(n=40, h=32, w=32)
    kw = dict(
        batch_size=16, mean=(0.5,) * 3, std=(0.5,) * 3, shuffle=True, augment="crop_flip", seed=2
    )
    cpu = list(BatchLoader(x, y, **kw).epoch(1))
    gpu = list(BatchLoader(x, y, device="cuda", **kw).epoch(1))
    assert gpu[0][0].device.type == "cuda"
    for (a, ay), (b, by) in zip(cpu, gpu, strict=True):
        assert torch.equal(ay, by.cpu()) and torch.allclose(a, b.cpu(), atol=1e-6)


# -- registry -------------------------------------------------------------------------------------


def test_unknown_dataset_lists_registered_names() -> None:
    assert {"cifar10", "cifar100", "fashion_mnist", "mnist", "synthetic"} <= set(DATASETS.names())
    with pytest.raises(RegistryError, match="unknown dataset 'nosuchdata'; registered: .*cifar10"):
        load_dataset("nosuchdata")
    assert math.isfinite(len(DATASETS))

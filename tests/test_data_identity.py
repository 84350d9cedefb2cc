"""The data's identity is its content, part of the run id (issue 10, class 1), and corrupt
data files give one-line DataErrors naming the file (issue 10, class 5)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import prunebench
import prunebench.data.identity as identity_mod
import prunebench.data.mnist as mnist_mod
import prunebench.data.paths as paths_mod
from prunebench.cli import app
from prunebench.data import clear_memo, load_dataset
from prunebench.data.core import data_identity
from prunebench.errors import DataError
from prunebench.plan import plan
from prunebench.recipe import build_recipe

IDX = {
    "train-images-idx3-ubyte": 2051,
    "train-labels-idx1-ubyte": 2049,
    "t10k-images-idx3-ubyte": 2051,
    "t10k-labels-idx1-ubyte": 2049,
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Private cache dir, no PRUNEBENCH_DATA, no system copies, no network, fresh memos."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("PRUNEBENCH_DATA", raising=False)
    monkeypatch.setattr(paths_mod, "SYSTEM_ROOTS", ())

    def no_network(*args: object, **kwargs: object) -> object:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    clear_memo()
    yield
    clear_memo()


def _idx(arr: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_fashion(folder: Path, *, n_train: int = 32, n_test: int = 16, pixel: int = 0) -> Path:
    """Tiny Fashion-MNIST IDX .gz files; ``pixel`` is the value of train image 0's pixel 0."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8)
    train[0, 0, 0] = pixel
    arrays = {
        "train-images-idx3-ubyte": train,
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        # mtime=0: the same arrays give the same bytes, whenever they are written
        (folder / f"{stem}.gz").write_bytes(gzip.compress(_idx(arr, IDX[stem]), mtime=0))
    return folder


def _recipe(data_dir: Path | None, **data):
    return build_recipe(
        {
            "seed": 0,
            "data": {
                "name": "fashion_mnist",
                "batch_size": 16,
                "eval_batch_size": 64,
                "val_size": 8,
                **({"data_dir": str(data_dir)} if data_dir else {}),
                **data,
            },
            "model": {"name": "mlp", "kwargs": {"depth": 2, "width": 8}},
            "pretrain": {"epochs": 1, "lr": "0:0.05"},
            "prune": None,
            "retrain": None,
        }
    )


# -- the identity is the content -----------------------------------------------------------------


def test_one_pixel_gives_another_run_that_trains_anew(tmp_path):
    a = write_fashion(tmp_path / "copy-a")
    b = write_fashion(tmp_path / "copy-b", pixel=1)
    out = tmp_path / "runs"
    first = prunebench.run(_recipe(a), out=out)
    second = prunebench.run(_recipe(b), out=out)
    assert second.id != first.id
    ids = [plan(_recipe(d))[0].config["data_id"] for d in (a, b)]
    assert ids[0] != ids[1]
    # the label is the key's identity, never the other copy's
    assert first.result["data"]["checksum"] == ids[0]
    assert second.result["data"]["checksum"] == ids[1]
    assert str(b) in second.result["data"]["source"]
    # the second copy was trained, not looked up: its own dense stage and metrics
    assert len(list((out / "stages").glob("pretrain-*"))) == 2
    assert (out / second.id / "metrics.jsonl").is_file()
    # the recipe without data_dir and the same files in the cache: the same content, one id
    shutil.copytree(a, tmp_path / "xdg-cache" / "prunebench" / "fashion_mnist")
    clear_memo()
    assert plan(_recipe(None))[-1].key == first.id
    assert prunebench.run(_recipe(None), out=out).result == first.result


def test_same_bytes_in_two_folders_give_one_id(tmp_path):
    a = write_fashion(tmp_path / "one")
    b = tmp_path / "elsewhere" / "two"
    shutil.copytree(a, b)
    ka, kb = plan(_recipe(a)), plan(_recipe(b))
    assert [s.key for s in ka] == [s.key for s in kb]
    assert "data_dir" not in ka[0].config["data"]
    # a recipe knob still counts, and the identity sits in the dense stage every key hashes
    assert plan(_recipe(a, val_size=4))[0].key != ka[0].key
    assert ka[0].config["data_id"] == data_identity("fashion_mnist", a)


def test_synthetic_identity_hashes_its_parameters():
    default = data_identity("synthetic")
    assert default == data_identity("synthetic", n_train=512, seed=0)  # defaults filled in
    assert data_identity("synthetic", seed=1) != default
    assert data_identity("synthetic", n_train=64) != default
    assert load_dataset("synthetic").checksum  # still the tensors' checksum on the Dataset


def test_checksums_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    calls: list[str] = []
    real = identity_mod._sha256_file

    def counting(path: Path) -> str:
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(identity_mod, "_sha256_file", counting)
    folder = write_fashion(tmp_path / "data")
    first = data_identity("fashion_mnist", folder)
    assert len(calls) == 4
    assert data_identity("fashion_mnist", folder) == first and len(calls) == 4
    clear_memo()  # a new process: the JSON cache answers
    assert data_identity("fashion_mnist", folder) == first and len(calls) == 4
    assert (tmp_path / "xdg-cache" / "prunebench" / identity_mod.CACHE_NAME).is_file()
    # a touched file (same bytes, new mtime) is hashed again, and only that one
    target = folder / "t10k-labels-idx1-ubyte.gz"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert data_identity("fashion_mnist", folder) == first
    assert calls[4:] == ["t10k-labels-idx1-ubyte.gz"]
    # a corrupt cache file costs a re-hash, never an error
    (tmp_path / "xdg-cache" / "prunebench" / identity_mod.CACHE_NAME).write_text("{oops")
    clear_memo()
    assert data_identity("fashion_mnist", folder) == first and len(calls) == 9


def test_identity_never_decodes_the_data(tmp_path, monkeypatch):
    def boom(*args: object, **kwargs: object) -> object:
        raise AssertionError("decoded")

    monkeypatch.setattr(mnist_mod, "read_idx", boom)
    folder = write_fashion(tmp_path / "data")
    assert len(data_identity("fashion_mnist", folder)) == 16
    assert plan(_recipe(folder))[0].config["data_id"]


def test_missing_data_at_planning_is_a_one_line_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        plan(_recipe(tmp_path / "nowhere"))
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable data in"):
        plan(_recipe(tmp_path / "empty"))
    with pytest.raises(DataError, match="could not download fashion_mnist") as err:
        plan(_recipe(None))  # nothing anywhere, no network
    assert "\n" not in str(err.value)


# -- corrupt and truncated files -----------------------------------------------------------------


def _load_error(data_dir: Path, name: str = "fashion_mnist") -> str:
    clear_memo()
    with pytest.raises(DataError) as err:
        load_dataset(name, data_dir)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_gz_with_valid_header_and_corrupt_body(tmp_path):
    folder = write_fashion(tmp_path / "data")
    path = folder / "train-images-idx3-ubyte.gz"
    blob = bytearray(path.read_bytes())
    blob[12:-8] = b"\xff" * (len(blob) - 20)  # the 10-byte gzip header stays valid
    path.write_bytes(bytes(blob))
    msg = _load_error(folder)
    assert str(path) in msg and "corrupt" in msg
    # and through the CLI: exit code 2, one line, no traceback, nothing stored
    res = CliRunner().invoke(
        app,
        [
            "run",
            "--out",
            str(tmp_path / "runs"),
            "--quiet",
            "--set",
            f"data.data_dir={folder}",
            *_cli_recipe(tmp_path),
        ],
    )
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and str(path) in res.output.replace("\n", "")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("*/result.json"))


def _cli_recipe(tmp_path: Path) -> list[str]:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "data: {name: fashion_mnist, batch_size: 16, val_size: 8}\n"
        "model: {name: mlp, kwargs: {depth: 2, width: 8}}\n"
        "pretrain: {epochs: 1, lr: '0:0.05'}\nprune: null\nretrain: null\n"
    )
    return [str(path)]


def test_truncated_gz_and_idx_of_the_wrong_size(tmp_path):
    folder = write_fashion(tmp_path / "data")
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:25])
    msg = _load_error(folder)
    assert str(path) in msg and "truncated" in msg

    plain = write_fashion(tmp_path / "plain")
    for gz in plain.glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    images = plain / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])  # 5 bytes short of what the header says
    msg = _load_error(plain)
    assert str(images) in msg and "header says" in msg
    images.write_bytes(images.read_bytes()[:10])  # shorter than its own header
    assert str(images) in _load_error(plain)


def _cifar_batches(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        (folder / f).write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1]}, protocol=2))
    return folder


def test_truncated_cifar_pickle_and_tar(tmp_path):
    batches = _cifar_batches(tmp_path / "cifar-10-batches-py")
    bad = batches / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    msg = _load_error(batches, "cifar10")
    assert str(bad) in msg and "truncated" in msg

    good = _cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(good, arcname="cifar-10-batches-py")
    archive.write_bytes(archive.read_bytes()[:-200])
    msg = _load_error(archive, "cifar10")
    assert str(archive) in msg and "truncated" in msg


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_unreadable_image_and_corrupt_member_in_a_zip(tmp_path):
    rng = np.random.default_rng(0)
    good = _png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    archive = tmp_path / "cifar10-copy.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("train", "test"):
            for c in range(10):
                zf.writestr(f"{split}/c{c}/0.png", good)
        zf.writestr("train/c3/1.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    msg = _load_error(archive, "cifar10")
    assert "train/c3/1.jpg" in msg and "cannot decode image" in msg

    stored = tmp_path / "cifar10-stored.zip"
    with zipfile.ZipFile(stored, "w", compression=zipfile.ZIP_STORED) as zf:
        for split in ("train", "test"):
            for c in range(10):
                zf.writestr(f"{split}/c{c}/0.png", good)
    blob = bytearray(stored.read_bytes())
    at = blob.index(good[:16]) + 40  # inside the first member's data: its CRC fails
    blob[at] ^= 0xFF
    stored.write_bytes(bytes(blob))
    msg = _load_error(stored, "cifar10")
    assert str(stored) in msg and ".png" in msg


def test_synthetic_difficulty_knobs_keep_earlier_ids():
    """``contrast`` / ``noise`` were added later: at their old fixed values they leave the
    identity (and the tensors) as before; other values change both; bad values are refused."""
    import pytest

    from prunebench.errors import DataError

    default = data_identity("synthetic")
    assert data_identity("synthetic", contrast=0.3, noise=0.25) == default
    assert data_identity("synthetic", noise=0.35) != default
    assert data_identity("synthetic", contrast=0.2) != data_identity("synthetic", noise=0.35)
    assert load_dataset("synthetic", noise=0.25).checksum == load_dataset("synthetic").checksum
    assert load_dataset("synthetic", noise=0.5).checksum != load_dataset("synthetic").checksum
    for bad in ({"noise": -0.1}, {"contrast": 2}, {"noise": "x"}, {"contrast": True}):
        with pytest.raises(DataError, match="must be a number in"):
            load_dataset("synthetic", **bad)

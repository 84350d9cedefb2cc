"""ImageNet / ImageNet-100: the one-time conversion into a memory-mapped store, the registered
datasets that open it, the streaming loader (random-resized-crop + flip on the device, the
evaluation centre crop), the ``prunebench data`` CLI and the paper presets (issue 12, part 5).

Everything runs on a generated ImageNet-layout tree of small JPEGs."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from prunebench.cli import app
from prunebench.context import prepare, resolve_device
from prunebench.data import clear_memo, data_identity, load_dataset
from prunebench.data.imagenet import (
    IMAGENET100_CLASSES,
    decode_resize,
    list_source,
    prepare_store,
    read_class_list,
)
from prunebench.data.shards import (
    ShardLoader,
    StoreView,
    center_crop,
    crop_resize,
    eval_window,
    open_store,
    sample_crop_boxes,
)
from prunebench.errors import DataError
from prunebench.recipe import load_recipe

runner = CliRunner()
SIZES = [(40, 56), (64, 48), (50, 50), (33, 70)]  # (height, width)
N_CLASSES, N_TRAIN, N_VAL = 10, 24, 6
S = 32  # the stored size of the test stores
WNIDS = [f"n{1000 + 7 * c:08d}" for c in range(N_CLASSES)]


def _jpeg(path: Path, rng: np.random.Generator, hw: tuple[int, int], label: int) -> None:
    """A learnable image: a class-dependent colour plus noise."""
    base = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256])
    img = np.clip(base + rng.normal(0, 30, (*hw, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=90)


def make_tree(root: Path, wnids: list[str] = WNIDS, n_train: int = N_TRAIN,
              n_val: int = N_VAL, sizes: list[tuple[int, int]] = SIZES) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, wnid in enumerate(wnids):
            for i in range(n):
                _jpeg(root / split / wnid / f"{wnid}_{i}.JPEG", rng, sizes[i % len(sizes)], c)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("imagenet") / "src")


@pytest.fixture(scope="module")
def store(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "full"
    prepare_store(tree, out, size=S, workers=2, shard_images=64)
    return out


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No store in the user cache or $PRUNEBENCH_DATA leaks into a test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PRUNEBENCH_DATA", raising=False)
    clear_memo()


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


# -- conversion -----------------------------------------------------------------------------


def test_conversion_shapes_labels_classes_manifest(tree: Path, store: Path) -> None:
    s = open_store(store, verify=True)
    assert s.classes == sorted(WNIDS)
    assert (store / "classes.txt").read_text().split() == sorted(WNIDS)
    m = json.loads((store / "manifest.json").read_text())
    assert m["size"] == S and m["num_classes"] == N_CLASSES and m["shard_images"] == 64
    train, val = m["splits"]["train"], m["splits"]["val"]
    assert (train["count"], val["count"]) == (N_CLASSES * N_TRAIN, N_CLASSES * N_VAL)
    assert [sh["count"] for sh in train["shards"]] == [64, 64, 64, 48]
    for sh in train["shards"] + val["shards"]:
        assert (store / sh["file"]).stat().st_size == sh["bytes"] and len(sh["sha256"]) == 64
    assert s.images["train"].shape == (240, 3, S, S)
    # labels: classes in sorted order, each class's files in name order
    want = torch.arange(N_CLASSES).repeat_interleave(N_TRAIN)
    assert torch.equal(s.labels["train"], want)
    assert torch.equal(s.labels["val"], torch.arange(N_CLASSES).repeat_interleave(N_VAL))
    # the stored pixels: the image's central square resized to S x S (PIL reference: crop
    # the square, then resize; sizes with a whole-pixel square offset)
    listing = list_source(tree)
    for i in (0, 1, 2, 4, 100, 238):
        _label, ref = listing.entries["train"][i]
        got = s.images["train"].gather(np.array([i]))[0]
        assert np.array_equal(got, decode_resize((tree / ref).read_bytes(), ref, S))
        with Image.open(tree / ref) as im:
            w, h = im.size
            short = min(w, h)
            left, top = (w - short) // 2, (h - short) // 2
            square = im.convert("RGB").crop((left, top, left + short, top + short))
            want_img = np.asarray(square.resize((S, S), Image.Resampling.BILINEAR))
        diff = np.abs(got.astype(int) - want_img.transpose(2, 0, 1).astype(int))
        # equal inside; the border pixels differ a little (the box sees past the square)
        assert diff[:, 1:-1, 1:-1].max() <= 1 and diff.mean() < 0.5


def test_class_list_subset(tree: Path, store: Path, tmp_path: Path) -> None:
    picked = [WNIDS[7], WNIDS[2], WNIDS[5]]
    lst = tmp_path / "three.txt"
    lst.write_text("# a subset\n" + "\n".join(picked) + "\n\n")
    assert read_class_list(lst) == picked
    out = tmp_path / "sub"
    prepare_store(tree, out, classes=read_class_list(lst), size=S, workers=2, shard_images=64)
    sub, full = open_store(out), open_store(store)
    assert sub.classes == sorted(picked)
    assert len(sub.labels["train"]) == 3 * N_TRAIN and len(sub.labels["val"]) == 3 * N_VAL
    # same files -> same pixels as in the full store
    for j, wnid in enumerate(sub.classes):
        c = full.classes.index(wnid)
        rows = np.arange(c * N_TRAIN, (c + 1) * N_TRAIN)
        mine = np.arange(j * N_TRAIN, (j + 1) * N_TRAIN)
        assert np.array_equal(sub.images["train"].gather(mine), full.images["train"].gather(rows))
        assert (sub.labels["train"][mine] == j).all()
    assert read_class_list("imagenet100") == list(IMAGENET100_CLASSES)
    assert len(set(IMAGENET100_CLASSES)) == 100


def test_tar_per_class_layout_gives_the_same_store(tree: Path, store: Path,
                                                   tmp_path: Path) -> None:
    src = tmp_path / "tars"
    shutil.copytree(tree / "val", src / "val")
    (src / "train").mkdir(parents=True)
    for cls in (tree / "train").iterdir():
        with tarfile.open(src / "train" / f"{cls.name}.tar", "w") as tar:
            for f in sorted(cls.iterdir()):
                tar.add(f, arcname=f.name)
    out = tmp_path / "from-tars"
    prepare_store(src, out, size=S, workers=2, shard_images=64)
    a, b = open_store(out), open_store(store)
    assert a.identity == b.identity
    assert np.array_equal(a.images["train"].gather(np.arange(240)),
                          b.images["train"].gather(np.arange(240)))


def test_interrupted_conversion_resumes_to_an_identical_store(tree: Path, store: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    calls = []

    def stop_after_two(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise KeyboardInterrupt  # like Ctrl-C mid-way

    with pytest.raises(KeyboardInterrupt):
        prepare_store(tree, out, size=S, workers=1, shard_images=64, progress=stop_after_two)
    assert not (out / "manifest.json").exists() and (out / "plan.json").is_file()
    assert len(list(out.glob("*/shard-*.npy"))) >= 2
    with pytest.raises(DataError, match="incomplete.*rerun the same"):
        open_store(out)
    with pytest.raises(DataError, match="incomplete"):
        load_dataset("imagenet", out)
    # a shard lost as well (e.g. deleted by hand): it is written again
    next(iter(sorted(out.glob("train/shard-*.npy")))).unlink()
    res = prepare_store(tree, out, size=S, workers=2, shard_images=64)
    assert res.shards_kept >= 1 and res.shards_written >= 1
    assert files_of(out) == files_of(store)
    again = prepare_store(tree, out, size=S, workers=2, shard_images=64)
    assert again.already_complete
    with pytest.raises(DataError, match="another source, class list or size"):
        prepare_store(tree, out, size=S + 8, workers=2, shard_images=64)


def test_killed_conversion_resumes_to_an_identical_store(tree: Path, store: Path,
                                                         tmp_path: Path) -> None:
    """SIGKILL in the middle (no cleanup runs): the rerun finishes it, byte for byte."""
    out = tmp_path / "killed"
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from prunebench.data.imagenet import prepare_store

        def die(done, total):
            if done == 3:
                os.kill(os.getpid(), signal.SIGKILL)

        prepare_store(Path({str(tree)!r}), Path({str(out)!r}), size={S}, workers=2,
                      shard_images=64, progress=die)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "manifest.json").exists()
    with pytest.raises(DataError, match="incomplete"):
        open_store(out)
    res = prepare_store(tree, out, size=S, workers=2, shard_images=64)
    assert res.shards_kept >= 3
    assert files_of(out) == files_of(store)


def test_corrupt_store_is_refused(store: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(store, bad)
    shard = bad / "train" / "shard-00001.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size, other content: only the full check sees it
    shard.write_bytes(bytes(data))
    open_store(bad)
    with pytest.raises(DataError, match="does not match its sha256"):
        open_store(bad, verify=True)
    line = one_error_line(runner.invoke(app, ["data", "verify", str(bad)]))
    assert "shard-00001.npy" in line
    shard.write_bytes(bytes(data[:-100]))  # truncated
    with pytest.raises(DataError, match="corrupt or incomplete.*shard-00001.npy has"):
        load_dataset("imagenet", bad)
    shutil.rmtree(bad)
    shutil.copytree(store, bad)
    (bad / "val" / "shard-00000.npy").unlink()
    with pytest.raises(DataError, match="val/shard-00000.npy is missing"):
        open_store(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable manifest.json"):
        data_identity("imagenet", bad)
    res = runner.invoke(app, ["data", "verify", str(tmp_path / "nowhere")])
    assert "holds no prepared store" in one_error_line(res)


def test_bad_input_exits_2_and_writes_nothing(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    no_train = tmp_path / "no-train"
    (no_train / "val").mkdir(parents=True)
    line = one_error_line(runner.invoke(
        app, ["data", "prepare", "imagenet", str(no_train), "--out", str(out)]))
    assert "has no train/ folder" in line and str(no_train) in line
    lst = tmp_path / "list.txt"
    lst.write_text(f"{WNIDS[0]}\nn09999999\n")
    line = one_error_line(runner.invoke(
        app, ["data", "prepare", "imagenet", str(tree), "--out", str(out), "--classes",
              str(lst)]))
    assert "'n09999999'" in line and "train/n09999999/" in line
    flat_val = tmp_path / "flat-val"
    shutil.copytree(tree / "train", flat_val / "train")
    (flat_val / "val").mkdir()
    shutil.copy(next((tree / "val" / WNIDS[0]).iterdir()), flat_val / "val" / "x.JPEG")
    line = one_error_line(runner.invoke(
        app, ["data", "prepare", "imagenet", str(flat_val), "--out", str(out)]))
    assert "holds its images directly" in line and "valprep.sh" in line
    line = one_error_line(runner.invoke(
        app, ["data", "prepare", "imagenet", str(tree), "--out", str(out), "--classes",
              str(tmp_path / "missing.txt")]))
    assert "cannot read class list" in line and "missing.txt" in line
    no_val_class = tmp_path / "no-val-class"
    shutil.copytree(tree, no_val_class)
    shutil.rmtree(no_val_class / "val" / WNIDS[4])
    line = one_error_line(runner.invoke(
        app, ["data", "prepare", "imagenet", str(no_val_class), "--out", str(out)]))
    assert f"'{WNIDS[4]}'" in line and f"val/{WNIDS[4]}/" in line
    line = one_error_line(runner.invoke(
        app, ["data", "prepare", "imagenet100", str(tree), "--out", str(out)]))
    assert IMAGENET100_CLASSES[0] in line  # the built-in list's classes are not in the tree
    broken = tmp_path / "broken"
    shutil.copytree(tree, broken)
    (broken / "train" / WNIDS[3] / "zz_broken.JPEG").write_bytes(b"not a jpeg at all")
    line = one_error_line(runner.invoke(
        app, ["data", "prepare", "imagenet", str(broken), "--out", str(out), "--size",
              str(S), "--shard-images", "64"]))
    assert "cannot decode image" in line and "zz_broken.JPEG" in line
    assert not out.exists()
    line = one_error_line(runner.invoke(
        app, ["data", "prepare", "cifar10", str(tree), "--out", str(out)]))
    assert "allowed: imagenet, imagenet100" in line
    assert not out.exists()


def test_cli_prepare_and_classes(tree: Path, store: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-store"
    res = runner.invoke(app, ["data", "prepare", "imagenet", str(tree), "--out", str(out),
                              "--size", str(S), "--workers", "2", "--shard-images", "64", "-q"])
    assert res.exit_code == 0, res.output
    assert "10 classes, 240 train / 60 val images at 32px" in res.output
    assert f"data.data_dir={out}" in res.output
    assert files_of(out) == files_of(store)
    res = runner.invoke(app, ["data", "classes", "imagenet100"])
    assert res.exit_code == 0 and res.output.split() == list(IMAGENET100_CLASSES)


# -- the datasets and their identity --------------------------------------------------------


def test_dataset_is_streamed_not_materialised(store: Path, tmp_path: Path) -> None:
    ds = load_dataset("imagenet", store, crop=24)
    assert ds.streaming and ds.num_classes == N_CLASSES and ds.input_size == (24, 24)
    images = ds.store.images["train"]
    assert all(isinstance(sh, np.memmap) for sh in images.shards)
    assert isinstance(ds.train_x, StoreView) and ds.train_x.shape == (240, 3, 24, 24)
    assert ds.checksum == open_store(store).identity[:16]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": {"name": "imagenet", "data_dir": str(store), "batch_size": 32,
                 "val_size": 40, "augment": True, "kwargs": {"crop": 24}},
        "model": {"name": "mlp", "kwargs": {"depth": 2, "width": 16}},
        "pretrain": {"epochs": 1, "lr": "0:0.1"},
        "prune": {"method": "l1", "layers": 0.5},
        "retrain": {"epochs": 1, "lr": "0:0.01"}}))
    ctx = prepare(load_recipe(recipe), resolve_device("cpu"))
    assert isinstance(ctx.train_x, StoreView) and ctx.train_x.shape[0] == 200
    assert ctx.loaders.val is not None and ctx.loaders.val.num_samples == 40
    assert ctx.loaders.test.num_samples == N_CLASSES * N_VAL
    assert isinstance(ctx.loaders.train, ShardLoader) and ctx.loaders.train.augment == "rrc_flip"
    assert ctx.example.shape == (8, 3, 24, 24)
    # a few rows as a tensor (what JSV inputs take): the evaluation views of those rows
    few = ctx.train_x[torch.tensor([5, 0, 3])]
    rows = ctx.train_x.rows[torch.tensor([5, 0, 3])]
    assert torch.equal(few, center_crop(torch.from_numpy(images.gather(rows)), 24))


def test_identity_from_the_manifest_changes_with_the_content(tree: Path, store: Path,
                                                             tmp_path: Path) -> None:
    ident = data_identity("imagenet", store)
    assert len(ident) == 16
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    assert data_identity("imagenet", copy) == ident  # a path is not an identity
    other = tmp_path / "other"
    prepare_store(tree, other, size=S + 8, workers=2, shard_images=64)
    assert data_identity("imagenet", other) != ident
    assert data_identity("imagenet100", store) != ident  # the dataset name is part of it
    with pytest.raises(DataError, match="no prepared store found.*prunebench data prepare "
                                        "imagenet100"):
        data_identity("imagenet100")
    with pytest.raises(DataError, match="no usable data in .*prunebench data prepare"):
        data_identity("imagenet", tmp_path)


def test_crop_option_checks(store: Path) -> None:
    with pytest.raises(DataError, match="crop 48 exceeds the store's image size 32.*--size >= 55"):
        load_dataset("imagenet", store, crop=48)
    with pytest.raises(DataError, match="crop must be an int >= 8"):
        load_dataset("imagenet", store, crop=4)
    with pytest.raises(DataError, match="has 10 classes, expected 100"):
        load_dataset("imagenet100", store)


def test_imagenet100_store_from_the_builtin_list(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "in100", list(IMAGENET100_CLASSES), 1, 1, [(20, 24)])
    out = tmp_path / "in100-store"
    res = runner.invoke(app, ["data", "prepare", "imagenet100", str(src), "--out", str(out),
                              "--size", "16", "-q"])
    assert res.exit_code == 0, res.output
    ds = load_dataset("imagenet100", out, crop=12)
    assert ds.num_classes == 100 and ds.classes == sorted(IMAGENET100_CLASSES)
    assert "CMC list" in ds.source


# -- the loader -----------------------------------------------------------------------------


def _loader(store: Path, **kw) -> ShardLoader:
    s = open_store(store)
    args = {"crop": 24, "batch_size": 32, "mean": (0.5,) * 3, "std": (0.25,) * 3,
            "shuffle": True, "augment": "rrc_flip", "seed": 7}
    args.update(kw)
    rows = args.pop("rows", torch.arange(len(s.labels["train"])))
    return ShardLoader(s.images["train"], s.labels["train"], rows, **args)


def test_loader_batches_are_a_pure_function_of_seed_and_epoch(store: Path) -> None:
    ld = _loader(store)
    a, b = list(ld.epoch(3)), list(_loader(store, chunk_batches=3).epoch(3))
    assert len(a) == len(ld) == math.ceil(240 / 32)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):  # chunking changes nothing
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert xa.shape[1:] == (3, 24, 24) and xa.dtype == torch.float32 and ya.dtype == torch.int64
    c = list(_loader(store, prefetch=False).epoch(3))  # a resumed run: a fresh loader
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, c, strict=True))
    d = list(ld.epoch(4))
    assert not torch.equal(a[0][0], d[0][0])
    # every sample once per epoch, the labels following the order
    order, boxes, flips = ld.plan(3)
    assert sorted(order.tolist()) == list(range(240))
    assert torch.equal(torch.cat([y for _, y in a]), ld.y[order])
    assert flips is not None and 0 < int(flips.sum()) < 240
    assert boxes is not None and len(set(boxes[:, 2].tolist())) > 5  # crop sizes vary


def test_flip_mirrors_and_a_full_box_is_the_image(store: Path) -> None:
    s = open_store(store)
    x = torch.from_numpy(s.images["train"].gather(np.arange(6)))
    g = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(6, S, S, g)
    plain = crop_resize(x, boxes, torch.zeros(6, dtype=torch.bool), 24)
    flipped = crop_resize(x, boxes, torch.ones(6, dtype=torch.bool), 24)
    assert torch.allclose(flipped, plain.flip(-1), atol=1e-3)
    full = torch.tensor([[0, 0, S, S]] * 6)
    same = crop_resize(x, full, torch.zeros(6, dtype=torch.bool), S)
    assert torch.allclose(same, x.float(), atol=1e-3)
    # an integer box at its own size is a pure crop
    box = torch.tensor([[3, 5, 20, 20]] * 6)
    assert torch.allclose(crop_resize(x, box, torch.zeros(6, dtype=torch.bool), 20),
                          x[:, :, 3:23, 5:25].float(), atol=1e-3)


def test_eval_crop_equals_a_pil_reference(store: Path) -> None:
    s = open_store(store)
    imgs = s.images["val"].gather(np.arange(60))
    ld = ShardLoader(s.images["val"], s.labels["val"], torch.arange(60), crop=24,
                     batch_size=25, mean=(0.5,) * 3, std=(0.25,) * 3)
    xs = torch.cat([x for x, _ in ld.epoch(0)])
    got = (xs * 0.25 + 0.5) * 255  # undo the normalisation
    off, side = eval_window(S)
    assert (off, side) == (2, 28)
    for i in range(60):
        im = Image.fromarray(imgs[i].transpose(1, 2, 0)).crop((off, off, off + side, off + side))
        ref = np.asarray(im.resize((24, 24), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
        diff = (got[i] - torch.from_numpy(ref.astype(np.float32))).abs()
        assert float(diff.max()) <= 1.01 and float(diff.mean()) < 0.3
    # the window at its own size is a pure crop (S = 256, crop = 224 in the real protocol)
    exact = center_crop(torch.from_numpy(imgs), 28)
    assert torch.equal(exact, torch.from_numpy(imgs[:, :, 2:30, 2:30]))
    assert eval_window(256) == (16, 224)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 64), height=st.integers(1, 300), width=st.integers(1, 300),
       seed=st.integers(0, 2**31))
def test_crop_boxes_lie_inside_and_respect_the_bounds(n: int, height: int, width: int,
                                                      seed: int) -> None:
    boxes = sample_crop_boxes(n, height, width, torch.Generator().manual_seed(seed))
    top, left, h, w = boxes.unbind(1)
    assert (h >= 1).all() and (w >= 1).all()
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    # a sampled box: area fraction in [0.08, 1] and aspect in [3/4, 4/3], up to the rounding
    # of its sides to whole pixels; else the fallback: the whole image clipped to the ratio
    area = (h * w).double() / (height * width)
    ratio = w.double() / h.double()
    slack_a = (h + w + 1).double() / (height * width)
    slack_r = (1.0 + ratio) / h.double()
    sampled = (area >= 0.08 - slack_a) & (ratio >= 0.75 - slack_r) & (ratio <= 4 / 3 + slack_r)
    fallback = ((h == height) | (w == width)) & (top == (height - h) // 2) & \
        (left == (width - w) // 2)
    assert (sampled | fallback).all()


# -- end to end, and the paper presets ------------------------------------------------------


def test_tiny_run_on_the_store_end_to_end(store: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "in.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "in-tiny",
        "data": {"name": "imagenet", "data_dir": str(store), "batch_size": 32,
                 "eval_batch_size": 64, "val_size": 40, "augment": True,
                 "kwargs": {"crop": 16}},
        "model": {"name": "resnet18"},
        "pretrain": {"epochs": 2, "lr": "0:0.05"},
        "prune": {"method": "l1", "layers": "*layer*.conv1:0.5"},
        "retrain": {"epochs": 1, "lr": "0:0.01"},
        "measure": {"jsv_every": 1, "jsv_samples": 4}}))
    out = tmp_path / "runs"
    res = runner.invoke(app, ["run", str(recipe), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    results = list(out.glob("*/result.json"))
    assert len(results) == 1
    r = json.loads(results[0].read_text())
    assert r["status"] == "done" and r["stages"]["pretrain"] and r["pruned"]
    assert r["data"]["name"] == "imagenet" and r["data"]["train_images"] == 200
    assert r["data"]["checksum"] == data_identity("imagenet", store, crop=16)
    assert 0.0 <= r["test_acc"] <= 100.0
    assert r["dense"]["epochs"] == 2 and [t["phase"] for t in r["trajectory"]] == [
        "pretrain", "retrain"]


@pytest.mark.parametrize("study", ["scratch-vs-inherit", "lr-catch-up"])
def test_paper_presets_are_the_imagenet100_protocol(study: str, tmp_path: Path) -> None:
    from prunebench.studies import expand_study, load_study

    cells = expand_study(load_study(study), "paper")
    r = cells[0].recipe
    assert r.data.name == "imagenet100" and r.model.name == "resnet34"
    assert r.data.batch_size == 256 and r.data.augment
    assert r.pretrain is not None and r.pretrain.epochs == 120
    assert r.pretrain.lr == "0:0.1,30:0.01,60:0.001,90:0.0001,105:1e-05"
    assert {c.recipe.prune.method for c in cells} == {"l1"}
    assert all("*layer*.conv1:" in str(c.recipe.prune.layers) for c in cells)
    # missing data: one line saying how to prepare it, nothing written
    out = tmp_path / "runs"
    line = one_error_line(runner.invoke(app, ["study", study, "--preset", "paper", "--out",
                                              str(out), "--quiet"]))
    assert "no prepared store found" in line and "prunebench data prepare imagenet100" in line
    assert not out.exists() or not any(out.iterdir())

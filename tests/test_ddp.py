"""One run on several processes (torchrun / ``prunebench run --nproc``), on CPU with gloo:
the same results as one process with the same global batch, only rank 0 writes, a killed
run resumes from its last epoch, bad ``--nproc`` values are one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from typer.testing import CliRunner

from prunebench import distributed
from prunebench.cli import app
from prunebench.data import BatchLoader, load_dataset
from prunebench.models import build_model
from prunebench.recipe import TrainCfg
from prunebench.train import Loaders, train

PRUNEBENCH = Path(sys.executable).with_name("prunebench")

# -- train() on 2 gloo ranks against one process ---------------------------------------------


def _setup(model: str, batch: int, n: int) -> tuple[torch.nn.Module, Loaders]:
    ds = load_dataset("synthetic", None, n_train=n, n_test=100, channels=3, size=8,
                      num_classes=4)
    common = {"mean": ds.mean, "std": ds.std}
    tr = BatchLoader(ds.train_x, ds.train_y, batch_size=batch, shuffle=True,
                     augment="crop_flip", seed=5, **common)
    te = BatchLoader(ds.test_x, ds.test_y, batch_size=33, **common)  # 100 = 3 x 33 + 1
    torch.manual_seed(0)
    net = build_model(model, in_channels=3, num_classes=4, input_size=(8, 8),
                      **({"depth": 3, "width": 32} if model == "mlp" else {}))
    return net, Loaders(tr, te, te, 4)


def _train(model: str, batch: int, n: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    net, loaders = _setup(model, batch, n)
    cfg = TrainCfg(epochs=3, lr="0:0.02", momentum=0.9, weight_decay=5e-4)
    state = train(net, loaders, cfg, phase="retrain")
    return state.history, {k: v.clone() for k, v in net.state_dict().items()}


def _rank(r: int, world: int, port: int, model: str, batch: int, n: int, out: str) -> None:
    os.environ.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.init("cpu")
    try:
        torch.save(_train(model, batch, n), f"{out}.{r}")
    finally:
        distributed.cleanup()


def _ddp(tmp_path: Path, model: str, batch: int, n: int, world: int = 2) -> list[Any]:
    out = str(tmp_path / f"{model}-{batch}")
    mp.spawn(_rank, args=(world, distributed._free_port(), model, batch, n, out),
             nprocs=world)
    return [torch.load(f"{out}.{r}", weights_only=False) for r in range(world)]


def _close(one: list[dict[str, Any]], many: list[dict[str, Any]], rel: float) -> None:
    assert len(one) == len(many)
    for a, b in zip(one, many, strict=True):
        assert set(a) == set(b)
        for k in a:
            if "seconds" in k:
                continue
            if k in ("test_acc", "val_acc", "phase", "epoch", "lr"):
                assert a[k] == b[k], (k, a[k], b[k])
            else:
                assert b[k] == pytest.approx(a[k], rel=rel, abs=rel), (k, a[k], b[k])


@pytest.mark.parametrize(("model", "batch", "n", "tol"), [
    # 230 = 5 x 45 + 5: a partial last batch; 45 = 22 + 23 per rank
    ("mlp", 45, 230, 1e-5),
    # BatchNorm synchronised over the ranks (float noise of the same size as one process
    # run with another thread count)
    ("resnet20", 45, 180, 2e-4),
])
def test_two_ranks_train_like_one_process(tmp_path, model, batch, n, tol):
    one_history, one_state = _train(model, batch, n)
    ranks = _ddp(tmp_path, model, batch, n)
    for history, state in ranks:
        _close(one_history, history, tol)
        for k, v in one_state.items():
            assert torch.allclose(state[k].double(), v.double(), rtol=tol, atol=tol), k
    # every rank holds the very same weights (the per-epoch check compares them too)
    (_, s0), (_, s1) = ranks
    assert all(torch.equal(s0[k], s1[k]) for k in s0)


def test_sharded_loader_keeps_the_global_batches():
    ds = load_dataset("synthetic", None, n_train=103, n_test=10)
    loader = BatchLoader(ds.train_x, ds.train_y, batch_size=10, mean=ds.mean, std=ds.std,
                         shuffle=True, seed=1)
    for world in (2, 3, 4):
        shards = [distributed.ShardedLoader(loader, r, world) for r in range(world)]
        assert sum(s.batch_size for s in shards) == 10
        batches = [list(s.epoch(2)) for s in shards]
        for i, (x, y) in enumerate(loader.epoch(2)):
            assert torch.equal(torch.cat([b[i][1] for b in batches]), y)
            assert torch.equal(torch.cat([b[i][0] for b in batches]), x)
        # the last batch has 3 samples: with 4 ranks one rank's slice is empty
        assert [len(b[-1][1]) for b in batches] == [3 * (r + 1) // world - 3 * r // world
                                                   for r in range(world)]


# -- the command line ---------------------------------------------------------------------


def _recipe(tmp_path: Path, **retrain: Any) -> Path:
    recipe = {"name": "ddp", "seed": 0,
              "data": {"name": "synthetic", "batch_size": 45, "val_size": 100,
                       "kwargs": {"n_train": 500, "num_classes": 4}},
              "model": {"name": "mlp", "kwargs": {"depth": 3, "width": 16}},
              "pretrain": {"epochs": 2, "lr": "0:0.1"},
              "prune": {"method": "l1", "layers": 0.5},
              "retrain": {"epochs": 2, "lr": "0:0.05", **retrain}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _run(recipe: Path, out: Path, *extra: str, timeout: float = 300) -> str:
    proc = subprocess.run([str(PRUNEBENCH), "run", str(recipe), "--out", str(out), "--quiet",
                           *extra], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _metrics(run: Path) -> list[dict[str, Any]]:
    try:
        text = (run / "metrics.jsonl").read_text()
    except OSError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_nproc_2_run_equals_one_process_and_only_rank_0_writes(tmp_path):
    recipe = _recipe(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    _run(recipe, one)
    text = _run(recipe, two, "--nproc", "2")
    assert text.count("Results (") == 1  # rank 0 alone prints the table
    assert _files(one) == _files(two)  # the same store: run folder, stages, index
    (run1,), (run2,) = ([p for p in d.iterdir() if len(p.name) == 12 and p.is_dir()]
                        for d in (one, two))
    assert run1.name == run2.name  # the world size is not part of the id
    _close(_metrics(run1), _metrics(run2), 1e-4)
    r1 = json.loads((run1 / "result.json").read_text())
    r2 = json.loads((run2 / "result.json").read_text())
    assert r2["test_acc"] == r1["test_acc"] and r2["dense"]["test_acc"] == r1["dense"]["test_acc"]
    assert "distributed" not in r1
    assert r2["distributed"] == {"world_size": 2, "backend": "gloo",
                                 "batch_norm": "synchronised", "batch": "global"}
    # finished: a second --nproc 2 start returns it from the store, nothing rewritten
    before = {f: (two / f).stat().st_mtime_ns for f in _files(two) if "index" not in f}
    _run(recipe, two, "--nproc", "2")
    assert {f: (two / f).stat().st_mtime_ns for f in before} == before


@pytest.mark.slow
def test_sigkill_nproc_2_mid_retraining_then_resume(tmp_path):
    recipe = _recipe(tmp_path, epochs=30, lr="0:0.05,20:0.005")
    raw = yaml.safe_load(recipe.read_text())
    raw["data"]["kwargs"]["n_train"] = 3000
    recipe.write_text(yaml.safe_dump(raw))
    ref, out = tmp_path / "ref", tmp_path / "runs"
    _run(recipe, ref)
    (ref_run,) = [p for p in ref.iterdir() if len(p.name) == 12 and p.is_dir()]
    run = out / ref_run.name

    proc = subprocess.Popen([str(PRUNEBENCH), "run", str(recipe), "--out", str(out), "--quiet",
                             "--nproc", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.monotonic()
    try:
        while not [m for m in _metrics(run) if m.get("phase") == "retrain"]:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() - t0 < 240, "no retraining epoch written"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks
        proc.wait(30)
    assert not (run / "result.json").exists()
    assert (run / "checkpoints" / "latest.pt").is_file()
    killed = [m for m in _metrics(run) if m.get("phase") == "retrain"]
    assert 1 <= len(killed) < 30

    _run(recipe, out, "--nproc", "2")
    lines = [m for m in _metrics(run) if m.get("phase") == "retrain"]
    assert len(lines) == 30
    # resumed, not redone: the epochs finished before the kill come back from the
    # checkpoint exactly as they were (their timings included)
    assert lines[: len(killed)] == killed
    _close(_metrics(ref_run), _metrics(run), 1e-4)
    r = json.loads((run / "result.json").read_text())
    assert r["status"] == "done"
    assert r["test_acc"] == json.loads((ref_run / "result.json").read_text())["test_acc"]


@pytest.mark.parametrize("value", ["0", "x", "-1"])
def test_bad_nproc_is_a_one_line_error(tmp_path, value):
    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["run", str(_recipe(tmp_path)), "--out", str(out),
                                   "--nproc", value])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--nproc" in lines[0], res.output
    assert not out.exists()

from __future__ import annotations

import json

import pytest
import torch
from conftest import strip_timing

import prunebench
from prunebench.errors import RecipeError, StoreError
from prunebench.pipeline import plan
from prunebench.recipe import load_recipe
from prunebench.store import RunStore


class StopAfter:
    """A reporter that interrupts the run (like Ctrl-C or a kill) after N finished epochs."""

    def __init__(self, phase: str, epochs: int) -> None:
        self.phase, self.epochs, self.seen = phase, epochs, 0

    def start_epoch(self, phase, epoch, total, n_batches):
        self.current = phase

    def advance(self):
        pass

    def end_epoch(self, metrics):
        if metrics["phase"] == self.phase:
            self.seen += 1
            if self.seen == self.epochs:
                raise KeyboardInterrupt


def test_run_writes_the_documented_layout(tiny_recipe, tmp_path):
    res = prunebench.run(tiny_recipe, out=tmp_path)
    d = tmp_path / res.id
    assert res.dir == d and res.status == "done"
    for name in (
        "recipe.yaml",
        "metrics.jsonl",
        "result.json",
        "checkpoints/pruned.pt",
        "checkpoints/final.pt",
        "checkpoints/structure.json",
    ):
        assert (d / name).is_file(), name
    # the resume checkpoint is kept and holds the last retraining epoch (nothing left to redo)
    latest = torch.load(d / "checkpoints" / "latest.pt", weights_only=True)
    assert latest["epoch"] == 2 and len(latest["history"]) == 2
    result = json.loads((d / "result.json").read_text())
    lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in lines] == ["pretrain"] * 3 + ["prune"] + ["retrain"] * 2
    # the headline is the final epoch's test accuracy, not the best one
    assert result["test_acc"] == lines[-1]["test_acc"]
    assert result["best_val"]["epoch"] in (1, 2)
    assert result["pruned"]["params_pruned"] < result["dense"]["params"]
    assert result["pruned"]["speedup"] > 1
    assert result["data"]["source"] and result["data"]["checksum"]
    # checkpoints load with weights_only=True and rebuild the pruned model
    state = torch.load(d / "checkpoints" / "final.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    row = RunStore(tmp_path).list_runs()[0]
    assert row["id"] == res.id and row["status"] == "done" and row["test_acc"] == res.test_acc


def test_identical_recipes_share_an_id_and_skip(tiny_recipe, tmp_path, monkeypatch):
    first = prunebench.run(tiny_recipe, out=tmp_path)
    import prunebench.pipeline as pl

    def boom(*a, **k):
        raise AssertionError("a finished run must not execute again")

    monkeypatch.setattr(pl, "_execute", boom)
    again = prunebench.run(load_recipe(tiny_recipe), out=tmp_path)
    assert again.id == first.id and again.result == first.result


def test_same_seed_same_numbers(tiny_recipe, tmp_path):
    a = prunebench.run(tiny_recipe, out=tmp_path / "a")
    b = prunebench.run(tiny_recipe, out=tmp_path / "b")
    assert strip_timing(a.metrics()) == strip_timing(b.metrics())
    c = prunebench.run(tiny_recipe, out=tmp_path / "c", overrides=["seed=1"])
    assert c.id != a.id
    assert strip_timing(c.metrics()) != strip_timing(a.metrics())


@pytest.mark.parametrize(("phase", "epochs"), [("pretrain", 2), ("retrain", 1)])
def test_interrupted_run_resumes_to_the_same_result(tiny_recipe, tmp_path, phase, epochs):
    ref = prunebench.run(tiny_recipe, out=tmp_path / "ref")
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        prunebench.run(tiny_recipe, out=out, reporter=StopAfter(phase, epochs))
    rows = RunStore(out).list_runs()
    assert rows[0]["status"] == "interrupted"
    assert not (out / ref.id / "result.json").exists()
    seen = []

    class Count:
        def start_epoch(self, phase, epoch, total, n):
            seen.append((phase, epoch))

        def advance(self):
            pass

        def end_epoch(self, m):
            pass

    res = prunebench.run(tiny_recipe, out=out, reporter=Count())
    # only the epochs after the interruption ran again
    if phase == "pretrain":
        assert seen[0] == ("pretrain", epochs)
    else:
        assert all(p == "retrain" for p, _ in seen) and seen[0] == ("retrain", epochs)
    assert strip_timing(res.metrics()) == strip_timing(ref.metrics())
    assert res.test_acc == ref.test_acc


def test_retrain_variants_share_pretrain_and_prune_stages(tiny_recipe, tmp_path):
    a = prunebench.run(tiny_recipe, out=tmp_path)
    b = prunebench.run(tiny_recipe, out=tmp_path, overrides=["retrain.lr=0:0.05"])
    assert a.result["stages"]["pretrain"] == b.result["stages"]["pretrain"]
    assert a.result["stages"]["prune"] == b.result["stages"]["prune"]
    assert len(list((tmp_path / "stages").glob("pretrain-*"))) == 1
    assert a.result["dense"] == b.result["dense"]


def test_base_model_and_no_retrain(tiny_recipe, tmp_path):
    a = prunebench.run(tiny_recipe, out=tmp_path)
    dense = tmp_path / "stages" / f"pretrain-{a.result['stages']['pretrain']}" / "model.pt"
    b = prunebench.run(
        tiny_recipe,
        out=tmp_path,
        overrides=["pretrain=null", f"base_model={dense}", "retrain=null"],
    )
    assert [
        s.kind for s in plan(load_recipe(tiny_recipe, ["pretrain=null", f"base_model={dense}"]))
    ][0] == "base"
    assert b.result["dense"]["test_acc"] == a.result["dense"]["test_acc"]
    assert b.test_acc == a.result["pruned"]["test_acc"]
    with pytest.raises(RecipeError, match="not a file"):
        prunebench.run(
            tiny_recipe, out=tmp_path, overrides=["pretrain=null", "base_model=/nope.pt"]
        )


def test_show_and_prefix_lookup(tiny_recipe, tmp_path):
    res = prunebench.run(tiny_recipe, out=tmp_path)
    data = prunebench.show(res.id[:6], tmp_path)
    assert data["id"] == res.id and len(data["metrics"]) == 6
    with pytest.raises(StoreError, match="no run"):
        prunebench.show("zzzz", tmp_path)


def test_index_is_rebuilt_when_lost(tiny_recipe, tmp_path):
    res = prunebench.run(tiny_recipe, out=tmp_path)
    (tmp_path / "index.sqlite").unlink()
    rows = prunebench.runs(tmp_path)
    assert [r["id"] for r in rows] == [res.id] and rows[0]["status"] == "done"


def test_sigkill_mid_run_then_resume_gives_the_same_result(tiny_recipe, tmp_path):
    """Kill -9 while training (no cleanup runs at all), rerun: same numbers, nothing lost."""
    import os
    import signal
    import subprocess
    import sys
    import time

    overrides = ["pretrain.epochs=40", "retrain.epochs=3"]
    ref = prunebench.run(tiny_recipe, out=tmp_path / "ref", overrides=overrides)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "prunebench.cli", "run", str(tiny_recipe), "--out", str(out),
           "--quiet"] + [a for o in overrides for a in ("--set", o)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stage_metrics = None
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list(out.glob("stages/pretrain-*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 5:
            stage_metrics = found[0]
            break
        time.sleep(0.05)
    assert stage_metrics is not None, "training never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(stage_metrics.read_text().splitlines())
    assert done_before < 40 and not (out / ref.id / "result.json").exists()
    res = prunebench.run(tiny_recipe, out=out, overrides=overrides)
    assert strip_timing(res.metrics()) == strip_timing(ref.metrics())
    assert res.test_acc == ref.test_acc

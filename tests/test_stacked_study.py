"""Issue 11 item 2: a study's stackable cells train as one fused model, each its own run.

A tiny study (synthetic data, MLP) run with ``stack=4`` against the same study run one
cell at a time: the same run ids, statuses and per-run results (float32 on CPU: equal
within a tolerance), every epoch in metrics.jsonl, ``stack`` in the records and manifest;
masked cells fall back and finish; a study interrupted inside a stacked epoch resumes to
the uninterrupted results; a diverging copy ends ``diverged`` while its stack finishes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from prunebench.stacked_runs import stack_hint, stack_jobs
from prunebench.store import RunStore
from prunebench.studies import expand_study, load_study, run_study

BASE = {
    "data": {"name": "synthetic", "batch_size": 64, "val_size": 128},
    "model": {"name": "mlp", "kwargs": {"depth": 3, "width": 16}},
    "pretrain": {"epochs": 2, "lr": "0:0.1"},
    "prune": {"method": "l1", "layers": 0.5},
    "retrain": {"epochs": 3, "lr": "0:0.01,2:0.001"},
}
STUDY = {
    "name": "stack-study",
    "title": "stacked",
    "setup": "S3.1",
    "presets": {"cpu": {
        "base": BASE,
        "columns": {"key": "prune.layers", "values": [0.3, 0.6]},
        "rows": [
            {"label": "LR 0.01", "set": {"retrain.lr": "0:0.01,2:0.001"}},
            {"label": "LR 0.001", "set": {"retrain.lr": "cosine:0.001:0.0001",
                                          "retrain.weight_decay": 0.0}},
            {"label": "Masks", "set": {"prune.granularity": "weight",
                                       "prune.method": "magnitude"}},
        ],
        "seeds": 2,
    }},
}


def _write(tmp: Path, spec: dict[str, Any]) -> Path:
    path = tmp / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("spec"), STUDY)


@pytest.fixture(scope="module")
def stacked(study_file, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("stacked")
    return out, run_study(study_file, out, preset="cpu", stack=4)


def _results(out: Path, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ids = [c["run"] for c in manifest["cells"]] + list(manifest["dense_runs"].values())
    return {rid: json.loads((out / rid / "result.json").read_text()) for rid in ids}


def _retrain_rows(out: Path, rid: str) -> list[dict[str, Any]]:
    lines = (out / rid / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if row["phase"] == "retrain"]


def test_jobs_group_what_may_stack(study_file):
    cells = expand_study(load_study(study_file), "cpu")
    recipes = [c.recipe for c in cells]
    masks = [i for i, c in enumerate(cells) if c.row == "Masks"]
    assert all(stack_hint(recipes[i]) is None for i in masks)
    jobs = stack_jobs(recipes, 4)
    # per ratio the two LR rows x two seeds are one job of 4; masked cells run alone
    assert sorted(len(j) for j in jobs) == [1] * len(masks) + [4, 4]
    for job in (j for j in jobs if len(j) == 4):
        assert len({cells[i].value for i in job}) == 1
    assert stack_jobs(recipes, 1) == [[i] for i in range(len(recipes))]


def test_stacked_study_equals_one_by_one(study_file, stacked, tmp_path):
    out_s, stacked_manifest = stacked
    out_1 = tmp_path / "serial"
    serial = run_study(study_file, out_1, preset="cpu", stack=1)
    assert stacked_manifest["complete"] and serial["complete"]
    assert stacked_manifest["stack"] == 4 and serial["stack"] == 1
    # the same run ids (stacking is not part of the science) and statuses
    assert [c["run"] for c in stacked_manifest["cells"]] == [c["run"] for c in serial["cells"]]
    assert stacked_manifest["dense_runs"] == serial["dense_runs"]
    assert [c["status"] for c in stacked_manifest["cells"]] == ["done"] * 12
    res_s, res_1 = _results(out_s, stacked_manifest), _results(out_1, serial)
    for rid, rec in res_s.items():
        ref = res_1[rid]
        assert rec["status"] == ref["status"] == "done"
        # float32: a fused kernel may differ in the last bits (here they agree)
        assert rec["test_acc"] == pytest.approx(ref["test_acc"], abs=0.5)
        assert "stack" not in ref
        if "retrain" in ref:
            for key in ("ta", "best_val", "isometry", "retrain"):
                assert (key in rec) == (key in ref)
            rows = _retrain_rows(out_s, rid)
            assert [r["epoch"] for r in rows] == [1, 2, 3]
            assert [r["lr"] for r in rows] == [r["lr"] for r in _retrain_rows(out_1, rid)]
            for name in ("recipe.yaml", "checkpoints/latest.pt", "checkpoints/final.pt"):
                assert (out_s / rid / name).is_file()
    by_row = {}
    for c in stacked_manifest["cells"]:
        by_row.setdefault(c["row"], set()).add((c["stack"], res_s[c["run"]]["stack"]))
    assert by_row == {"LR 0.01": {(4, 4)}, "LR 0.001": {(4, 4)}, "Masks": {(1, 1)}}
    stacked_rows = {c["run"] for c in stacked_manifest["cells"] if c["stack"] == 4}
    for rid in stacked_rows:
        assert {r["stack"] for r in _retrain_rows(out_s, rid)} == {4}
        # the record never claims the fast path for the stacked (eager, vmap'd) retraining
        assert res_s[rid]["speed"]["retrain"] == {"stacked": 4, "compile": False,
                                                  "cuda_graphs": False, "channels_last": False,
                                                  "fused_sgd": False}
    # the index rows: the same runs, statuses and accuracies
    idx_s = {r["id"]: (r["status"], r.get("test_acc")) for r in RunStore(out_s).list_runs()}
    idx_1 = {r["id"]: (r["status"], r.get("test_acc")) for r in RunStore(out_1).list_runs()}
    assert idx_s.keys() == idx_1.keys()
    assert {k: v[0] for k, v in idx_s.items()} == {k: v[0] for k, v in idx_1.items()}
    # a rerun returns every stored result at once
    again = run_study(study_file, out_s, preset="cpu", stack=4)
    assert [c["run"] for c in again["cells"]] == [c["run"] for c in stacked_manifest["cells"]]


class _Interrupt:
    """A reporter that stops the study at the end of the first stacked retraining epoch."""

    def __init__(self) -> None:
        self.fired = False

    def start_epoch(self, *args: Any) -> None:
        pass

    def advance(self) -> None:
        pass

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        if not self.fired and metrics.get("phase") == "retrain" and metrics.get("stack"):
            self.fired = True
            raise KeyboardInterrupt


def test_interrupted_stacked_study_resumes_to_the_same_results(study_file, stacked, tmp_path):
    out_s, ref_manifest = stacked
    out = tmp_path / "runs"
    with pytest.raises(KeyboardInterrupt):
        run_study(study_file, out, preset="cpu", stack=4, reporter=_Interrupt())
    status = {r["id"]: r["status"] for r in RunStore(out).list_runs()}
    hit = [rid for rid, s in status.items() if s == "interrupted"]
    assert len(hit) == 4  # the first stack, each copy checkpointed at epoch 1
    for rid in hit:
        assert not (out / rid / "result.json").exists()
        assert [r["epoch"] for r in _retrain_rows(out, rid)] == [1]
    manifest = run_study(study_file, out, preset="cpu", stack=4)
    assert manifest["complete"]
    got, ref = _results(out, manifest), _results(out_s, ref_manifest)
    assert got.keys() == ref.keys()
    for rid in got:
        assert got[rid]["test_acc"] == ref[rid]["test_acc"]
        assert got[rid].get("ta") == ref[rid].get("ta")
        strip = [{k: v for k, v in r.items() if "seconds" not in k}
                 for r in _retrain_rows(out, rid)]
        assert strip == [{k: v for k, v in r.items() if "seconds" not in k}
                         for r in _retrain_rows(out_s, rid)]


def test_a_diverging_copy_does_not_stop_its_stack(tmp_path):
    """In a worker process (``workers=2``: each worker takes one stack)."""
    spec = copy.deepcopy(STUDY)
    spec["name"] = "stack-diverge"
    preset = spec["presets"]["cpu"]
    preset["columns"]["values"] = [0.5]
    preset["seeds"] = 1
    preset["rows"] = [*preset["rows"][:2], {"label": "Diverge", "set": {"retrain.lr": "0:1e6"}}]
    out = tmp_path / "runs"
    manifest = run_study(_write(tmp_path, spec), out, preset="cpu", stack=4, workers=2,
                         backend="process")
    status = {c["row"]: c["status"] for c in manifest["cells"]}
    assert status == {"LR 0.01": "done", "LR 0.001": "done", "Diverge": "diverged"}
    assert {c["stack"] for c in manifest["cells"]} == {3}
    assert [b["status"] for b in manifest["not_done"]] == ["diverged"]
    bad = next(c["run"] for c in manifest["cells"] if c["row"] == "Diverge")
    rec = json.loads((out / bad / "result.json").read_text())
    assert rec["status"] == "diverged" and rec["stack"] == 3
    assert rec["diverged"]["phase"] == "retrain" and rec["diverged"]["epoch"] == 1
    assert _retrain_rows(out, bad) == []
    for c in manifest["cells"]:
        if c["row"] != "Diverge":
            assert len(_retrain_rows(out, c["run"])) == 3

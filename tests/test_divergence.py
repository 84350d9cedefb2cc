"""Issue 10, class 3 (divergence) and class 5 (truncated checkpoints on resume).

A run whose training loss becomes non-finite stops at the end of that epoch and is stored
as ``diverged`` (phase, epoch, reason; finished epochs kept; strict JSON everywhere); it is
never ranked by ``compare``; one diverging or failing cell never ends a grid or study
(exit code 4 at the end). Tiny synthetic recipes: each test takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_study_base
from typer.testing import CliRunner

import prunebench
from prunebench import api
from prunebench.cli import app
from prunebench.store import RunStore

runner = CliRunner()
FAST = ["pretrain.epochs=1", "measure.jsv_every=1"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def strict_loads(text: str):
    """json.loads that refuses NaN / Infinity (what a strict JSON parser does)."""

    def refuse(const: str):
        raise ValueError(f"non-standard JSON constant {const}")

    return json.loads(text, parse_constant=refuse)


def _grid(tiny_recipe: Path, tmp_path: Path, lrs: list[str]) -> Path:
    raw = yaml.safe_load(tiny_recipe.read_text())
    raw["pretrain"]["epochs"] = 1
    raw["grid"] = {"retrain.lr": lrs}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_huge_lr_diverges_with_epoch_and_reason(tiny_recipe, tmp_path):
    out = tmp_path / "runs"
    # two good retraining epochs, then LR 1e6: the loss is non-finite in epoch 3
    res = prunebench.run(tiny_recipe, out, overrides=[
        *FAST, "retrain.epochs=3", "retrain.lr=0:0.01,2:1e6"])
    assert res.status == "diverged"
    rec = res.record
    assert not rec.finished and rec.test_acc is None
    assert rec.error == "non-finite training loss at retrain epoch 3"
    assert rec.diverged == {"phase": "retrain", "epoch": 3, "reason": "non-finite training loss",
                            "finished_epochs": 2}
    assert rec.dense.test_acc is not None and rec.pruned is not None  # finished stages kept
    # the finished epochs' metrics are kept, the diverged one is not
    metrics = [strict_loads(ln) for ln in (res.dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics if m["phase"] == "retrain"] == [1, 2]
    # strict JSON: result.json, the index, show --json, runs --json
    assert strict_loads((res.dir / "result.json").read_text())["status"] == "diverged"
    row = RunStore(out).list_runs()[0]
    assert row["status"] == "diverged"
    shown = invoke("show", res.id, "--out", out, "--json")
    assert shown.exit_code == 0
    assert strict_loads(shown.stdout)["result"]["diverged"]["epoch"] == 3
    listed = invoke("runs", "--out", out, "--json")
    assert strict_loads(listed.stdout)[0]["status"] == "diverged"
    # the last checkpoint holds the last finite epoch: re-running diverges the same way
    again = prunebench.run(tiny_recipe, out, overrides=[
        *FAST, "retrain.epochs=3", "retrain.lr=0:0.01,2:1e6"])
    assert again.status == "diverged" and again.record.error == rec.error


def test_compare_lists_a_diverged_run_and_never_ranks_it(tiny_recipe, tmp_path):
    out = tmp_path / "runs"
    good = prunebench.run(tiny_recipe, out, overrides=FAST)
    bad = prunebench.run(tiny_recipe, out, overrides=[*FAST, "retrain.lr=1e6"])
    assert good.status == "done" and bad.status == "diverged"
    res = invoke("compare", "--out", out, "--json")
    rep = strict_loads(res.stdout)
    ranked = {rid for g in rep["groups"] for m in g["methods"] for rid in m["runs"]}
    assert bad.id not in ranked and good.id in ranked
    assert [d["id"] for d in rep["diverged"]] == [bad.id]
    assert rep["diverged"][0]["reason"] == "non-finite training loss at retrain epoch 1"
    # named explicitly, it is listed with its reason (no error, no silent drop)
    text = invoke("compare", good.id, bad.id, "--out", out)
    assert "diverged (never ranked)" in text.output and bad.id in text.output
    assert "non-finite training loss at retrain epoch 1" in text.output
    assert text.exit_code == 4  # a run named by id could not be compared
    only = invoke("compare", bad.id, "--out", out)
    assert only.exit_code == 4 and "cannot be compared" in only.output
    by_filter = invoke("compare", "--out", out, "--where", "retrain.lr=1e6")
    assert by_filter.exit_code == 0 and "nothing to rank" in by_filter.output


def test_diverged_pretraining_is_not_stored_as_done(tiny_recipe, tmp_path):
    out = tmp_path / "runs"
    res = prunebench.run(tiny_recipe, out, overrides=["pretrain.lr=0:1e6", "pretrain.epochs=2"])
    assert res.status == "diverged"
    assert res.record.diverged["phase"] == "pretrain"
    assert res.record.error == "non-finite training loss at pretrain epoch 1"
    (stage,) = (out / "stages").glob("pretrain-*")
    assert not (stage / "done.json").exists() and not (stage / "model.pt").exists()
    assert strict_loads((res.dir / "result.json").read_text())["status"] == "diverged"


def test_grid_with_a_diverging_cell_finishes_the_others_exit_4(tiny_recipe, tmp_path):
    out = tmp_path / "runs"
    grid = _grid(tiny_recipe, tmp_path, ["0:1e6", "0:0.01"])
    res = invoke("run", grid, "--out", out, "--quiet")
    assert res.exit_code == 4, res.output
    assert "Traceback" not in res.output
    assert "1 of 2 runs did not finish" in res.output
    assert "diverged: non-finite training loss at retrain epoch 1" in res.output
    statuses = sorted(r["status"] for r in RunStore(out).list_runs())
    assert statuses == ["diverged", "done"]
    # --json still parses strictly, and still exits 4
    res = invoke("run", grid, "--out", out, "--quiet", "--json")
    assert res.exit_code == 4
    items = strict_loads(res.stdout)
    assert [i["status"] for i in items] == ["diverged", "done"]


def test_a_failing_cell_does_not_end_the_grid(tiny_recipe, tmp_path, monkeypatch):
    from prunebench import pipeline

    real = pipeline._execute

    def boom(ctx, *args, **kwargs):
        if ctx.recipe.retrain.lr == "0:0.02":
            raise RuntimeError("boom in a cell")
        return real(ctx, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_execute", boom)
    out = tmp_path / "runs"
    items = api.run_all(_grid(tiny_recipe, tmp_path, ["0:0.02", "0:0.01"]), out)
    assert [r.status for _, r in items] == ["failed", "done"]
    failed = items[0][1]
    assert failed.result["error"] == "RuntimeError: boom in a cell"
    assert strict_loads((failed.dir / "result.json").read_text())["status"] == "failed"
    assert {r["id"]: r["status"] for r in RunStore(out).list_runs()}[failed.id] == "failed"
    # the failed cell runs again (and now succeeds) on the next call
    monkeypatch.setattr(pipeline, "_execute", real)
    items = api.run_all(_grid(tiny_recipe, tmp_path, ["0:0.02", "0:0.01"]), out)
    assert [r.status for _, r in items] == ["done", "done"]


def test_keyboard_interrupt_still_stops_a_grid(tiny_recipe, tmp_path, monkeypatch):
    from prunebench import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_execute", interrupted)
    out = tmp_path / "runs"
    with pytest.raises(KeyboardInterrupt):
        api.run_all(_grid(tiny_recipe, tmp_path, ["0:0.02", "0:0.01"]), out)
    rows = RunStore(out).list_runs()
    assert [r["status"] for r in rows] == ["interrupted"]  # the second cell never started
    assert not (out / rows[0]["id"] / "result.json").exists()  # resumable, no outcome


def _study(tmp_path: Path, rows: list[dict]) -> Path:
    spec = {
        "name": "div-study", "title": "divergence", "setup": "S3.1",
        "presets": {"cpu": {
            "base": tiny_study_base(),
            "columns": {"key": "prune.layers", "values": [0.5], "labels": ["PR 0.5"]},
            "rows": rows, "seeds": 1}},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


DIVERGING_ROWS = [{"label": "LR 0.01", "set": {"retrain.lr": "0:0.01"}},
                  {"label": "LR 1e6", "set": {"retrain.lr": "0:1e6"}}]


def test_study_with_a_diverging_cell_writes_manifest_and_report_exit_4(tmp_path):
    out = tmp_path / "runs"
    res = invoke("study", _study(tmp_path, DIVERGING_ROWS), "--out", out, "--quiet")
    assert res.exit_code == 4, res.output
    assert "Traceback" not in res.output
    assert "did not finish" in res.output and "LR 1e6" in res.output
    manifest = json.loads((out / "studies" / "div-study-cpu.json").read_text())
    assert [c["status"] for c in manifest["cells"]] == ["done", "diverged"]
    assert not manifest["complete"]
    assert [b["status"] for b in manifest["not_done"]] == ["diverged"]
    assert (out / "report.html").is_file()


def test_process_pool_study_survives_a_diverging_cell(tmp_path):
    from prunebench.studies import run_study

    manifest = run_study(_study(tmp_path, DIVERGING_ROWS), tmp_path / "runs", preset="cpu",
                         workers=2, backend="process")
    assert [c["status"] for c in manifest["cells"]] == ["done", "diverged"]
    assert manifest["not_done"][0]["error"] == "non-finite training loss at retrain epoch 1"


# -- truncated checkpoints on resume (class 5) -------------------------------------------------


class _StopAfterFirstRetrainEpoch:
    """A reporter that interrupts the run right after retraining epoch 1 is checkpointed."""

    def start_epoch(self, phase, epoch, total, n_batches):
        self.phase = phase

    def advance(self):
        pass

    def end_epoch(self, metrics):
        if self.phase == "retrain":
            raise KeyboardInterrupt


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_latest_checkpoint_is_discarded_with_a_warning(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "runs"
    with pytest.raises(KeyboardInterrupt):
        prunebench.run(tiny_recipe, out, overrides=FAST, reporter=_StopAfterFirstRetrainEpoch())
    (latest,) = out.glob("*/checkpoints/latest.pt")
    _truncate(latest)
    capsys.readouterr()
    res = prunebench.run(tiny_recipe, out, overrides=FAST)
    err = capsys.readouterr().err
    assert res.status == "done"
    assert "warning: discarding unreadable checkpoint" in err and "latest.pt" in err
    clean = prunebench.run(tiny_recipe, tmp_path / "clean", overrides=FAST)
    assert res.test_acc == clean.test_acc  # the redone epochs give the same numbers


def test_truncated_stage_files_are_rebuilt_with_a_warning(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "runs"
    first = prunebench.run(tiny_recipe, out, overrides=FAST)
    (model_pt,) = out.glob("stages/pretrain-*/model.pt")
    (pruned_pt,) = out.glob("stages/prune-*/pruned.pt")
    _truncate(model_pt)
    _truncate(pruned_pt)
    capsys.readouterr()
    # another retraining of the same stages: both are rebuilt, identically
    res = prunebench.run(tiny_recipe, out, overrides=[*FAST, "retrain.epochs=1"])
    err = capsys.readouterr().err
    assert res.status == "done"
    assert "model.pt" in err and "pruned.pt" in err and err.count("warning:") == 2
    assert res.record.dense.test_acc == first.record.dense.test_acc
    assert res.record.pruned.test_acc == first.record.pruned.test_acc


def test_a_jacobian_that_overflows_is_divergence_not_a_failed_run(tmp_path):
    """Finite weights that have blown up overflow the JSV's Jacobian: the SVD once raised a
    LinAlgError and the run was stored ``failed``. The measurement says non-finite and the
    run is ``diverged`` (wherever it is detected first: loss, weights or Jacobian)."""
    import torch

    from prunebench.errors import NonFiniteMeasurement
    from prunebench.trainability import jsv

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for m in model:
            m.weight.fill_(3e20)  # finite, but the product overflows float32
    with pytest.raises(NonFiniteMeasurement, match="Jacobian"):
        jsv(model, torch.randn(5, 4))
    tiny = Path(__file__).parent / "fixtures" / "tiny.yaml"
    res = prunebench.run(tiny, tmp_path / "runs", overrides=["retrain.lr=0:1000", "seed=3"])
    assert res.status == "diverged", res.record.error
    assert res.record.diverged["phase"] == "retrain"

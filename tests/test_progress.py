"""Feedback while a study runs: plain lines when piped, one live display on a terminal."""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace

import yaml
from rich.console import Console
from typer.testing import CliRunner

from prunebench.cli import LineReporter, RichReporter, app

STUDY = {
    "name": "progress-study",
    "title": "progress lines",
    "presets": {"cpu": {
        "base": {"data": {"name": "synthetic", "batch_size": 128, "val_size": 64},
                 "model": {"name": "mlp", "kwargs": {"depth": 2, "width": 8}},
                 "pretrain": {"epochs": 2, "lr": "0:0.1"},
                 "prune": {"method": "l1", "layers": 0.5},
                 "retrain": {"epochs": 1, "lr": "0:0.01"}},
        "columns": {"key": "prune.layers", "values": [0.5], "labels": ["PR 0.5"]},
        "rows": [{"label": "L1", "set": {}}],
        "seeds": 1,
    }},
}


def test_study_piped_prints_one_line_per_epoch_in_order(tmp_path: Path) -> None:
    spec = tmp_path / "progress_study.yaml"
    spec.write_text(yaml.safe_dump(STUDY))
    res = CliRunner().invoke(app, ["study", str(spec), "--out", str(tmp_path / "runs"),
                                   "--no-report"])
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    assert lines[0] == "study progress-study (cpu): 2 runs"
    epochs = [re.search(r"(\w+) epoch (\d+)/(\d+)", ln).groups() for ln in lines
              if " epoch " in ln]
    assert epochs == [("pretrain", "1", "2"), ("pretrain", "2", "2"), ("retrain", "1", "1")]
    first = [ln for ln in lines if ln.startswith("[1/2] L1 / PR 0.5")]
    assert len(first) == 4  # three epochs, then the finished run
    assert re.search(r"loss \d+\.\d{4}  val \d+\.\d\d%  test \d+\.\d\d%  lr 0\.1  \d+\.\ds$",
                     first[0])
    assert re.match(r"\[1/2\] L1 / PR 0\.5  run [0-9a-f]{12} done  test \d+\.\d\d%$", first[3])
    assert re.match(r"\[2/2\] dense reference, seed 0  run [0-9a-f]{12} done", lines[-1])
    assert " pretrain epoch " not in res.stdout  # stdout keeps the results only

    quiet = CliRunner().invoke(app, ["study", str(spec), "--out", str(tmp_path / "runs"),
                                     "--no-report", "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_run_piped_prints_lines(tmp_path: Path, tiny_recipe: Path) -> None:
    res = CliRunner().invoke(app, ["run", str(tiny_recipe), "--out", str(tmp_path),
                                   "--set", "pretrain.epochs=1", "--set", "retrain.epochs=1"])
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    assert [ln.split("  ")[1].split()[0:3] for ln in lines if " epoch " in ln] == [
        ["pretrain", "epoch", "1/1"], ["retrain", "epoch", "1/1"]]
    assert re.search(r"run [0-9a-f]{12} done", lines[-1])


class _Stream(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_line_reporter_flushes_every_line() -> None:
    stream = _Stream()
    rep = LineReporter(stream)
    rep.begin(2, "study x (cpu)")
    rep.start_cell("a / b + c / d", 2)  # a stack of two runs
    rep.start_epoch("retrain", 0, 3, 5)
    rep.end_epoch({"phase": "retrain", "epoch": 1, "lr": 0.01, "train_loss": 0.5,
                   "test_acc": 90.0, "seconds": 1.25})
    for rid in ("aaa", "bbb"):
        rep.end_cell(SimpleNamespace(id=rid, status="done", result={"test_acc": 91.0}))
    assert stream.getvalue().splitlines() == [
        "study x (cpu): 2 runs",
        "[1-2/2] a / b + c / d  retrain epoch 1/3  loss 0.5000  test 90.00%  lr 0.01  1.2s",
        "[1/2] a / b + c / d  run aaa done  test 91.00%",
        "[2/2] a / b + c / d  run bbb done  test 91.00%",
    ]
    assert stream.flushes >= 4


def test_terminal_reporter_keeps_one_task_for_the_study() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150)
    rep = RichReporter(console)
    rep.begin(3, "study x (cpu)")
    for cell in range(3):
        rep.start_cell(f"row {cell} / PR 0.5", 1)
        for phase in ("pretrain", "retrain"):
            for epoch in range(4):
                rep.start_epoch(phase, epoch, 4, 7)
                for _ in range(7):
                    rep.advance()
                rep.end_epoch({"phase": phase, "epoch": epoch + 1, "lr": 0.1,
                               "test_acc": 50.0})
                assert len(rep.progress.tasks) == 1
        rep.end_cell(SimpleNamespace(id="x", status="done", result={}))
    task = rep.progress.tasks[0]
    assert (task.completed, task.total, task.description) == (3, 3, "study x (cpu)")
    assert "row 2 / PR 0.5" in task.fields["info"] and "retrain 4/4" in task.fields["info"]
    rep.begin(2, "study x (paper)")  # the next table of a group reuses the display
    assert len(rep.progress.tasks) == 1 and rep.progress.tasks[0].completed == 0
    rep.close()
    assert "study x" in out.getvalue()

"""Experiment trackers: real TensorBoard event files, a local MLflow file store, callbacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import prunebench
from prunebench.cli import app
from prunebench.errors import RecipeError
from prunebench.loggers import LOGGERS, check_loggers
from prunebench.recipe import build_recipe

RECIPE = {
    "data": {"name": "synthetic", "batch_size": 128, "val_size": 64},
    "model": {"name": "mlp", "kwargs": {"depth": 2, "width": 8}},
    "pretrain": {"epochs": 2, "lr": "0:0.1"},
    "prune": {"method": "l1", "layers": 0.5},
    "retrain": {"epochs": 1, "lr": "0:0.01"},
}


class Recorder:
    """A Python callback logger: remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def start(self, run_id: str, recipe: dict[str, Any]) -> None:
        self.calls.append(("start", run_id, recipe["model"]["name"]))

    def log(self, metrics: dict[str, Any], step: int, phase: str) -> None:
        self.calls.append(("log", phase, step, metrics["test_acc"]))

    def finish(self, record: dict[str, Any]) -> None:
        self.calls.append(("finish", record["status"], record["test_acc"]))


def _cli_run(recipe: Path, out: Path, *extra: str) -> dict[str, Any]:
    res = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--json", *extra])
    assert res.exit_code == 0, res.output
    [item] = json.loads(res.stdout)
    return item


def test_tensorboard_and_mlflow_never_change_results(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    import yaml
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    plain = _cli_run(recipe, tmp_path / "plain")
    logged = _cli_run(recipe, tmp_path / "logged", "--log", "tensorboard", "--log", "mlflow")
    assert logged["id"] == plain["id"]
    acc = plain["result"]["test_acc"]
    assert logged["result"]["test_acc"] == acc

    events = EventAccumulator(str(tmp_path / "logged" / "tensorboard" / logged["id"]))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"pretrain/test_acc", "pretrain/train_loss", "retrain/test_acc",
            "final/test_acc"} <= set(tags)
    assert [e.step for e in events.Scalars("pretrain/test_acc")] == [1, 2]
    assert [e.step for e in events.Scalars("retrain/test_acc")] == [1]
    assert events.Scalars("final/test_acc")[0].value == pytest.approx(acc)

    client = MlflowClient(tracking_uri=(tmp_path / "logged" / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("prunebench")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.run_name == logged["id"] and run.info.status == "FINISHED"
    assert run.data.params["retrain.lr"] == "0:0.01"
    history = client.get_metric_history(run.info.run_id, "pretrain/test_acc")
    assert [m.step for m in history] == [1, 2]
    assert run.data.metrics["final/test_acc"] == pytest.approx(acc)


def test_python_callback_and_recipe_log_section(tmp_path: Path) -> None:
    rec = Recorder()
    res = prunebench.run(RECIPE, tmp_path / "a", loggers=[rec])
    assert rec.calls[0] == ("start", res.id, "mlp")
    assert [c[1:3] for c in rec.calls[1:-1]] == [("pretrain", 1), ("pretrain", 2),
                                                ("retrain", 1)]
    assert rec.calls[-1] == ("finish", "done", res.test_acc)
    again = Recorder()
    assert prunebench.run(RECIPE, tmp_path / "a", loggers=[again]).id == res.id
    assert again.calls == []  # a finished run returns from the store: nothing to log

    @LOGGERS.register("test-recorder")
    def _factory(cfg: Any, out: Path) -> Recorder:
        _factory.made = Recorder()  # type: ignore[attr-defined]
        return _factory.made  # type: ignore[attr-defined]

    with_log = {**RECIPE, "log": {"to": "test-recorder"}}
    assert build_recipe(with_log).short_hash() == build_recipe(RECIPE).short_hash()
    res2 = prunebench.run(with_log, tmp_path / "b")
    assert res2.id == res.id and res2.test_acc == res.test_acc
    assert _factory.made.calls[-1] == ("finish", "done", res.test_acc)  # type: ignore[attr-defined]


def test_unknown_logger_and_missing_extra_are_one_line_errors(tmp_path: Path,
                                                              monkeypatch: Any) -> None:
    with pytest.raises(RecipeError, match="unknown logger 'nope'; registered: .*tensorboard"):
        check_loggers(["nope"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(RecipeError, match=r"pip install 'prunebench\[wandb\]'"):
        check_loggers(["wandb"])
    res = CliRunner().invoke(app, ["run", "tests/fixtures/tiny.yaml", "--out", str(tmp_path),
                                   "--log", "wandb"])
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0 and "prunebench[wandb]" in res.stderr
    assert not any(tmp_path.iterdir())
    with pytest.raises(RecipeError, match="unknown logger"):  # a recipe's log: section too
        prunebench.run({**RECIPE, "log": {"to": ["nope"]}}, tmp_path)


def test_wandb_offline(tmp_path: Path, monkeypatch: Any) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    recipe = {**RECIPE, "log": {"to": ["wandb"], "wandb_mode": "offline"}}
    res = prunebench.run(recipe, tmp_path)
    assert res.status == "done"
    assert list((tmp_path / "wandb").glob("offline-run-*"))

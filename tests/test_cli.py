from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from prunebench.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_run_runs_show_round_trip(tiny_recipe, tmp_path):
    out = str(tmp_path)
    res = invoke("run", str(tiny_recipe), "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert "Results" in res.output and "retrained" in res.output
    listed = invoke("runs", "--out", out, "--json")
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert len(rows) == 1 and rows[0]["status"] == "done"
    assert isinstance(rows[0]["result"]["test_acc"], float)
    run_id = rows[0]["id"]
    table = invoke("runs", "--out", out)
    assert run_id in table.output and "mlp" in table.output
    shown = invoke("show", run_id, "--out", out)
    assert shown.exit_code == 0
    assert "Per-epoch metrics" in shown.output and "retrain" in shown.output
    assert "trainability_accuracy" in shown.output and "jsv_mean" in shown.output
    data = json.loads(invoke("show", run_id[:5], "--out", out, "--json").stdout)
    assert data["id"] == run_id and len(data["metrics"]) == 6


def test_set_overrides_and_json(tiny_recipe, tmp_path):
    res = invoke(
        "run",
        str(tiny_recipe),
        "--out",
        str(tmp_path),
        "--json",
        "--set",
        "retrain.lr=0:0.05",
        "--set",
        "retrain.epochs=1",
    )
    assert res.exit_code == 0, res.output
    (item,) = json.loads(res.stdout)
    assert item["result"]["epochs"]["retrain"] == 1
    recipe = (tmp_path / item["id"] / "recipe.yaml").read_text()
    assert "lr: '0:0.05'" in recipe


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "retrain.lr=0:x"], "retrain.lr"),
        (["--set", "model.name=nonet"], "nonet"),
        (["--set", "data.name=nodata"], "nodata"),
        (["--set", "prune.layers=zzz*:0.5"], "zzz*"),
        (["--set", "prune.method=nomethod"], "nomethod"),
        (["--set", "prune.layers=1.5"], "1.5"),
        (["--set", "nonsense"], "nonsense"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_no_result(tiny_recipe, tmp_path, args, needle):
    res = invoke("run", str(tiny_recipe), "--out", str(tmp_path), "--quiet", *args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("error:")
    assert not list(tmp_path.glob("*/result.json"))


def test_missing_recipe_and_unknown_run(tmp_path):
    res = invoke("run", str(tmp_path / "none.yaml"), "--out", str(tmp_path))
    assert res.exit_code == 2 and "does not exist" in res.output
    res = invoke("show", "abc", "--out", str(tmp_path))
    assert res.exit_code == 2 and "no run" in res.output
    res = invoke("runs", "--out", str(tmp_path / "empty"))
    assert res.exit_code == 0 and "no runs" in res.output


def test_registries_are_listed():
    models = invoke("models")
    assert models.exit_code == 0
    for name in ("mlp7_linear", "lenet5", "resnet56", "vgg19"):
        assert name in models.output
    datasets = invoke("datasets")
    for name in ("fashion_mnist", "mnist", "cifar10", "cifar100", "synthetic"):
        assert name in datasets.output


@pytest.mark.parametrize("cmd", [[], ["run"], ["runs"], ["show"], ["models"], ["datasets"]])
def test_help_everywhere(cmd):
    res = invoke(*cmd, "--help")
    assert res.exit_code == 0 and "Usage" in res.output


def test_console_script_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "prunebench.cli", "show", "x", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "error:" in proc.stderr


def test_bad_pattern_leaves_no_run_folder(tiny_recipe, tmp_path):
    res = invoke(
        "run",
        str(tiny_recipe),
        "--out",
        str(tmp_path),
        "--quiet",
        "--set",
        "prune.layers=nolayer*:0.5",
    )
    assert res.exit_code == 2
    assert not [p for p in tmp_path.iterdir() if p.name != "index.sqlite"]


@pytest.mark.parametrize(
    ("ratio", "sparsity", "speedup"),
    [(0.3, 31.14, 1.45), (0.5, 49.82, 1.99), (0.7, 70.57, 3.59), (0.9, 90.39, 11.41)],
)
def test_describe_gives_the_paper_numbers(ratio, sparsity, speedup):
    res = invoke("describe", "resnet56", "--dataset", "cifar10", "--prune",
                 f"*layer*.conv1:{ratio}", "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    for key in ("params_dense", "params_pruned", "macs_dense", "macs_pruned",
                "param_sparsity", "speedup"):
        assert key in d
    assert d["params_dense"] == 853018 and abs(d["macs_dense"] - 125.5e6) < 0.1e6
    assert d["param_sparsity"] == pytest.approx(sparsity, abs=0.1)
    assert d["speedup"] == pytest.approx(speedup, rel=0.02)


def test_describe_bad_pattern_exits_2():
    res = invoke("describe", "resnet56", "--prune", "*layr*:0.5")
    assert res.exit_code == 2 and "layr" in res.output


def test_run_with_a_calibration_grid_prints_the_choice(tiny_recipe, tmp_path):
    import yaml

    raw = yaml.safe_load(tiny_recipe.read_text())
    raw["retrain"]["calibrate"] = {"lrs": [0.01, 0.001], "schedule": "step", "metric": "val"}
    path = tmp_path / "cal.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = invoke("run", str(path), "--out", str(tmp_path / "runs"), "--quiet")
    assert res.exit_code == 0, res.output
    assert "chosen LR" in res.output and "test never used" in res.output

"""Issue 10, class 4: every cell and every file a recipe names is checked before the first
write. Bad input exits 2 with one ``error:`` line naming the cell or file, and nothing is
written: no run folder, no index row, no manifest, no stage folder."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_study_base
from typer.testing import CliRunner

from prunebench import api
from prunebench.cli import app
from prunebench.errors import RecipeError

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def _recipe(tiny_recipe: Path, tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(tiny_recipe.read_text())
    raw["pretrain"]["epochs"] = 1
    raw.update(changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bad_second_grid_cell_writes_nothing(tiny_recipe, tmp_path):
    out = tmp_path / "runs"
    recipe = _recipe(tiny_recipe, tmp_path, grid={"prune.layers": [0.5, "nolayer*:0.5"]})
    line = one_error_line(invoke("run", recipe, "--out", out, "--quiet"))
    assert "grid cell 2 of 2" in line and "nolayer*" in line
    assert nothing_written(out)
    with pytest.raises(RecipeError, match="grid cell 2 of 2"):
        api.run_all(recipe, out)
    assert nothing_written(out)


def test_bad_pattern_in_a_calibration_grid_writes_nothing(tiny_recipe, tmp_path):
    out = tmp_path / "runs"
    raw = yaml.safe_load(tiny_recipe.read_text())
    raw["retrain"]["calibrate"] = {"lrs": [0.01, 0.001]}
    raw["grid"] = {"prune.layers": [0.5, "nolayer*:0.5"]}
    recipe = tmp_path / "cal.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    line = one_error_line(invoke("run", recipe, "--out", out, "--quiet"))
    assert "calibration run 3 of 4" in line and "nolayer*" in line
    assert nothing_written(out)


def test_study_with_a_bad_pattern_leaves_no_manifest(tmp_path):
    spec = {
        "name": "bad-study", "title": "bad", "setup": "S3.1",
        "presets": {"cpu": {
            "base": tiny_study_base(),
            "columns": {"key": "prune.layers", "values": [0.5, "nolayer*:0.5"]},
            "rows": [{"label": "L1", "set": {}}], "seeds": 1}},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "runs"
    line = one_error_line(invoke("study", path, "--out", out, "--quiet"))
    assert "study bad-study (cpu)" in line and "nolayer*" in line
    assert nothing_written(out)


class _Evil:
    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _base_model_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    from prunebench.models import build_model

    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n")
    evil = _Evil()
    evil.marker = str(tmp_path / "pwned")
    crafted = tmp_path / "crafted.pt"
    crafted.write_bytes(pickle.dumps(evil))
    other = tmp_path / "other.pt"  # an MLP of another width: keys fit, shapes do not
    torch.save(build_model("mlp", in_channels=1, num_classes=4, input_size=(8, 8), depth=3,
                           width=16).state_dict(), other)
    lenet = tmp_path / "lenet.pt"  # another architecture altogether
    torch.save({"model": build_model("lenet5", in_channels=1, num_classes=10,
                                     input_size=(28, 28)).state_dict()}, lenet)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    return {"text": (text, "not a readable torch checkpoint"),
            "pickle": (crafted, "refused"),
            "shapes": (other, "shape mismatches"),
            "arch": (lenet, "unexpected keys"),
            "empty": (empty, "not a readable torch checkpoint")}


@pytest.mark.parametrize("case", ["text", "pickle", "shapes", "arch", "empty"])
def test_bad_base_model_writes_nothing(tiny_recipe, tmp_path, case):
    path, needle = _base_model_cases(tmp_path)[case]
    recipe = _recipe(tiny_recipe, tmp_path, base_model=str(path), pretrain=None)
    out = tmp_path / "runs"
    line = one_error_line(invoke("run", recipe, "--out", out, "--quiet"))
    assert "base_model" in line and path.name in line and needle in line, line
    assert nothing_written(out)
    assert not (tmp_path / "pwned").exists()  # the crafted pickle never ran


def test_non_finite_base_model_is_refused_and_a_good_one_runs(tiny_recipe, tmp_path):
    from prunebench.models import build_model

    model = build_model("mlp", in_channels=1, num_classes=4, input_size=(8, 8), depth=3,
                        width=32)
    good = tmp_path / "good.pt"
    torch.save({"model": model.state_dict()}, good)  # the {"model": state_dict} form
    state = model.state_dict()
    state["fc1.weight"][0, 0] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(state, bad)
    out = tmp_path / "runs"
    recipe = _recipe(tiny_recipe, tmp_path, base_model=str(bad), pretrain=None)
    line = one_error_line(invoke("run", recipe, "--out", out, "--quiet",
                                 "--set", "retrain.epochs=1"))
    assert "non-finite" in line and "fc1.weight" in line
    assert nothing_written(out)
    recipe = _recipe(tiny_recipe, tmp_path, base_model=str(good), pretrain=None)
    res = invoke("run", recipe, "--out", out, "--quiet", "--set", "retrain.epochs=1")
    assert res.exit_code == 0, res.output

"""Plugin code is part of a run's identity (issue 9, defect 5): editing a plugin's source
changes the stage keys of the stages that use it; built-in runs keep their ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from prunebench.errors import RegistryError
from prunebench.plan import plan, run_id
from prunebench.pruning import CRITERIA
from prunebench.recipe import build_recipe, load_recipe
from prunebench.registry import Registry, code_of

ROOT = Path(__file__).resolve().parents[1]

#: run id of tests/fixtures/tiny.yaml, the former examples/tiny.yaml (since the data's
#: identity joined the keys, issue 10; it was ac02637b96d0 before): built-in components add
#: no code identity, so edits to prunebench's own code never change it
TINY_ID = "4e79d2559c48"

CRITERION = '''
import torch

from prunebench.pruning import register_criterion

SIGN = {sign}


@register_criterion("{name}")
def signed_l1(module, ctx):
    """Signed mean |w| per filter (a test plugin)."""
    return SIGN * module.weight.detach().flatten(1).abs().mean(dim=1)
'''

MODEL = '''
from prunebench.models import MODELS

WIDTH = {width}


@MODELS.register("{name}")
def plugin_mlp(in_channels, num_classes, input_size):
    """An MLP of a fixed width (a test plugin)."""
    return MODELS.get("mlp")(in_channels, num_classes, input_size, depth=2, width=WIDTH)
'''


def _plugin(tmp_path: Path, template: str, **fields) -> tuple[Path, str]:
    name = f"test-{tmp_path.name}"  # unique per test: the registries are process-wide
    path = tmp_path / "plugin.py"
    path.write_text(template.format(name=name, **fields))
    return path, name


def _recipe(plugin: Path, criterion: str = "l1", **extra):
    raw = {
        "seed": 0,
        "plugins": [str(plugin)],
        "data": {"name": "synthetic", "batch_size": 64, "val_size": 128},
        "model": {"name": "mlp", "kwargs": {"depth": 3, "width": 32}},
        "pretrain": {"epochs": 1, "lr": "0:0.1"},
        "prune": {"method": criterion, "layers": 0.5},
        "retrain": {"epochs": 1, "lr": "0:0.01"},
        **extra,
    }
    return build_recipe(raw)


def test_builtin_recipe_ids_are_unchanged():
    recipe = load_recipe(ROOT / "tests" / "fixtures" / "tiny.yaml")
    stages = plan(recipe)
    assert run_id(recipe) == TINY_ID
    assert all("code" not in s.config for s in stages)
    assert CRITERIA.code("l1") is None


def test_editing_a_plugin_criterion_changes_the_run_id(tmp_path):
    path, name = _plugin(tmp_path, CRITERION, sign="1.0")
    first = plan(_recipe(path, name))
    source = path.read_bytes()
    assert first[1].config["code"] == {
        "criterion": "sha256:" + hashlib.sha256(source).hexdigest()
    }
    assert "code" not in first[0].config and "code" not in first[2].config
    old_fn = CRITERIA.get(name)

    path.write_text(path.read_text().replace("SIGN = 1.0", "SIGN = -1.0"))
    edited = plan(_recipe(path, name))  # the recipe re-imports the edited file
    assert CRITERIA.get(name) is not old_fn  # the edited definition replaced the old one
    assert edited[0].key == first[0].key  # the dense stage does not use the criterion
    assert edited[1].key != first[1].key and edited[-1].key != first[-1].key

    path.write_bytes(source)  # back to the first version: back to the first id
    assert plan(_recipe(path, name))[-1].key == first[-1].key


def test_editing_a_plugin_model_changes_the_dense_stage(tmp_path):
    path, name = _plugin(tmp_path, MODEL, width="16")
    first = plan(_recipe(path, model={"name": name}))
    assert set(first[0].config["code"]) == {"model"}
    path.write_text(path.read_text().replace("WIDTH = 16", "WIDTH = 24"))
    edited = plan(_recipe(path, model={"name": name}))
    assert all(a.key != b.key for a, b in zip(first, edited, strict=True))


def test_unchanged_plugin_is_not_reimported(tmp_path):
    path, name = _plugin(tmp_path, CRITERION, sign="1.0")
    _recipe(path, name)
    fn = CRITERIA.get(name)
    _recipe(path, name)
    assert CRITERIA.get(name) is fn


def test_registry_code_identity(tmp_path):
    reg: Registry = Registry("thing")
    path, _ = _plugin(tmp_path, CRITERION, sign="1.0")
    namespace: dict = {}
    exec(compile("def f():\n    pass\n", str(path), "exec"), namespace)
    reg.register("ext")(namespace["f"])
    assert reg.code("ext") == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert code_of(CRITERIA.get("l1")) is None and code_of(Registry) is None
    # another definition under a taken name is still an error
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("ext")(code_of)
    with pytest.raises(RegistryError, match="unknown thing"):
        reg.code("missing")


def test_rerun_after_editing_the_plugin_is_not_stale(tmp_path):
    import prunebench

    path, name = _plugin(tmp_path, CRITERION, sign="1.0")
    out = tmp_path / "runs"
    first = prunebench.run(_recipe(path, name), out)
    assert first.status == "done"
    path.write_text(path.read_text().replace("SIGN = 1.0", "SIGN = -1.0"))
    second = prunebench.run(_recipe(path, name), out)  # the stale result was returned here
    assert second.status == "done" and second.id != first.id

    def kept(res) -> dict:
        return json.loads((res.dir / "checkpoints" / "structure.json").read_text())["kept"]

    assert kept(second) != kept(first)  # the edited criterion really ran

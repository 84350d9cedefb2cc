"""Open doors (issue 13): torchvision/timm models by name, plugins for every command
(``--plugins`` and ``prunebench.plugins`` entry points), Torch-Pruning criteria."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from prunebench import registry
from prunebench.cli import app, take_plugins
from prunebench.errors import RecipeError, RegistryError
from prunebench.models import MODELS, build_model
from prunebench.pruning import CRITERIA
from prunebench.pruning.context import criterion_needs_data

runner = CliRunner()


class _Net(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 4, 3)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def _fake_torchvision(monkeypatch, version="0.99.0"):
    tv = types.ModuleType("torchvision")
    tv.__version__ = version
    tvm = types.ModuleType("torchvision.models")

    def resnet18(*, weights=None, progress=True, **kwargs):
        return _Net(**kwargs)

    tvm.resnet18 = resnet18
    tvm.list_models = lambda: ["resnet18"]
    tv.models = tvm
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tvm)


def _fake_timm(monkeypatch, version="1.2.3"):
    timm = types.ModuleType("timm")
    timm.__version__ = version
    timm.is_model = lambda name: name == "resnet18"

    def create_model(name, pretrained=False, num_classes=1000, in_chans=3, drop_rate=0.0):
        model = _Net(num_classes=num_classes, in_chans=in_chans)
        model.pretrained_cfg = {"classifier": "head"}
        return model

    timm.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", timm)


# ----------------------------------------------------------------- models by name


def test_torchvision_model_by_name(monkeypatch):
    _fake_torchvision(monkeypatch)
    model = build_model("torchvision:resnet18", in_channels=3, num_classes=7, input_size=(8, 8))
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 7)
    assert "torchvision:resnet18" in MODELS and "torchvision:resnet18" not in MODELS.names()
    assert MODELS.code("torchvision:resnet18") == "torchvision==0.99.0"
    with pytest.raises(RecipeError, match="takes 3-channel images"):
        build_model("torchvision:resnet18", in_channels=1, num_classes=7, input_size=(8, 8))
    with pytest.raises(RegistryError, match="no builder 'nope'.*available: resnet18"):
        build_model("torchvision:nope", in_channels=3, num_classes=7, input_size=(8, 8))
    with pytest.raises(RecipeError, match="in_chans is set from the dataset"):
        build_model("torchvision:resnet18", in_channels=3, num_classes=7, input_size=(8, 8),
                    in_chans=1)


def test_timm_model_by_name(monkeypatch):
    _fake_timm(monkeypatch)
    model = build_model("timm:resnet18", in_channels=1, num_classes=5, input_size=(8, 8),
                        drop_rate=0.1)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    assert model.output_layer == "head"
    assert MODELS.code("timm:resnet18") == "timm==1.2.3"
    with pytest.raises(RegistryError, match="timm has no model 'vit_nope'"):
        MODELS.get("timm:vit_nope")
    with pytest.raises(RecipeError, match="'timm:resnet18' rejected its arguments"):
        build_model("timm:resnet18", in_channels=1, num_classes=5, input_size=(8, 8), bad=1)


@pytest.mark.parametrize("package", ["timm", "torchvision"])
def test_missing_extra_is_one_line(monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, f"{package}.models", None)
    name = f"{package}:resnet18"
    with pytest.raises(RegistryError) as err:
        build_model(name, in_channels=3, num_classes=10, input_size=(32, 32))
    assert str(err.value) == (
        f"model {name!r} needs the {package} extra: pip install 'prunebench[{package}]'"
    )


def test_external_model_version_is_in_the_stage_key(monkeypatch):
    from prunebench.plan import plan
    from prunebench.recipe import Recipe

    def keys():
        recipe = Recipe.model_validate({
            "data": {"name": "synthetic"}, "model": {"name": "timm:resnet18"},
            "pretrain": {"epochs": 1, "lr": "0:0.1"}, "prune": None, "retrain": None,
        })
        stages = plan(recipe)
        return stages[0].config.get("code"), stages[0].key

    _fake_timm(monkeypatch, "1.2.3")
    code, key = keys()
    assert code == {"model": "timm==1.2.3"}
    _fake_timm(monkeypatch, "1.2.4")
    code2, key2 = keys()
    assert code2 == {"model": "timm==1.2.4"} and key2 != key


# ------------------------------------------------------------------------ plugins

PLUGIN = '''
from torch import nn
from prunebench.models import MODELS


@MODELS.register("{name}")
def build(in_channels, num_classes, input_size):
    """A plugin net."""
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))
'''


@pytest.fixture
def forget_models():
    names: list[str] = []
    yield names
    for name in names:
        MODELS._items.pop(name, None)
    registry.reset_entry_points()


def test_take_plugins_anywhere():
    assert take_plugins(["describe", "m", "--plugins", "a.py", "--plugins=b", "--", "--plugins"]
                        ) == (["a.py", "b"], ["describe", "m", "--", "--plugins"])


def test_describe_plugin_model_with_plugins_option(tmp_path, forget_models):
    forget_models.append("doors_net")
    plugin = tmp_path / "doors_plugin.py"
    plugin.write_text(PLUGIN.format(name="doors_net"))
    result = runner.invoke(app, ["describe", "doors_net", "--prune", "0.5", "--json",
                                 "--plugins", str(plugin)])
    assert result.exit_code == 0, result.output
    assert '"model": "doors_net"' in result.output
    result = runner.invoke(app, ["--plugins", str(tmp_path / "missing.py"), "models"])
    assert result.exit_code == 2
    assert "missing.py" in result.output and "does not exist" in result.output


def _entry_point(monkeypatch, tmp_path, module, value):
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="doors", value=value, group="prunebench.plugins")

    def entry_points(**kw):
        return [ep] if kw.get("group") == "prunebench.plugins" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    registry.reset_entry_points()


def test_entry_point_plugin_is_listed_by_models(monkeypatch, tmp_path, forget_models):
    forget_models.append("ep_doors_net")
    (tmp_path / "doors_ep_plugin.py").write_text(PLUGIN.format(name="ep_doors_net"))
    _entry_point(monkeypatch, tmp_path, "doors_ep_plugin", "doors_ep_plugin")
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "ep_doors_net" in result.output and "A plugin net." in result.output


def test_broken_entry_point_is_one_line(monkeypatch, tmp_path, forget_models):
    (tmp_path / "doors_broken.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    _entry_point(monkeypatch, tmp_path, "doors_broken", "doors_broken")
    with pytest.raises(RegistryError) as err:
        MODELS.get("resnet20")
    msg = str(err.value)
    assert "\n" not in msg and "'doors'" in msg and "RuntimeError: boom second line" in msg


# ------------------------------------------------------------ Torch-Pruning criteria


def test_torch_pruning_criteria_registered():
    for name in ("tp_magnitude", "tp_l1", "tp_lamp", "tp_taylor", "tp_hessian"):
        assert name in CRITERIA and "Torch-Pruning" in CRITERIA.doc(name)
    assert criterion_needs_data("tp_taylor") and criterion_needs_data("tp_hessian")
    assert not criterion_needs_data("tp_magnitude")


def test_tp_l1_is_the_group_norm():
    import copy

    from prunebench.pruning import prune_structured

    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_classes=3, input_size=(4, 4), depth=3,
                        width=6).eval()
    x = torch.randn(2, 1, 4, 4)
    pruned = copy.deepcopy(model)
    outcome = prune_structured(pruned, {"fc1": 0.5}, "tp_l1", x)
    # TP's group: fc1's rows and fc2's columns (biases excluded), mean over the group
    score = (model.fc1.weight.abs().sum(1) + model.fc2.weight.abs().sum(0)) / 2
    assert outcome.kept["fc1"] == sorted(score.argsort(descending=True)[:3].tolist())
    assert pruned.fc1.out_features == 3 and pruned.fc2.in_features == 3

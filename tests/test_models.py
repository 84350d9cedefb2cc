"""Tests of the model zoo (prunebench.models): shapes, exact counts, registry behaviour."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prunebench.errors import RecipeError, RegistryError
from prunebench.models import (
    MODELS,
    CifarResNet,
    PadShortcut,
    build_model,
    count_macs,
    count_nonzero_params,
    count_params,
)

ALL_MODELS = MODELS.names()
RESNETS = ["resnet20", "resnet32", "resnet56", "resnet110"]
VGGS = ["vgg11", "vgg13", "vgg16", "vgg19"]
SHAPES = [((1, 28, 28), 10), ((3, 32, 32), 10), ((3, 32, 32), 100)]

# Measured per-image MACs of the CIFAR VGGs on 3x32x32 with 100 classes (conv + linear only).
VGG_MACS_CIFAR100 = {
    "vgg11": 152_815_616,
    "vgg13": 228_313_088,
    "vgg16": 313_247_744,
    "vgg19": 398_182_400,
}


def build(name: str, shape: tuple[int, int, int] = (3, 32, 32), classes: int = 10, **kw):
    return build_model(name, in_channels=shape[0], num_classes=classes, input_size=shape[1:], **kw)


def test_registry_has_every_family():
    imagenet = {"resnet18", "resnet34", "resnet50"}
    expected = {"mlp", "mlp7_linear", "mlp7_relu", "lenet5", *RESNETS, *VGGS, *imagenet}
    assert set(ALL_MODELS) == expected
    for name in ALL_MODELS:
        assert MODELS.doc(name), f"{name} has no doc line"


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize(("shape", "classes"), SHAPES, ids=["mnist", "cifar10", "cifar100"])
def test_forward_shape_and_output_layer(name, shape, classes):
    torch.manual_seed(0)
    model = build(name, shape, classes)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()
    assert isinstance(type(model).output_layer, str)
    head = model.get_submodule(model.output_layer)
    assert isinstance(head, nn.Linear)
    assert head.out_features == classes


def test_resnet56_counts_match_paper():
    model = build("resnet56")
    assert count_params(model) == 853_018
    assert round(count_params(model) / 1e6, 2) == 0.85
    macs = count_macs(model, (3, 32, 32))
    assert 125_400_000 <= macs <= 125_600_000
    assert macs == 125_485_696


def test_resnet20_counts():
    model = build("resnet20")
    assert count_params(model) == 269_722
    assert round(count_params(model) / 1e6, 2) == 0.27
    # 40.55M under the conv+linear convention (the oft-quoted 40.8M also counts BN etc.).
    assert count_macs(model, (3, 32, 32)) == 40_551_040


def test_resnet56_module_names():
    names = dict(build("resnet56").named_modules())
    for n in [
        "conv1",
        "bn1",
        "layer1.0.conv1",
        "layer1.0.bn1",
        "layer1.0.conv2",
        "layer1.0.bn2",
        "layer1.0.shortcut",
        "layer2.0.shortcut",
        "layer3.8.conv2",
        "fc",
    ]:
        assert n in names, n
    assert "layer3.9.conv1" not in names
    assert isinstance(names["layer2.0.shortcut"], PadShortcut)
    assert isinstance(names["layer1.0.shortcut"], nn.Identity)
    for m in names.values():
        if isinstance(m, nn.Conv2d):
            assert m.bias is None


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_stage_shortcuts_are_parameter_free(name):
    model = build(name)
    assert isinstance(model, CifarResNet)
    n = (model.depth - 2) // 6
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == n
    pads = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert len(pads) == 2  # one at the start of layer2 and one at layer3
    for stage in ("layer2", "layer3"):
        sc = model.get_submodule(f"{stage}.0.shortcut")
        assert isinstance(sc, PadShortcut)
        assert list(sc.parameters()) == []
        assert list(sc.buffers()) == []


def test_pad_shortcut_subsamples_and_pads_at_runtime():
    sc = PadShortcut(out_channels=32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert (y[:, :8] == 0).all() and (y[:, 24:] == 0).all()
    # padding follows the actual input width (e.g. after pruning 16 -> 10 channels)
    assert sc(torch.randn(1, 10, 8, 8)).shape == (1, 32, 4, 4)


def test_resnet_init():
    model = build("resnet20")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert torch.all(model.fc.bias == 0)


def test_vgg19_counts():
    model = build("vgg19", classes=100)
    params = count_params(model)
    assert params == 20_081_188
    assert abs(params / 1e6 - 20.08) < 0.01
    macs = count_macs(model, (3, 32, 32))
    print(f"vgg19 cifar100: {params} params, {macs} MACs")
    assert macs == VGG_MACS_CIFAR100["vgg19"]  # ~0.80 GFLOPs = 2 * MACs, as in the paper


@pytest.mark.parametrize("name", VGGS)
def test_vgg_layout_and_macs(name):
    model = build(name, classes=100)
    assert count_macs(model, (3, 32, 32)) == VGG_MACS_CIFAR100[name]
    assert isinstance(model.features, nn.Sequential)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [model.classifier]
    assert model.classifier.in_features == 512


def test_mlp7_exact_counts():
    expected_params = 784 * 100 + 100 + 5 * (100 * 100 + 100) + 100 * 10 + 10
    expected_macs = 784 * 100 + 5 * 100 * 100 + 100 * 10
    for name in ("mlp7_linear", "mlp7_relu"):
        model = build(name, (1, 28, 28), 10)
        assert count_params(model) == expected_params == 130_010
        assert count_macs(model, (1, 28, 28)) == expected_macs == 129_400
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        assert linears == [f"fc{i}" for i in range(1, 8)]
        assert model.output_layer == "fc7"


def test_mlp7_linear_is_linear_map():
    torch.manual_seed(0)
    model = build("mlp7_linear", (1, 28, 28), 10).eval()
    a, b = torch.randn(1, 1, 28, 28), torch.randn(1, 1, 28, 28)
    zero = model(torch.zeros_like(a))
    with torch.no_grad():
        lhs = model(a + b) - zero
        rhs = (model(a) - zero) + (model(b) - zero)
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-5)


def test_generic_mlp_kwargs():
    model = build("mlp", (1, 4, 4), 3, depth=2, width=5, act="tanh")
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Linear)] == ["fc1", "fc2"]
    assert model.output_layer == "fc2"
    assert count_params(model) == 16 * 5 + 5 + 5 * 3 + 3
    assert count_macs(model, (1, 4, 4)) == 16 * 5 + 5 * 3
    assert build("mlp", (1, 4, 4), 3, depth=1).output_layer == "fc1"
    with pytest.raises(RecipeError, match="act"):
        build("mlp", (1, 4, 4), 3, act="gelu")
    with pytest.raises(RecipeError, match="depth"):
        build("mlp", (1, 4, 4), 3, depth=0)


def test_lenet5_exact_counts():
    mnist = build("lenet5", (1, 28, 28), 10)
    assert mnist.fc1.in_features == 16 * 4 * 4
    assert count_params(mnist) == 156 + 2416 + (256 * 120 + 120) + (120 * 84 + 84) + 850
    assert count_macs(mnist, (1, 28, 28)) == 24 * 24 * 6 * 25 + 8 * 8 * 16 * 150 + 256 * 120 + (
        120 * 84 + 84 * 10
    )
    cifar = build("lenet5", (3, 32, 32), 10)
    assert cifar.fc1.in_features == 16 * 5 * 5
    assert count_params(cifar) == 62_006
    assert count_macs(cifar, (3, 32, 32)) == 651_720
    with pytest.raises(RecipeError, match="input_size"):
        build("lenet5", (1, 8, 8), 10)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_same_seed_same_init(name):
    torch.manual_seed(123)
    a = build(name, (1, 28, 28), 10).state_dict()
    torch.manual_seed(123)
    b = build(name, (1, 28, 28), 10).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_different_seed_different_init():
    torch.manual_seed(1)
    a = build("resnet20").conv1.weight.clone()
    torch.manual_seed(2)
    b = build("resnet20").conv1.weight
    assert not torch.equal(a, b)


def test_bad_kwarg_is_recipe_error():
    with pytest.raises(RecipeError) as info:
        build("resnet56", widht=3)
    msg = str(info.value)
    assert "widht" in msg and "(none)" in msg
    with pytest.raises(RecipeError) as info:
        build("mlp", (1, 28, 28), 10, widht=3)
    msg = str(info.value)
    assert "widht" in msg
    for allowed in ("depth", "width", "act"):
        assert allowed in msg


def test_unknown_name_is_registry_error():
    with pytest.raises(RegistryError) as info:
        build("resnet57")
    msg = str(info.value)
    assert "resnet57" in msg
    for name in ("resnet56", "vgg19", "lenet5", "mlp7_relu"):
        assert name in msg


def test_bad_shape_arguments():
    with pytest.raises(RecipeError, match="num_classes"):
        build_model("resnet20", in_channels=3, num_classes=0, input_size=(32, 32))
    with pytest.raises(RecipeError, match="input_size"):
        build_model("vgg11", in_channels=3, num_classes=10, input_size=(32,))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_count_macs_restores_mode_and_removes_hooks():
    model = build("resnet20")
    model.train()
    model.layer2.eval()  # mixed modes must come back exactly
    before = {n: m.training for n, m in model.named_modules()}
    stats = model.bn1.running_mean.clone()
    count_macs(model, (3, 32, 32))
    assert {n: m.training for n, m in model.named_modules()} == before
    assert _hook_count(model) == 0
    assert torch.equal(model.bn1.running_mean, stats)  # eval mode: BN stats untouched
    model.eval()
    count_macs(model, (3, 32, 32))
    assert not any(m.training for m in model.modules())


def test_count_macs_cleans_up_on_error():
    model = build("mlp", (1, 4, 4), 3).train()
    with pytest.raises(RuntimeError):
        count_macs(model, (1, 5, 5))  # wrong input size -> shape mismatch in fc1
    assert model.training
    assert _hook_count(model) == 0


def test_count_nonzero_params():
    model = build("mlp", (1, 4, 4), 3, depth=2, width=5)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        model.fc1.weight[:2].zero_()  # 2 rows of 16
        model.fc2.bias.zero_()  # 3
    assert count_params(model) == 103
    assert count_nonzero_params(model) == 103 - 32 - 3


def test_count_nonzero_params_applies_prune_masks():
    model = build("mlp", (1, 4, 4), 3, depth=2, width=5)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    prune.l1_unstructured(model.fc1, "weight", amount=40)
    assert count_params(model) == 103
    assert count_nonzero_params(model) == 103 - 40

"""describe(): size and cost of a pruned model from static dataset shapes (no data)."""

from __future__ import annotations

import pytest
import torch

from prunebench.data import DATASET_SHAPES, dataset_shape
from prunebench.errors import PruningError, RecipeError, RegistryError
from prunebench.pruning.describe import describe

# Table 6 (ResNet-56, CIFAR-10): PR -> (parameter sparsity %, speedup x)
PAPER_RESNET56 = {0.3: (31.14, 1.45), 0.5: (49.82, 1.99), 0.7: (70.57, 3.59), 0.9: (90.39, 11.41)}


@pytest.mark.parametrize("ratio", sorted(PAPER_RESNET56))
def test_resnet56_table6(ratio: float) -> None:
    d = describe("resnet56", "cifar10", f"*layer*.conv1:{ratio}")
    sparsity, speedup = PAPER_RESNET56[ratio]
    assert d["param_sparsity"] == pytest.approx(sparsity, abs=0.1)
    assert d["speedup"] == pytest.approx(speedup, rel=0.02)
    assert d["params_dense"] == 853_018 and d["macs_dense"] == 125_485_696
    assert len(d["layers"]) == 27


def test_describe_keys_and_values() -> None:
    d = describe("resnet20", "cifar10", "*layer*.conv1:0.5", skip=["layer3.*"])
    for key in (
        "params_dense",
        "params_pruned",
        "macs_dense",
        "macs_pruned",
        "param_sparsity",
        "flops_sparsity",
        "speedup",
        "layers",
        "model",
        "dataset",
        "input_shape",
        "convention",
    ):
        assert key in d
    assert d["model"] == "resnet20" and d["dataset"] == "cifar10"
    assert d["input_shape"] == [3, 32, 32]
    assert d["layers"] == {
        f"layer{s}.{b}.conv1": [w // 2, w] for s, w in ((1, 16), (2, 32)) for b in range(3)
    }
    assert d["flops_sparsity"] == pytest.approx(100 * (1 - d["macs_pruned"] / d["macs_dense"]))
    assert d["speedup"] == pytest.approx(d["macs_dense"] / d["macs_pruned"])
    assert "FLOPs = 2 * MACs" in d["convention"] and "\n" not in d["convention"]


def test_describe_is_deterministic_and_leaves_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = describe("lenet5", "mnist", 0.5, method="random", scheme="global")
    assert torch.equal(torch.rand(3), expected)
    assert describe("lenet5", "mnist", 0.5, method="random", scheme="global") == a


def test_describe_targets_and_imagenet() -> None:
    d = describe("vgg19", "cifar100", 0.5, skip="features.0", target_speedup=3.0)
    assert d["speedup"] >= 3.0 and 0 < d["solved_ratio"] < 1
    d = describe("resnet50", "imagenet", "[0,0.6,0.6,0.6,0.21,0]")
    assert d["input_shape"] == [3, 224, 224] and d["params_dense"] == 25_557_032
    assert d["speedup"] == pytest.approx(2.31, rel=0.01)
    d = describe("lenet5", "fashion_mnist", 0.5, method="taylor_fo")  # random batch is made
    assert d["layers"]["conv1"] == [3, 6]
    with pytest.raises(PruningError, match="unreachable"):
        describe("resnet20", "synthetic", "*layer*.conv1:0.5", target_param_sparsity=99)


def test_dataset_shapes() -> None:
    assert dataset_shape("cifar10") == (3, (32, 32), 10)
    assert dataset_shape("imagenet100") == (3, (224, 224), 100)
    assert dataset_shape("synthetic") == (1, (8, 8), 4)
    assert {"fashion_mnist", "mnist", "cifar100", "imagenet"} <= set(DATASET_SHAPES)
    with pytest.raises(RegistryError, match="nope.*cifar10"):
        dataset_shape("nope")
    with pytest.raises(RegistryError):
        describe("resnet20", "nope", 0.5)
    with pytest.raises(RegistryError):
        describe("nope", "cifar10", 0.5)


def test_input_size_overrides_the_dataset_shape() -> None:
    """The ImageNet presets train 128-px crops: describe can count MACs at that size
    (parameters unchanged, MACs scale with the pixel count, speedup nearly unchanged)."""
    at224 = describe("resnet34", "imagenet100", "*layer*.conv1:0.5")
    at128 = describe("resnet34", "imagenet100", "*layer*.conv1:0.5", input_size=128)
    assert at128["input_shape"] == [3, 128, 128]
    assert at128["params_dense"] == at224["params_dense"]
    assert at128["params_pruned"] == at224["params_pruned"]
    assert at128["macs_dense"] < at224["macs_dense"] * (128 / 224) ** 2 * 1.01
    assert at128["speedup"] == pytest.approx(at224["speedup"], rel=0.02)
    for bad in (0, -3, 2.5, True, "128"):
        with pytest.raises(RecipeError, match="input_size"):
            describe("resnet20", "cifar10", 0.5, input_size=bad)  # type: ignore[arg-type]

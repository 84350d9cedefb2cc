"""Ratio schemes: stage lists, global ranking, speedup / sparsity targets, prune_model;
torchvision-shaped ImageNet ResNets and the paper's Table 1 speedups."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunebench.errors import PatternError, PruningError
from prunebench.models import build_model, count_macs, count_params
from prunebench.pruning import (
    ShapeCounter,
    StructuredSpec,
    expand_stage_ratios,
    global_allocation,
    parse_layer_ratios,
    prunable_layers,
    prune_model,
    prune_structured,
    prune_summary,
    resolve_layer_ratios,
)
from prunebench.pruning.schemes import global_order, layer_cap
from prunebench.pruning.structured import _build_graph


def _build(name: str, shape: tuple[int, int, int] = (3, 16, 16), classes: int = 10, **kw):
    torch.manual_seed(0)
    return build_model(name, in_channels=shape[0], num_classes=classes, input_size=shape[1:], **kw)


_X = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))


@pytest.fixture(scope="module")
def resnet56() -> nn.Module:
    return _build("resnet56")


@pytest.fixture(scope="module")
def resnet50_small() -> nn.Module:
    return _build("resnet50", (3, 32, 32), 1000)


# ---------------------------------------------------------------- prune_model defaults


@pytest.mark.parametrize(
    ("name", "layers", "skip"),
    [("resnet20", "*layer*.conv1:0.5", []), ("vgg11", 0.4, ["features.0"])],
)
def test_default_spec_equals_resolve_and_prune_structured(name, layers, skip) -> None:
    a, b = _build(name), _build(name)
    spec = StructuredSpec(layers=layers, skip=skip)
    got = prune_model(a, spec, _X)
    ratios = resolve_layer_ratios(parse_layer_ratios(layers, skip), b, prunable_layers(b, _X))
    want = prune_structured(b, ratios, "l1", _X)
    assert got.kept == want.kept and got.n_pruned == want.n_pruned
    assert got.ratios == {k: want.n_pruned[k] / want.n_total[k] for k in want.kept}
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert got.solved_ratio is None and got.achieved == {}


def test_spec_errors() -> None:
    model = _build("resnet20")
    bad = [
        StructuredSpec(scheme="nope"),
        StructuredSpec(max_layer_ratio=1.0),
        StructuredSpec(target_speedup=2.0, target_param_sparsity=50.0),
        StructuredSpec(target_speedup=0.5),
        StructuredSpec(target_param_sparsity=100.0),
    ]
    for spec in bad:
        with pytest.raises(PruningError):
            prune_model(model, spec, _X)
    with pytest.raises(PruningError, match="selects none"):
        prune_model(model, StructuredSpec(layers="*layer*.conv1:0", target_speedup=2), _X)
    assert model.layer1[0].conv1.out_channels == 16


# ---------------------------------------------------------------- stage lists


def _explicit(stages: list[float], bottleneck: bool) -> str:
    convs = ("conv1", "conv2") if bottleneck else ("conv1",)
    rules = [f"layer{i}.*.{c}:{r!r}" for i, r in enumerate(stages, 1) for c in convs if r > 0]
    return ",".join(rules) or "*:0"


_stage_ratio = st.sampled_from([0.0, 0.1, 0.21, 0.3, 0.5, 0.6, 0.74, 0.9])


@settings(max_examples=25, deadline=None)
@given(stages=st.lists(_stage_ratio, min_size=3, max_size=3), ends=st.booleans())
def test_stage_list_equals_explicit_rules_cifar(resnet56: nn.Module, stages, ends) -> None:
    prunable = [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(9)]
    spec = [0.0, *stages, 0.0] if ends else stages
    got = resolve_layer_ratios(parse_layer_ratios(spec), resnet56, prunable)
    want = resolve_layer_ratios(parse_layer_ratios(_explicit(stages, False)), resnet56, prunable)
    assert got == want
    text = "[" + ",".join(map(str, spec)) + "]"
    assert resolve_layer_ratios(parse_layer_ratios(text), resnet56, prunable) == want


@settings(max_examples=25, deadline=None)
@given(stages=st.lists(_stage_ratio, min_size=4, max_size=4))
def test_stage_list_equals_explicit_rules_bottleneck(resnet50_small: nn.Module, stages) -> None:
    model = resnet50_small
    prunable = [
        n for n, m in model.named_modules() if n.endswith(("conv1", "conv2")) and n != "conv1"
    ]
    got = resolve_layer_ratios(parse_layer_ratios([0, *stages, 0], model=model), model, prunable)
    want = resolve_layer_ratios(parse_layer_ratios(_explicit(stages, True)), model, prunable)
    assert got == want


def test_stage_list_parsing_and_errors(resnet56: nn.Module) -> None:
    spec = parse_layer_ratios(" [0, 0.6,0.6, 0.6, 0.21, 0] ")
    assert spec.stages == [0, 0.6, 0.6, 0.6, 0.21, 0] and spec.rules == []
    assert parse_layer_ratios(str(spec)).stages == spec.stages
    assert expand_stage_ratios([0.5, 0, 0.3], resnet56) == [
        ("layer1.*.conv1", 0.5),
        ("layer3.*.conv1", 0.3),
    ]
    x = torch.randn(1, 3, 16, 16)
    prunable = prunable_layers(resnet56, x)
    with pytest.raises(PruningError, match="'conv1'"):
        resolve_layer_ratios(parse_layer_ratios([0.1, 0.5, 0.5, 0.5, 0]), resnet56, prunable)
    with pytest.raises(PruningError, match="'fc'.*output layer"):
        resolve_layer_ratios(parse_layer_ratios([0, 0.5, 0.5, 0.5, 0.2]), resnet56, prunable)
    with pytest.raises(PatternError, match="3 stages"):
        resolve_layer_ratios(parse_layer_ratios([0.5, 0.5, 0.5, 0.5]), resnet56, prunable)
    with pytest.raises(PatternError, match="layer1..layerN"):
        parse_layer_ratios([0.5, 0.5, 0.5], model=_build("vgg11"))
    for bad in ("[0.5, 1.0, 0.2]", "[0.5, 'a', 0.1]", "[0.5, 0.1", [0.5], []):
        with pytest.raises(PatternError):
            parse_layer_ratios(bad)


# ---------------------------------------------------------------- global ranking

_layer_sizes = st.lists(st.integers(1, 12), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(
    sizes=_layer_sizes,
    data=st.data(),
    cap=st.sampled_from([0.3, 0.5, 0.9, 0.99]),
    normalize=st.booleans(),
)
def test_global_allocation_properties(sizes, data, cap, normalize) -> None:
    scores = {
        f"l{i}": torch.tensor(
            data.draw(st.lists(st.floats(0, 10, allow_nan=False), min_size=n, max_size=n))
        )
        for i, n in enumerate(sizes)
    }
    possible = sum(layer_cap(n, cap) for n in sizes)
    assert len(global_order(scores, cap, normalize)) == possible
    n_prune = data.draw(st.integers(0, sum(sizes)))
    if n_prune > possible:
        with pytest.raises(PruningError, match=f"at most {possible}"):
            global_allocation(scores, n_prune, cap, normalize)
        return
    counts = global_allocation(scores, n_prune, cap, normalize)
    assert sum(counts.values()) == n_prune
    for name, s in scores.items():
        n = len(s)
        assert 0 <= counts[name] <= min(n - 1, math.floor(cap * n + 1e-9))  # never empty
    if not normalize:  # an uncapped layer only keeps filters scoring >= every removed one
        removed = [
            float(v) for name, s in scores.items() for v in sorted(s.tolist())[: counts[name]]
        ]
        for name, s in scores.items():
            if counts[name] < layer_cap(len(s), cap) and removed:
                kept = sorted(s.tolist())[counts[name] :]
                assert min(kept) >= max(removed)


def test_global_scheme_end_to_end() -> None:
    model = _build("resnet20")
    dense = copy.deepcopy(model)
    with torch.no_grad():  # layer2 filters become tiny: global ranking should hit them first
        for b in dense.layer2:
            b.conv1.weight.mul_(0.01)
    model.load_state_dict(dense.state_dict())
    out = prune_model(model, StructuredSpec(layers="*layer*.conv1:0.3", scheme="global"), _X)
    total = sum(out.n_total.values())
    assert sum(out.n_pruned.values()) == math.ceil(0.3 * total)
    for name in out.kept:
        assert out.n_pruned[name] <= layer_cap(out.n_total[name], 0.9)
        assert out.ratios[name] == out.n_pruned[name] / out.n_total[name]
    assert all(out.n_pruned[f"layer2.{b}.conv1"] == 28 for b in range(3))  # capped at 90%
    # normalisation removes the scale difference: allocation as if unscaled
    a, b = _build("resnet20"), copy.deepcopy(dense)
    spec = StructuredSpec(layers="*layer*.conv1:0.3", scheme="global", normalize=True)
    assert prune_model(a, spec, _X).n_pruned == prune_model(b, spec, _X).n_pruned
    with pytest.raises(PruningError, match="at most"):
        prune_model(_build("resnet20"), StructuredSpec(layers=0.95, scheme="global"), _X)


# ---------------------------------------------------------------- exact counting, targets


@pytest.mark.parametrize(
    ("name", "shape", "kw"),
    [
        ("lenet5", (1, 28, 28), {}),
        ("mlp", (1, 8, 8), {"depth": 4, "width": 24}),
        ("vgg11", (3, 16, 16), {}),
        ("resnet20", (3, 16, 16), {}),
        ("resnet18", (3, 32, 32), {}),
    ],
)
def test_shape_counter_matches_pruned_model(name, shape, kw) -> None:
    model = _build(name, shape, **kw).eval()
    x = torch.randn(1, *shape)
    names = prunable_layers(model, x)
    counter = ShapeCounter(model, _build_graph(model, x), names, shape)
    assert counter.analytic
    assert counter.params_dense == count_params(model)
    assert counter.macs_dense == count_macs(model, shape)
    g = torch.Generator().manual_seed(1)
    counts = {}
    for n in names:
        width = model.get_submodule(n).weight.shape[0]
        counts[n] = int(torch.randint(0, width, (1,), generator=g))
    pruned = copy.deepcopy(model)
    prune_structured(
        pruned, {n: k / model.get_submodule(n).weight.shape[0] for n, k in counts.items()}, "l1", x
    )
    assert counter.count(counts) == (count_params(pruned), count_macs(pruned, shape))
    counter.analytic = False  # the fallback counts a physically pruned copy
    assert counter.count(counts) == (count_params(pruned), count_macs(pruned, shape))


@pytest.mark.parametrize("scheme", ["layerwise", "global"])
def test_target_speedup_is_reached_minimally(scheme: str) -> None:
    model = _build("resnet20")
    spec = StructuredSpec(layers="*layer*.conv1:0.1", scheme=scheme, target_speedup=1.6)
    out = prune_model(model, spec, _X)
    assert out.achieved["speedup"] >= 1.6
    summary = prune_summary(_build("resnet20"), model, (3, 16, 16))
    assert out.achieved["speedup"] == pytest.approx(summary["speedup"])
    assert out.achieved["param_sparsity"] == pytest.approx(summary["param_sparsity"])
    r = out.solved_ratio
    assert r is not None and 0 < r < 1
    if scheme == "layerwise":  # the same ratio as a plain spec gives the same model; less is short
        assert set(out.ratios) == {f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)}
        lower = max(j / n for n in (16, 32, 64) for j in range(n) if j / n < r)
        smaller = _build("resnet20")
        prune_model(smaller, StructuredSpec(layers=f"*layer*.conv1:{lower!r}"), _X)
        dense = _build("resnet20")
        assert prune_summary(dense, smaller, (3, 16, 16))["speedup"] < 1.6


def test_target_param_sparsity_and_unreachable() -> None:
    model = _build("vgg11")
    spec = StructuredSpec(layers=0.5, skip=["features.0"], target_param_sparsity=60.0)
    out = prune_model(model, spec, _X)
    assert 60.0 <= out.achieved["param_sparsity"] < 62.0
    with pytest.raises(PruningError, match=r"unreachable.*at most 20\.\d+x \(ratio"):
        prune_model(
            _build("resnet20"), StructuredSpec(layers="*layer*.conv1:0.5", target_speedup=50), _X
        )


# ---------------------------------------------------------------- ImageNet ResNets, Table 1


@pytest.mark.parametrize(
    ("name", "params"),
    [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)],
)
def test_imagenet_resnet_params(name: str, params: int) -> None:
    model = _build(name, (3, 224, 224), 1000)
    assert count_params(model) == params
    assert model.output_layer == "fc"


def test_imagenet_resnet_names_forward_and_macs(resnet50_small: nn.Module) -> None:
    names = {n for n, _ in resnet50_small.named_modules()}
    assert {
        "conv1",
        "bn1",
        "layer1.0.conv3",
        "layer1.0.downsample.0",
        "layer4.2.bn3",
        "fc",
    } <= names
    r34 = {n for n, _ in _build("resnet34", (3, 32, 32)).named_modules()}
    assert "layer4.2.conv2" in r34 and "layer1.0.downsample.0" not in r34
    assert "layer2.0.downsample.1" in r34
    out = _build("resnet18", (3, 32, 32))(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert count_macs(_build("resnet50", (3, 224, 224), 1000), (3, 224, 224)) == 4_089_184_256
    prunable = prunable_layers(resnet50_small, torch.randn(1, 3, 32, 32))
    # the stem feeds layer1.0's projection shortcut, not an addition: prunable in ResNet-50
    assert prunable[0] == "conv1" and len(prunable) == 33
    assert all(n.endswith(("conv1", "conv2")) for n in prunable)


def test_stage_list_stem_entry_is_legal_only_where_prunable(resnet50_small) -> None:
    x = torch.randn(1, 3, 32, 32)
    model = copy.deepcopy(resnet50_small)
    out = prune_model(model, StructuredSpec(layers=[0.25, 0, 0, 0, 0.5, 0]), x)
    assert out.n_pruned["conv1"] == 16 and len(out.kept) == 7
    with pytest.raises(PruningError, match="'conv1'.*residual"):
        prune_model(
            _build("resnet18", (3, 32, 32)), StructuredSpec(layers=[0.25, 0, 0, 0, 0, 0]), x
        )


# Table 1: L1 pruning of ResNet-50, stage ratios (conv1, layer1..4, fc) -> speedup
TABLE1 = [([0, 0.60, 0.60, 0.60, 0.21, 0], 2.31), ([0, 0.74, 0.74, 0.60, 0.21, 0], 2.56)]


@pytest.mark.parametrize(("stages", "speedup"), TABLE1)
def test_resnet50_table1_speedup(stages: list[float], speedup: float) -> None:
    dense = _build("resnet50", (3, 224, 224), 1000)
    model = copy.deepcopy(dense)
    out = prune_model(model, StructuredSpec(layers=stages), torch.randn(1, 3, 224, 224))
    assert len(out.kept) == 32  # conv1 and conv2 of all 16 bottlenecks
    assert out.n_pruned["layer1.0.conv2"] == math.ceil(round(stages[1] * 64, 9))
    summary = prune_summary(dense, model, (3, 224, 224))
    assert summary["speedup"] == pytest.approx(speedup, rel=0.03)

"""Structured pruning: physical removal, equivalence with masking, replay, paper numbers."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunebench.errors import PruningError, RegistryError
from prunebench.pruning import (
    CRITERIA,
    PruneContext,
    PruneOutcome,
    apply_structure,
    masked_reference,
    num_to_prune,
    parse_layer_ratios,
    prunable_layers,
    prune_structured,
    prune_summary,
    register_criterion,
    resolve_layer_ratios,
)


def _build(name: str, shape: tuple[int, int, int] = (3, 32, 32), **kw: object) -> nn.Module:
    from prunebench.models import build_model

    torch.manual_seed(0)
    return build_model(name, in_channels=shape[0], num_classes=10, input_size=shape[1:], **kw)


def _randomise_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so masking after BN matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))
    return model


def _prune(
    dense: nn.Module, spec: str | float, x: torch.Tensor, skip: str | None = None
) -> tuple[nn.Module, PruneOutcome]:
    pruned = copy.deepcopy(dense)
    ratios = resolve_layer_ratios(
        parse_layer_ratios(spec, skip=skip), pruned, prunable_layers(pruned, x)
    )
    assert ratios, "spec should select some layers"
    return pruned, prune_structured(pruned, ratios, "l1", x)


CASES = [
    # (model, build kwargs, input shape, spec, skip)
    ("mlp", {"depth": 4, "width": 24}, (1, 8, 8), 0.5, None),
    ("lenet5", {}, (1, 28, 28), "conv*:0.5,fc1:0.3,fc2:0.7", None),
    ("resnet20", {}, (3, 16, 16), "*layer*.conv1:0.5", None),
    ("vgg11", {}, (3, 16, 16), 0.5, "features.0"),
]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def pruned_case(request: pytest.FixtureRequest) -> dict[str, object]:
    name, kw, shape, spec, skip = request.param
    dense = _randomise_bn(_build(name, shape, **kw)).eval()
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(2))
    pruned, outcome = _prune(dense, spec, x, skip)
    return {
        "name": name,
        "kw": kw,
        "shape": shape,
        "dense": dense,
        "pruned": pruned,
        "outcome": outcome,
        "x": x,
        "skip": skip,
    }


def test_pruned_equals_masked_reference(pruned_case: dict) -> None:
    dense, pruned, x = pruned_case["dense"], pruned_case["pruned"], pruned_case["x"]
    outcome: PruneOutcome = pruned_case["outcome"]
    assert not pruned.training
    with torch.no_grad():
        got = pruned(x)
        want = masked_reference(dense, outcome.kept)(x)
        full = dense(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the test is meaningful: pruning changed the function
    assert not torch.allclose(got, full, atol=1e-3)
    # and the dense model was left untouched by masked_reference
    with torch.no_grad():
        torch.testing.assert_close(dense(x), full)


def test_masked_reference_keeping_everything_is_dense(pruned_case: dict) -> None:
    dense, x = pruned_case["dense"], pruned_case["x"]
    outcome: PruneOutcome = pruned_case["outcome"]
    everything = {name: list(range(n)) for name, n in outcome.n_total.items()}
    with torch.no_grad():
        torch.testing.assert_close(masked_reference(dense, everything)(x), dense(x))


def test_kept_are_top_scored_and_counts(pruned_case: dict) -> None:
    dense, pruned = pruned_case["dense"], pruned_case["pruned"]
    outcome: PruneOutcome = pruned_case["outcome"]
    assert set(outcome.kept) == set(outcome.n_pruned) == set(outcome.n_total)
    for name, kept in outcome.kept.items():
        layer = dense.get_submodule(name)
        n = outcome.n_total[name]
        assert n == layer.weight.shape[0]
        assert kept == sorted(set(kept)) and all(0 <= i < n for i in kept)
        assert 0 < len(kept) < n  # never all, and something pruned at these ratios
        assert outcome.n_pruned[name] == n - len(kept)
        scores = layer.weight.detach().abs().flatten(1).mean(1)
        removed = sorted(set(range(n)) - set(kept))
        assert scores[kept].min() >= scores[removed].max()
        # the pruned layer holds exactly the kept dense filters, in order
        small = pruned.get_submodule(name)
        assert small.weight.shape[0] == len(kept)
        if small.weight.shape[1] == layer.weight.shape[1]:  # inputs not pruned upstream
            torch.testing.assert_close(small.weight, layer.weight[kept], atol=0, rtol=0)
    # module names are unchanged by physical removal
    assert [n for n, _ in pruned.named_modules()] == [n for n, _ in dense.named_modules()]


def test_counts_follow_ceil_rule() -> None:
    model = _build("lenet5", (1, 28, 28))
    ratios = {"conv1": 0.5, "conv2": 0.3, "fc1": 0.3, "fc2": 0.7}
    outcome = prune_structured(model, ratios, "l1", torch.randn(2, 1, 28, 28))
    expected = {"conv1": 3, "conv2": 5, "fc1": 36, "fc2": 59}  # ceil(r * n): 6, 16, 120, 84
    assert outcome.n_pruned == expected
    for name, r in ratios.items():
        n = outcome.n_total[name]
        assert outcome.n_pruned[name] == num_to_prune(n, r) >= r * n - 1e-9
        assert len(outcome.kept[name]) == n - expected[name]


def test_apply_structure_and_checkpoint_round_trip(pruned_case: dict) -> None:
    pruned, x = pruned_case["pruned"], pruned_case["x"]
    outcome: PruneOutcome = pruned_case["outcome"]
    buffer = io.BytesIO()
    torch.save(pruned.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(123)  # a different dense init: weights must come from the checkpoint
    from prunebench.models import build_model

    shape = pruned_case["shape"]
    fresh = build_model(
        pruned_case["name"],
        in_channels=shape[0],
        num_classes=10,
        input_size=shape[1:],
        **pruned_case["kw"],
    )
    fresh.train()
    assert apply_structure(fresh, outcome.kept, x) is fresh
    assert fresh.training  # mode restored
    fresh.load_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), pruned(x))


def test_pruned_model_trains(pruned_case: dict) -> None:
    model = copy.deepcopy(pruned_case["pruned"]).train()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(16, *pruned_case["shape"], generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------- prunable layers


def test_resnet_prunable_layers() -> None:
    model = _build("resnet20")
    names = prunable_layers(model, torch.randn(2, 3, 32, 32))
    assert names == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
    assert "conv1" not in names and "fc" not in names
    assert not any(n.endswith("conv2") for n in names)


def test_prunable_layers_simple_models() -> None:
    mlp = _build("mlp7_relu", (1, 28, 28))
    assert prunable_layers(mlp, torch.randn(2, 1, 28, 28)) == [f"fc{i}" for i in range(1, 7)]
    lenet = _build("lenet5", (1, 28, 28))
    assert prunable_layers(lenet, torch.randn(2, 1, 28, 28)) == ["conv1", "conv2", "fc1", "fc2"]


def test_prunable_layers_restores_mode() -> None:
    model = _build("resnet20").train()
    prunable_layers(model, torch.randn(2, 3, 32, 32))
    assert model.training


class _Residual(nn.Module):
    """A tiny residual MLP without an ``output_layer`` attribute (last Linear is output)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.a = nn.Linear(8, 6)
        self.b = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        h = h + self.b(torch.tanh(self.a(h)))
        return self.head(h)


def test_residual_coupling_without_output_attr() -> None:
    model = _Residual()
    assert prunable_layers(model, torch.randn(2, 5)) == ["a"]


# ---------------------------------------------------------------- prune_structured behaviour


def test_rejects_unprunable_and_unknown_layers() -> None:
    model = _build("resnet20")
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(PruningError, match="layer1.0.conv2.*residual"):
        prune_structured(model, {"layer1.0.conv2": 0.5}, "l1", x)
    with pytest.raises(PruningError, match="'fc'.*output layer"):
        prune_structured(model, {"fc": 0.5}, "l1", x)
    with pytest.raises(PruningError, match="nope"):
        prune_structured(model, {"nope": 0.5}, "l1", x)
    with pytest.raises(PruningError, match="bn1"):
        prune_structured(model, {"bn1": 0.5}, "l1", x)
    with pytest.raises(PruningError, match=r"\[0, 1\)"):
        prune_structured(model, {"layer1.0.conv1": 1.0}, "l1", x)
    with pytest.raises(RegistryError, match="l1"):
        prune_structured(model, {"layer1.0.conv1": 0.5}, "no-such-criterion", x)
    # nothing was changed by the failed calls
    assert model.get_submodule("layer1.0.conv1").out_channels == 16


def test_restores_mode_and_keeps_names() -> None:
    model = _build("lenet5", (1, 28, 28)).train()
    x = torch.randn(2, 1, 28, 28)
    prune_structured(model, {"conv1": 0.5}, "l1", x)
    assert model.training
    assert model.get_submodule("conv1").out_channels == 3
    assert model.get_submodule("conv2").in_channels == 3


class _Tiny(nn.Module):
    output_layer = "out"

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


def test_ties_keep_lower_indices() -> None:
    model = _Tiny()
    with torch.no_grad():
        model.hidden.weight.copy_(torch.ones(6, 3))
        model.hidden.weight[4].fill_(2.0)  # the single best neuron
    outcome = prune_structured(model, {"hidden": 0.5}, "l1", torch.randn(2, 3))
    assert outcome.kept == {"hidden": [0, 1, 4]}


def test_one_neuron_layer_is_never_emptied() -> None:
    model = _Tiny()
    outcome = prune_structured(model, {"hidden": 0.99}, "l1", torch.randn(2, 3))
    assert outcome.n_pruned == {"hidden": 5} and len(outcome.kept["hidden"]) == 1


def test_scores_computed_on_dense_model_first() -> None:
    seen: list[tuple[str, tuple[int, ...]]] = []

    def spy(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
        # every layer still has its dense shape when scored
        seen.append((ctx.name, tuple(ctx.model.get_submodule("conv2").weight.shape)))
        assert not ctx.model.training and ctx.example_inputs.shape[0] == 2
        return module.weight.detach().abs().flatten(1).mean(1)

    model = _build("lenet5", (1, 28, 28))
    dense_shape = tuple(model.conv2.weight.shape)
    prune_structured(model, {"conv1": 0.5, "conv2": 0.5}, spy, torch.randn(2, 1, 28, 28))
    assert seen == [("conv1", dense_shape), ("conv2", dense_shape)]


def test_custom_registered_criterion_with_seeded_generator() -> None:
    name = "test-random"
    if name not in CRITERIA:

        @register_criterion(name)
        def random_scores(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
            """Uniform random scores (for tests)."""
            return torch.rand(module.weight.shape[0], generator=ctx.generator)

    assert CRITERIA.doc(name).startswith("Uniform random")
    x = torch.randn(2, 1, 28, 28)
    runs = []
    for seed in (0, 0, 1):
        model = _build("lenet5", (1, 28, 28))
        runs.append(prune_structured(model, {"fc1": 0.5}, name, x, seed=seed).kept)
    assert runs[0] == runs[1] != runs[2]


def test_bad_criterion_output_is_pruning_error() -> None:
    model = _Tiny()
    with pytest.raises(PruningError, match=r"shape \(6,\)"):
        prune_structured(model, {"hidden": 0.5}, lambda m, c: torch.ones(3), torch.randn(2, 3))
    with pytest.raises(PruningError, match="non-finite"):
        prune_structured(
            model, {"hidden": 0.5}, lambda m, c: torch.full((6,), float("nan")), torch.randn(2, 3)
        )


def test_l1_is_registered_and_documented() -> None:
    assert "l1" in CRITERIA
    fn = CRITERIA.get("l1")
    assert "Li et al. 2017" in (fn.__doc__ or "")
    conv = nn.Conv2d(2, 3, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(24, dtype=torch.float32).view(3, 2, 2, 2) - 10)
    ctx = PruneContext(model=conv, name="conv", example_inputs=torch.randn(1, 2, 4, 4))
    expected = conv.weight.abs().sum(dim=(1, 2, 3)) / 8
    torch.testing.assert_close(fn(conv, ctx), expected)
    with pytest.raises(PruningError, match="l1"):
        fn(nn.BatchNorm2d(3), ctx)


def test_apply_structure_rejects_bad_indices() -> None:
    x = torch.randn(2, 3)
    with pytest.raises(PruningError, match="bad kept indices"):
        apply_structure(_Tiny(), {"hidden": [0, 9]}, x)
    with pytest.raises(PruningError, match="bad kept indices"):
        apply_structure(_Tiny(), {"hidden": []}, x)
    with pytest.raises(PruningError, match="output layer"):
        apply_structure(_Tiny(), {"out": [0]}, x)


# ---------------------------------------------------------------- the paper's numbers

# Table 6 (ResNet-56, CIFAR-10): PR -> (parameter sparsity %, speedup x)
PAPER_RESNET56 = {0.3: (31.14, 1.45), 0.5: (49.82, 1.99), 0.7: (70.57, 3.59), 0.9: (90.39, 11.41)}


@pytest.mark.parametrize("ratio", sorted(PAPER_RESNET56))
def test_resnet56_sparsity_and_speedup_match_paper(ratio: float) -> None:
    dense = _build("resnet56")
    x = torch.randn(2, 3, 32, 32)
    pruned, outcome = _prune(dense, f"*layer*.conv1:{ratio}", x)
    assert len(outcome.kept) == 27
    summary = prune_summary(dense, pruned, (3, 32, 32))
    assert summary["params_dense"] == 853_018  # the paper's 0.85M
    assert summary["macs_dense"] == 125_485_696  # the paper's 0.25G FLOPs = 2 * MACs
    sparsity, speedup = PAPER_RESNET56[ratio]
    assert summary["param_sparsity"] == pytest.approx(sparsity, abs=0.1)
    assert summary["speedup"] == pytest.approx(speedup, rel=0.02)
    assert summary["flops_sparsity"] == pytest.approx(
        100 * (1 - summary["macs_pruned"] / summary["macs_dense"])
    )

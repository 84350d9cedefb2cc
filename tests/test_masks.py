"""Unstructured masks (magnitude/random, layer/global), mask hooks, and IMP with rewinding."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunebench.errors import PruningError
from prunebench.models import build_model
from prunebench.pruning.lottery import imp_round, imp_schedule, rewind, snapshot
from prunebench.pruning.masks import (
    MaskHooks,
    apply_masks,
    magnitude_masks,
    mask_sparsity,
    prunable_weights,
    random_masks,
)
from prunebench.recipe import TrainCfg
from prunebench.train import Loaders, train


def tiny_mlp(seed: int = 0, width: int = 16, depth: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        "mlp", in_channels=1, num_classes=4, input_size=(4, 4), depth=depth, width=width
    )


class TensorLoader:
    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
        self.x, self.y, self.batch = x, y, batch
        self.num_samples = len(y)

    def epoch(self, epoch: int):
        for i in range(0, self.num_samples, self.batch):
            yield self.x[i : i + self.batch], self.y[i : i + self.batch]

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch)


def tiny_loaders(n: int = 64) -> Loaders:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    loader = TensorLoader(x, y, 16)
    return Loaders(train=loader, val=None, test=TensorLoader(x[:16], y[:16], 16), num_classes=4)


def n_pruned(masks) -> int:
    return sum(int((~m).sum()) for m in masks.values())


# -- prunable set, counts, scope -------------------------------------------------------------


def test_prunable_weights_exclude_output_by_default():
    model = tiny_mlp()
    assert list(prunable_weights(model)) == ["fc1.weight", "fc2.weight"]
    assert list(prunable_weights(model, include_output=True)) == [
        "fc1.weight",
        "fc2.weight",
        "fc3.weight",
    ]
    masks = magnitude_masks(model, 0.5, include_output=True)
    assert "fc3.weight" in masks


def test_exact_counts_layer_and_global():
    model = tiny_mlp()
    weights = prunable_weights(model)
    layer = magnitude_masks(model, 0.3, scope="layer")
    for name, w in weights.items():
        assert layer[name].dtype == torch.bool and layer[name].shape == w.shape
        assert int((~layer[name]).sum()) == round(0.3 * w.numel())
    glob = magnitude_masks(model, 0.3, scope="global")
    total = sum(w.numel() for w in weights.values())
    assert n_pruned(glob) == round(0.3 * total)
    rnd = random_masks(model, 0.3, seed=0, scope="layer")
    for name, w in weights.items():
        assert int((~rnd[name]).sum()) == round(0.3 * w.numel())


def test_magnitude_keeps_largest():
    model = tiny_mlp()
    masks = magnitude_masks(model, 0.6, scope="global")
    kept = torch.cat([w.detach().abs()[masks[n]] for n, w in prunable_weights(model).items()])
    pruned = torch.cat([w.detach().abs()[~masks[n]] for n, w in prunable_weights(model).items()])
    assert kept.min() >= pruned.max()


def test_global_vs_layer_scope_differ():
    model = tiny_mlp()
    with torch.no_grad():
        model.fc2.weight.mul_(1e4)  # fc2 dominates the global ranking
    glob = magnitude_masks(model, 0.4, scope="global")
    layer = magnitude_masks(model, 0.4, scope="layer")
    # Layer scope prunes 40% of each layer; global prunes fc1 (small weights) first.
    assert int((~layer["fc1.weight"]).sum()) == round(0.4 * model.fc1.weight.numel())
    assert int((~glob["fc2.weight"]).sum()) == 0
    assert int((~glob["fc1.weight"]).sum()) > int((~layer["fc1.weight"]).sum())
    assert abs(n_pruned(glob) - n_pruned(layer)) <= len(layer)  # rounding per layer vs total


def test_ties_deterministic_and_random_seeded():
    model = tiny_mlp()
    with torch.no_grad():
        model.fc1.weight.fill_(0.5)
        model.fc2.weight.fill_(0.5)
    a = magnitude_masks(model, 0.25)
    b = magnitude_masks(model, 0.25)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ties go to the lowest position: the first weights of fc1 in flat order
    k = n_pruned(a)
    assert not a["fc1.weight"].reshape(-1)[:k].any()
    r1 = random_masks(model, 0.5, seed=3)
    r2 = random_masks(model, 0.5, seed=3)
    r3 = random_masks(model, 0.5, seed=4)
    assert all(torch.equal(r1[k], r2[k]) for k in r1)
    assert not all(torch.equal(r1[k], r3[k]) for k in r1)


def test_bad_inputs():
    model = tiny_mlp()
    for bad in (1.0, -0.1, float("nan"), True):
        with pytest.raises(PruningError):
            magnitude_masks(model, bad)
    with pytest.raises(PruningError, match="scope"):
        magnitude_masks(model, 0.5, scope="net")
    with pytest.raises(PruningError, match="no parameter"):
        apply_masks(model, {"nope.weight": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(PruningError, match="shape"):
        apply_masks(model, {"fc1.weight": torch.ones(2, dtype=torch.bool)})
    high = magnitude_masks(model, 0.8)
    with pytest.raises(PruningError, match="already prune"):
        magnitude_masks(model, 0.5, existing=high)


def test_existing_masks_prune_remaining_only():
    model = tiny_mlp()
    first = magnitude_masks(model, 0.5)
    apply_masks(model, first)
    with torch.no_grad():  # make the pruned weights large: they must stay pruned anyway
        for name, w in prunable_weights(model).items():
            w[~first[name]] = 10.0
    second = magnitude_masks(model, 0.75, existing=first)
    total = sum(m.numel() for m in first.values())
    assert n_pruned(second) == round(0.75 * total)
    for name in first:
        assert not (second[name] & ~first[name]).any()  # pruned stays pruned


@settings(max_examples=30, deadline=None)
@given(
    s1=st.floats(0, 0.999, allow_nan=False),
    s2=st.floats(0, 0.999, allow_nan=False),
    scope=st.sampled_from(["layer", "global"]),
    seed=st.integers(0, 3),
)
def test_property_counts_and_nesting(s1: float, s2: float, scope: str, seed: int):
    model = tiny_mlp(seed, width=8)
    lo, hi = sorted((s1, s2))
    weights = prunable_weights(model)
    m_lo = magnitude_masks(model, lo, scope=scope)
    m_hi = magnitude_masks(model, hi, scope=scope)
    if scope == "layer":
        for name, w in weights.items():
            assert int((~m_lo[name]).sum()) == round(lo * w.numel())
    else:
        assert n_pruned(m_lo) == round(lo * sum(w.numel() for w in weights.values()))
    for name in weights:
        assert not (m_hi[name] & ~m_lo[name]).any()  # keep(high) is a subset of keep(low)
    r = random_masks(model, hi, seed=seed, scope=scope)
    assert n_pruned(r) == n_pruned(m_hi)


# -- hooks through training ------------------------------------------------------------------


def test_masks_survive_train_with_momentum_and_weight_decay():
    model = tiny_mlp()
    masks = magnitude_masks(model, 0.7, scope="layer")
    apply_masks(model, masks)
    before = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
    cfg = TrainCfg(epochs=2, lr="0.1", momentum=0.9, weight_decay=5e-4)
    train(model, tiny_loaders(), cfg, phase="retrain", hooks=MaskHooks(masks))
    for name, w in prunable_weights(model).items():
        assert torch.all(w[~masks[name]] == 0)
        assert not torch.equal(w[masks[name]], before[name][masks[name]])  # others trained
    stats = mask_sparsity(model, masks)
    assert stats["pruned_weights"] == n_pruned(masks)
    assert stats["mask_sparsity_percent"] == pytest.approx(70.0, abs=0.5)
    assert stats["total_params"] - stats["nonzero_params"] >= n_pruned(masks)


def test_hooks_undo_stale_momentum_manual_loop():
    """A momentum buffer from before pruning would resurrect weights without after_step."""
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 4, (8,))
    for _ in range(2):  # dense steps fill the momentum buffers
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    masks = magnitude_masks(model, 0.5)
    apply_masks(model, masks)
    hooks = MaskHooks(masks)
    for step in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        hooks.after_backward(model, step)
        assert torch.all(model.fc1.weight.grad[~masks["fc1.weight"]] == 0)
        opt.step()
        hooks.after_step(model, step)
        for name, w in prunable_weights(model).items():
            assert torch.all(w[~masks[name]] == 0)


# -- lottery tickets -------------------------------------------------------------------------


def test_imp_schedule():
    assert imp_schedule(0.0, 0.2) == []
    assert imp_schedule(0.2, 0.2) == [0.2]
    assert imp_schedule(0.36, 0.2) == [0.2, 0.36]
    s = imp_schedule(0.9, 0.2)
    assert s[-1] == 0.9 and len(s) == 11
    assert all(a < b for a, b in zip(s, s[1:], strict=False))
    assert s[:3] == pytest.approx([0.2, 0.36, 0.488])
    with pytest.raises(PruningError):
        imp_schedule(1.0, 0.2)
    with pytest.raises(PruningError):
        imp_schedule(0.5, 0.0)


def test_rewind_restores_rewind_point_exactly():
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, num_classes=4, input_size=(28, 28))
    state = snapshot(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 4, (4,))
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    masks = imp_round(model, None, 0.5)
    rewind(model, state, masks)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        w = params[name].detach()
        assert torch.equal(w[mask], state[name][mask])
        assert torch.all(w[~mask] == 0)
    assert torch.equal(params["fc3.weight"], state["fc3.weight"])  # output layer unmasked
    assert torch.equal(params["fc1.bias"], state["fc1.bias"])


def test_rewind_restores_batchnorm_stats():
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=3, num_classes=4, input_size=(8, 8))
    state = snapshot(model)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 8, 8))  # moves running stats
    assert not torch.equal(model.bn1.running_mean, state["bn1.running_mean"])
    masks = imp_round(model, None, 0.2, scope="layer")
    rewind(model, state, masks)
    assert torch.equal(model.bn1.running_mean, state["bn1.running_mean"])


def test_two_round_imp_reaches_schedule():
    model = tiny_mlp()
    state = snapshot(model)
    loaders = tiny_loaders()
    cfg = TrainCfg(epochs=1, lr="0.05", momentum=0.9, weight_decay=5e-4)
    total = sum(w.numel() for w in prunable_weights(model).values())
    masks = None
    schedule = imp_schedule(0.36, 0.2)
    assert schedule == [0.2, 0.36]
    for target in schedule:
        train(model, loaders, cfg, phase="imp", hooks=MaskHooks(masks) if masks else None)
        masks = imp_round(model, masks, 0.2)
        rewind(model, state, masks)
        assert n_pruned(masks) == round(target * total)
        assert mask_sparsity(model, masks)["mask_sparsity_percent"] == pytest.approx(
            100 * target, abs=0.5
        )
    # the same end point by magnitude_masks with existing masks of the prunable total
    train(model, loaders, cfg, phase="ticket", hooks=MaskHooks(masks))
    for name, w in prunable_weights(model).items():
        assert torch.all(w[~masks[name]] == 0)


def test_imp_round_layer_scope_counts():
    model = tiny_mlp()
    m1 = imp_round(model, None, 0.5, scope="layer")
    m2 = imp_round(model, m1, 0.5, scope="layer")
    for name, w in prunable_weights(model).items():
        n = w.numel()
        k1 = round(0.5 * n)
        assert int((~m1[name]).sum()) == k1
        assert int((~m2[name]).sum()) == k1 + round(0.5 * (n - k1))
        assert not (m2[name] & ~m1[name]).any()

"""Coupled-group pruning (``prune.coupled``): residual-tied layers pruned as one group
through Torch-Pruning's dependency graph; pruned == masked dense, replay, counting."""

from __future__ import annotations

import copy

import pytest
import torch

from prunebench.errors import PruningError
from prunebench.models import build_model, count_macs, count_params
from prunebench.pruning import apply_structure, masked_reference, prune_structured


def _model(name, shape):
    torch.manual_seed(0)
    model = build_model(name, in_channels=shape[0], num_classes=10, input_size=shape[1:])
    for m in model.modules():  # non-trivial BN so the equivalence check means something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _check(dense, spec, criterion, x, batches=None):
    pruned = copy.deepcopy(dense)
    outcome = prune_structured(pruned, spec, criterion, x, batches=batches, coupled=True)
    ref = masked_reference(dense, outcome.kept, x).eval()
    with torch.no_grad():
        torch.testing.assert_close(pruned.eval()(x), ref(x), atol=1e-4, rtol=1e-4)
    replay = apply_structure(copy.deepcopy(dense), outcome.kept, x)
    replay.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(replay.eval()(x), pruned(x))
    return pruned, outcome


def test_resnet20_block_last_conv_group():
    shape = (3, 16, 16)
    dense, x = _model("resnet20", shape), torch.randn(4, *shape)
    pruned, outcome = _check(dense, {"layer2.1.conv2": 0.5}, "l1", x)
    group = ["layer2.0.conv2", "layer2.1.conv2", "layer2.2.conv2"]
    assert sorted(outcome.kept) == group
    assert len({tuple(outcome.kept[n]) for n in group}) == 1  # the same channel indices
    assert all(outcome.n_pruned[n] == 16 and outcome.n_total[n] == 32 for n in group)
    # counting: 16 channels of the 32-wide stage go (8x8 maps in stage 2, 4x4 in stage 3)
    params = 3 * 16 * 32 * 9 + 3 * 2 * 16 + 2 * 32 * 16 * 9 + 64 * 16 * 9
    macs = 3 * 16 * 32 * 9 * 64 + 2 * 32 * 16 * 9 * 64 + 64 * 16 * 9 * 16
    assert count_params(dense) - count_params(pruned) == params
    assert count_macs(dense, input_shape=shape) - count_macs(pruned, input_shape=shape) == macs
    # the group's channels are chosen by the summed criterion score
    score = sum(dense.get_submodule(n).weight.abs().flatten(1).mean(1) for n in group)
    assert outcome.kept[group[0]] == sorted(score.argsort(descending=True)[:16].tolist())
    # trains
    pruned.train()
    loss = torch.nn.functional.cross_entropy(pruned(x), torch.randint(0, 10, (4,)))
    loss.backward()


def test_resnet20_stem_group_and_tp_criterion():
    shape = (3, 16, 16)
    dense, x = _model("resnet20", shape), torch.randn(4, *shape)
    _, outcome = _check(dense, {"conv1": 0.25, "layer3.0.conv1": 0.5}, "tp_magnitude", x)
    assert sorted(outcome.kept) == ["conv1", "layer1.0.conv2", "layer1.1.conv2",
                                    "layer1.2.conv2", "layer3.0.conv1"]
    assert len(outcome.kept["conv1"]) == 12


def test_resnet50_downsample_group():
    shape = (3, 32, 32)
    dense, x = _model("resnet50", shape), torch.randn(2, *shape)
    batches = [(torch.randn(2, *shape), torch.randint(0, 10, (2,)))]
    _, outcome = _check(dense, {"layer2.0.downsample.0": 0.5}, "tp_taylor", x, batches)
    assert sorted(outcome.kept) == ["layer2.0.conv3", "layer2.0.downsample.0",
                                    "layer2.1.conv3", "layer2.2.conv3", "layer2.3.conv3"]
    assert all(len(k) == 256 for k in outcome.kept.values())


def test_refused_without_coupled_and_conflicts_named():
    shape = (3, 16, 16)
    dense, x = _model("resnet20", shape), torch.randn(2, *shape)
    with pytest.raises(PruningError, match="set prune.coupled: true"):
        prune_structured(copy.deepcopy(dense), {"layer2.1.conv2": 0.5}, "l1", x)
    with pytest.raises(PruningError, match="coupled by a residual addition: give every layer"):
        prune_structured(copy.deepcopy(dense), {"layer2.1.conv2": 0.5, "layer2.2.conv2": 0.25},
                         "l1", x, coupled=True)
    with pytest.raises(PruningError, match="must lose the same channels"):
        apply_structure(copy.deepcopy(dense), {"layer2.1.conv2": list(range(16))}, x)
    with pytest.raises(PruningError, match="output layer"):
        prune_structured(copy.deepcopy(dense), {"fc": 0.5}, "l1", x, coupled=True)


def test_describe_and_recipe_field():
    from prunebench.errors import RecipeError
    from prunebench.pruning.describe import describe
    from prunebench.recipe import PruneCfg

    info = describe("resnet20", "cifar10", "*layer*.conv2:0.5", coupled=True)
    assert info["layers"]["conv1"] == [8, 16] and info["layers"]["layer3.2.conv2"] == [32, 64]
    assert info["speedup"] > 1.5
    assert PruneCfg(coupled=True).coupled
    with pytest.raises((RecipeError, ValueError), match="coupled"):
        PruneCfg(coupled=True, schedule="greg", lr="0:0.01")

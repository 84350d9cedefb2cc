"""Built-in pruning criteria: l2, random, taylor_fo, bn_scale, fpgm (and the context)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunebench.errors import PruningError
from prunebench.pruning import CRITERIA, PruneContext, prunable_layers, prune_structured
from prunebench.pruning.context import following_bn_by_order


def _build(name: str, shape: tuple[int, int, int] = (3, 16, 16), **kw: object) -> nn.Module:
    from prunebench.models import build_model

    torch.manual_seed(0)
    return build_model(name, in_channels=shape[0], num_classes=10, input_size=shape[1:], **kw)


def _batches(shape: tuple[int, ...], n: int = 2, seed: int = 3) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, *shape, generator=g), torch.randint(0, 10, (4,), generator=g))] * n


def _ctx(model: nn.Module, name: str, **kw: object) -> PruneContext:
    return PruneContext(model=model, name=name, example_inputs=torch.zeros(1), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["l1", "l2", "random", "taylor_fo", "bn_scale", "fpgm"])
def test_registered_with_docs(name: str) -> None:
    assert name in CRITERIA
    assert CRITERIA.doc(name)


@pytest.mark.parametrize("name", ["l2", "random", "fpgm", "taylor_fo", "bn_scale"])
def test_non_layer_is_pruning_error(name: str) -> None:
    with pytest.raises(PruningError, match=name):
        CRITERIA.get(name)(nn.ReLU(), _ctx(nn.ReLU(), "relu"))


def test_l2_norm_values() -> None:
    conv = nn.Conv2d(2, 3, 2)
    expected = conv.weight.detach().flatten(1).pow(2).sum(1).sqrt()
    torch.testing.assert_close(CRITERIA.get("l2")(conv, _ctx(conv, "c")), expected)


def test_fpgm_sum_of_distances_and_median_filter_scores_lowest() -> None:
    lin = nn.Linear(2, 4, bias=False)
    with torch.no_grad():  # three corners of a triangle and its centre
        lin.weight.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [1.0, 1.0]]))
    scores = CRITERIA.get("fpgm")(lin, _ctx(lin, "lin"))
    w = lin.weight.detach().double()
    brute = torch.stack([sum((w[i] - w[j]).norm() for j in range(4)) for i in range(4)])
    torch.testing.assert_close(scores, brute)
    assert int(scores.argmin()) == 3  # the filter closest to the geometric median goes first


def test_random_is_seeded_and_differs_across_seeds() -> None:
    x = torch.randn(2, 1, 28, 28)
    runs = []
    for seed in (0, 0, 1, 2):
        model = _build("lenet5", (1, 28, 28))
        runs.append(prune_structured(model, {"fc1": 0.5, "fc2": 0.5}, "random", x, seed=seed).kept)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2] != runs[3]
    lin = nn.Linear(3, 50)
    a = CRITERIA.get("random")(lin, _ctx(lin, "lin"))  # no generator: seed 0
    b = CRITERIA.get("random")(lin, _ctx(lin, "lin"))
    assert torch.equal(a, b) and a.shape == (50,)


# ---------------------------------------------------------------- bn_scale


def test_bn_scale_uses_following_bn_via_graph() -> None:
    model = _build("vgg11").eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.randn(m.num_features, generator=g))
    dense = copy.deepcopy(model)
    outcome = prune_structured(model, {"features.4": 0.5}, "bn_scale", torch.randn(1, 3, 16, 16))
    gamma = dense.features[5].weight.detach().abs()
    kept = outcome.kept["features.4"]
    removed = sorted(set(range(128)) - set(kept))
    assert len(kept) == 64 and gamma[kept].min() >= gamma[removed].max()


def test_bn_scale_fallback_by_module_order_and_errors() -> None:
    model = _build("resnet20")
    conv = model.get_submodule("layer1.0.conv1")
    scores = CRITERIA.get("bn_scale")(conv, _ctx(model, "layer1.0.conv1"))
    assert torch.equal(scores, model.get_submodule("layer1.0.bn1").weight.detach().abs())
    assert following_bn_by_order(model, "fc") is None
    lenet = _build("lenet5", (1, 28, 28))
    with pytest.raises(PruningError, match="no affine BatchNorm"):
        prune_structured(lenet, {"conv1": 0.5}, "bn_scale", torch.randn(1, 1, 28, 28))


# ---------------------------------------------------------------- taylor_fo


class _Tiny(nn.Module):
    output_layer = "out"

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 6)
        self.out = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def test_taylor_fo_needs_batches() -> None:
    model = _Tiny()
    with pytest.raises(PruningError, match="taylor_fo.*batches"):
        prune_structured(model, {"hidden": 0.5}, "taylor_fo", torch.randn(2, 3))
    with pytest.raises(PruningError, match="batches"):
        CRITERIA.get("taylor_fo")(model.hidden, _ctx(model, "hidden", batches=[]))


def test_taylor_fo_matches_manual_and_leaves_model_untouched() -> None:
    torch.manual_seed(0)
    model = _Tiny().eval()
    batches = [(torch.randn(5, 3), torch.randint(0, 4, (5,))) for _ in range(3)]
    model.out.weight.grad = torch.full_like(model.out.weight, 7.0)  # a stale grad stays
    state = copy.deepcopy(model.state_dict())
    scores = CRITERIA.get("taylor_fo")(model.hidden, _ctx(model, "hidden", batches=batches))

    ref = copy.deepcopy(model)
    expected = torch.zeros(6, dtype=torch.float64)
    for x, y in batches:
        ref.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        w, b = ref.hidden.weight, ref.hidden.bias
        expected += ((w * w.grad).sum(1) + b * b.grad).detach().double() ** 2
    torch.testing.assert_close(scores, expected)
    assert model.hidden.weight.grad is None and model.hidden.bias.grad is None
    assert torch.equal(model.out.weight.grad, torch.full_like(model.out.weight, 7.0))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_taylor_fo_prunes_lowest_and_gets_batches_from_prune_structured() -> None:
    model = _build("resnet20").train()
    x = torch.randn(2, 3, 16, 16)
    batches = _batches((3, 16, 16))
    names = prunable_layers(model, x)
    dense = copy.deepcopy(model)
    outcome = prune_structured(model, dict.fromkeys(names, 0.5), "taylor_fo", x, batches=batches)
    assert model.training
    ctx = _ctx(dense.eval(), names[0], batches=batches)
    scores = CRITERIA.get("taylor_fo")(dense.get_submodule(names[0]), ctx)
    kept = outcome.kept[names[0]]
    removed = sorted(set(range(len(scores))) - set(kept))
    assert scores[kept].min() >= scores[removed].max()
    assert set(ctx.cache["taylor_fo"]) >= set(names)  # one gradient pass for every layer

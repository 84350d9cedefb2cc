"""Every structured criterion on every model family (issue 3's checks):
the physically pruned model equals the masked dense model, the kept filters are exactly
the criterion's top scores, and the pruned model trains."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from prunebench.models import build_model
from prunebench.pruning import (
    CRITERIA,
    masked_reference,
    num_to_prune,
    parse_layer_ratios,
    prunable_layers,
    prune_structured,
    resolve_layer_ratios,
)
from prunebench.pruning import structured as st

FAMILIES = {
    # name: (kwargs, input shape, layer spec)
    "mlp": ({"depth": 3, "width": 16}, (1, 8, 8), "0.5"),
    "lenet5": ({}, (1, 28, 28), "0.5"),
    "resnet20": ({}, (3, 16, 16), "*layer*.conv1:0.5"),
    "vgg11": ({}, (3, 16, 16), "features.4:0.5,features.8:0.5,features.15:0.5"),
}
HAS_BN = {"resnet20", "vgg11"}




def _setup(family):
    kwargs, shape, spec = FAMILIES[family]
    torch.manual_seed(0)
    model = build_model(family, in_channels=shape[0], num_classes=10, input_size=shape[1:],
                        **kwargs)
    for m in model.modules():  # non-trivial BN so the equivalence check means something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.randn(8, *shape)
    batches = [(torch.randn(8, *shape), torch.randint(0, 10, (8,))) for _ in range(2)]
    ratios = resolve_layer_ratios(parse_layer_ratios(spec), model, prunable_layers(model, x))
    return model, x, batches, ratios


CASES = [(c, f) for c in CRITERIA.names() for f in FAMILIES if c != "bn_scale" or f in HAS_BN]


@pytest.mark.parametrize(("criterion", "family"), CASES)
def test_criterion_on_family(criterion, family):
    dense, x, batches, ratios = _setup(family)
    graph = st._build_graph(dense, x)
    scores = st._score_layers(dense, graph, list(ratios), criterion, x, batches, seed=3)
    pruned = copy.deepcopy(dense)
    outcome = prune_structured(pruned, ratios, criterion, x, batches=batches, seed=3)
    # kept filters are exactly the top scores (ties: lower index kept)
    for name, ratio in ratios.items():
        s = scores[name]
        k = num_to_prune(len(s), ratio)
        order = sorted(range(len(s)), key=lambda i: (-float(s[i]), i))
        assert outcome.kept[name] == sorted(order[: len(s) - k]), name
    # physically pruned == masked dense, in eval mode
    pruned.eval()
    ref = masked_reference(dense, outcome.kept).eval()
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), ref(x), atol=1e-4, rtol=1e-4)
    # and it trains
    pruned.train()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.05, momentum=0.9)
    xb, yb = batches[0]
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(pruned(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_documented_extension_example_runs_from_a_recipe(tmp_path, monkeypatch):
    """docs/extending.md: a criterion in one file, used from a recipe via `plugins`."""
    from pathlib import Path

    import prunebench

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "extending.md").read_text()
    code = (root / "examples" / "plugins" / "linf.py").read_text()
    assert code.strip() in doc  # the doc shows the real file
    assert len(code.strip().splitlines()) <= 20
    monkeypatch.chdir(root)
    res = prunebench.run("examples/custom_criterion.yaml", out=tmp_path)
    assert res.status == "done" and res.result["pruned"]["speedup"] > 1
    assert "linf" in CRITERIA

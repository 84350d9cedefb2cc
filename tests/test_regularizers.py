"""Regularisation-based pruning schedules (GReg-1, TPP): selection, schedule, gradients,
their effect under SGD, resumable state and near-lossless physical removal."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from prunebench.errors import PruningError
from prunebench.models import build_model
from prunebench.pruning.regularizers import (
    REGULARIZERS,
    TPP,
    GReg,
    Selection,
    precomputed_criterion,
    remove_selected,
    select_filters,
    steps_needed,
    steps_to_ceiling,
)
from prunebench.pruning.structured import prunable_layers, prune_structured


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", in_channels=1, num_classes=4, input_size=(8, 8), depth=3, width=16)


def _resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("resnet20", in_channels=3, num_classes=4, input_size=(16, 16))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial BN affine parameters and statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1.0 + 0.3 * torch.randn(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model


MLP_X = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
RES_X = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(6))
MLP_RATIOS = {"fc1": 0.5, "fc2": 0.3}


@pytest.fixture(scope="module")
def resnet_case() -> tuple[nn.Module, dict[str, float], Selection]:
    model = _resnet()
    ratios = {name: 0.5 for name in prunable_layers(model, RES_X)}
    return model, ratios, select_filters(model, ratios, "l1", RES_X)


def _norms(model: nn.Module, sel: Selection) -> dict[str, tuple[float, float]]:
    """Mean row norm of the pruned and of the kept filters, per layer."""
    out = {}
    for name in sel.pruned:
        rows = model.get_submodule(name).weight.detach().flatten(1).norm(dim=1)
        out[name] = (rows[sel.pruned[name]].mean().item(), rows[sel.kept[name]].mean().item())
    return out


def _penalty_only_sgd(model: nn.Module, hook: GReg, steps: int, lr: float, start: int = 0):
    """SGD driven by the hook alone (zero data loss: no forward pass needed)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for step in range(start, start + steps):
        opt.zero_grad(set_to_none=True)
        hook.after_backward(model, step)
        opt.step()
        hook.after_step(model, step)


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize("which", ["mlp", "resnet"])
def test_select_filters_matches_one_shot_l1(which, resnet_case):
    if which == "mlp":
        model, ratios, x = _mlp(), MLP_RATIOS, MLP_X
        sel = select_filters(model, ratios, "l1", x)
    else:
        model, ratios, sel = resnet_case
        x = RES_X
    before = copy.deepcopy(model.state_dict())
    outcome = prune_structured(copy.deepcopy(model), ratios, "l1", x)
    assert sel.kept == outcome.kept
    for name, kept in sel.kept.items():
        n = outcome.n_total[name]
        assert sorted(kept + sel.pruned[name]) == list(range(n))
        assert len(sel.pruned[name]) == outcome.n_pruned[name]
    # Nothing removed or changed, and the graph-free path agrees (BN found by order too).
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert select_filters(model, ratios) == sel
    if which == "resnet":
        assert sel.bn["layer2.1.conv1"] == ["layer2.1.bn1"]
    else:
        assert sel.bn == {"fc1": [], "fc2": []}
    assert Selection.from_dict(sel.as_dict()) == sel


def _random_scores(module: nn.Module, ctx) -> torch.Tensor:
    return torch.rand(module.weight.shape[0], generator=ctx.generator)


def test_select_filters_matches_one_shot_for_seeded_callable_criterion(resnet_case):
    model, ratios, _ = resnet_case
    for seed in (0, 3):
        sel = select_filters(model, ratios, _random_scores, RES_X, seed=seed)
        outcome = prune_structured(copy.deepcopy(model), ratios, _random_scores, RES_X, seed=seed)
        assert sel.kept == outcome.kept
        assert select_filters(model, ratios, _random_scores, seed=seed).kept == sel.kept
    assert select_filters(model, ratios, _random_scores, RES_X, seed=1).kept != sel.kept
    with pytest.raises(PruningError):
        select_filters(model, {"layer1.0.conv2": 0.5}, "l1", RES_X)  # residual-coupled
    with pytest.raises(PruningError):
        select_filters(model, {"layer1.0.conv1": 1.0}, "l1", RES_X)


def test_precomputed_criterion_and_remove_selected(resnet_case):
    model, ratios, sel = resnet_case
    a = copy.deepcopy(model)
    outcome = prune_structured(a, ratios, precomputed_criterion(sel), RES_X)
    assert outcome.kept == sel.kept
    b = copy.deepcopy(model)
    outcome_b = remove_selected(b, sel, RES_X)
    assert outcome_b.kept == sel.kept
    assert outcome_b.n_pruned == {k: len(v) for k, v in sel.pruned.items()}
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    with pytest.raises(PruningError, match="output layer"):
        select_filters(_mlp(), {"fc3": 0.5})


# --------------------------------------------------------------------------- schedule


def test_lambda_schedule_grows_caps_and_finishes():
    model = _mlp()
    sel = select_filters(model, MLP_RATIOS, "l1", MLP_X)
    hook = GReg(model, sel, reg_granularity=0.25, update_interval=3, reg_ceiling=1.0)
    seen = []
    for step in range(16):
        hook.after_backward(model, step)
        seen.append((hook.lam, hook.finished))
    lams = [lam for lam, _ in seen]
    assert lams == [0.0] * 3 + [0.25] * 3 + [0.5] * 3 + [0.75] * 3 + [1.0] * 4
    # finished flips exactly at the first step whose lambda is the ceiling, and stays.
    assert [f for _, f in seen] == [False] * 12 + [True] * 4
    assert hook.finished_step == 12 == hook.steps_to_ceiling()
    # A ceiling that is no multiple of the granularity is capped, not overshot.
    capped = GReg(model, sel, reg_granularity=0.3, update_interval=1, reg_ceiling=1.0)
    assert [capped.lam_at(s) for s in range(6)] == pytest.approx([0, 0.3, 0.6, 0.9, 1.0, 1.0])
    # Defaults: +1e-4 every 5 steps up to 1.0.
    default = GReg(model, sel)
    assert default.steps_to_ceiling() == 50_000
    assert default.lam_at(4) == 0.0 and default.lam_at(5) == pytest.approx(1e-4)
    assert default.lam_at(49_999) == pytest.approx(0.9999) and default.lam_at(50_000) == 1.0
    for bad in ({"reg_granularity": 0.0}, {"update_interval": 0}, {"reg_ceiling": -1.0}):
        with pytest.raises(PruningError):
            GReg(model, sel, **bad)
    assert {"greg": GReg, "tpp": TPP} == REGULARIZERS


def test_steps_to_ceiling_and_steps_needed_match_the_hook():
    model = _mlp()
    sel = select_filters(model, MLP_RATIOS, "l1", MLP_X)
    for knobs in ({"reg_granularity": 0.25, "update_interval": 3},
                  {"reg_granularity": 0.3, "update_interval": 2, "reg_ceiling": 1.0},
                  {"reg_granularity": 1e-4, "update_interval": 5}):
        hook = GReg(model, sel, **knobs)
        c = steps_to_ceiling(knobs["reg_granularity"], knobs["update_interval"],
                             knobs.get("reg_ceiling", 1.0))
        assert c == hook.steps_to_ceiling()
        assert hook.lam_at(c) == hook.reg_ceiling and hook.lam_at(c - 1) < hook.reg_ceiling
    # growth (12 steps), the first step at the ceiling, then the stabilisation interval
    assert steps_needed(0.25, 3, 1.0) == 13
    assert steps_needed(0.25, 3, 1.0, stabilize_interval=40) == 53


# --------------------------------------------------------------------------- gradients


def _random_grads(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _check_hook_grad_is_penalty_grad(model: nn.Module, hook: GReg, step: int) -> None:
    """grad after hook - grad before == d penalty / d params (autograd, float64)."""
    before = _random_grads(model, 1)
    hook.after_backward(model, step)
    assert hook.lam > 0
    added = {n: p.grad - before[n] for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    hook.penalty(model).backward()
    for n, p in model.named_parameters():
        expected = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(added[n], expected, rtol=1e-10, atol=1e-12, msg=n)


def test_greg_penalises_only_pruned_filters_and_their_bn(resnet_case):
    model, _, sel = resnet_case
    model = copy.deepcopy(model).double()
    hook = GReg(model, sel, reg_granularity=0.1, update_interval=1,
                penalize_bias=True, penalize_bn=True)
    _check_hook_grad_is_penalty_grad(model, hook, step=4)
    before = _random_grads(model, 2)
    hook.after_backward(model, 4)
    lam = hook.lam
    assert lam == pytest.approx(0.4)
    params = dict(model.named_parameters())
    touched = set()
    for name in sel.pruned:
        pr, kp = sel.pruned[name], sel.kept[name]
        for pname in (
            f"{name}.weight",
            *(f"{b}.{s}" for b in sel.bn[name] for s in ("weight", "bias")),
        ):
            touched.add(pname)
            p = params[pname]
            assert torch.equal(p.grad[kp], before[pname][kp])  # kept: bit for bit untouched
            torch.testing.assert_close(p.grad[pr], before[pname][pr] + lam * p.detach()[pr])
    for pname, p in params.items():
        if pname not in touched:
            assert torch.equal(p.grad, before[pname]), pname
    # Parameters without a gradient (unused by the loss) get one.
    model.zero_grad(set_to_none=True)
    hook.after_backward(model, 4)
    assert params["layer1.0.conv1.weight"].grad is not None
    assert params["fc.weight"].grad is None


def test_greg_leaves_bias_and_bn_alone_unless_asked(resnet_case):
    """The authors' GReg penalises only the conv/linear weights of the pruned filters."""
    model, _, sel = resnet_case
    model = copy.deepcopy(model).double()
    hook = GReg(model, sel, reg_granularity=0.1, update_interval=1)
    assert (hook.penalize_bias, hook.penalize_bn) == (False, False)
    _check_hook_grad_is_penalty_grad(model, hook, step=4)
    before = _random_grads(model, 2)
    hook.after_backward(model, 4)
    params = dict(model.named_parameters())
    weights = {f"{name}.weight" for name in sel.pruned}
    for pname, p in params.items():
        if pname in weights:
            assert not torch.equal(p.grad, before[pname]), pname
        else:  # every BN gamma/beta and bias: bit for bit untouched
            assert torch.equal(p.grad, before[pname]), pname
    # An MLP (biases, no BN): the bias term is opt-in too.
    mlp = _mlp().double()
    msel = select_filters(mlp, MLP_RATIOS, "l1", MLP_X.double())
    for flag in (False, True):
        h = GReg(mlp, msel, reg_granularity=0.1, update_interval=1, penalize_bias=flag)
        before = _random_grads(mlp, 4)
        h.after_backward(mlp, 3)
        bias = mlp.get_submodule("fc1").bias
        assert torch.equal(bias.grad, before["fc1.bias"]) is not flag


@pytest.mark.parametrize("which", ["mlp", "resnet"])
def test_tpp_gradient_matches_autograd_of_documented_loss(which, resnet_case):
    if which == "mlp":
        model = _mlp().double()
        sel = select_filters(model, MLP_RATIOS, "l1", MLP_X.double())
    else:
        model, _, sel = resnet_case
        model = copy.deepcopy(model).double()
    hook = TPP(model, sel, reg_granularity=0.2, update_interval=2)
    _check_hook_grad_is_penalty_grad(model, hook, step=5)
    # The Gram term alone: its value is lam * c / N^2 * ||G ⊙ (1 - m m^T)||^2.
    gram_only = TPP(model, sel, weight_l2=False, penalize_bn=False, gram_weight=7.0)
    dist = gram_only.gram_distance(model)
    expected = sum(
        0.5 * 7.0 / len(sel.kept[n] + sel.pruned[n]) ** 2 * d**2 for n, d in dist.items()
    )
    assert gram_only.penalty(model, lam=0.5).item() == pytest.approx(expected, rel=1e-9)
    _check_hook_grad_is_penalty_grad(model, TPP(model, sel, weight_l2=False, update_interval=1), 3)
    # Unlike GReg, TPP's Gram term also moves kept filters (decorrelating them).
    before = _random_grads(model, 3)
    gram_only.after_backward(model, 10**6)
    name = next(iter(sel.kept))
    w = model.get_submodule(name).weight
    assert not torch.equal(w.grad[sel.kept[name]], before[f"{name}.weight"][sel.kept[name]])


# --------------------------------------------------------------------------- effect under SGD


def test_greg_with_train_loop_shrinks_pruned_filters_only():
    from prunebench.data import load_dataset
    from prunebench.data.loader import BatchLoader
    from prunebench.recipe import TrainCfg
    from prunebench.train import Loaders, train

    data = load_dataset("synthetic")
    kw = {"mean": data.mean, "std": data.std}
    loaders = Loaders(
        train=BatchLoader(data.train_x, data.train_y, batch_size=64, shuffle=True, **kw),
        val=None,
        test=BatchLoader(data.test_x, data.test_y, batch_size=256, **kw),
        num_classes=data.num_classes,
    )
    model = _mlp()
    sel = select_filters(model, MLP_RATIOS, "l1", MLP_X)
    dense = copy.deepcopy(model)
    hook = GReg(model, sel, reg_granularity=0.1, update_interval=2)
    cfg = TrainCfg(epochs=10, lr="0:0.05", momentum=0.9, weight_decay=0.0)
    state = train(model, loaders, cfg, phase="prune", hooks=hook)
    assert hook.finished and hook.finished_step == 20 and hook.step == 79
    before, after = _norms(dense, sel), _norms(model, sel)
    for name in sel.pruned:
        assert after[name][0] < before[name][0] / 10, name
        assert 0.5 < after[name][1] / before[name][1] < 2.0, name
    assert state.history[-1]["test_acc"] > 50.0  # the data loss still trains the kept part


def test_greg_penalty_alone_zeroes_pruned_and_leaves_kept_exactly(resnet_case):
    model, _, sel = resnet_case
    model = copy.deepcopy(model)
    dense = copy.deepcopy(model)
    hook = GReg(model, sel, reg_granularity=0.1, update_interval=1,
                penalize_bias=True, penalize_bn=True)
    _penalty_only_sgd(model, hook, steps=100, lr=0.1)
    before, after = _norms(dense, sel), _norms(model, sel)
    for name in sel.pruned:
        assert after[name][0] < before[name][0] / 100, name
        kept = sel.kept[name]
        w0, w1 = dense.get_submodule(name).weight, model.get_submodule(name).weight
        assert torch.equal(w0[kept], w1[kept])
        for bn in sel.bn[name]:
            assert model.get_submodule(bn).weight.detach()[sel.pruned[name]].abs().max() < 1e-2


def test_tpp_shrinks_pruned_and_decorrelates_kept_from_pruned():
    model = _mlp()
    sel = select_filters(model, MLP_RATIOS, "l1", MLP_X)
    dense = copy.deepcopy(model)
    # The Gram term alone (no L2 / BN terms), at a step size in its stable range.
    hook = TPP(model, sel, reg_granularity=0.05, update_interval=1, weight_l2=False)
    d0 = hook.gram_distance(model)
    _penalty_only_sgd(model, hook, steps=200, lr=0.005)
    d1 = hook.gram_distance(model)
    before, after = _norms(dense, sel), _norms(model, sel)
    for name in sel.pruned:
        pr, kp = sel.pruned[name], sel.kept[name]
        assert after[name][0] < before[name][0] / 10, name
        assert after[name][1] > 0.7 * before[name][1], name
        assert d1[name] < d0[name] / 100, name  # the Gram matrix reached its target

        def gram_cos(m: nn.Module, n: str = name) -> torch.Tensor:
            w = m.get_submodule(n).weight.detach()
            w = w / w.norm(dim=1, keepdim=True)
            return w @ w.T

        c0, c1 = gram_cos(dense), gram_cos(model)
        # kept-vs-pruned correlations are driven to ~0; the kept-kept block (which equals
        # its target) moves far less than that.
        assert c1[kp][:, pr].abs().mean() < c0[kp][:, pr].abs().mean() / 10, name
        kk0, kk1 = c0[kp][:, kp], c1[kp][:, kp]
        assert (kk1 - kk0).norm() < 0.5 * kk0.norm(), name
    # With the default L2 term pruned filters go much further down.
    model2 = copy.deepcopy(dense)
    _penalty_only_sgd(model2, TPP(model2, sel, reg_granularity=0.05, update_interval=1), 200, 0.005)
    for name, (p, _) in _norms(model2, sel).items():
        assert p < before[name][0] / 1000, name


# --------------------------------------------------------------------------- state


@pytest.mark.parametrize("cls", [GReg, TPP])
def test_state_dict_round_trip_resumes_the_schedule(cls):
    sel = select_filters(_mlp(), MLP_RATIOS, "l1", MLP_X)
    knobs = {"reg_granularity": 0.1, "update_interval": 3}
    straight = _mlp()
    hook = cls(straight, sel, **knobs)
    _penalty_only_sgd(straight, hook, steps=40, lr=0.005)

    first = _mlp()
    h1 = cls(first, sel, **knobs)
    _penalty_only_sgd(first, h1, steps=17, lr=0.005)
    buf = io.BytesIO()
    torch.save(h1.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed_model = copy.deepcopy(first)
    h2 = cls(resumed_model, sel, **knobs)
    h2.load_state_dict(saved)
    assert (h2.lam, h2.finished, h2.step) == (h1.lam, h1.finished, 16)
    assert h2.state_dict() == h1.state_dict()
    # A fresh optimiser (momentum reset) is not what train() does, so compare lambdas step by
    # step, plus the finished flag, against the uninterrupted hook.
    lams = []
    for step in range(17, 40):
        h2.after_backward(resumed_model, step)
        lams.append(h2.lam)
    assert lams == [hook.lam_at(s) for s in range(17, 40)]
    assert h2.lam == hook.lam and h2.finished == hook.finished and h2.finished_step == 30
    with pytest.raises(PruningError, match="update_interval"):
        cls(_mlp(), sel, reg_granularity=0.1, update_interval=4).load_state_dict(saved)


def test_bad_selection_is_rejected():
    model = _mlp()
    with pytest.raises(PruningError, match="disjoint"):
        GReg(model, Selection(kept={"fc1": [0, 1]}, pruned={"fc1": [1, 2]}))
    with pytest.raises(PruningError, match="all 16"):
        GReg(model, Selection(kept={"fc1": []}, pruned={"fc1": list(range(16))}))
    with pytest.raises(PruningError, match="BatchNorm"):
        sel = Selection(kept={"fc1": list(range(8))}, pruned={"fc1": list(range(8, 16))})
        sel.bn["fc1"] = ["act"]
        GReg(model, sel)


# --------------------------------------------------------------------------- removal


@pytest.mark.parametrize("cls", [GReg, TPP])
def test_removal_after_schedule_is_nearly_lossless(cls, resnet_case):
    dense, _, sel = resnet_case
    dense = copy.deepcopy(dense).eval()
    with torch.no_grad():
        one_shot = copy.deepcopy(dense)
        remove_selected(one_shot, sel, RES_X)
        one_shot_diff = (one_shot(RES_X) - dense(RES_X)).abs().max().item()

    model = copy.deepcopy(dense).train()
    # BN gamma/beta must go too for a near-lossless removal (opt-in for GReg).
    hook = cls(model, sel, reg_granularity=0.1, update_interval=1,
               penalize_bias=True, penalize_bn=True)
    lr = 0.1 if cls is GReg else 0.005  # TPP's Gram term wants a small LR on big filters
    steps = 60 if cls is GReg else 150
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(7)
    for step in range(steps):
        if step % 10 == 0:  # a few real forward/backward passes with a data loss too
            x = torch.randn(4, 3, 16, 16, generator=g)
            y = torch.randint(0, 4, (4,), generator=g)
            loss = nn.functional.cross_entropy(model(x), y) * 0.1
            opt.zero_grad(set_to_none=True)
            loss.backward()
        else:
            opt.zero_grad(set_to_none=True)
        hook.after_backward(model, step)
        opt.step()
    assert hook.finished
    model.eval()
    with torch.no_grad():
        pruned = copy.deepcopy(model)
        outcome = remove_selected(pruned, sel, RES_X)
        diff = (pruned(RES_X) - model(RES_X)).abs().max().item()
    assert outcome.kept == sel.kept
    assert one_shot_diff > 0.1
    assert diff < 0.01 * one_shot_diff, (diff, one_shot_diff)

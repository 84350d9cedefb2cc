"""Scratch re-initialisation, OrthP and the kernel orthogonality regulariser."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunebench.errors import PruningError, RecipeError
from prunebench.models import build_model
from prunebench.pruning.orth_reg import OrthReg, orth_penalty, orth_penalty_grad
from prunebench.pruning.reinit import infer_activation, orthogonalize, orthp, reinit_scratch


def mlp7_linear() -> nn.Module:
    torch.manual_seed(0)
    return build_model("mlp7_linear", in_channels=1, num_classes=10, input_size=(28, 28))


def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet20", in_channels=3, num_classes=4, input_size=(8, 8))


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def isometry_error(w: torch.Tensor, gain: float = 1.0) -> float:
    m = w.detach().reshape(w.shape[0], -1).double()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return float((gram - gain**2 * torch.eye(gram.shape[0], dtype=gram.dtype)).abs().max())


# -- activation inference ----------------------------------------------------------------------


def test_infer_activation():
    assert infer_activation(mlp7_linear()) == "linear"
    assert infer_activation(small_resnet()) == "relu"
    tanh = build_model("mlp", in_channels=1, num_classes=3, input_size=(2, 2), act="tanh")
    assert infer_activation(tanh) == "tanh"
    with pytest.raises(PruningError, match="activation"):
        infer_activation(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Tanh()))


# -- OrthP -------------------------------------------------------------------------------------


def test_orthp_mlp7_linear_exact_isometry():
    model = mlp7_linear()
    with torch.no_grad():  # "pruned": zero some rows and columns first
        model.fc3.weight[:30] = 0
        model.fc1.weight[:, :200] = 0
    biases = [m.bias.detach().clone() for m in linears(model)]
    orthp(model)
    for m, b in zip(linears(model), biases, strict=True):
        assert isometry_error(m.weight) < 1e-5
        assert torch.equal(m.bias, b)  # biases untouched
    # the square 100x100 layers are orthogonal: singular values exactly 1
    for m in linears(model)[1:-1]:
        assert m.weight.shape == (100, 100)
        s = torch.linalg.svdvals(m.weight.detach().double())
        assert torch.allclose(s, torch.ones_like(s), atol=1e-5)
    # end-to-end: W7 ... W1 (10 x 784) has orthonormal rows, all singular values 1
    prod = torch.eye(784, dtype=torch.float64)
    for m in linears(model):
        prod = m.weight.detach().double() @ prod
    s = torch.linalg.svdvals(prod)
    assert s.shape == (10,)
    assert torch.allclose(s, torch.ones_like(s), atol=1e-5)


def test_orthp_deterministic_and_close_to_sign():
    a, b = mlp7_linear(), mlp7_linear()
    orthp(a)
    orthp(b)
    for ma, mb in zip(linears(a), linears(b), strict=True):
        assert torch.equal(ma.weight, mb.weight)
    # orthogonalising an orthogonal matrix is the identity map (sign correction)
    before = [m.weight.detach().clone() for m in linears(a)]
    orthp(a)
    for m, w in zip(linears(a), before, strict=True):
        assert torch.allclose(m.weight, w, atol=1e-5)


def test_orthp_conv_and_gain():
    model = small_resnet()
    orthp(model)  # relu -> gain sqrt(2)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert isometry_error(m.weight, math.sqrt(2)) < 1e-4
    w = torch.randn(3, 5)
    q = orthogonalize(w, gain=2.0)
    assert torch.allclose(q @ q.T, 4 * torch.eye(3), atol=1e-5)
    tall = orthogonalize(torch.randn(6, 2))
    assert torch.allclose(tall.T @ tall, torch.eye(2), atol=1e-5)
    m = mlp7_linear()
    orthp(m, gain=0.5)
    assert isometry_error(m.fc2.weight, 0.5) < 1e-6


# -- scratch re-initialisation ------------------------------------------------------------------


def test_reinit_scratch_deterministic_changes_weights_resets_bn():
    model = small_resnet()
    old = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.train()
        model(torch.randn(4, 3, 8, 8))  # running stats move
        model.bn1.weight.fill_(3.0)
        model.bn1.bias.fill_(-1.0)
    reinit_scratch(model, "kaiming", seed=1)
    state = model.state_dict()
    assert not torch.equal(state["conv1.weight"], old["conv1.weight"])
    assert torch.all(model.bn1.weight == 1) and torch.all(model.bn1.bias == 0)
    assert torch.all(model.bn1.running_mean == 0) and torch.all(model.bn1.running_var == 1)
    assert int(model.bn1.num_batches_tracked) == 0
    assert torch.all(model.fc.bias == 0)
    again = small_resnet()
    reinit_scratch(again, "kaiming", seed=1)
    for k, v in again.state_dict().items():
        assert torch.equal(v, state[k]), k
    other = small_resnet()
    reinit_scratch(other, "kaiming", seed=2)
    assert not torch.equal(other.conv1.weight, model.conv1.weight)
    # Kaiming fan_in relu: std = sqrt(2 / fan_in)
    big = nn.Sequential(nn.Linear(400, 300), nn.ReLU())
    reinit_scratch(big, seed=0)
    assert float(big[0].weight.detach().std()) == pytest.approx(math.sqrt(2 / 400), rel=0.05)


def test_reinit_scratch_orthogonal():
    model = mlp7_linear()
    reinit_scratch(model, "orthogonal", seed=0)
    for m in linears(model):
        assert isometry_error(m.weight) < 1e-5
        assert torch.all(m.bias == 0)
    with pytest.raises(PruningError, match="scheme"):
        reinit_scratch(model, "xavier")


# -- orthogonality regulariser --------------------------------------------------------------------


def test_orth_penalty_grad_matches_autograd():
    for shape in ((4, 7), (7, 4), (3, 2, 3, 3)):
        w = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        orth_penalty(w).backward()
        assert torch.allclose(orth_penalty_grad(w.detach()), w.grad)


def test_orth_reg_reduces_penalty():
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, num_classes=4, input_size=(28, 28))
    hooks = OrthReg(lambda_=1.0)
    weights = hooks.weights(model)
    assert all(w is not model.fc3.weight for w in weights)  # output layer excluded
    assert len(weights) == 4
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    before = [float(orth_penalty(w.detach())) for w in weights]
    for step in range(5):
        opt.zero_grad(set_to_none=True)  # zero task loss: only the regulariser acts
        hooks.after_backward(model, step)
        opt.step()
        hooks.after_step(model, step)
    after = [float(orth_penalty(w.detach())) for w in weights]
    assert all(a < b for a, b in zip(after, before, strict=True))
    assert model.fc3.weight.grad is None
    with pytest.raises(RecipeError):
        OrthReg(lambda_=-1.0)
    assert OrthReg().lambda_ == 1e-4

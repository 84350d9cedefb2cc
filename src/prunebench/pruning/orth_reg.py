"""Kernel orthogonality regulariser, a per-step gradient hook.

Adds ``lambda * d/dW ||W W^T - I||_F^2`` to each Conv2d/Linear weight's gradient, ``W``
reshaped to ``(out, in*kh*kw)`` (``W^T W`` instead when ``out > in``, so the identity has
the smaller side). Soft orthogonality in the manner of Xie et al., "All You Need is
Beyond a Good Init" (CVPR 2017) and Bansal et al., "Can We Gain More from Orthogonality
Regularizations in Training Deep CNNs?" (NeurIPS 2018); the trainability-preserving
pruning of Wang & Fu (TPP, ICLR 2023) regularises the same Gram matrices. The gradient is
closed-form: ``4 (W W^T - I) W`` (or ``4 W (W^T W - I)``), so no extra autograd graph.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from prunebench.errors import RecipeError
from prunebench.pruning.ratios import output_layer_name
from prunebench.train import StepHooks

__all__ = ["OrthReg", "orth_penalty", "orth_penalty_grad"]


def _matrix(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1)


def orth_penalty(weight: torch.Tensor) -> torch.Tensor:
    """``||W W^T - I||_F^2`` (``||W^T W - I||_F^2`` when rows > cols) of the reshaped weight."""
    w = _matrix(weight)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return ((gram - eye) ** 2).sum()


def orth_penalty_grad(weight: torch.Tensor) -> torch.Tensor:
    """The gradient of :func:`orth_penalty` with respect to ``weight`` (same shape)."""
    w = _matrix(weight)
    if w.shape[0] <= w.shape[1]:
        gram = w @ w.T
        gram.diagonal().sub_(1)
        grad = 4 * gram @ w
    else:
        gram = w.T @ w
        gram.diagonal().sub_(1)
        grad = 4 * w @ gram
    return grad.reshape(weight.shape)


class OrthReg(StepHooks):
    """Step hook adding ``lambda_ * grad ||W W^T - I||_F^2`` to Conv2d/Linear weight grads.

    ``lambda_`` (default 1e-4) scales the term; the output layer is left alone unless
    ``include_output=True``. Weights without a gradient get one. Use it as ``hooks=`` of
    :func:`prunebench.train.train` (or chain it with mask hooks).
    """

    def __init__(self, lambda_: float = 1e-4, *, include_output: bool = False) -> None:
        if isinstance(lambda_, bool) or not isinstance(lambda_, (int, float)):
            raise RecipeError(f"bad orthogonality lambda {lambda_!r}: expected a number >= 0")
        if not math.isfinite(lambda_) or lambda_ < 0:
            raise RecipeError(f"bad orthogonality lambda {lambda_!r}: expected a number >= 0")
        self.lambda_ = float(lambda_)
        self.include_output = include_output

    def weights(self, model: nn.Module) -> list[nn.Parameter]:
        """The regularised weights of ``model``."""
        skip = None if self.include_output else output_layer_name(model)
        return [
            m.weight
            for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and name and name != skip
        ]

    @torch.no_grad()
    def after_backward(self, model: nn.Module, step: int) -> None:
        if self.lambda_ == 0:
            return
        for w in self.weights(model):
            term = orth_penalty_grad(w.detach()).mul_(self.lambda_)
            if w.grad is None:
                w.grad = term
            else:
                w.grad.add_(term)

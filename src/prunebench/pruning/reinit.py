"""Re-initialisation of pruned networks: scratch training and OrthP.

* :func:`reinit_scratch` -- fresh weights for Scratch-E / Scratch-B (Liu et al.,
  "Rethinking the Value of Network Pruning", ICLR 2019; Wang et al., arXiv 2301.05219,
  section 1): applied to the *small-dense* pruned architecture, whose shapes are already
  shrunk, because initialisation depends on shape.
* :func:`orthp` -- OrthP (Wang & Fu, "Trainability Preserving Neural Pruning", ICLR 2023,
  appendix; used in arXiv 2301.05219, section 6): replace each pruned weight by the
  orthogonal factor of its QR decomposition, an exact isometry that restores dynamical
  isometry (Saxe et al. 2014; Pennington et al. 2017) of e.g. MLP-7-Linear.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from prunebench.errors import PruningError

__all__ = ["infer_activation", "orthogonalize", "orthp", "reinit_scratch"]

Activation = Literal["relu", "linear", "tanh"]
_ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu",
    nn.Tanh: "tanh",
}


def infer_activation(model: nn.Module) -> str:
    """The nonlinearity of ``model`` for an init gain: ``relu``, ``tanh`` or ``linear``.

    Read from its activation modules: ReLU -> ``relu``, Tanh -> ``tanh``, none of them
    (e.g. MLP-7-Linear, whose ``act`` is ``nn.Identity``) -> ``linear``. A model mixing
    ReLU and Tanh raises PruningError: pass ``activation`` explicitly.
    """
    found = {act for m in model.modules() for cls, act in _ACTIVATIONS.items() if type(m) is cls}
    if len(found) > 1:
        raise PruningError(
            f"cannot infer one activation: the model has {sorted(found)}; pass activation="
        )
    return found.pop() if found else "linear"


def _check_activation(activation: str) -> str:
    if activation not in ("relu", "linear", "tanh"):
        raise PruningError(f"bad activation {activation!r}: allowed relu, linear, tanh")
    return activation


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def reinit_scratch(
    model: nn.Module,
    scheme: Literal["kaiming", "orthogonal"] = "kaiming",
    seed: int = 0,
    *,
    activation: str | None = None,
) -> nn.Module:
    """Re-initialise ``model`` in place for scratch training (Scratch-E / Scratch-B).

    Every Conv2d/Linear weight: ``kaiming`` -- Kaiming-normal, ``mode="fan_in"`` (He et al.,
    ICCV 2015), or ``orthogonal`` -- ``nn.init.orthogonal_`` (Saxe et al., ICLR 2014), both
    with the gain of ``activation`` (inferred by :func:`infer_activation` when ``None``:
    ``relu`` for every ReLU net, so Kaiming fan_in relu there; ``linear`` for
    MLP-7-Linear). Biases are zeroed. BatchNorm: weight 1, bias 0, running statistics
    and batch counter reset. Draws come from ``torch.Generator().manual_seed(seed)`` on the
    CPU in module order, so the same seed gives the same weights on every device.
    Returns ``model``.
    """
    if scheme not in ("kaiming", "orthogonal"):
        raise PruningError(f"bad init scheme {scheme!r}: allowed 'kaiming' or 'orthogonal'")
    act = _check_activation(activation or infer_activation(model))
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = torch.empty(m.weight.shape, dtype=torch.float32)
            if scheme == "kaiming":
                nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity=act, generator=g)
            else:
                nn.init.orthogonal_(w, gain=nn.init.calculate_gain(act), generator=g)
            m.weight.copy_(w)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()  # weight 1, bias 0, running mean 0 / var 1, counter 0
    return model


def orthogonalize(weight: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """The gain-scaled orthogonal factor of ``weight`` reshaped to ``(out, in*kh*kw)``.

    Rows >= cols: ``W = QR`` and the result ``Q`` has orthonormal columns
    (``W^T W = gain^2 I``). Rows < cols: ``W^T = QR`` and the result ``Q^T`` has orthonormal
    rows (``W W^T = gain^2 I``). ``Q`` is sign-corrected by ``sign(diag R)`` (a zero
    diagonal counts as +1), which makes it unique for full-rank ``W`` and keeps it close
    to ``W``'s directions. Computed in float64, returned in ``weight``'s shape and dtype.
    """
    rows = weight.shape[0]
    mat = weight.detach().reshape(rows, -1).to(torch.float64)
    transpose = mat.shape[0] < mat.shape[1]
    if transpose:
        mat = mat.T
    q, r = torch.linalg.qr(mat, mode="reduced")
    sign = torch.sign(torch.diagonal(r))
    sign[sign == 0] = 1
    q = q * sign
    if transpose:
        q = q.T
    return (gain * q).reshape(weight.shape).to(weight.dtype)


@torch.no_grad()
def orthp(
    model: nn.Module,
    gain: float | None = None,
    activation: str | None = None,
) -> nn.Module:
    """OrthP (Wang & Fu, TPP, ICLR 2023, appendix): exact isometry from the pruned weights.

    Each Conv2d/Linear weight ``W``, output layer included, is replaced in place by
    :func:`orthogonalize` ``(W, gain)``: ``W W^T = gain^2 I`` when rows <= cols, else
    ``W^T W = gain^2 I``. ``gain`` defaults to ``nn.init.calculate_gain(activation)``, the
    activation inferred from the model when not given (MLP-7-Linear -> ``linear``, gain 1;
    ReLU nets -> ``relu``, gain sqrt 2). Biases (and BatchNorm) are untouched. The result is
    dense: apply masks again afterwards if the pruning is unstructured. Returns ``model``.
    """
    if gain is None:
        act = _check_activation(activation or infer_activation(model))
        gain = nn.init.calculate_gain(act)
    for m in _layers(model):
        m.weight.copy_(orthogonalize(m.weight, gain))
    return model

"""Fully-connected networks: the paper authors' 7-layer MLP and a small generic MLP.

All layers are attributes ``fc1`` ... ``fcN`` (``nn.Linear``, bias=True); the input is
flattened first, and one activation module (``act``) is applied between layers (not after
the last one). PyTorch's default Linear initialisation is kept.
"""

from __future__ import annotations

import torch
from torch import nn

from prunebench.errors import RecipeError
from prunebench.models.base import MODELS, check_shape, flat_dim

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "linear": nn.Identity,
    "tanh": nn.Tanh,
}


class MLP(nn.Module):
    """``depth`` Linear layers: in_dim -> width -> ... -> width -> num_classes."""

    output_layer: str = "fc1"  # overwritten per instance in __init__ (``fc{depth}``)

    def __init__(self, in_dim: int, num_classes: int, *, depth: int, width: int, act: str):
        super().__init__()
        if not isinstance(depth, int) or depth < 1:
            raise RecipeError(f"depth={depth!r} is invalid; expected an int >= 1")
        if not isinstance(width, int) or width < 1:
            raise RecipeError(f"width={width!r} is invalid; expected an int >= 1")
        if act not in ACTIVATIONS:
            allowed = ", ".join(sorted(ACTIVATIONS))
            raise RecipeError(f"act={act!r} is invalid; allowed: {allowed}")
        self.depth = depth
        self.flatten = nn.Flatten()
        self.act = ACTIVATIONS[act]()
        dims = [in_dim] + [width] * (depth - 1) + [num_classes]
        for i in range(depth):
            self.add_module(f"fc{i + 1}", nn.Linear(dims[i], dims[i + 1], bias=True))
        self.output_layer = f"fc{depth}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for i in range(1, self.depth + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.depth:
                x = self.act(x)
        return x


class MLP7(MLP):
    """The paper authors' MLP: 7 Linear layers of width 100."""

    output_layer: str = "fc7"

    def __init__(self, in_dim: int, num_classes: int, *, act: str):
        super().__init__(in_dim, num_classes, depth=7, width=100, act=act)


@MODELS.register("mlp7_linear")
def mlp7_linear(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> MLP7:
    """7-layer MLP, width 100, identity activation (the paper's linear MLP)."""
    check_shape(in_channels, num_classes, input_size)
    return MLP7(flat_dim(in_channels, input_size), num_classes, act="linear")


@MODELS.register("mlp7_relu")
def mlp7_relu(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> MLP7:
    """7-layer MLP, width 100, ReLU activation."""
    check_shape(in_channels, num_classes, input_size)
    return MLP7(flat_dim(in_channels, input_size), num_classes, act="relu")


@MODELS.register("mlp")
def mlp(
    in_channels: int,
    num_classes: int,
    input_size: tuple[int, int],
    *,
    depth: int = 3,
    width: int = 32,
    act: str = "relu",
) -> MLP:
    """Generic MLP with ``depth`` Linear layers of ``width`` units (act: relu|linear|tanh)."""
    check_shape(in_channels, num_classes, input_size)
    return MLP(flat_dim(in_channels, input_size), num_classes, depth=depth, width=width, act=act)

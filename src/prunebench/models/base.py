"""The model registry and small helpers shared by the model families."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from torch import nn

from prunebench.errors import RecipeError
from prunebench.registry import Registry

ModelBuilder = Callable[..., nn.Module]

#: name -> builder ``(in_channels, num_classes, input_size, **kwargs) -> nn.Module``.
MODELS: Registry[ModelBuilder] = Registry("model")


def check_shape(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> None:
    """Raise RecipeError unless the three shape arguments every builder takes are sane."""
    if not isinstance(in_channels, int) or in_channels < 1:
        raise RecipeError(f"in_channels={in_channels!r} is invalid; expected an int >= 1")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise RecipeError(f"num_classes={num_classes!r} is invalid; expected an int >= 1")
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != 2
        or not all(isinstance(s, int) and s >= 1 for s in input_size)
    ):
        raise RecipeError(
            f"input_size={input_size!r} is invalid; expected (height, width) of ints >= 1"
        )


def flat_dim(in_channels: int, input_size: tuple[int, int]) -> int:
    """Number of features after flattening a ``(in_channels, H, W)`` image."""
    return in_channels * math.prod(input_size)


def register_depths(
    family: str, depths: Iterable[int], cls: type[nn.Module], doc: str, namespace: dict
) -> None:
    """Register ``<family><depth>`` builders of ``cls(depth, in_channels, num_classes)``.

    ``doc`` is formatted with ``depth`` and ``blocks`` ((depth - 2) // 6, for ResNets); each
    builder is also bound in ``namespace`` (the family module's globals) under its name.
    """
    for depth in depths:
        build = _depth_builder(cls, depth)
        build.__name__ = build.__qualname__ = f"{family}{depth}"
        build.__doc__ = doc.format(depth=depth, blocks=(depth - 2) // 6)
        MODELS.register(build.__name__)(build)
        namespace[build.__name__] = build


def _depth_builder(cls: type[nn.Module], depth: int) -> ModelBuilder:
    def build(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
        check_shape(in_channels, num_classes, input_size)
        return cls(depth, in_channels, num_classes)

    return build


def init_conv_bn(model: nn.Module, mode: str = "fan_out") -> None:
    """Kaiming-normal (ReLU) conv weights with zero biases, BatchNorm weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

"""Model zoo: MLPs, LeNet-5, CIFAR ResNets and VGGs, ImageNet ResNets; param/MAC counting.

``torchvision:<name>`` and ``timm:<name>`` resolve to those packages' models (optional
extras, :mod:`prunebench.models.external`).

Every model class has a class attribute ``output_layer`` naming its classifier module
(resolvable with ``model.get_submodule``), which pruners must leave intact.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from prunebench.errors import RecipeError
from prunebench.models import (  # noqa: F401  (registers)
    external,
    lenet,
    mlp,
    resnet_cifar,
    resnet_imagenet,
    vgg_cifar,
)
from prunebench.models.base import MODELS
from prunebench.models.lenet import LeNet5
from prunebench.models.mlp import MLP, MLP7
from prunebench.models.profile import count_macs, count_nonzero_params, count_params
from prunebench.models.resnet_cifar import BasicBlock, CifarResNet, PadShortcut
from prunebench.models.vgg_cifar import CifarVGG

__all__ = [
    "MODELS",
    "MLP",
    "MLP7",
    "BasicBlock",
    "CifarResNet",
    "CifarVGG",
    "LeNet5",
    "PadShortcut",
    "build_model",
    "count_macs",
    "count_nonzero_params",
    "count_params",
]

_SHAPE_ARGS = ("in_channels", "num_classes", "input_size")


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    input_size: tuple[int, int],
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name``.

    Raises RegistryError for an unknown name (listing the registered ones) and RecipeError
    for a keyword argument the builder does not accept (naming it and the allowed ones).
    """
    builder = MODELS.get(name)
    params = inspect.signature(builder).parameters
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_var_kw:
        allowed = [
            p.name
            for p in params.values()
            if p.name not in _SHAPE_ARGS
            and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        bad = sorted(k for k in kwargs if k not in allowed)
        if bad:
            allowed_text = ", ".join(allowed) if allowed else "(none)"
            raise RecipeError(
                f"model {name!r} got unknown argument(s) {', '.join(bad)}; allowed: {allowed_text}"
            )
    return builder(
        in_channels=in_channels, num_classes=num_classes, input_size=tuple(input_size), **kwargs
    )

"""ImageNet ResNets (He et al., CVPR 2016) with torchvision's module names and layout.

``conv1`` (7x7/2, 64) - ``bn1`` - ``relu`` - ``maxpool`` (3x3/2) - ``layer1`` .. ``layer4``
(64/128/256/512 base widths, stride 1/2/2/2) - ``avgpool`` - ``fc``. Blocks are
:class:`BasicBlock` (``conv1``, ``bn1``, ``conv2``, ``bn2``) for ResNet-18/34 and
:class:`Bottleneck` (``conv1`` 1x1, ``conv2`` 3x3 with the stride, ``conv3`` 1x1 x4) for
ResNet-50; a projection ``downsample`` (``0``: 1x1 conv, ``1``: BN) where shapes change.
So a torchvision state dict loads as is (torchvision itself is not a dependency).

Parameters: ResNet-18 11,689,512; ResNet-34 21,797,672; ResNet-50 25,557,032 (1000
classes). ResNet-50 at 224x224: 4,089,184,256 MACs (conv + linear), the usual "4.1 GFLOPs".
Initialisation as torchvision: Kaiming-normal ``fan_out`` (relu) convs, BN weight 1 and
bias 0, PyTorch's default Linear init.
"""

from __future__ import annotations

import torch
from torch import nn

from prunebench.models.base import MODELS, check_shape, init_conv_bn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)


def _downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN pairs (torchvision ``BasicBlock``, expansion 1)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _downsample(cin, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 - 3x3 (stride here, torchvision v1.5) - 1x1 x4 (torchvision ``Bottleneck``)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ImageNetResNet(nn.Module):
    """torchvision-shaped ResNet; any input size works thanks to adaptive pooling."""

    output_layer: str = "fc"

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        blocks: tuple[int, int, int, int],
        in_channels: int = 3,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        cin = 64
        for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
            layers: list[nn.Module] = []
            for j in range(n):
                layers.append(block(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_conv_bn(self, "fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


_SPECS: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def _make_builder(name: str) -> None:
    block, blocks = _SPECS[name]

    def build(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
        check_shape(in_channels, num_classes, input_size)
        return ImageNetResNet(block, blocks, in_channels, num_classes)

    depth = name.removeprefix("resnet")
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"ImageNet ResNet-{depth} (torchvision layout and module names)."
    MODELS.register(name)(build)
    globals()[name] = build


for _name in _SPECS:
    _make_builder(_name)

"""CIFAR VGGs with BatchNorm and a single Linear classifier.

``features`` is an ``nn.Sequential`` of (Conv2d 3x3 pad 1 no bias, BatchNorm2d, ReLU)
triples with ``MaxPool2d(2, ceil_mode=True)`` at the standard 'M' positions, followed by
global average pooling, flatten and one ``classifier`` Linear (512 -> num_classes).
``ceil_mode`` changes nothing for 32x32 inputs and lets 28x28 inputs pass all five pools
(28 -> 14 -> 7 -> 4 -> 2 -> 1).

Initialisation: Kaiming-normal ``mode="fan_out"`` (relu) for conv weights, BatchNorm
weight 1 / bias 0, classifier weight N(0, 0.01) and bias 0 (the torchvision VGG scheme).
"""

from __future__ import annotations

import torch
from torch import nn

from prunebench.models.base import init_conv_bn, register_depths

# fmt: off
CFGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ],
}
# fmt: on


class CifarVGG(nn.Module):
    """VGG-{11,13,16,19} with BatchNorm for small images."""

    output_layer: str = "classifier"

    def __init__(self, depth: int, in_channels: int, num_classes: int):
        super().__init__()
        if depth not in CFGS:
            raise ValueError(f"VGG depth must be one of {sorted(CFGS)}, got {depth}")
        self.depth = depth
        layers: list[nn.Module] = []
        ch = in_channels
        for v in CFGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                assert isinstance(v, int)
                layers += [
                    nn.Conv2d(ch, v, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(v),
                    nn.ReLU(),
                ]
                ch = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        init_conv_bn(self, "fan_out")
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(self.flatten(x))


register_depths(
    "vgg",
    sorted(CFGS),
    CifarVGG,
    "CIFAR VGG-{depth} with BatchNorm, global average pool, one Linear.",
    globals(),
)

"""LeNet-5 (ReLU and max-pool variant, no BatchNorm); PyTorch default initialisation."""

from __future__ import annotations

import torch
from torch import nn

from prunebench.errors import RecipeError
from prunebench.models.base import MODELS, check_shape


class LeNet5(nn.Module):
    """conv1(5x5, 6) - ReLU - pool2 - conv2(5x5, 16) - ReLU - pool2 - fc1 120 - fc2 84 - fc3."""

    output_layer: str = "fc3"

    def __init__(self, in_channels: int, num_classes: int, input_size: tuple[int, int]):
        super().__init__()
        h, w = input_size
        for _ in range(2):  # conv 5x5 (no padding) then 2x2 max-pool, twice
            h, w = (h - 4) // 2, (w - 4) // 2
        if h < 1 or w < 1:
            raise RecipeError(
                f"input_size={tuple(input_size)!r} is too small for lenet5; need at least 12x12"
            )
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu3(self.fc1(x))
        x = self.relu4(self.fc2(x))
        return self.fc3(x)


@MODELS.register("lenet5")
def lenet5(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> LeNet5:
    """LeNet-5: two 5x5 convs (6, 16) with max-pools, then 120 - 84 - num_classes."""
    check_shape(in_channels, num_classes, input_size)
    return LeNet5(in_channels, num_classes, input_size)

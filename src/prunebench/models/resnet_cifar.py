"""CIFAR ResNets (He et al. 2016, section 4.2) with the option-A (parameter-free) shortcut.

Layout: ``conv1`` (3x3, 16) - ``bn1`` - ReLU - ``layer1`` .. ``layer3`` (n BasicBlocks each,
16/32/64 channels, stride 1/2/2, n = (depth - 2) / 6) - global average pool - ``fc``.
Each block holds ``conv1``, ``bn1``, ``conv2``, ``bn2`` and ``shortcut``: ``nn.Identity``
when the shapes match, otherwise :class:`PadShortcut` (subsample + zero-pad channels).

Initialisation: Kaiming-normal with ``mode="fan_in"`` (PyTorch's default mode,
nonlinearity relu) for every Conv2d and Linear weight, Linear bias 0, BatchNorm weight 1
and bias 0. Convs have no bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.models.base import register_depths

STAGE_WIDTHS = (16, 32, 64)


class PadShortcut(nn.Module):
    """Option-A shortcut: ``x[:, :, ::stride, ::stride]`` then zero-pad channels.

    The padding is computed at run time from ``x.shape[1]`` and ``out_channels`` and split
    evenly (extra channel at the end), so 16 -> 32 adds 8 zero channels on each side.
    It holds no parameters or buffers.

    Coupled-group pruning (``prune.coupled``) removes channels on either side of it: then
    ``index`` (not part of the state dict; rebuilt when a pruned structure is replayed)
    lists, per output channel, the input channel it copies or -1 for a zero channel.
    """

    def __init__(self, out_channels: int, stride: int = 2, in_channels: int | None = None):
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride
        self.in_channels = in_channels
        self.index: list[int] | None = None

    def channel_index(self) -> list[int]:
        """Per output channel, the input channel it copies (-1: a zero channel)."""
        if self.index is not None:
            return list(self.index)
        if self.in_channels is None:
            raise ValueError("PadShortcut needs in_channels to map its channels")
        pad = max(0, self.out_channels - self.in_channels)
        before = pad // 2
        return [
            j - before if 0 <= j - before < self.in_channels else -1
            for j in range(self.out_channels)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.index is not None:
            src = torch.tensor(self.index, dtype=torch.long, device=x.device)
            out = x.new_zeros((x.shape[0], len(self.index), *x.shape[2:]))
            valid = src >= 0
            out[:, valid] = x[:, src[valid]]
            return out
        pad = self.out_channels - x.shape[1]
        if pad > 0:
            before = pad // 2
            x = F.pad(x, (0, 0, 0, 0, before, pad - before))
        return x

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN pairs with a residual connection; ReLU after the addition."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = PadShortcut(out_channels, stride, in_channels)
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images; any input size works thanks to global pooling."""

    output_layer: str = "fc"

    def __init__(self, depth: int, in_channels: int, num_classes: int):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, STAGE_WIDTHS[0], 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        self.relu = nn.ReLU()
        in_ch = STAGE_WIDTHS[0]
        for i, width in enumerate(STAGE_WIDTHS):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_ch, width, stride))
                in_ch = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(STAGE_WIDTHS[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


register_depths(
    "resnet",
    (20, 32, 56, 110),
    CifarResNet,
    "CIFAR ResNet-{depth} (option-A shortcuts, {blocks} blocks/stage).",
    globals(),
)

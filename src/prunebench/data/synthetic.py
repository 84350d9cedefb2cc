"""A tiny deterministic, learnable dataset for tests and smoke runs (no files needed)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from prunebench.data.core import DATASETS, Dataset, identify_with, tensor_checksum
from prunebench.data.identity import params_identity
from prunebench.errors import DataError


def _positive(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"synthetic: {name} must be an int >= {minimum}, got {value!r}")
    return value


#: knobs added after the first release, with the value the generator always used
_LATER_KNOBS = {"contrast": 0.3, "noise": 0.25}

#: bump when the generator below changes what a given set of parameters produces
GENERATOR_VERSION = 1


def _identify(data_dir: Path | None = None, **kwargs: Any) -> str:
    """Synthetic data's identity: a hash of its generation parameters (defaults filled in)."""
    bound = inspect.signature(synthetic).bind(data_dir, **kwargs)
    bound.apply_defaults()
    params = {k: v for k, v in bound.arguments.items() if k != "data_dir"}
    for knob, default in _LATER_KNOBS.items():  # added later: in the identity only when
        if params.get(knob) == default:         # set, so earlier runs keep their ids
            params.pop(knob)
    return params_identity("synthetic", {"generator": GENERATOR_VERSION, "params": params})


@DATASETS.register("synthetic")
@identify_with(_identify)
def synthetic(
    data_dir: Path | None = None,
    *,
    n_train: int = 512,
    n_test: int = 256,
    channels: int = 1,
    size: int = 8,
    num_classes: int = 4,
    seed: int = 0,
    contrast: float = 0.3,
    noise: float = 0.25,
) -> Dataset:
    """Synthetic: class-dependent random patterns plus noise, uint8, learnable in a few epochs.

    Pixel = 0.35 + ``contrast`` * pattern(class) + N(0, ``noise``), clipped to [0, 1]; a lower
    contrast or more noise makes the task harder (``examples/tiny.yaml`` uses 10 classes at
    a contrast where a pruned model visibly loses accuracy until it is retrained)."""
    del data_dir  # generated, never read from disk
    n_train = _positive("n_train", n_train)
    n_test = _positive("n_test", n_test)
    channels = _positive("channels", channels)
    size = _positive("size", size)
    num_classes = _positive("num_classes", num_classes, 2)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"synthetic: seed must be an int, got {seed!r}")
    for knob, value in (("contrast", contrast), ("noise", noise)):
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not 0 <= value <= 1:
            raise DataError(f"synthetic: {knob} must be a number in [0, 1], got {value!r}")
    g = torch.Generator().manual_seed(seed)
    # One binary pattern per class; images are pattern * contrast + background + noise.
    protos = (torch.rand(num_classes, channels, size, size, generator=g) > 0.5).float()

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n, dtype=torch.int64) % num_classes
        y = y[torch.randperm(n, generator=g)]
        jitter = torch.randn(n, channels, size, size, generator=g) * noise
        x = 0.35 + contrast * protos[y] + jitter
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
        return x, y

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    pixels = train_x.float().div(255).transpose(0, 1).reshape(channels, -1)
    mean = tuple(float(m) for m in pixels.mean(1))
    spread = pixels.std(1) if pixels.shape[1] > 1 else torch.ones(channels)
    std = tuple(max(float(s), 1e-3) for s in spread)
    return Dataset(
        name="synthetic",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=num_classes,
        mean=mean,
        std=std,
        augment="none",
        source=(
            f"synthetic (generated: n_train={n_train}, n_test={n_test}, channels={channels}, "
            f"size={size}, num_classes={num_classes}, seed={seed})"
        ),
        checksum=tensor_checksum(train_x, train_y, test_x, test_y),
        classes=[str(i) for i in range(num_classes)],
    )

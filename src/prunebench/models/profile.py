"""Parameter and MAC counting.

MAC convention (the one used throughout prunebench, and the one under which CIFAR
ResNet-56 has 125.5M MACs; papers that report "0.25G FLOPs" for it count FLOPs = 2 * MACs):

* only ``nn.Conv2d`` and ``nn.Linear`` layers are counted;
* a conv counts ``output_elements * (in_channels / groups) * kh * kw`` per image;
* a Linear counts ``in_features * out_features`` per output row (per image for 2-D input);
* BatchNorm, activations, pooling, residual additions, padding and biases count 0.

Shapes are read from the weight tensors, so structurally pruned layers whose
``in_channels``/``out_features`` attributes were not updated are still counted correctly.
"""

from __future__ import annotations

import torch
from torch import nn


def _masked_pairs(model: nn.Module) -> list[torch.Tensor]:
    """Effective parameter tensors, applying torch.nn.utils.prune masks when present.

    A parameter ``<name>_orig`` with a buffer ``<name>_mask`` in the same module is counted
    as ``orig * mask``; every other parameter as itself. Shared parameters count once.
    """
    seen: set[int] = set()
    tensors: list[torch.Tensor] = []
    for module in model.modules():
        buffers = dict(module.named_buffers(recurse=False))
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            t = p.detach()
            if name.endswith("_orig"):
                mask = buffers.get(name[: -len("_orig")] + "_mask")
                if mask is not None:
                    t = t * mask
            tensors.append(t)
    return tensors


def count_params(model: nn.Module) -> int:
    """Total number of parameter elements (every parameter, zero or not; shared ones once)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    """Number of non-zero parameter elements (pruning masks from torch.nn.utils.prune applied)."""
    return sum(int(torch.count_nonzero(t)) for t in _masked_pairs(model))


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Per-image multiply-accumulates of the Conv2d and Linear layers of ``model``.

    ``input_shape`` is ``(channels, height, width)``. One forward pass on a zero batch of
    size 1 is run in eval mode under ``torch.no_grad`` with forward hooks; the hooks are
    removed and every module's train/eval flag is restored afterwards, even on error.

    Convention: conv ``out_elems * (in_ch / groups) * kh * kw``, linear ``in * out``; no
    BatchNorm, activation, pooling, addition or bias terms. Under it CIFAR ResNet-56 has
    125.5M MACs (the paper's "0.25G FLOPs" is 2 * MACs).
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {input_shape!r}")
    total = 0

    def conv_hook(m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        w = m.weight  # (out_ch, in_ch / groups, kh, kw)
        total += out.numel() * w.shape[1:].numel()

    def linear_hook(m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        w = m.weight  # (out_features, in_features)
        total += out.numel() * w.shape[1]

    modes = {m: m.training for m in model.modules()}
    handles = []
    try:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                handles.append(m.register_forward_hook(conv_hook))
            elif isinstance(m, nn.Linear):
                handles.append(m.register_forward_hook(linear_hook))
        ref = next(model.parameters(), None)
        device = ref.device if ref is not None else torch.device("cpu")
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        x = torch.zeros((1, *input_shape), device=device, dtype=dtype)
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return int(total)

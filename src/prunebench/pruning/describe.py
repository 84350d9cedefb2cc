"""What a pruning spec does to a model's size and cost, without any data or training.

``describe("resnet56", "cifar10", "*layer*.conv1:0.5")`` builds the model at the dataset's
static shape (:data:`prunebench.data.DATASET_SHAPES`), prunes a randomly initialised copy
(fixed seed) and counts parameters and MACs before and after: the numbers papers report as
parameter sparsity and speedup (Wang et al. arXiv 2301.05219, Tables 1, 6 and 7). Layerwise
counts do not depend on the weights (only on ``ceil(ratio * n)``); for the ``global``
scheme and data-driven criteria they reflect random weights and one random batch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from prunebench.errors import RecipeError
from prunebench.pruning.ratios import split_skip
from prunebench.pruning.schemes import StructuredSpec, prune_model

#: the largest ``input_size`` (pixels per side) :func:`describe` builds a model for: well
#: above any training resolution in use (ImageNet presets: 128-224; detection backbones: 1024
#: and up), and small enough that a model at that size fits in memory
MAX_INPUT_SIZE = 4096

CONVENTION = (
    "MACs = multiply-accumulates of Conv2d and Linear layers per image (no BN, activation, "
    "pooling, addition or bias terms); FLOPs = 2 * MACs; speedup = dense MACs / pruned MACs"
)


def describe(
    model: str,
    dataset: str,
    layers: str | float | list[float],
    skip: Sequence[str] | str = (),
    method: str = "l1",
    scheme: str = "layerwise",
    *,
    max_layer_ratio: float = 0.9,
    normalize: bool = False,
    target_speedup: float | None = None,
    target_param_sparsity: float | None = None,
    seed: int = 0,
    coupled: bool = False,
    input_size: int | None = None,
) -> dict[str, Any]:
    """Parameters, MACs, sparsity, speedup and per-layer widths of a pruned ``model``.

    Returns a JSON-ready dict: ``params_dense``, ``params_pruned``, ``macs_dense``,
    ``macs_pruned``, ``param_sparsity`` and ``flops_sparsity`` (percent), ``speedup``,
    ``layers`` ({name: [kept, total]}), ``ratios`` (applied per layer), ``solved_ratio``
    (with a target), ``model``, ``dataset``, ``input_shape``, ``method``, ``scheme`` and
    ``convention`` (how MACs are counted). ``coupled``: prune residual-tied layers as
    coupled groups (``prune.coupled``); every layer of a group is listed. ``input_size``:
    square input side in pixels instead of the dataset's static shape (e.g. 128 for the
    ImageNet presets' training crop; parameters do not change, MACs do). ``skip``: patterns
    never pruned, a list or one string; commas separate patterns in either (``"a,b"`` is
    two patterns), and a pattern that matches no Conv2d/Linear layer is a PatternError.
    """
    from prunebench.data import dataset_shape

    in_channels, size, num_classes = dataset_shape(dataset)
    if input_size is not None:
        if (isinstance(input_size, bool) or not isinstance(input_size, int)
                or not 1 <= input_size <= MAX_INPUT_SIZE):
            raise RecipeError(f"input_size (--input-size) must be a whole number of pixels "
                              f"from 1 to {MAX_INPUT_SIZE}, got {input_size!r}")
        size = (input_size, input_size)
    try:
        return _describe(model, dataset, layers, skip, method, scheme, in_channels, size,
                         num_classes, max_layer_ratio=max_layer_ratio, normalize=normalize,
                         target_speedup=target_speedup,
                         target_param_sparsity=target_param_sparsity, seed=seed,
                         coupled=coupled)
    except MemoryError:
        raise RecipeError(_too_big(model, in_channels, size)) from None
    except RuntimeError as exc:  # torch's allocator: "can't allocate memory", CUDA OOM
        msg = str(exc).lower()
        if "allocate" in msg or "out of memory" in msg:
            raise RecipeError(_too_big(model, in_channels, size)) from None
        raise


def _too_big(model: str, in_channels: int, size: tuple[int, int]) -> str:
    shape = "x".join(map(str, (in_channels, *size)))
    return (f"{model} at input {shape} does not fit in memory (the model or one activation "
            "is too large); give a smaller --input-size")


def _describe(
    model: str, dataset: str, layers: str | float | list[float], skip: Sequence[str] | str,
    method: str, scheme: str, in_channels: int, size: tuple[int, int], num_classes: int, *,
    max_layer_ratio: float, normalize: bool, target_speedup: float | None,
    target_param_sparsity: float | None, seed: int, coupled: bool,
) -> dict[str, Any]:
    from prunebench.models import build_model
    from prunebench.pruning.structured import prune_summary

    input_shape = (in_channels, *size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dense = build_model(
            model, in_channels=in_channels, num_classes=num_classes, input_size=size
        ).eval()
    g = torch.Generator().manual_seed(seed)
    example = torch.randn(1, *input_shape, generator=g)
    x = torch.randn(2, *input_shape, generator=g)
    batches = [(x, torch.randint(0, num_classes, (2,), generator=g))]
    spec = StructuredSpec(
        method=method,
        layers=layers,
        skip=split_skip(skip),
        scheme=scheme,
        max_layer_ratio=max_layer_ratio,
        normalize=normalize,
        target_speedup=target_speedup,
        target_param_sparsity=target_param_sparsity,
        coupled=coupled,
    )
    pruned = copy.deepcopy(dense)
    outcome = prune_model(
        pruned, spec, example, batches=batches, seed=seed, input_shape=input_shape
    )
    summary = prune_summary(dense, pruned, input_shape)
    return {
        "model": model,
        "dataset": dataset,
        "input_shape": list(input_shape),
        "method": method,
        "scheme": scheme,
        **summary,
        "layers": {
            name: [outcome.n_total[name] - outcome.n_pruned[name], outcome.n_total[name]]
            for name in outcome.kept
        },
        "ratios": dict(outcome.ratios),
        "solved_ratio": outcome.solved_ratio,
        **({"target": _target_info(target_speedup, target_param_sparsity, summary, outcome)}
           if outcome.solved_ratio is not None else {}),
        "convention": CONVENTION,
    }


def _target_info(speedup: float | None, sparsity: float | None, summary: dict[str, Any],
                 outcome: Any) -> dict[str, Any]:
    """How close a speedup / sparsity target got: the smallest uniform ratio reaching it, and
    the next smaller ratio (which falls short); ratios move in whole filters per layer."""
    kind = "speedup" if speedup is not None else "param_sparsity"
    return {"kind": kind, "target": speedup if speedup is not None else sparsity,
            "achieved": summary[kind], "ratio": outcome.solved_ratio, "below": outcome.below}


def _num(kind: str, value: float) -> str:
    return f"{value:.3g}x" if kind == "speedup" else f"{value:.2f} %"


def summary_lines(info: dict[str, Any]) -> list[str]:
    """A human summary of :func:`describe`'s result (what ``prunebench describe`` prints)."""
    shape = "x".join(str(d) for d in info["input_shape"])
    lines = [
        f"{info['model']} on {info['dataset']} ({shape}), {info['method']} "
        f"{info['scheme']} pruning",
        f"params   {info['params_dense']:>14,} -> {info['params_pruned']:>14,}  "
        f"({info['param_sparsity']:.2f} % sparsity)",
        f"MACs     {info['macs_dense']:>14,} -> {info['macs_pruned']:>14,}  "
        f"({info['flops_sparsity']:.2f} % fewer FLOPs)",
        f"speedup  {info['speedup']:.2f}x",
    ]
    layers = info.get("layers") or {}
    pruned = {n: kt for n, kt in layers.items() if kt[0] < kt[1]}
    if pruned:
        lines.append(f"pruned layers ({len(pruned)} of {len(layers)}):")
        for name, (kept, total) in pruned.items():
            lines.append(f"  {name:32s} {kept:>5d} / {total:<5d} kept "
                         f"(ratio {info['ratios'].get(name, 1 - kept / total):.4g})")
    target = info.get("target")
    if target:
        kind = target["kind"]
        what = "speedup" if kind == "speedup" else "parameter sparsity"
        line = (f"target {what} {_num(kind, target['target'])}: achieved "
                f"{_num(kind, target['achieved'])} at uniform ratio {target['ratio']:.4g}")
        below = target.get("below")
        if below:
            line += (f"; the next smaller ratio, {below['ratio']:.4g}, gives "
                     f"{_num(kind, below[kind])} (short of it): ratios move in whole filters "
                     "(ceil(ratio * n) per layer), so nothing in between is reachable "
                     "with one ratio")
        lines.append(line)
    lines.append(f"({info['convention']})")
    return lines

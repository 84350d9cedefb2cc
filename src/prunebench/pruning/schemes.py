"""Pruning-ratio schemes and targets: the one entry point :func:`prune_model`.

* ``layerwise`` (default): each selected layer loses ``ceil(ratio * n)`` of its ``n``
  filters, ``ratio`` from the TPP/GReg layer patterns (paper, section 6), exactly as
  ``resolve_layer_ratios`` + ``prune_structured``.
* ``global``: all filters of the selected layers are ranked together by score and the
  lowest are removed until the total count ``ceil(sum_l ratio_l * n_l)`` is reached (so a
  uniform ratio ``r`` removes ``ceil(r * N)`` of the ``N`` filters), with at most
  ``floor(max_layer_ratio * n)`` (and never all) filters from any layer, as in global
  magnitude / Taylor ranking (Molchanov et al. CVPR 2019). Raw scores are compared by
  default, because for one conv type (the paper's ResNet ``*.conv1`` layers) mean |w| is
  comparable; ``normalize=True`` divides each layer's scores by their mean absolute value
  first (scale-free; the role of Molchanov et al.'s per-layer L2 normalisation, without
  its bias towards wide layers).
* targets: ``target_speedup`` (dense MACs / pruned MACs) or ``target_param_sparsity``
  (percent) replace the ratios: the smallest uniform ratio ``r`` over the selected layers
  (layers with a ratio > 0 in ``layers``; for ``global`` the global budget ratio) whose
  pruned model reaches the target is found by bisection over the exact breakpoints of
  ``r`` (where some layer's count changes). Counts come from exact shape bookkeeping on
  the dependency graph (a physically pruned deep copy where that is not possible), and the
  achieved values reported in ``PruneOutcome.achieved`` are measured on the pruned model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from prunebench.errors import PruningError
from prunebench.pruning.context import CRITERIA
from prunebench.pruning.ratios import num_to_prune, parse_layer_ratios, resolve_layer_ratios
from prunebench.pruning.structured import (
    PruneOutcome,
    _build_graph,
    _out_pruning_fn,
    _remove,
    prunable_layers,
    prune_structured,
)

SCHEMES = ("layerwise", "global")
_REL_TOL = 1e-9


@dataclass
class StructuredSpec:
    """What to prune, how much and by which score (one pipeline ``prune`` section).

    ``layers``: a bare ratio, ``"pattern:ratio,..."`` rules or a ResNet stage list;
    ``skip``: patterns never pruned; ``method``: a registered criterion; ``scheme``:
    ``"layerwise"`` or ``"global"`` (with ``max_layer_ratio`` and ``normalize``);
    ``target_speedup`` / ``target_param_sparsity`` (percent): solve for the ratio instead.
    """

    method: str = "l1"
    layers: str | float | list[float] = 0.5
    skip: list[str] = field(default_factory=list)
    scheme: str = "layerwise"
    max_layer_ratio: float = 0.9
    normalize: bool = False
    target_speedup: float | None = None
    target_param_sparsity: float | None = None
    coupled: bool = False  # prune residual-tied layers as groups (layerwise/global, no target)


# ---------------------------------------------------------------- global ranking


def layer_cap(n: int, max_layer_ratio: float) -> int:
    """Most filters the global scheme may take from a layer of ``n``: floor(cap * n) <= n-1."""
    return max(0, min(n - 1, math.floor(round(max_layer_ratio * n, 9))))


def global_budget(ratios: dict[str, float], sizes: dict[str, int]) -> int:
    """Total filters to remove: ``ceil(sum_l ratio_l * n_l)`` (``ceil(r * N)`` if uniform)."""
    return math.ceil(round(sum(ratios[name] * sizes[name] for name in ratios), 9))


def global_order(
    scores: dict[str, torch.Tensor], max_layer_ratio: float = 0.9, normalize: bool = False
) -> list[str]:
    """Layer names of the filters in global removal order, per-layer caps applied.

    Filters are sorted by (score, layer position, higher index first), so within a layer
    the lower index wins ties as in layerwise pruning; a filter is skipped once its layer
    reached :func:`layer_cap`. The first ``K`` entries give the allocation for budget K.
    """
    entries: list[tuple[float, int, int, str]] = []
    for pos, (name, s) in enumerate(scores.items()):
        values = s.detach().to("cpu", torch.float64)
        if normalize:
            scale = float(values.abs().mean()) if values.numel() else 0.0
            if scale > 0:
                values = values / scale
        entries.extend((v, pos, -i, name) for i, v in enumerate(values.tolist()))
    entries.sort()
    caps = {name: layer_cap(len(s), max_layer_ratio) for name, s in scores.items()}
    taken = dict.fromkeys(scores, 0)
    order: list[str] = []
    for _v, _pos, _i, name in entries:
        if taken[name] < caps[name]:
            taken[name] += 1
            order.append(name)
    return order


def _counts(order: list[str], names: list[str], k: int) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for name in order[:k]:
        counts[name] += 1
    return counts


def global_allocation(
    scores: dict[str, torch.Tensor],
    n_prune: int,
    max_layer_ratio: float = 0.9,
    normalize: bool = False,
) -> dict[str, int]:
    """Filters to remove per layer when the ``n_prune`` lowest-scored filters go globally.

    Raises PruningError when the caps allow fewer than ``n_prune`` (naming the maximum).
    """
    order = global_order(scores, max_layer_ratio, normalize)
    if n_prune > len(order):
        total = sum(len(s) for s in scores.values())
        raise PruningError(
            f"global pruning of {n_prune} of {total} filters is impossible with "
            f"max_layer_ratio={max_layer_ratio}: at most {len(order)} "
            f"({len(order) / max(total, 1):.4f} of them) can be removed"
        )
    return _counts(order, list(scores), n_prune)


# ---------------------------------------------------------------- exact counting


class _Unsupported(Exception):
    """Shape bookkeeping cannot describe this model; count a pruned copy instead."""


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class ShapeCounter:
    """Exact parameter and MAC counts of the model after removing ``counts[layer]`` filters.

    Built once on the dense model: a forward pass records each Conv/Linear layer's output
    positions, and each prunable layer's Torch-Pruning group lists which dimensions of which
    modules shrink with one of its channels (BN features, next layers' inputs, a Flatten's
    ``H*W`` inputs per channel). Counting is then arithmetic, under the convention of
    :func:`prunebench.models.count_macs`. Models with other parametrised modules on a
    pruned path fall back to pruning a deep copy (slower, same numbers).
    """

    def __init__(
        self,
        model: nn.Module,
        graph: tp.DependencyGraph,
        names: list[str],
        input_shape: tuple[int, ...],
    ) -> None:
        self.model, self.graph, self.names = model, graph, names
        self.input_shape = tuple(input_shape)
        self.positions = self._positions()
        self.touch: dict[str, list[tuple[nn.Module, str, int]]] = {}
        self.analytic = True
        try:
            for name in names:
                self.touch[name] = self._touches(model.get_submodule(name))
            for module in {id(m): m for items in self.touch.values() for m, _, _ in items}.values():
                if self._module_params(module, {}) != sum(
                    p.numel() for p in module.parameters(recurse=False)
                ):
                    raise _Unsupported
        except _Unsupported:
            self.analytic = False
        self.params_dense, self.macs_dense = self.count({})

    def _positions(self) -> dict[nn.Module, int]:
        positions: dict[nn.Module, int] = {}

        def hook(m: nn.Module, _inp: object, out: torch.Tensor) -> None:
            positions[m] = positions.get(m, 0) + out.numel() // m.weight.shape[0]

        handles = [
            m.register_forward_hook(hook)
            for m in self.model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))
        ]
        ref = next(self.model.parameters())
        try:
            with torch.no_grad():
                self.model(torch.zeros((1, *self.input_shape), device=ref.device, dtype=ref.dtype))
        finally:
            for h in handles:
                h.remove()
        return positions

    def _touches(self, layer: nn.Module) -> list[tuple[nn.Module, str, int]]:
        group = self.graph.get_pruning_group(layer, _out_pruning_fn(layer), idxs=[0])
        seen: set[tuple[int, str]] = set()
        out: list[tuple[nn.Module, str, int]] = []
        for item in group:
            target = item.dep.target.module
            if not isinstance(target, nn.Module) or not any(
                True for _ in target.parameters(recurse=False)
            ):
                continue
            if isinstance(target, (nn.Conv2d, nn.Linear)):
                if getattr(target, "groups", 1) != 1:
                    raise _Unsupported
                is_out = self.graph.is_out_channel_pruning_fn(item.dep.handler)
                kind = "out" if is_out else "in"
            elif isinstance(target, _NORMS):
                kind = "features"
            else:
                raise _Unsupported
            if (id(target), kind) in seen:
                continue
            seen.add((id(target), kind))
            out.append((target, kind, len(item.idxs)))
        return out

    def _module_params(self, m: nn.Module, shrink: dict[tuple[int, str], int]) -> int:
        def dim(kind: str, dense: int) -> int:
            return dense - shrink.get((id(m), kind), 0)

        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            out_c, in_c = dim("out", w.shape[0]), dim("in", w.shape[1])
            bias = out_c if m.bias is not None else 0
            return out_c * in_c * w.shape[2:].numel() + bias
        if isinstance(m, _NORMS):
            nf = dim("features", m.num_features)
            return 2 * nf if m.affine else 0
        return sum(p.numel() for p in m.parameters(recurse=False))

    def count(self, counts: dict[str, int]) -> tuple[int, int]:
        """(parameters, per-image MACs) after removing ``counts[layer]`` filters per layer."""
        if not self.analytic:
            return self._physical(counts)
        shrink: dict[tuple[int, str], int] = {}
        for name, k in counts.items():
            for module, kind, mult in self.touch[name]:
                key = (id(module), kind)
                shrink[key] = shrink.get(key, 0) + k * mult
        touched = {id(m) for items in self.touch.values() for m, _, _ in items}
        params = 0
        seen: set[int] = set()
        for m in self.model.modules():
            own = [p for p in m.parameters(recurse=False) if id(p) not in seen]
            seen.update(id(p) for p in own)
            if id(m) in touched:
                params += self._module_params(m, shrink)
            else:
                params += sum(p.numel() for p in own)
        macs = 0
        for m, pos in self.positions.items():
            w = m.weight
            out_c = w.shape[0] - shrink.get((id(m), "out"), 0)
            in_c = w.shape[1] - shrink.get((id(m), "in"), 0)
            macs += pos * out_c * in_c * w.shape[2:].numel()
        return params, macs

    def _physical(self, counts: dict[str, int]) -> tuple[int, int]:
        from prunebench.models import count_macs, count_params

        work = copy.deepcopy(self.model).eval()
        removed = {name: list(range(k)) for name, k in counts.items() if k}
        if removed:
            ref = next(work.parameters())
            x = torch.zeros((1, *self.input_shape), device=ref.device, dtype=ref.dtype)
            _remove(work, _build_graph(work, x), removed)
        return count_params(work), count_macs(work, input_shape=self.input_shape)


# ---------------------------------------------------------------- targets


def _metric(kind: str, counter: ShapeCounter, params: int, macs: int) -> float:
    if kind == "speedup":
        return counter.macs_dense / macs
    return 100.0 * (1.0 - params / counter.params_dense)


def _solve(
    kind: str,
    target: float,
    candidates: list[float],
    counts_at: Callable[[float], dict[str, int]],
    counter: ShapeCounter,
) -> tuple[float, dict[str, int]]:
    """Smallest candidate ratio whose pruned model reaches ``target`` (monotone bisection)."""

    def value(r: float) -> float:
        return _metric(kind, counter, *counter.count(counts_at(r)))

    def reached(r: float) -> bool:
        return value(r) >= target * (1 - _REL_TOL)

    top = candidates[-1]
    if not reached(top):
        unit = "x" if kind == "speedup" else "%"
        what = "speedup" if kind == "speedup" else "parameter sparsity"
        raise PruningError(
            f"target {what} {target:g}{unit} is unreachable with these layers: at most "
            f"{value(top):.4f}{unit} (ratio {top:.4f}); select more layers or lower the target"
        )
    lo, hi = 0, len(candidates) - 1  # candidates[hi] reaches the target
    while lo < hi:
        mid = (lo + hi) // 2
        if reached(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    return candidates[hi], counts_at(candidates[hi])


# ---------------------------------------------------------------- the entry point


def _check_spec(spec: StructuredSpec) -> tuple[str, float] | None:
    CRITERIA.get(spec.method)
    if spec.scheme not in SCHEMES:
        raise PruningError(f"unknown ratio scheme {spec.scheme!r}; allowed: {', '.join(SCHEMES)}")
    cap = spec.max_layer_ratio
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < 1:
        raise PruningError(f"bad max_layer_ratio {cap!r}: expected a number in (0, 1)")
    speed, sparsity = spec.target_speedup, spec.target_param_sparsity
    if speed is not None and sparsity is not None:
        raise PruningError("give target_speedup or target_param_sparsity, not both")
    if speed is not None:
        if not isinstance(speed, (int, float)) or not math.isfinite(speed) or speed < 1:
            raise PruningError(f"bad target_speedup {speed!r}: expected a number >= 1")
        return "speedup", float(speed)
    if sparsity is not None:
        if not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 100:
            raise PruningError(
                f"bad target_param_sparsity {sparsity!r}: expected a percentage in [0, 100)"
            )
        return "param_sparsity", float(sparsity)
    return None


def prune_model(
    model: nn.Module,
    spec: StructuredSpec,
    example_inputs: torch.Tensor,
    *,
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
) -> PruneOutcome:
    """Prune ``model`` IN PLACE as ``spec`` says; the one call the pipeline makes.

    With the defaults this is ``resolve_layer_ratios`` + ``prune_structured``. ``batches``
    feed data-driven criteria, ``seed`` stochastic ones; ``input_shape`` (C, H, W; default
    from ``example_inputs``) is where MACs are counted for a speedup target.
    ``PruneOutcome.ratios`` holds the per-layer ratios applied; with a target,
    ``solved_ratio`` the uniform ratio found and ``achieved`` the measured
    ``speedup`` and ``param_sparsity`` of the pruned model.
    """
    target = _check_spec(spec)
    if spec.coupled and target is not None:
        raise PruningError(
            "coupled-group pruning takes layer ratios, not a speedup / sparsity target"
        )
    layer_spec = parse_layer_ratios(spec.layers, spec.skip, model=model)
    ratios = resolve_layer_ratios(
        layer_spec, model, prunable_layers(model, example_inputs, coupled=spec.coupled)
    )
    shape = tuple(input_shape) if input_shape is not None else tuple(example_inputs.shape[1:])
    names = list(ratios)
    if target is None and spec.scheme == "layerwise":
        return prune_structured(model, ratios, spec.method, example_inputs, batches, seed,
                                coupled=spec.coupled)
    if target is not None and not names:
        raise PruningError(
            f"a pruning target needs layers to prune; layers={spec.layers!r} selects none"
        )

    solved: list[float] = []
    below: list[dict[str, float]] = []
    counter_box: list[ShapeCounter] = []

    def allocate(scores: dict[str, torch.Tensor], graph: tp.DependencyGraph) -> dict[str, int]:
        sizes = {name: len(s) for name, s in scores.items()}
        if target is None:  # global scheme, ratios from the layer spec
            return global_allocation(
                scores, global_budget({n: ratios[n] for n in sizes}, sizes),
                spec.max_layer_ratio, spec.normalize,
            )
        counter = ShapeCounter(model, graph, names, shape)
        counter_box.append(counter)
        if spec.scheme == "global":
            order = global_order(scores, spec.max_layer_ratio, spec.normalize)
            total = sum(sizes.values())
            candidates = [k / total for k in range(len(order) + 1)]

            def counts_at(r: float) -> dict[str, int]:
                return _counts(order, names, math.ceil(round(r * total, 9)))

        else:
            candidates = sorted({j / n for n in sizes.values() for j in range(n)})

            def counts_at(r: float) -> dict[str, int]:
                return {name: num_to_prune(n, r) for name, n in sizes.items()}

        ratio, counts = _solve(target[0], target[1], candidates, counts_at, counter)
        solved.append(ratio)
        i = candidates.index(ratio)
        if i > 0:  # the nearest ratio that falls short: how close a target can get
            value = _metric(target[0], counter, *counter.count(counts_at(candidates[i - 1])))
            below.append({"ratio": candidates[i - 1], target[0]: value})
        return counts

    outcome = prune_structured(
        model, ratios, spec.method, example_inputs, batches, seed, allocate=allocate,
        coupled=spec.coupled,
    )
    if target is not None:
        from prunebench.models import count_macs, count_params

        counter = counter_box[0]
        params, macs = count_params(model), count_macs(model, input_shape=shape)
        outcome.solved_ratio = solved[0]
        outcome.below = below[0] if below else None
        outcome.achieved = {
            "speedup": counter.macs_dense / macs,
            "param_sparsity": 100.0 * (1.0 - params / counter.params_dense),
        }
        if outcome.achieved[target[0]] < target[1] * (1 - _REL_TOL):  # counting bug guard
            raise PruningError(
                f"pruned model reaches {target[0]} {outcome.achieved[target[0]]:.4f}, "
                f"below the target {target[1]:g}"
            )
    return outcome

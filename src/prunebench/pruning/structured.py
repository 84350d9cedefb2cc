"""Structured (filter / neuron) pruning with physical removal via Torch-Pruning.

One-shot: every layer is scored on the dense model first, the lowest-scoring
``num_to_prune(n, ratio)`` output channels are chosen, then removed through Torch-Pruning's
dependency graph, so BatchNorm parameters/statistics and the next layer's input channels
follow. Module names do not change, so the recorded ``kept`` indices (original, dense
indexing) can rebuild a pruned checkpoint on a fresh dense model (:func:`apply_structure`).

Coupled groups (``coupled=True``, recipe ``prune.coupled: true``): a layer whose output
channels are tied to other layers' by a residual addition (a ResNet block's last conv, the
stem, a projection shortcut) is pruned together with its whole group: every Conv/Linear
layer feeding the addition loses the same channel indices (with their BatchNorms and every
consumer's input channels), chosen by the sum of the criterion's scores over the group's
layers. ``kept`` then lists every layer of the group with the same indices.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunebench.errors import PruningError
from prunebench.pruning.context import CRITERIA, Criterion, PruneContext
from prunebench.pruning.ratios import not_prunable_reason, num_to_prune, output_layer_name

_LAYER_TYPES = (nn.Conv2d, nn.Linear)


@dataclass
class PruneOutcome:
    """What one pruning call did, per pruned layer (keys are module names).

    ``kept``: the kept output-channel indices in original (dense) indexing, sorted;
    ``n_pruned`` / ``n_total``: channels removed / channels before pruning;
    ``ratios``: the per-layer ratio actually applied (``n_pruned / n_total``);
    ``solved_ratio``: the uniform ratio found for a speedup / sparsity target, if any, and
    ``achieved``: the ``speedup`` / ``param_sparsity`` measured on the pruned model then;
    ``below``: the next smaller candidate ratio and the target metric it reaches (short of
    the target: ratios move in whole filters), or None.
    """

    kept: dict[str, list[int]] = field(default_factory=dict)
    n_pruned: dict[str, int] = field(default_factory=dict)
    n_total: dict[str, int] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    solved_ratio: float | None = None
    achieved: dict[str, float] = field(default_factory=dict)
    below: dict[str, float] | None = None


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class _PadShortcutPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning handler of the option-A shortcut (:class:`PadShortcut`): its input and
    output channels are pruned independently through its channel index map, so a CIFAR
    ResNet's stages form separate coupled groups (without it the zero padding would be
    traced as an element-wise op, wrongly tying every stage's channels together)."""

    def prune_out_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
        drop = set(int(i) for i in idxs)
        layer.index = [c for j, c in enumerate(layer.channel_index()) if j not in drop]
        layer.out_channels = len(layer.index)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
        drop = set(int(i) for i in idxs)
        kept = [i for i in range(layer.in_channels) if i not in drop]
        remap = {old: new for new, old in enumerate(kept)}
        # a removed input channel is zero in the masked dense model: copy a zero instead
        layer.index = [remap.get(c, -1) for c in layer.channel_index()]
        layer.in_channels = len(kept)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.in_channels


def _customized_pruners(model: nn.Module) -> dict[Any, Any]:
    from prunebench.models.resnet_cifar import PadShortcut

    pads = [m for m in model.modules() if isinstance(m, PadShortcut) and m.in_channels]
    return {PadShortcut: _PadShortcutPruner()} if pads else {}


def _build_graph(model: nn.Module, example_inputs: torch.Tensor) -> tp.DependencyGraph:
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(
            model, example_inputs=example_inputs, verbose=False,
            customized_pruners=_customized_pruners(model) or None,
        )


def _out_pruning_fn(module: nn.Module) -> Callable[..., Any]:
    if isinstance(module, nn.Conv2d):
        return tp.prune_conv_out_channels
    return tp.prune_linear_out_channels


def _out_channels(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def _coupled_layers(graph: tp.DependencyGraph, module: nn.Module) -> list[nn.Module]:
    """Other Conv/Linear layers whose OUTPUT channels move with ``module``'s."""
    group = graph.get_pruning_group(module, _out_pruning_fn(module), idxs=[0])
    coupled: list[nn.Module] = []
    for item in group:
        dep = item.dep
        target = dep.target.module
        if (
            target is not module
            and isinstance(target, _LAYER_TYPES)
            and graph.is_out_channel_pruning_fn(dep.handler)
        ):
            coupled.append(target)
    return coupled


def _prunable_from_graph(
    model: nn.Module, graph: tp.DependencyGraph, coupled: bool = False
) -> list[str]:
    output = output_layer_name(model)
    names: list[str] = []
    for name, module in model.named_modules():
        if not name or not isinstance(module, _LAYER_TYPES) or name == output:
            continue
        if module not in graph.module2node:  # never called in forward
            continue
        if getattr(module, "groups", 1) != 1:  # grouped / depthwise: couples to its input
            continue
        others = _coupled_layers(graph, module)
        if not others or (coupled and _group_ok(model, others)):
            names.append(name)
    return names


def _group_ok(model: nn.Module, others: list[nn.Module]) -> bool:
    """A coupled group can be pruned: no member is the output layer or a grouped conv."""
    output = output_layer_name(model)
    out_module = model.get_submodule(output) if output else None
    return all(m is not out_module and getattr(m, "groups", 1) == 1 for m in others)


def prunable_layers(
    model: nn.Module, example_inputs: torch.Tensor, *, coupled: bool = False
) -> list[str]:
    """Conv2d/Linear layers whose output channels can be removed on their own.

    Excluded: the output layer (``model.output_layer``, else the last Linear) and every
    layer whose pruning group also removes another Conv/Linear layer's output channels
    (residual additions: a ResNet block's last conv, the stem conv, the shortcut), unless
    ``coupled``: then those are prunable as a group (see the module docstring).
    """
    with _eval_mode(model):
        graph = _build_graph(model, example_inputs)
        return _prunable_from_graph(model, graph, coupled)


def coupled_groups(
    model: nn.Module, graph: tp.DependencyGraph, names: list[str]
) -> dict[str, list[str]]:
    """Each of ``names`` -> the names of every Conv/Linear layer whose output channels are
    tied to it (itself included, in module order; just itself for an uncoupled layer)."""
    order = {m: n for n, m in model.named_modules() if n}
    position = {n: i for i, n in enumerate(order.values())}
    out: dict[str, list[str]] = {}
    for name in names:
        module = model.get_submodule(name)
        members = {name, *(order[m] for m in _coupled_layers(graph, module) if m in order)}
        out[name] = sorted(members, key=position.__getitem__)
    return out


def _get_layer(model: nn.Module, name: str) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        module = None
    if not name or not isinstance(module, _LAYER_TYPES):
        raise PruningError(
            f"layer {name!r} is not a Conv2d/Linear module of {type(model).__name__}"
        )
    return module


def _check_prunable(
    model: nn.Module, graph: tp.DependencyGraph, names: list[str], coupled: bool = False
) -> None:
    prunable = set(_prunable_from_graph(model, graph, coupled))
    for name in names:
        _get_layer(model, name)
        if name not in prunable:
            raise PruningError(
                f"layer {name!r} cannot be pruned: {not_prunable_reason(model, name)}"
            )


def _remove(model: nn.Module, graph: tp.DependencyGraph, removed: dict[str, list[int]]) -> None:
    """Physically remove ``removed[name]`` output channels (original indexing) per layer.

    Uncoupled layers are independent: removing one layer's outputs only touches its own BN
    and the next layers' inputs, never another pruned layer's outputs. A coupled group is
    removed once, through its first listed member, and every member must be listed with
    the same indices (PruningError otherwise).
    """
    groups = coupled_groups(model, graph, list(removed))
    done: set[str] = set()
    for name, idxs in removed.items():
        if name in done:
            continue
        members = groups[name]
        for other in members:
            if other != name and sorted(removed.get(other, [-1])) != sorted(idxs):
                raise PruningError(
                    f"layers {name!r} and {other!r} are coupled by a residual addition and "
                    f"must lose the same channels; coupled group: {', '.join(members)}"
                )
        done.update(members)
        if not idxs:
            continue
        module = model.get_submodule(name)
        group = graph.get_pruning_group(module, _out_pruning_fn(module), idxs=sorted(idxs))
        if not graph.check_pruning_group(group):
            raise PruningError(f"cannot remove {len(idxs)} channels from layer {name!r}")
        group.prune()


def _resolve_criterion(criterion: str | Criterion) -> tuple[str, Criterion]:
    if isinstance(criterion, str):
        return criterion, CRITERIA.get(criterion)
    if callable(criterion):
        return getattr(criterion, "__name__", "criterion"), criterion
    raise PruningError(f"bad criterion {criterion!r}: expected a registered name or a callable")


def _choose(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` lowest scores; among equal scores the lower index is kept."""
    values = scores.detach().to("cpu", torch.float64).tolist()
    order = sorted(range(len(values)), key=lambda i: (values[i], -i))
    return sorted(order[:k])


Allocator = Callable[[dict[str, torch.Tensor], tp.DependencyGraph], dict[str, int]]


def bn_after_map(
    model: nn.Module, graph: tp.DependencyGraph, names: list[str]
) -> dict[str, nn.Module | None]:
    """For each layer, the BatchNorm that is the sole direct consumer of its output."""
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    out: dict[str, nn.Module | None] = {}
    for name in names:
        node = graph.module2node.get(model.get_submodule(name))
        follower = None
        if node is not None and len(node.outputs) == 1:
            candidate = node.outputs[0].module
            if isinstance(candidate, norms):
                follower = candidate
        out[name] = follower
    return out


def _score_layers(
    model: nn.Module,
    graph: tp.DependencyGraph,
    names: list[str],
    criterion: str | Criterion,
    example_inputs: torch.Tensor,
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None,
    seed: int,
) -> dict[str, torch.Tensor]:
    crit_name, crit = _resolve_criterion(criterion)
    generator = torch.Generator().manual_seed(seed)
    bn_after = bn_after_map(model, graph, names)
    cache: dict[str, Any] = {}
    scores: dict[str, torch.Tensor] = {}
    for name in names:
        ctx = PruneContext(model, name, example_inputs, batches, generator, bn_after, cache)
        scores[name] = checked_scores(crit_name, crit, model.get_submodule(name), ctx)
    return scores


def checked_scores(
    crit_name: str, crit: Criterion, module: nn.Module, ctx: PruneContext
) -> torch.Tensor:
    """One layer's scores from a criterion: one finite score per output channel (float64)."""
    n = _out_channels(module)
    result = crit(module, ctx)
    if not isinstance(result, torch.Tensor) or tuple(result.shape) != (n,):
        shape = tuple(result.shape) if isinstance(result, torch.Tensor) else result
        raise PruningError(
            f"criterion {crit_name!r} returned {shape!r} for layer {ctx.name!r}: "
            f"expected a tensor of shape ({n},)"
        )
    if not bool(torch.isfinite(result).all()):
        raise PruningError(
            f"criterion {crit_name!r} returned non-finite scores for layer {ctx.name!r}"
        )
    return result.detach().to("cpu", torch.float64)


def prune_structured(
    model: nn.Module,
    ratios: dict[str, float],
    criterion: str | Criterion,
    example_inputs: torch.Tensor,
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    seed: int = 0,
    *,
    allocate: Allocator | None = None,
    coupled: bool = False,
) -> PruneOutcome:
    """One-shot structured pruning of ``model`` IN PLACE; returns what was kept.

    ``ratios`` maps layer names (see :func:`prunable_layers`) to ratios in [0, 1);
    ``criterion`` is a registered name (``"l1"``) or ``fn(module, ctx) -> scores``;
    ``batches`` are handed to data-driven criteria (``taylor_fo``) and ``seed`` seeds the
    generator of stochastic ones (``random``). All scores are computed on the dense model
    before anything is removed. The model is traced and scored in eval mode; its train/eval
    mode is restored afterwards. Parameters are replaced: build optimisers after pruning.

    ``allocate(scores, graph) -> {layer: n_pruned}`` replaces the per-layer
    ``num_to_prune(n, ratio)`` counts (the global ranking scheme uses it); the lowest
    ``n_pruned`` scores of each layer are removed either way.

    ``coupled``: layers tied by residual additions are pruned as groups (module docstring):
    a group's score is the sum of its layers' scores, its count comes from the ratio of its
    listed layers (which must agree), and ``kept`` lists every layer of the group.
    """
    for ratio in ratios.values():
        num_to_prune(1, ratio)  # validates the ratio before any work
    _resolve_criterion(criterion)
    outcome = PruneOutcome()
    with _eval_mode(model):
        graph = _build_graph(model, example_inputs)
        names = list(ratios)
        _check_prunable(model, graph, names, coupled)
        if coupled:
            members, names = _group_members(model, graph, ratios)
            every = [m for rep in names for m in members[rep]]
            layer_scores = _score_layers(
                model, graph, every, criterion, example_inputs, batches, seed
            )
            scores = {rep: sum(layer_scores[m] for m in members[rep]) for rep in names}
        else:
            members = {name: [name] for name in names}
            scores = _score_layers(model, graph, names, criterion, example_inputs, batches, seed)
        if allocate is None:
            counts = {name: num_to_prune(len(s), ratios[name]) for name, s in scores.items()}
        else:
            counts = allocate(scores, graph)
        removed: dict[str, list[int]] = {}
        for name in names:
            n = len(scores[name])
            k = counts.get(name, 0)
            if not 0 <= k < n:
                raise PruningError(f"cannot remove {k} of {n} channels from layer {name!r}")
            chosen = _choose(scores[name], k)
            for member in members[name]:
                removed[member] = chosen
                outcome.n_total[member] = n
                outcome.n_pruned[member] = k
                outcome.ratios[member] = k / n
                outcome.kept[member] = sorted(set(range(n)) - set(chosen))
        _remove(model, graph, removed)
        for name, kept in outcome.kept.items():
            if _out_channels(model.get_submodule(name)) != len(kept):
                raise PruningError(f"layer {name!r} has the wrong width after pruning")
    return outcome


def _group_members(
    model: nn.Module, graph: tp.DependencyGraph, ratios: dict[str, float]
) -> tuple[dict[str, list[str]], list[str]]:
    """Coupled groups of the listed layers: ``({representative: members}, representatives)``;
    the representative is the group's first listed layer. The listed layers of a group must
    have one ratio (PruningError naming them otherwise)."""
    groups = coupled_groups(model, graph, list(ratios))
    members: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for name in ratios:
        if name in owner:
            rep = owner[name]
            if ratios[name] != ratios[rep]:
                raise PruningError(
                    f"layers {rep!r} (ratio {ratios[rep]:g}) and {name!r} (ratio "
                    f"{ratios[name]:g}) are coupled by a residual addition: give every layer "
                    f"of the group one ratio; coupled group: {', '.join(groups[name])}"
                )
            continue
        members[name] = groups[name]
        for member in groups[name]:
            owner[member] = name
    return members, list(members)


def apply_structure(
    model: nn.Module, kept: dict[str, list[int]], example_inputs: torch.Tensor
) -> nn.Module:
    """Replay a recorded structure on a fresh dense model (in place; returns it).

    Rebuild a pruned checkpoint: ``build dense -> apply_structure(kept) ->
    load_state_dict(pruned_state)``.
    """
    with _eval_mode(model):
        graph = _build_graph(model, example_inputs)
        _check_prunable(model, graph, list(kept), coupled=True)  # groups: checked by _remove
        removed: dict[str, list[int]] = {}
        for name, idxs in kept.items():
            n = _out_channels(model.get_submodule(name))
            keep = set(idxs)
            if len(keep) != len(idxs) or not keep or not all(0 <= i < n for i in keep):
                raise PruningError(
                    f"bad kept indices for layer {name!r}: expected 1 to {n} distinct "
                    f"indices in [0, {n})"
                )
            removed[name] = sorted(set(range(n)) - keep)
        _remove(model, graph, removed)
    return model


def masked_reference(
    dense: nn.Module, kept: dict[str, list[int]], example_inputs: torch.Tensor | None = None
) -> nn.Module:
    """A deep copy of ``dense`` whose removed channels are zeroed, for equivalence checks.

    Each listed layer's output is masked by a forward hook, and so is the output of every
    leaf module that consumes a masked tensor directly and keeps its channel count
    (BatchNorm, activation and pooling modules), so the zeros sit after the BN, where the
    physically pruned model has no channel at all. With ``example_inputs`` (needed for
    coupled groups through an option-A :class:`PadShortcut`), the parameter-free modules
    whose output channels a group removes (the shortcut feeding the addition) are masked too.
    """
    ref = copy.deepcopy(dense)
    if example_inputs is not None:
        _mask_group_shortcuts(ref, kept, example_inputs)
    masked: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(tensor) -> (tensor, mask)

    def apply(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        shape = [1, -1] + [1] * (out.dim() - 2)
        result = out * mask.to(device=out.device, dtype=out.dtype).view(shape)
        masked[id(result)] = (result, mask)
        return result

    def layer_hook(mask: torch.Tensor) -> Callable[..., torch.Tensor]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
            return apply(out, mask)

        return hook

    def follower_hook(module: nn.Module, inputs: tuple[Any, ...], out: Any) -> Any:
        if not inputs or not isinstance(inputs[0], torch.Tensor):
            return None
        entry = masked.get(id(inputs[0]))
        if entry is None or entry[0] is not inputs[0] or not isinstance(out, torch.Tensor):
            return None
        if out.dim() < 2 or out.dim() != inputs[0].dim() or out.shape[1] != inputs[0].shape[1]:
            return None
        return apply(out, entry[1])

    def reset(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        masked.clear()

    ref.register_forward_pre_hook(reset)
    for name, idxs in kept.items():
        layer = _get_layer(ref, name)
        mask = torch.zeros(_out_channels(layer))
        mask[list(idxs)] = 1.0
        layer.register_forward_hook(layer_hook(mask))
    for module in ref.modules():
        if not isinstance(module, _LAYER_TYPES) and not any(True for _ in module.children()):
            module.register_forward_hook(follower_hook)
    return ref


def _mask_group_shortcuts(
    ref: nn.Module, kept: dict[str, list[int]], example_inputs: torch.Tensor
) -> None:
    with _eval_mode(ref):
        graph = _build_graph(ref, example_inputs)
        pruners = _customized_pruners(ref)
        for name, idxs in kept.items():
            layer = _get_layer(ref, name)
            n = _out_channels(layer)
            removed = sorted(set(range(n)) - set(idxs))
            if not removed or not pruners:
                continue
            group = graph.get_pruning_group(layer, _out_pruning_fn(layer), idxs=removed)
            for item in group:
                target = item.dep.target.module
                if type(target) in pruners and graph.is_out_channel_pruning_fn(item.dep.handler):
                    mask = torch.ones(target.out_channels)
                    mask[list(item.idxs)] = 0.0
                    target.register_forward_hook(
                        lambda m, i, out, mask=mask: out * mask.to(out).view(1, -1, 1, 1)
                    )


def prune_summary(
    dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, int, int]
) -> dict[str, float]:
    """Parameters and per-image MACs (conv + linear) of both models, sparsity and speedup."""
    from prunebench.models import count_macs, count_params

    params_dense, params_pruned = count_params(dense), count_params(pruned)
    macs_dense = count_macs(dense, input_shape=input_shape)
    macs_pruned = count_macs(pruned, input_shape=input_shape)
    return {
        "params_dense": params_dense,
        "params_pruned": params_pruned,
        "macs_dense": macs_dense,
        "macs_pruned": macs_pruned,
        "param_sparsity": 100.0 * (1.0 - params_pruned / params_dense),
        "flops_sparsity": 100.0 * (1.0 - macs_pruned / macs_dense),
        "speedup": macs_dense / macs_pruned,
    }

"""Per-layer pruning ratios: the TPP/GReg pattern convention (paper, section 6).

A spec is either one number (the same ratio for every prunable layer) or comma-separated
``PATTERN:RATIO`` rules with fnmatch patterns on module names, later rules overriding
earlier ones, e.g. ``"*layer*.conv1:0.5"`` or ``"*features*:0.9"`` with skip patterns
(``"*features.0"``) that are never pruned. Unmatched layers are not pruned. The number of
filters pruned in a layer of ``n`` is ``ceil(ratio * n)``, never all of them.

ResNet per-stage lists (TPP/GReg; paper Table 1) are accepted too: ``[r1, r2, r3]`` for a
CIFAR ResNet or ``[c1, l1, l2, l3, l4, fc]`` for a torchvision-shaped one (a list or the
string ``"[0,0.6,0.6,0.6,0.21,0]"``); see :func:`expand_stage_ratios`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from torch import nn

from prunebench.errors import PatternError, PruningError

_FORM = "expected PATTERN:RATIO or a number in [0, 1)"


@dataclass
class LayerRatios:
    """A parsed layer-ratio spec.

    ``rules`` are ``(fnmatch pattern, ratio)`` pairs applied in order (later wins);
    ``skip`` patterns are never pruned. ``stages`` holds a ResNet per-stage list not yet
    expanded into rules (that needs the model; :func:`resolve_layer_ratios` does it).
    ``uniform`` marks a bare-number spec, stored as the
    single rule ``("*", ratio)``: it applies to every *prunable* layer and, unlike an
    explicit pattern, never complains about the output layer or residual-coupled layers.
    """

    rules: list[tuple[str, float]] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    uniform: bool = False
    stages: list[float] | None = None

    def __str__(self) -> str:
        """The spec string that parses back to these rules (skip patterns not included)."""
        if self.stages is not None:
            return "[" + ",".join(repr(r) for r in self.stages) + "]"
        if self.uniform:
            return repr(self.rules[0][1])
        return ",".join(f"{pattern}:{ratio!r}" for pattern, ratio in self.rules)


def _check_ratio(value: float, what: str) -> float:
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise PatternError(f"bad ratio {what} in layer ratios: expected a number in [0, 1)")
    return float(value)


def _ascii_number(text: str) -> float | None:
    """``float(text)`` for a plain ASCII number, else None: ``float`` alone also reads
    non-ASCII digits (``"٠.٥"`` is 0.5) and underscores (``"0.5_0"``)."""
    if not text.isascii() or "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def split_skip(skip: list[str] | tuple[str, ...] | str | None) -> list[str]:
    """Skip patterns as a list: a string or every item of a list is split on commas (the
    same convention as the ratio rules), blanks dropped, so ``"a,b"``, ``["a,b"]`` and
    ``["a", "b"]`` are the same two patterns.

    >>> split_skip(["features.0, features.3", "fc"])
    ['features.0', 'features.3', 'fc']
    """
    if skip is None:
        return []
    items = [skip] if isinstance(skip, str) else list(skip)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise PatternError(f"bad skip pattern {item!r}: expected a module-name pattern")
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            if any(ch.isspace() for ch in part):
                raise PatternError(
                    f"bad skip pattern {part!r}: expected a module-name pattern without spaces"
                )
            out.append(part)
    return out


def _parse_stages(spec: object) -> list[float]:
    items = spec
    if isinstance(spec, str):
        try:
            items = json.loads(spec)
        except ValueError:
            raise PatternError(
                f"bad stage list {spec!r} in layer ratios: expected e.g. [0,0.6,0.6,0.6,0.21,0]"
            ) from None
    if not isinstance(items, (list, tuple)) or len(items) < 2:
        # a one-element list would be ambiguous with a bare ratio (a uniform spec)
        raise PatternError(
            f"bad stage list {spec!r} in layer ratios: expected a list of at least 2 ratios "
            "(one per ResNet stage); use a bare number for one uniform ratio"
        )
    out: list[float] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise PatternError(f"bad ratio {item!r} in stage list {spec!r}: expected a number")
        out.append(_check_ratio(float(item), f"{item!r} in stage list"))
    return out


def _bracketed(text: str) -> bool:
    text = text.strip()
    return text.startswith("[") and text.endswith("]")


def parse_layer_ratios(
    spec: str | float | int | list[float] | tuple[float, ...] | LayerRatios,
    skip: list[str] | str | None = None,
    model: nn.Module | None = None,
) -> LayerRatios:
    """Parse ``"pat:r,pat:r"``, a bare number or a stage list into :class:`LayerRatios`.

    A stage list (``[0, 0.6, 0.6, 0.6, 0.21, 0]`` or its string) is expanded into pattern
    rules right away when ``model`` is given, else kept in ``stages`` for
    :func:`resolve_layer_ratios`.

    >>> parse_layer_ratios("*layer*.conv1:0.5").rules
    [('*layer*.conv1', 0.5)]
    >>> parse_layer_ratios(0.3, skip="*features.0")
    LayerRatios(rules=[('*', 0.3)], skip=['*features.0'], uniform=True, stages=None)
    """
    skip_list = split_skip(skip)
    if isinstance(spec, LayerRatios):
        stages = list(spec.stages) if spec.stages is not None else None
        out = LayerRatios(list(spec.rules), [*spec.skip, *skip_list], spec.uniform, stages)
        if stages is not None and model is not None:
            out.rules, out.stages = expand_stage_ratios(stages, model), None
        return out
    # a rule always ends in its ratio, so "[...]" is a stage list, never "[ab]*:0.5"
    if isinstance(spec, (list, tuple)) or (isinstance(spec, str) and _bracketed(spec)):
        stages = _parse_stages(spec)
        if model is not None:
            return LayerRatios(expand_stage_ratios(stages, model), skip_list)
        return LayerRatios([], skip_list, stages=stages)
    if isinstance(spec, bool) or not isinstance(spec, (str, int, float)):
        raise PatternError(f"bad layer ratios {spec!r}: {_FORM}")
    if isinstance(spec, (int, float)):
        ratio = _check_ratio(float(spec), repr(spec))
        return LayerRatios([("*", ratio)], skip_list, uniform=True)

    text = spec.strip()
    if not text:
        raise PatternError(f"empty layer ratios {spec!r}: {_FORM}")
    number = _ascii_number(text)
    if number is not None:
        return LayerRatios([("*", _check_ratio(number, repr(text)))], skip_list, uniform=True)

    rules: list[tuple[str, float]] = []
    for raw in text.split(","):
        token = raw.strip()
        pattern, sep, value = token.rpartition(":")
        pattern, value = pattern.strip(), value.strip()
        if not sep or not pattern or not value or any(ch.isspace() for ch in pattern):
            raise PatternError(f"bad rule {token!r} in layer ratios: {_FORM}")
        ratio = _ascii_number(value)
        if ratio is None:
            raise PatternError(f"bad rule {token!r} in layer ratios: {_FORM}")
        rules.append((pattern, _check_ratio(ratio, f"{value!r} in rule {token!r}")))
    return LayerRatios(rules, skip_list, uniform=False)


def _stage_count(model: nn.Module) -> int:
    count = 0
    while isinstance(getattr(model, f"layer{count + 1}", None), nn.Module):
        count += 1
    return count


def expand_stage_ratios(stages: list[float], model: nn.Module) -> list[tuple[str, float]]:
    """Expand a ResNet per-stage list into pattern rules (the TPP/GReg convention).

    With ``S`` stages (``layer1`` .. ``layerS``) the list holds either ``S`` ratios (one per
    stage) or ``S + 2`` (``conv1``, the stages, the output layer ``fc``). Stage ``i`` gives
    its ratio to ``layer{i}.*.conv1`` and, in Bottleneck blocks (which have a ``conv3``),
    also ``layer{i}.*.conv2``: the first two convs of a bottleneck, as in TPP/GReg for
    ResNet-50 (paper Table 1). A non-zero ``conv1`` / ``fc`` entry becomes a rule too, so
    resolving it raises PruningError where that layer is not prunable (it never is in a
    ResNet). Zero ratios produce no rule.

    >>> # CIFAR ResNet-56: [0.5, 0.5, 0.5] == "layer1.*.conv1:0.5,layer2.*.conv1:0.5,..."
    """
    n_stages = _stage_count(model)
    if n_stages == 0:
        raise PatternError(
            f"stage list {stages!r} in layer ratios needs a ResNet-shaped model with stages "
            f"layer1..layerN; {type(model).__name__} has none: use PATTERN:RATIO rules"
        )
    if len(stages) not in (n_stages, n_stages + 2):
        raise PatternError(
            f"stage list {stages!r} has {len(stages)} ratios; {type(model).__name__} has "
            f"{n_stages} stages: give {n_stages} (layer1..layer{n_stages}) or {n_stages + 2} "
            f"(conv1, layer1..layer{n_stages}, fc)"
        )
    per_stage = stages if len(stages) == n_stages else stages[1:-1]
    rules: list[tuple[str, float]] = []
    if len(stages) == n_stages + 2 and stages[0] > 0:
        rules.append(("conv1", stages[0]))
    for i, ratio in enumerate(per_stage, start=1):
        if ratio <= 0:
            continue
        stage = getattr(model, f"layer{i}")
        rules.append((f"layer{i}.*.conv1", ratio))
        if any(isinstance(getattr(b, "conv3", None), nn.Module) for b in stage.children()):
            rules.append((f"layer{i}.*.conv2", ratio))
    if len(stages) == n_stages + 2 and stages[-1] > 0:
        rules.append((output_layer_name(model) or "fc", stages[-1]))
    return rules


def num_to_prune(n: int, ratio: float) -> int:
    """Filters to remove from a layer of ``n``: ``ceil(ratio * n)``, never all of them.

    >>> num_to_prune(16, 0.9), num_to_prune(10, 0.3), num_to_prune(1, 0.5)
    (15, 3, 0)
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise PruningError(f"bad pruning ratio {ratio!r}: expected a number in [0, 1)")
    if not math.isfinite(ratio) or not 0.0 <= ratio < 1.0:
        raise PruningError(f"bad pruning ratio {ratio!r}: expected a number in [0, 1)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PruningError(f"bad channel count {n!r}: expected an integer >= 1")
    # round() guards float error: 0.3 * 10 = 3.0000000000000004 must give 3, not 4.
    k = math.ceil(round(ratio * n, 9))
    return max(0, min(k, n - 1))


def _conv_linear_names(model: nn.Module) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and name
    ]


def output_layer_name(model: nn.Module) -> str | None:
    """The logits layer: ``model.output_layer`` if set, else the last Linear (or Conv2d)."""
    name = getattr(model, "output_layer", None)
    if isinstance(name, str) and name:
        return name
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    layers = _conv_linear_names(model)
    return layers[-1] if layers else None


def not_prunable_reason(model: nn.Module, name: str) -> str:
    """Why a Conv2d/Linear layer that is not in ``prunable_layers`` cannot be pruned."""
    if name == output_layer_name(model):
        return "it is the output layer (its channels are the logits)"
    return (
        "its output channels are coupled to a residual addition (or to other layers' "
        "outputs), so removing them would change the block width; set prune.coupled: true "
        "to prune the whole coupled group"
    )


def resolve_layer_ratios(
    spec: LayerRatios, model: nn.Module, prunable: list[str]
) -> dict[str, float]:
    """Map a parsed spec onto ``model``'s layers: ``{layer name: ratio}`` (ratios > 0 only).

    Rule patterns are matched against Conv2d/Linear module names. A pattern that matches no
    such layer raises PatternError; a rule that gives a non-prunable layer (the output
    layer, a residual-coupled layer) a ratio > 0 raises PruningError. A bare-number spec
    applies to every prunable layer instead; a stage list is expanded first
    (:func:`expand_stage_ratios`). Skip patterns win over every rule; a skip pattern that
    matches no Conv2d/Linear layer raises PatternError too (a typo never silently prunes
    the layer it meant to protect).
    """
    spec = parse_layer_ratios(spec, model=model)
    layers = _conv_linear_names(model)
    prunable_set = set(prunable)

    for pattern in spec.skip:
        if not any(fnmatchcase(name, pattern) for name in layers):
            names = list(prunable) or layers
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise PatternError(
                f"skip pattern {pattern!r} matches no Conv2d/Linear layer; prunable layers are "
                f"named like: {shown or '(none)'}"
            )

    def skipped(name: str) -> bool:
        return any(fnmatchcase(name, pattern) for pattern in spec.skip)

    assigned: dict[str, float] = {}
    if spec.uniform:
        ratio = spec.rules[0][1]
        for name in layers:
            if name in prunable_set and not skipped(name):
                assigned[name] = ratio
    else:
        for pattern, ratio in spec.rules:
            matched = [name for name in layers if fnmatchcase(name, pattern)]
            if not matched:
                shown = ", ".join(layers[:6]) + (", ..." if len(layers) > 6 else "")
                raise PatternError(
                    f"pattern {pattern!r} in layer ratios matches no Conv2d/Linear layer; "
                    f"layers are named like: {shown or '(none)'}"
                )
            for name in matched:
                if not skipped(name):
                    assigned[name] = ratio
        for name, ratio in assigned.items():
            if ratio > 0 and name not in prunable_set:
                raise PruningError(
                    f"layer {name!r} cannot be pruned: {not_prunable_reason(model, name)}; "
                    "narrow the pattern or add a skip pattern"
                )
    return {name: ratio for name, ratio in assigned.items() if ratio > 0}

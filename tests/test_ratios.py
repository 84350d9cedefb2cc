"""Layer-ratio patterns (TPP/GReg convention) and the per-layer pruning count."""

from __future__ import annotations

import math
from fnmatch import fnmatchcase

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunebench.errors import PatternError, PruningError
from prunebench.pruning import (
    LayerRatios,
    num_to_prune,
    parse_layer_ratios,
    prunable_layers,
    resolve_layer_ratios,
)

# ---------------------------------------------------------------- parsing


def test_parse_rules_and_whitespace() -> None:
    spec = parse_layer_ratios("  *layer*.conv1 : 0.5 ,\t*features*:0.9 ")
    assert spec.rules == [("*layer*.conv1", 0.5), ("*features*", 0.9)]
    assert spec.skip == []
    assert not spec.uniform


@pytest.mark.parametrize("value", [0.5, "0.5", " 0.5 ", 0, "0", ".25"])
def test_parse_bare_number_is_uniform(value: object) -> None:
    spec = parse_layer_ratios(value, skip="*features.0, fc ")  # type: ignore[arg-type]
    assert spec.uniform
    assert spec.rules == [("*", float(str(value)))]
    assert spec.skip == ["*features.0", "fc"]


def test_parse_skip_list_and_passthrough() -> None:
    spec = parse_layer_ratios("a:0.1", skip=["x", " y "])
    assert spec.skip == ["x", "y"]
    again = parse_layer_ratios(spec, skip="z")
    assert again.rules == spec.rules and again.skip == ["x", "y", "z"]


def test_bad_rule_message_names_token_and_form() -> None:
    with pytest.raises(PatternError) as err:
        parse_layer_ratios("conv1=0.5")
    assert str(err.value) == (
        "bad rule 'conv1=0.5' in layer ratios: expected PATTERN:RATIO or a number in [0, 1)"
    )


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        "conv1",
        ":0.5",
        "conv1:",
        "conv1:abc",
        "a:0.1,,b:0.2",
        "a:0.1,",
        "a b:0.3",
        "conv1:1.0",
        "conv1:-0.1",
        "conv1:nan",
        "conv1:inf",
        "1.0",
        "-0.5",
        "nan",
        1.0,
        1,
        -0.1,
        float("nan"),
        True,
        None,
        [0.5],
    ],
)
def test_bad_specs_raise_pattern_error(spec: object) -> None:
    with pytest.raises(PatternError):
        parse_layer_ratios(spec)  # type: ignore[arg-type]


def test_bad_ratio_names_value() -> None:
    with pytest.raises(PatternError, match=r"'1\.5'.*\[0, 1\)"):
        parse_layer_ratios("*conv*:1.5")


_pattern_chars = st.sampled_from(list("abcxyz0123456789._*?[]"))
_patterns = st.text(_pattern_chars, min_size=1, max_size=12)
_ratios = st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False)
_space = st.sampled_from(["", " ", "  ", "\t"])


@settings(max_examples=200, deadline=None)
@given(
    rules=st.lists(st.tuples(_patterns, _ratios), min_size=1, max_size=6),
    pads=st.lists(st.tuples(_space, _space, _space, _space), min_size=6, max_size=6),
)
def test_round_trip_generated_rules(
    rules: list[tuple[str, float]], pads: list[tuple[str, str, str, str]]
) -> None:
    text = ",".join(
        f"{a}{pattern}{b}:{c}{ratio!r}{d}"
        for (pattern, ratio), (a, b, c, d) in zip(rules, pads, strict=False)
    )
    spec = parse_layer_ratios(text)
    assert spec.rules == rules
    assert not spec.uniform
    assert parse_layer_ratios(str(spec)).rules == rules


@settings(max_examples=100, deadline=None)
@given(ratio=_ratios)
def test_round_trip_bare_number(ratio: float) -> None:
    spec = parse_layer_ratios(ratio)
    assert spec.uniform and spec.rules == [("*", ratio)]
    assert parse_layer_ratios(str(spec)) == spec


@settings(max_examples=200, deadline=None)
@given(token=st.text(st.sampled_from(list("abc.*=;/ 01")), min_size=1, max_size=10))
def test_tokens_without_colon_are_rejected(token: str) -> None:
    try:
        float(token)
    except ValueError:
        pass
    else:  # a bare number is a valid (uniform) spec when in range
        return
    with pytest.raises(PatternError, match="expected PATTERN:RATIO"):
        parse_layer_ratios(f"good:0.1,{token}")


@settings(max_examples=100, deadline=None)
@given(
    ratio=st.one_of(
        st.floats(min_value=1.0, max_value=1e6),
        st.floats(max_value=-1e-12, min_value=-1e6),
    )
)
def test_out_of_range_ratios_are_rejected(ratio: float) -> None:
    with pytest.raises(PatternError, match=r"\[0, 1\)"):
        parse_layer_ratios(f"conv*:{ratio!r}")


# ---------------------------------------------------------------- num_to_prune


@pytest.mark.parametrize(
    ("n", "ratio", "k"),
    [
        (16, 0.9, 15),
        (32, 0.9, 29),
        (64, 0.9, 58),
        (10, 0.3, 3),
        (64, 0.5, 32),
        (16, 0.7, 12),
        (1, 0.5, 0),
        (3, 0.999, 2),
        (100, 0.0, 0),
        (7, 0.01, 1),
    ],
)
def test_num_to_prune_values(n: int, ratio: float, k: int) -> None:
    assert num_to_prune(n, ratio) == k


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.01, float("nan"), float("inf"), True, "0.5"])
def test_num_to_prune_rejects_bad_ratio(ratio: object) -> None:
    with pytest.raises(PruningError):
        num_to_prune(10, ratio)  # type: ignore[arg-type]


def test_num_to_prune_rejects_empty_layer() -> None:
    with pytest.raises(PruningError):
        num_to_prune(0, 0.5)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 4096), r1=_ratios, r2=_ratios)
def test_num_to_prune_invariants(n: int, r1: float, r2: float) -> None:
    k1, k2 = num_to_prune(n, r1), num_to_prune(n, r2)
    for r, k in ((r1, k1), (r2, k2)):
        assert 0 <= k <= n - 1
        assert k >= r * n - 1e-9 or k == n - 1
        assert k <= math.ceil(r * n)
    if r1 <= r2:
        assert k1 <= k2
    else:
        assert k1 >= k2


# ---------------------------------------------------------------- resolving


class _Hidden(nn.Module):
    """Four prunable hidden layers h1..h4 and an output layer ``out`` (plain MLP)."""

    output_layer = "out"

    def __init__(self) -> None:
        super().__init__()
        self.h1, self.h2 = nn.Linear(6, 8), nn.Linear(8, 8)
        self.h3, self.h4 = nn.Linear(8, 8), nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.h1, self.h2, self.h3, self.h4):
            x = torch.relu(layer(x))
        return self.out(x)


_HIDDEN = _Hidden()
_HIDDEN_PRUNABLE = prunable_layers(_HIDDEN, torch.randn(2, 6))
_HIDDEN_PATTERNS = ["h1", "h2", "h[12]", "h[34]", "h*", "*3", "h?", "?4"]


def test_hidden_model_prunable() -> None:
    assert _HIDDEN_PRUNABLE == ["h1", "h2", "h3", "h4"]


@settings(max_examples=200, deadline=None)
@given(
    rules=st.lists(
        st.tuples(st.sampled_from(_HIDDEN_PATTERNS), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9])),
        min_size=1,
        max_size=6,
    ),
    skip=st.lists(st.sampled_from(["h1", "h4", "*2", "nothing*"]), max_size=2),
)
def test_later_rules_override_earlier(rules: list[tuple[str, float]], skip: list[str]) -> None:
    text = ",".join(f"{p}:{r}" for p, r in rules)
    if "nothing*" in skip:  # a skip pattern that matches no layer is a typo: refused
        with pytest.raises(PatternError, match=r"skip pattern 'nothing\*'"):
            resolve_layer_ratios(parse_layer_ratios(text, skip=skip), _HIDDEN, _HIDDEN_PRUNABLE)
        return
    got = resolve_layer_ratios(parse_layer_ratios(text, skip=skip), _HIDDEN, _HIDDEN_PRUNABLE)
    expected: dict[str, float] = {}
    for name in _HIDDEN_PRUNABLE:
        if any(fnmatchcase(name, s) for s in skip):
            continue
        matching = [r for p, r in rules if fnmatchcase(name, p)]
        if matching and matching[-1] > 0:
            expected[name] = matching[-1]
    assert got == expected


def test_uniform_spec_covers_only_prunable_layers() -> None:
    got = resolve_layer_ratios(parse_layer_ratios(0.5, skip="h2"), _HIDDEN, _HIDDEN_PRUNABLE)
    assert got == {"h1": 0.5, "h3": 0.5, "h4": 0.5}
    assert resolve_layer_ratios(parse_layer_ratios(0.0), _HIDDEN, _HIDDEN_PRUNABLE) == {}


def test_unmatched_pattern_is_pattern_error() -> None:
    with pytest.raises(PatternError, match=r"'conv\*'.*matches no.*h1, h2"):
        resolve_layer_ratios(parse_layer_ratios("h1:0.5,conv*:0.5"), _HIDDEN, _HIDDEN_PRUNABLE)


def test_output_layer_rule_is_pruning_error() -> None:
    with pytest.raises(PruningError, match="'out'.*output layer"):
        resolve_layer_ratios(parse_layer_ratios("*:0.5"), _HIDDEN, _HIDDEN_PRUNABLE)
    # a zero ratio or a skip pattern makes the same rule legal
    assert resolve_layer_ratios(parse_layer_ratios("*:0.5,out:0"), _HIDDEN, _HIDDEN_PRUNABLE) == {
        f"h{i}": 0.5 for i in range(1, 5)
    }
    assert (
        len(
            resolve_layer_ratios(parse_layer_ratios("*:0.5", skip="out"), _HIDDEN, _HIDDEN_PRUNABLE)
        )
        == 4
    )


def test_resolve_accepts_a_raw_spec() -> None:
    assert resolve_layer_ratios("h1:0.3", _HIDDEN, _HIDDEN_PRUNABLE) == {"h1": 0.3}  # type: ignore[arg-type]


def test_layer_ratios_is_a_dataclass() -> None:
    spec = LayerRatios([("a*", 0.2)], ["b"])
    assert str(spec) == "a*:0.2" and not spec.uniform


# ---------------------------------------------------------------- real models


def _build(name: str, **kw: object) -> nn.Module:
    from prunebench.models import build_model

    return build_model(name, in_channels=3, num_classes=10, input_size=(32, 32), **kw)


def test_resnet_patterns() -> None:
    model = _build("resnet20")
    prunable = prunable_layers(model, torch.randn(2, 3, 32, 32))
    got = resolve_layer_ratios(parse_layer_ratios("*layer*.conv1:0.5"), model, prunable)
    assert sorted(got) == sorted(f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3))
    assert set(got.values()) == {0.5}
    with pytest.raises(PruningError, match="'layer1.0.conv2'.*coupled to a residual addition"):
        resolve_layer_ratios(parse_layer_ratios("*layer1.0.conv2:0.5"), model, prunable)
    with pytest.raises(PruningError, match="'conv1'.*coupled to a residual addition"):
        resolve_layer_ratios(parse_layer_ratios("conv1:0.5"), model, prunable)
    with pytest.raises(PruningError, match="'fc'.*output layer"):
        resolve_layer_ratios(parse_layer_ratios("fc:0.5"), model, prunable)
    with pytest.raises(PatternError, match="'\\*downsample\\*'"):
        resolve_layer_ratios(parse_layer_ratios("*downsample*:0.5"), model, prunable)
    # stage-wise override: later rule wins
    got = resolve_layer_ratios(
        parse_layer_ratios("*layer*.conv1:0.5,*layer3*.conv1:0.2"), model, prunable
    )
    assert got["layer2.1.conv1"] == 0.5 and got["layer3.2.conv1"] == 0.2


def test_vgg_features_pattern_with_skip() -> None:
    model = _build("vgg11")
    prunable = prunable_layers(model, torch.randn(2, 3, 32, 32))
    got = resolve_layer_ratios(
        parse_layer_ratios("*features*:0.9", skip="*features.0"), model, prunable
    )
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(got) == sorted(convs[1:])
    assert "classifier" not in got

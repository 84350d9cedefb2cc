"""Audit of input semantics: every form of an input goes through the same check, before
anything runs, and equivalent inputs get one identity.

1. ``prune.layers`` as a YAML list is validated like its string form (ratios, stage lists).
2. A skip pattern that matches no layer is a PatternError; commas split skip patterns
   everywhere (``describe`` too).
3. IMP with sparsity 0 is refused when the recipe is read, not after pretraining.
4. LR schedule canonical form: repeated LRs merged, ``-0`` is ``0``, ASCII digits only, and
   already canonical strings (run ids) unchanged.
5. Scratch budgets with dense epochs K1 = 0 raise for every budget.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

from prunebench.cli import app
from prunebench.errors import PatternError, PrunebenchError, RecipeError, ScheduleError
from prunebench.pruning import parse_layer_ratios, prunable_layers, resolve_layer_ratios
from prunebench.pruning.describe import describe
from prunebench.pruning.ratios import split_skip
from prunebench.pruning.scratch import scratch_b_epochs, scratch_budget_epochs
from prunebench.recipe import apply_overrides, build_recipe
from prunebench.schedule import Schedule, parse_schedule

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def _nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def _tiny(tmp_path: Path) -> Path:
    raw = yaml.safe_load((ROOT / "tests" / "fixtures" / "tiny.yaml").read_text())
    raw["pretrain"]["epochs"] = 1
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------- 1. prune.layers: every form, one check


@pytest.mark.parametrize("layers", [[0.5, 1.5, -2], "[0.5,1.5,-2]", [0.5, 1.5, 0.5],
                                    "[0.5, 1.5, 0.5]", [0.5, math.inf], 1.5, "a:1.5"])
def test_layers_ratio_out_of_range_is_refused_in_every_form(layers) -> None:
    with pytest.raises(RecipeError, match=r"prune\.layers.*bad ratio.*\[0, 1\)") as exc:
        build_recipe({"prune": {"layers": layers}})
    assert "\n" not in str(exc.value)


def test_layers_list_from_set_override_is_validated() -> None:
    raw = apply_overrides({}, ["prune.layers=[0.5,1.5,0.5]"])
    assert raw["prune"]["layers"] == [0.5, 1.5, 0.5]  # a YAML list, not a string
    with pytest.raises(RecipeError, match=r"bad ratio 1\.5"):
        build_recipe(raw)


def test_valid_layers_keep_their_value_and_id() -> None:
    for layers in ([0.5, 0.5, 0.5], "[0.5,0.5,0.5]", 0.5, "*layer*.conv1:0.5"):
        r = build_recipe({"prune": {"layers": layers}})
        assert r.prune is not None and r.prune.layers == layers


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.floats(-2, 2), st.sampled_from([0.0, 0.5, 0.999, 1.0])),
                min_size=0, max_size=7))
def test_list_and_string_stage_lists_get_the_same_verdict(items: list[float]) -> None:
    def verdict(layers: object) -> str | None:
        try:
            build_recipe({"prune": {"layers": layers}})
        except RecipeError as exc:
            text = str(exc)
            assert "prune.layers" in text and "\n" not in text
            # the kind of error: "bad ratio 1.5" / "bad stage list" (values are quoted apart)
            return text.split("prune.layers: ")[1].split(" in ")[0].replace("'", "")
        return None

    assert verdict(items) == verdict(json.dumps(items))


@pytest.mark.parametrize("layers", ["٠.5", "*conv*:٠.5", "fc1:0.5_0", "0.5_0", "*:²"])
def test_layer_ratios_take_ascii_numbers_only(layers: str) -> None:
    with pytest.raises(PatternError, match="bad rule"):
        parse_layer_ratios(layers)
    with pytest.raises(RecipeError):
        build_recipe({"prune": {"layers": layers}})


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.one_of(st.sampled_from("0123456789.:,*[]e-_ a"),
                                  st.characters(categories=["Nd", "No", "Nl"])), max_size=20))
def test_layer_ratio_parser_reads_ascii_numbers_only(text: str) -> None:
    try:
        spec = parse_layer_ratios(text)
    except PatternError:
        return
    ratios = [r for _, r in spec.rules] + list(spec.stages or [])
    assert all(0 <= r < 1 for r in ratios)
    if spec.uniform:  # a bare number: plain ASCII digits only
        assert text.isascii() and "_" not in text
    elif spec.stages is None:  # rules: the ratio after each rule's last ':' is ASCII
        for token in text.split(","):
            value = token.rpartition(":")[2].strip()
            assert value.isascii() and "_" not in value


@pytest.mark.parametrize("layers", ["[0.5,0.5]", "[0.5, 0.5]"])
def test_stage_list_on_a_non_resnet_fails_before_any_write(tmp_path, layers) -> None:
    """The YAML-list form (``--set prune.layers=[0.5,0.5]``) used to skip the pre-run check
    and fail only after pretraining had been written."""
    out = tmp_path / "runs"
    line = _one_error_line(_invoke("run", _tiny(tmp_path), "--out", out, "--quiet",
                                   "--set", f"prune.layers={layers}"))
    assert "stage list" in line and "ResNet" in line
    assert _nothing_written(out)


def test_stage_list_string_and_list_resolve_alike_on_a_resnet() -> None:
    as_list = describe("resnet20", "cifar10", [0.5, 0.0, 0.25])
    as_text = describe("resnet20", "cifar10", "[0.5,0.0,0.25]")
    assert as_list["layers"] == as_text["layers"]
    with pytest.raises(PatternError, match="stage list.*has 2 ratios"):
        describe("resnet20", "cifar10", [0.5, 0.5])


# ----------------------------------------------------------------- 2. skip patterns


def test_unmatched_skip_pattern_is_pattern_error_in_describe() -> None:
    with pytest.raises(PatternError, match=r"skip pattern 'featres\.0' matches no.*features\.0"):
        describe("vgg19", "cifar100", 0.5, skip=["featres.0"])


def test_unmatched_skip_pattern_via_cli_describe() -> None:
    line = _one_error_line(_invoke("describe", "vgg19", "--dataset", "cifar100", "--prune",
                                   "0.5", "--skip", "featres.0"))
    assert "featres.0" in line and "features.0" in line


class _Hidden(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.h1, self.h2, self.out = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.h2(torch.relu(self.h1(x)))))


@pytest.mark.parametrize("spec", [0.5, "h*:0.5", "h1:0.5,h2:0"])
@pytest.mark.parametrize("skip", ["nothing*", "h1,nothing*", ["h1", "nothing*"]])
def test_unmatched_skip_pattern_is_refused_for_every_spec_form(spec, skip) -> None:
    model = _Hidden()
    prunable = prunable_layers(model, torch.randn(2, 4))
    with pytest.raises(PatternError, match=r"skip pattern 'nothing\*' matches no.*h1, h2"):
        resolve_layer_ratios(parse_layer_ratios(spec, skip=skip), model, prunable)
    # a skip pattern that matches a layer, prunable or not (the output layer), is fine
    got = resolve_layer_ratios(parse_layer_ratios(0.5, skip=["h1", "out"]), model, prunable)
    assert got == {"h2": 0.5}


def test_describe_splits_a_comma_separated_skip_string() -> None:
    one_string = describe("vgg19", "cifar100", 0.5, skip="features.0,features.3")
    as_list = describe("vgg19", "cifar100", 0.5, skip=["features.0", "features.3"])
    assert one_string["layers"] == as_list["layers"]
    for name in ("features.0", "features.3"):
        kept, total = one_string["layers"].get(name, [None, None])
        assert kept is None or kept == total  # not pruned
    assert "features.7" in one_string["layers"]


@given(st.lists(st.sampled_from(["a", "b*", "c.?", "d[12]"]), min_size=0, max_size=4))
def test_split_skip_commas_mean_the_same_everywhere(patterns: list[str]) -> None:
    joined = ",".join(patterns)
    assert split_skip(joined) == split_skip([joined]) == split_skip(patterns) == patterns


def test_bad_skip_in_a_recipe_fails_before_any_write(tmp_path) -> None:
    out = tmp_path / "runs"
    line = _one_error_line(_invoke("run", _tiny(tmp_path), "--out", out, "--quiet",
                                   "--set", "prune.skip=[nothing*]"))
    assert "nothing*" in line
    assert _nothing_written(out)


def test_weight_pruning_refuses_skip_it_would_ignore() -> None:
    with pytest.raises(RecipeError, match=r"prune\.skip.*not supported by weight pruning"):
        build_recipe({"prune": {"granularity": "weight", "method": "magnitude",
                                "layers": 0.5, "skip": ["fc1"]}})


def _skip_settings() -> list[tuple[str, str, dict, list[str]]]:
    """(where, model, model kwargs + dataset, skip) of every built-in recipe with skip."""
    from prunebench.recipe import read_yaml
    from prunebench.studies import STUDIES, expand_study, load_study
    from prunebench.studies.grid import expand_grid

    found: dict[tuple, str] = {}

    def add(where: str, recipe) -> None:
        if recipe.prune is not None and recipe.prune.skip:
            key = (recipe.model.name, json.dumps(recipe.model.kwargs, sort_keys=True),
                   recipe.data.name, tuple(recipe.prune.skip))
            found.setdefault(key, where)

    for name in STUDIES:
        spec = load_study(name)
        for preset_name, _preset in spec.tables():
            for cell in expand_study(spec, preset_name, seeds=1):
                add(f"study {name} preset {preset_name}", cell.recipe)
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        raw = read_yaml(path)
        if "skip" not in path.read_text():
            continue
        for _cell, cell_raw in expand_grid(raw):
            add(str(path.name), build_recipe(cell_raw))
    return [(where, m, {"kwargs": json.loads(kw), "dataset": d}, list(skip))
            for (m, kw, d, skip), where in found.items()]


def test_builtin_skip_patterns_match_their_models() -> None:
    from prunebench.data import dataset_shape
    from prunebench.models import build_model

    settings_ = _skip_settings()
    assert any(m == "vgg19" for _, m, _, _ in settings_)  # lr-effect's paper-vgg19 preset
    for where, model_name, info, skip in settings_:
        c, size, n = dataset_shape(info["dataset"])
        model = build_model(model_name, in_channels=c, num_classes=n, input_size=size,
                            **info["kwargs"])
        prunable = prunable_layers(model, torch.randn(1, c, *size))
        try:
            resolve_layer_ratios(parse_layer_ratios(0.0, skip=skip), model, prunable)
        except PatternError as exc:  # pragma: no cover - the failure message
            pytest.fail(f"{where}: {exc}")


# ------------------------------------------------------------------ 3. IMP sparsity 0


@pytest.mark.parametrize(("layers", "rounds"), [(0, 1), (0.0, 3), (1e-17, 1)])
def test_imp_with_no_sparsity_is_refused_up_front(layers, rounds) -> None:
    with pytest.raises(RecipeError, match=r"'imp' needs a sparsity in \(0, 1\)") as exc:
        build_recipe({"prune": {"granularity": "weight", "schedule": "imp",
                                "method": "magnitude", "layers": layers, "rounds": rounds}})
    assert "\n" not in str(exc.value)


def test_imp_and_oneshot_weight_sparsities_still_accepted() -> None:
    r = build_recipe({"prune": {"granularity": "weight", "schedule": "imp",
                                "method": "magnitude", "layers": 0.5, "rounds": 3}})
    assert r.prune is not None and r.prune.layers == 0.5
    # one-shot weight pruning at 0 stays legal (a no-pruning control)
    build_recipe({"prune": {"granularity": "weight", "method": "magnitude", "layers": 0}})


def test_imp_zero_via_cli_writes_nothing(tmp_path) -> None:
    out = tmp_path / "runs"
    line = _one_error_line(_invoke(
        "run", _tiny(tmp_path), "--out", out, "--quiet", "--set", "prune.granularity=weight",
        "--set", "prune.schedule=imp", "--set", "prune.method=magnitude",
        "--set", "prune.layers=0"))
    assert "imp" in line and "(0, 1)" in line
    assert _nothing_written(out)


# ---------------------------------------------------------- 4. LR schedule canonical form

#: canonical strings as they were before the audit (run ids hash them): input -> canonical
UNCHANGED = {
    "0:0.05,3:0.005": "0:0.05,3:0.005",
    "0:0.01,60:0.001,90:0.0001": "0:0.01,60:0.001,90:0.0001",
    "cosine:0.01:0.0001": "cosine:0.01:0.0001",
    "cosine:0.1:0": "cosine:0.1:0",
    "cosine:0.1:0.0001;warmup=5": "cosine:0.1:0.0001;warmup=5",
    "0:0.1": "0:0.1",
    "0.01": "0:0.01",
    "0:0.1,100:0.01,150:0.001": "0:0.1,100:0.01,150:0.001",
    "0:0.01,1:0.001": "0:0.01,1:0.001",
    "0:0.1,10:0.01;warmup=4": "0:0.1,10:0.01;warmup=4",
    "0:0.001,60:0.0001": "0:0.001,60:0.0001",
    "0:0.05,8:0.005,12:0.0005": "0:0.05,8:0.005,12:0.0005",
    "0:0.00005": "0:5e-05",
    "0:0.0001,285:0.00001": "0:0.0001,285:1e-05",
    "0:0.1,30:0.01,60:0.001,90:0.0001,105:0.00001": "0:0.1,30:0.01,60:0.001,90:0.0001,105:1e-05",
    "0:0.1,30:0.01,60:0.001,75:0.0001,83:1e-05": "0:0.1,30:0.01,60:0.001,75:0.0001,83:1e-05",
    "0:0.01,500:0.001": "0:0.01,500:0.001",  # a key beyond the stage stays (documented)
    "0:0,10:0.1": "0:0,10:0.1",
}

#: "pxfy:LR" with retrain epochs -> the expanded canonical string (as before the audit)
PXFY = {
    ("pxfy:0.01", 60): "0:0.01,30:0.001,45:0.0001,53:1e-05",
    ("pxfy:0.1", 90): "0:0.1,30:0.01,60:0.001,75:0.0001,83:1e-05",
    ("pxfy:0.01", 120): "0:0.01,30:0.001,60:0.0001,90:1e-05",
    ("pxfy:0.001", 30): "0:0.001,15:0.0001,23:1e-05",
    ("pxfy:0.05", 12): "0:0.05,6:0.005,9:0.0005,11:1e-05",
}


def test_already_canonical_schedules_keep_their_string() -> None:
    for spec, canonical in UNCHANGED.items():
        assert parse_schedule(spec).canonical() == canonical, spec
        assert parse_schedule(canonical).canonical() == canonical, canonical
    for (spec, epochs), canonical in PXFY.items():
        r = build_recipe({"retrain": {"epochs": epochs, "lr": spec}})
        assert r.retrain is not None and r.retrain.lr == canonical, spec


def test_every_builtin_schedule_is_a_fixed_point() -> None:
    """The LR strings of the built-in studies and examples: their canonical form is stable."""
    found: set[str] = set()

    def walk(node: object, key: str | None = None) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key and key.split(".")[-1] == "lr":
            found.add(node)

    files = [*(ROOT / "src" / "prunebench" / "studies").glob("*.yaml"),
             *(ROOT / "examples").glob("*.yaml")]
    for path in files:
        walk(yaml.safe_load(path.read_text()))
    steps = [s for s in found if not s.startswith("pxfy")]
    assert steps
    for spec in steps:
        canonical = parse_schedule(spec).canonical()
        assert parse_schedule(canonical).canonical() == canonical
        # only number formatting differs (0.00001 is written 1e-05), never the keys
        assert [k.split(":")[0] for k in canonical.split(",")] == [
            k.split(":")[0] for k in spec.replace(" ", "").split(",")]


@pytest.mark.parametrize(
    ("a", "b"),
    [("0:0.1", "0:0.1,60:0.1"), ("0:0.1,60:0.01", "0:0.1,30:0.1,60:0.01,90:0.01"),
     ("0:0", "-0"), ("0:0", "0:-0.0"), ("cosine:0.1:0", "cosine:0.1:-0"),
     ("0:0.1,060:0.01", "0:0.1,60:0.01"), ("0:0.1", "0:0.1;warmup=0")],
)
def test_equivalent_schedules_share_one_canonical_string(a: str, b: str) -> None:
    assert parse_schedule(a).canonical() == parse_schedule(b).canonical()
    assert "-" not in parse_schedule(b).canonical()
    ra = build_recipe({"retrain": {"epochs": 120, "lr": a}})
    rb = build_recipe({"retrain": {"epochs": 120, "lr": b}})
    assert ra.short_hash() == rb.short_hash()


def test_merged_schedule_built_directly_is_canonical_too() -> None:
    s = Schedule("step", ((0, 0.1), (30, 0.1), (60, -0.0), (90, 0.0)))
    assert s.canonical() == "0:0.1,60:0"
    assert s == parse_schedule("0:0.1,60:0")


@pytest.mark.parametrize(
    "spec",
    ["0:0.1,²:0.01", "0:0.1,٣:0.01", "0:0.1;warmup=٣", "0:0.1;warmup=²", "0:٠.1",
     "٠.1", "cosine:٠.1:0", "0:1_0", "0:0.1,6_0:0.01"],
)
def test_non_ascii_digits_are_schedule_errors(spec: str) -> None:
    with pytest.raises(ScheduleError) as exc:
        parse_schedule(spec)
    assert "\n" not in str(exc.value)
    with pytest.raises(RecipeError):
        build_recipe({"retrain": {"epochs": 10, "lr": spec}})


_LRS = st.sampled_from([0.0, -0.0, 0.1, 0.01, 0.001, 1e-05])


@st.composite
def _step_specs(draw) -> str:
    n = draw(st.integers(1, 5))
    keys = sorted(draw(st.sets(st.integers(1, 40), min_size=n - 1, max_size=n - 1)))
    values = [draw(_LRS) for _ in range(len(keys) + 1)]
    warmup = draw(st.sampled_from(["", ";warmup=0", ";warmup=3"]))
    return ",".join(f"{k}:{v!r}" for k, v in zip([0, *keys], values, strict=True)) + warmup


@settings(max_examples=300, deadline=None)
@given(_step_specs(), _step_specs())
def test_canonical_strings_are_equal_iff_the_schedules_are(a: str, b: str) -> None:
    sa, sb = parse_schedule(a), parse_schedule(b)
    same = sa.warmup == sb.warmup and all(
        sa.lr_at(e, 50) == sb.lr_at(e, 50) for e in range(50))
    assert (sa.canonical() == sb.canonical()) == same
    # the canonical string is a fixed point and runs the same LRs
    again = parse_schedule(sa.canonical())
    assert again.canonical() == sa.canonical()
    assert [again.lr_at(e, 50) for e in range(50)] == [sa.lr_at(e, 50) for e in range(50)]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.one_of(st.sampled_from("0123456789:,.;=warmupcosine-e_ "),
                                  st.characters(categories=["Nd", "No", "Nl"])), max_size=25))
def test_parser_accepts_ascii_numbers_only(text: str) -> None:
    try:
        s = parse_schedule(text)
    except ScheduleError:
        return
    except PrunebenchError as exc:  # pragma: no cover - another project error type
        pytest.fail(f"{type(exc).__name__}: {exc}")
    assert text.isascii() and "_" not in text
    assert s.canonical().isascii()


# ------------------------------------------------------ 5. scratch budgets with K1 = 0


@pytest.mark.parametrize("budget", ["E", "B", "total", "total_flops"])
def test_every_scratch_budget_refuses_zero_dense_epochs(budget: str) -> None:
    kw = {"dense_epochs": 0, "used_epochs": 0, "prune_epochs": 0, "retrain_epochs": 120,
          "f1": 2.0, "f2": 1.0}
    with pytest.raises(RecipeError, match="bad dense epochs 0"):
        scratch_budget_epochs(budget, **kw)


def test_scratch_b_epochs_refuses_an_empty_budget() -> None:
    with pytest.raises(RecipeError, match="bad dense epochs 0"):
        scratch_b_epochs(0, 2.0, 1.0)
    # epochs already at the pruned cost are a budget of their own (PxFy with x = 0)
    assert scratch_b_epochs(0, 2.0, 1.0, 5) == 5
    assert scratch_b_epochs(1, 2.0, 1.0) == 2
    # total_flops of a pipeline that pruned at epoch 0 and retrained 0 epochs: no budget
    with pytest.raises(RecipeError, match="bad dense epochs 0"):
        scratch_budget_epochs("total_flops", dense_epochs=10, used_epochs=0, prune_epochs=0,
                              retrain_epochs=0, f1=2.0, f2=1.0)


# ------------------------------------- pruning targets: refused before anything is written


def test_coupled_with_a_target_is_refused_in_the_recipe() -> None:
    with pytest.raises(RecipeError, match=r"prune\.coupled: true takes layer ratios"):
        build_recipe({"prune": {"coupled": True, "target_speedup": 2.0}})


def test_target_that_selects_no_layer_fails_before_any_write(tmp_path) -> None:
    out = tmp_path / "runs"
    line = _one_error_line(_invoke("run", _tiny(tmp_path), "--out", out, "--quiet",
                                   "--set", "prune.layers=*:0",
                                   "--set", "prune.target_speedup=2"))
    assert "selects none" in line
    assert _nothing_written(out)


def test_scratch_budgets_need_dense_epochs_when_the_recipe_is_read() -> None:
    """K1 = 0 was caught only after the pretrain stage ran (Scratch-E/B are multiples of K1)."""
    from prunebench.recipe import build_recipe

    for budget in ("E", "B", "total", "total_flops"):
        with pytest.raises(RecipeError, match="pretrain.epochs >= 1, got 0"):
            build_recipe({"pretrain": {"epochs": 0},
                          "retrain": {"init": "scratch", "budget": budget}})


def test_pxfy_and_ray_addresses_take_ascii_numbers_only() -> None:
    from prunebench.recipe import build_recipe
    from prunebench.studies.executor import _split_address

    with pytest.raises(RecipeError, match="bad start LR"):
        build_recipe({"retrain": {"lr": "pxfy:\u0660.\u0661", "epochs": 10}})
    with pytest.raises(RecipeError, match="bad start LR"):
        build_recipe({"retrain": {"lr": "pxfy:0_1", "epochs": 10}})
    with pytest.raises(RecipeError, match="HOST:PORT"):
        _split_address("10.0.0.5:\u00b2")
    assert _split_address("10.0.0.5:6379") == ("10.0.0.5", 6379)

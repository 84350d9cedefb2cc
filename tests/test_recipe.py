from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prunebench.api import load_recipes
from prunebench.errors import RecipeError
from prunebench.pipeline import plan
from prunebench.recipe import apply_overrides, build_recipe, load_recipe, parse_value
from prunebench.studies.grid import expand_grid


def test_defaults_follow_the_paper_cifar_protocol():
    r = build_recipe({})
    assert r.pretrain.lr == "0:0.1,100:0.01,150:0.001" and r.pretrain.epochs == 200
    assert r.retrain.lr == "0:0.01,60:0.001,90:0.0001" and r.retrain.epochs == 120
    assert r.retrain.momentum == 0.9 and r.retrain.weight_decay == 5e-4


def test_identity_ignores_defaults_and_non_semantic_fields():
    a = build_recipe({"name": "x", "device": "cpu", "data": {"data_dir": "/tmp"}})
    b = build_recipe({})
    assert a.identity() == b.identity() == {}
    assert a.short_hash() == b.short_hash()
    c = build_recipe({"retrain": {"lr": "0:0.001"}})
    assert c.identity() == {"retrain": {"lr": "0:0.001"}}
    assert c.short_hash() != b.short_hash()


def test_schedules_are_normalised_before_hashing():
    a = build_recipe({"retrain": {"lr": "0:0.01, 60:0.001"}})
    b = build_recipe({"retrain": {"lr": "0:1e-2,60:1e-3"}})
    assert a.retrain.lr == b.retrain.lr == "0:0.01,60:0.001"
    assert plan(a)[-1].key == plan(b)[-1].key


def test_finetune_is_an_alias_for_retrain():
    r = build_recipe({"finetune": {"epochs": 3}})
    assert r.retrain.epochs == 3
    assert apply_overrides({}, ["finetune.lr=0:0.1"]) == {"retrain": {"lr": "0:0.1"}}


def test_overrides_keep_lr_strings():
    assert parse_value("0:0.001") == "0:0.001"
    assert parse_value("60") == 60 and parse_value("0.5") == 0.5
    assert parse_value("[0, 1]") == [0, 1]
    r = build_recipe(apply_overrides({}, ["retrain.lr=0:0.001", "data.batch_size=64"]))
    assert r.retrain.lr == "0:0.001" and r.data.batch_size == 64


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"retrain": {"lr": "0:x"}}, "retrain.lr"),
        ({"data": {"batch_size": 0}}, "batch_size"),
        ({"bogus": 1}, "bogus"),
        ({"pretrain": {"epochs": 3}, "base_model": "m.pt"}, "base_model"),
        ({"prune": {"at_epoch": 500}}, "at_epoch"),
        ({"data": {"val_size": 1.5}}, "val_size"),
    ],
)
def test_bad_recipes_give_one_line_errors(raw, needle):
    with pytest.raises(RecipeError) as info:
        build_recipe(raw)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("item", ["retrain.lr", "=3", "retrain..lr=1"])
def test_bad_override_syntax(item):
    with pytest.raises(RecipeError):
        apply_overrides({}, [item])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


def test_stage_keys_form_a_merkle_chain():
    base = {"pretrain": {"epochs": 2}, "retrain": {"epochs": 1}}
    p1 = plan(build_recipe(base))
    p2 = plan(build_recipe({**base, "retrain": {"epochs": 1, "lr": "0:0.1"}}))
    p3 = plan(build_recipe({**base, "prune": {"layers": 0.3}}))
    assert [s.kind for s in p1] == ["pretrain", "prune", "retrain"]
    assert p1[0].key == p2[0].key == p3[0].key  # one dense model for all three
    assert p1[1].key == p2[1].key != p3[1].key  # same pruning, different retraining
    assert p1[2].key != p2[2].key and p1[2].key != p3[2].key
    assert plan(build_recipe({**base, "seed": 1}))[0].key != p1[0].key


def test_grid_expansion_in_order():
    cells = expand_grid(
        {
            "retrain": {"epochs": 1},
            "grid": {"prune.layers": [0.1, 0.2], "retrain.lr": ["0:1", "0:2"]},
        }
    )
    assert [c for c, _ in cells] == [
        {"prune.layers": 0.1, "retrain.lr": "0:1"},
        {"prune.layers": 0.1, "retrain.lr": "0:2"},
        {"prune.layers": 0.2, "retrain.lr": "0:1"},
        {"prune.layers": 0.2, "retrain.lr": "0:2"},
    ]
    assert cells[3][1] == {"retrain": {"epochs": 1, "lr": "0:2"}, "prune": {"layers": 0.2}}
    recipes = load_recipes({"grid": {"retrain.lr": ["0:1", "0:2"]}}, ["retrain.epochs=4"])
    assert [r.retrain.epochs for _, r in recipes] == [4, 4]
    assert len({plan(r)[0].key for _, r in recipes}) == 1


@given(
    st.dictionaries(
        st.sampled_from(["retrain.epochs", "pretrain.epochs", "seed"]),
        st.lists(st.integers(0, 5), min_size=1, max_size=3),
        max_size=3,
    )
)
def test_grid_size_is_the_product(grid):
    cells = expand_grid({"grid": grid} if grid else {})
    expected = 1
    for v in grid.values():
        expected *= len(v)
    assert len(cells) == expected


def test_seeds_expand_to_a_seed_axis():
    cells = expand_grid({"seed": 5, "seeds": 3, "grid": {"retrain.lr": ["0:1", "0:2"]}})
    assert [c["seed"] for c, _ in cells] == [5, 6, 7, 5, 6, 7]
    assert [r["seed"] for _, r in cells] == [5, 6, 7, 5, 6, 7]
    with pytest.raises(RecipeError, match="seeds"):
        expand_grid({"seeds": 0})


def test_every_example_recipe_validates():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "examples"
    files = sorted(root.glob("*.yaml"))
    assert len(files) >= 3
    for f in files:
        assert load_recipes(f)


def test_default_values_agree_with_the_validated_defaults():
    """``default_values`` (no validators, no torch) gives what the validated models dump."""
    from prunebench.recipe import (
        DataCfg,
        MeasureCfg,
        PretrainCfg,
        PruneCfg,
        Recipe,
        RetrainCfg,
        default_values,
    )

    for cls in (Recipe, DataCfg, PretrainCfg, PruneCfg, RetrainCfg, MeasureCfg):
        assert default_values(cls) == cls().model_dump(mode="json"), cls.__name__

"""Hostile inputs to recipe loading: random YAML documents, random bytes, random values.

Whatever goes in, only the project's own error type (:class:`PrunebenchError`) comes out:
never a TypeError, ValueError, KeyError, UnicodeDecodeError, a YAML or a pydantic error.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunebench.errors import PrunebenchError, RecipeError
from prunebench.recipe import apply_overrides, build_recipe, load_recipe, parse_value, set_path

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

SECTIONS = ["data", "model", "pretrain", "prune", "retrain", "finetune", "measure", "seed",
            "name", "base_model", "precision", "device", "grid", "plugins_x"]
FIELDS = ["name", "epochs", "lr", "batch_size", "val_size", "layers", "method", "skip",
          "granularity", "schedule", "momentum", "kwargs", "init", "budget", "at_epoch",
          "target_speedup", "scheme", "rounds", "data_dir", "train_subset", "jsv_every"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["0:0.1", "pxfy:0.1", "cosine:0.1:0.001", "0:0.1;warmup=x", "l1",
                     "filter", "*conv*:0.5", "scratch", "nan", "-1", "1e999", "2001-02-30",
                     "pxfy:abc", "cosine", "0:", ":", "{", "[", "!!python/object:os.system"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner,
                        max_size=4),
    ),
    max_leaves=12,
)
recipes = st.dictionaries(st.sampled_from(SECTIONS), values, max_size=6)


def _only_ours(fn, *args):
    try:
        fn(*args)
    except PrunebenchError as exc:
        text = str(exc)
        assert "\n" not in text, text  # one line
    # any other exception fails the test


def _load_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_bytes(data)
        load_recipe(path)


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_as_recipe_file(data):
    _only_ours(_load_file, data)


@SETTINGS
@given(st.text(max_size=200))
def test_random_text_as_recipe_file(text):
    _only_ours(_load_file, text.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(values)
def test_random_yaml_documents_as_recipe_file(doc):
    text = yaml.safe_dump(doc, allow_unicode=True)
    _only_ours(_load_file, text.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(recipes)
def test_random_recipe_shaped_documents(doc):
    text = yaml.safe_dump(doc, allow_unicode=True)
    _only_ours(_load_file, text.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(st.one_of(values, recipes))
def test_build_recipe_random_values(raw):
    _only_ours(build_recipe, raw)


@SETTINGS
@given(recipes, st.lists(st.text(max_size=30), max_size=3))
def test_overrides_random_text(raw, overrides):
    _only_ours(lambda: build_recipe(apply_overrides(raw, overrides)))


@SETTINGS
@given(st.text(max_size=40))
def test_parse_value_never_raises(text):
    parse_value(text)


@SETTINGS
@given(values, st.text(max_size=20), values)
def test_set_path_random(d, key, value):
    _only_ours(set_path, d, key, value)


@pytest.mark.parametrize(("content", "needle"), [
    (b"", "is empty"),
    (b"   \n# only a comment\n", "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file"),
    (b"seed: 0\x00\x00", "binary"),
    (b"\xff\xfe\x00s\x00e", "not a text file"),
    (b"seed: 2001-02-30\n", "not valid YAML"),
    (b"- 1\n- 2\n", "must hold a mapping"),
    (b"key: [unclosed\n", "not valid YAML"),
])
def test_bad_recipe_files_are_one_line_errors(tmp_path, content, needle):
    path = tmp_path / "x.yaml"
    path.write_bytes(content)
    with pytest.raises(RecipeError, match=needle) as info:
        load_recipe(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("raw", [
    {"plugins": 5},
    {"plugins": [".relative"]},
    {"retrain": {"lr": "pxfy:0.1", "epochs": [1]}},
    {"retrain": {"lr": "pxfy:0.1", "epochs": 1e999}},
    {"retrain": {"lr": {"a": [1]}}},
    {"pretrain": {"lr": [[1, 2]]}},
])
def test_odd_values_are_recipe_errors(raw):
    with pytest.raises(PrunebenchError):
        build_recipe(raw)


def test_cli_refuses_empty_and_binary_recipes(tmp_path):
    from typer.testing import CliRunner

    from prunebench.cli import app

    for name, content in (("empty.yaml", b""), ("bin.yaml", bytes(range(256)))):
        path = tmp_path / name
        path.write_bytes(content)
        res = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "runs")])
        assert res.exit_code == 2, res.output
        assert res.output.strip().startswith("error:") and "Traceback" not in res.output
        assert not (tmp_path / "runs").exists()

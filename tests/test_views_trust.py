"""What ``study``, ``runs`` and the terminal tables show can be trusted.

* a study's seed axis is its own: ``--set seed=5``, a row's or column's ``seed`` is refused
  (it made every seed of a cell one run, reported as "3 seeds +- 0.00"), and so is anything
  that makes two cells of a row one recipe (the columns' key set by a row or ``--set``);
* duplicate row or column labels are refused (the report pooled their cells);
* ``runs --where study=`` / ``variant=`` match any of a run's studies / rows;
* ``runs --where retrain.lr=`` / ``retrain.epochs=`` / ``lr=`` filter on what the run
  trained (the effective recipe, the table's LR column), in any spelling of a schedule;
* labels with ``[...]`` are shown as written by ``study``, ``runs`` and ``report`` (rich
  markup crashed on ``[/2]`` and swallowed ``[w/o bn]``);
* ``runs --sort ratio`` / ``lr`` sort by number, runs without the value last.
"""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import SMALL_STUDY_BASE
from rich.console import Console
from typer.testing import CliRunner

from prunebench.cli import app
from prunebench.errors import RecipeError
from prunebench.studies.spec import STUDIES, load_study

runner = CliRunner()

BASE = copy.deepcopy(SMALL_STUDY_BASE)  # this module's own copy
#: labels rich would read as markup; LRs whose text order is not their numeric order
#: ("0:1e-05" sorts after "0:0.1" as text); ratios whose text order is not numeric either
LABELS = ["L1 [w/o bn]", "L1 lr [/2]", "[bold]x"]
STUDY = {
    "name": "views",
    "title": "Views [w/o bn]",
    "presets": {"cpu": {
        "base": BASE,
        "columns": {"key": "prune.layers", "values": ["fc1:0.05", "fc1:0.5,fc2:0.5"],
                    "labels": ["PR [small]", "PR 0.5"]},
        "rows": [{"label": LABELS[0], "set": {"retrain.lr": "0:0.01"}},
                 {"label": LABELS[1], "set": {"retrain.lr": "0:0.00001"}},
                 {"label": LABELS[2], "set": {"retrain.init": "scratch",
                                              "retrain.budget": "E"}}],
        "seeds": 1,
    }},
}


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _write(tmp: Path, study: dict, name: str = "s.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _preset(**changes) -> dict:
    p = {"base": BASE, "columns": {"key": "prune.layers", "values": [0.3, 0.6]},
         "rows": [{"label": "a", "set": {"retrain.lr": "0:0.01"}},
                  {"label": "b", "set": {"retrain.lr": "0:0.001"}}],
         "seeds": 1}
    p.update(changes)
    return {"name": "t", "presets": {"cpu": p}}


def _nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def _one_error_line(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


# -- 1. the seed axis belongs to the study ---------------------------------------------------

@pytest.mark.parametrize("item", ["seed=5", " seed = 5"])
def test_set_seed_is_refused_before_anything_runs(tmp_path, item):
    from prunebench.studies import expand_study, run_studies

    path = _write(tmp_path, _preset())
    spec = load_study(path)
    with pytest.raises(RecipeError, match="seed axis.*--seeds"):
        expand_study(spec, "cpu", seeds=3, overrides=[item])
    out = tmp_path / "runs"
    with pytest.raises(RecipeError, match="--seeds"):
        run_studies(path, out, preset="cpu", seeds=3, overrides=[item])
    assert _nothing_written(out)
    line = _one_error_line(invoke("study", path, "--seeds", "3", "--set", item, "--out", out,
                                  "--quiet", "--no-report"))
    assert "--set" in line and "--seeds" in line
    assert _nothing_written(out)


@pytest.mark.parametrize(("preset", "needle"), [
    ({"rows": [{"label": "a", "set": {"seed": 5}}]}, r"rows\.0\.set: seed is the study's"),
    ({"columns": {"key": "seed", "values": [1, 2]}}, r"columns: columns\.key 'seed'"),
])
def test_a_row_or_column_seed_is_refused(tmp_path, preset, needle):
    path = _write(tmp_path, _preset(**preset))
    with pytest.raises(RecipeError, match=needle) as exc:
        load_study(path)
    assert "Preset" not in str(exc.value)  # the location names keys of the file
    line = _one_error_line(invoke("study", path, "--out", tmp_path / "runs", "--quiet"))
    assert "seed" in line
    assert _nothing_written(tmp_path / "runs")


def test_the_base_seed_is_the_first_seed_and_every_seed_is_its_own_run(tmp_path):
    from prunebench.plan import run_id
    from prunebench.studies import expand_study

    spec = load_study(_write(tmp_path, _preset(base={**BASE, "seed": 5})))
    cells = expand_study(spec, "cpu", seeds=3, overrides=["retrain.epochs=2"])
    assert sorted({c.seed for c in cells}) == [5, 6, 7]
    assert len({run_id(c.recipe) for c in cells}) == len(cells) == 12


def test_the_columns_key_is_the_studys_too(tmp_path):
    from prunebench.studies import expand_study

    # a row that sets it: every column of the row one run under two labels
    path = _write(tmp_path, _preset(rows=[{"label": "a", "set": {"prune.layers": 0.5}}]))
    with pytest.raises(RecipeError, match="row 'a' sets 'prune.layers'.*columns' key"):
        load_study(path)
    path = _write(tmp_path, _preset(rows=[{"label": "a", "set": {"prune": None}}]))
    with pytest.raises(RecipeError, match="row 'a' sets 'prune'"):
        load_study(path)
    # --set of it (or of a section above it)
    spec = load_study(_write(tmp_path, _preset()))
    for item in ("prune.layers=0.5", "prune={}"):
        with pytest.raises(RecipeError, match="columns' key 'prune.layers'"):
            expand_study(spec, "cpu", overrides=[item])
    # two columns that are one recipe (the same value twice)
    spec = load_study(_write(tmp_path, _preset(columns={
        "key": "prune.layers", "values": [0.5, 0.5], "labels": ["x", "y"]})))
    with pytest.raises(RecipeError, match="columns 'x' and 'y' give the same recipe"):
        expand_study(spec, "cpu")


def test_grid_seeds_refuse_a_seed_override():
    from prunebench.studies.grid import check_grid_overrides

    with pytest.raises(RecipeError, match="seed axis"):
        check_grid_overrides({**BASE, "seeds": 3}, ["seed=5"])
    with pytest.raises(RecipeError, match="seed axis"):
        check_grid_overrides({**BASE, "grid": {"seed": [0, 1]}}, [" seed=5"])
    check_grid_overrides({**BASE, "seeds": 3}, ["retrain.lr=0:0.1"])
    check_grid_overrides(BASE, ["seed=5"])  # one seed: --set seed chooses it


# -- 4. duplicate labels ---------------------------------------------------------------------

@pytest.mark.parametrize(("preset", "needle"), [
    ({"rows": [{"label": "X", "set": {"retrain.lr": "0:0.01"}},
               {"label": "X", "set": {"retrain.lr": "0:0.001"}}]},
     r"presets\.cpu\.rows: duplicate row label 'X' \(rows 1 and 2\)"),
    ({"columns": {"key": "prune.layers", "values": [0.3, 0.6], "labels": ["PR", "PR"]}},
     r"presets\.cpu\.columns: duplicate column label 'PR' \(columns 1 and 2\)"),
    ({"columns": {"key": "prune.layers", "values": [0.3, "0.3"]}},  # labels from the values
     r"duplicate column label '0.3'"),
])
def test_duplicate_labels_are_refused(tmp_path, preset, needle):
    path = _write(tmp_path, _preset(**preset))
    with pytest.raises(RecipeError, match=needle):
        load_study(path)
    _one_error_line(invoke("study", path, "--out", tmp_path / "runs", "--quiet"))
    assert _nothing_written(tmp_path / "runs")


def test_every_built_in_study_still_loads_and_expands():
    from prunebench.studies.runner import dense_recipes, expand_study

    for name in STUDIES.names():
        spec = load_study(name)
        for preset, p in spec.tables():
            cells = expand_study(spec, preset)
            assert len(cells) == len(p.rows) * len(p.columns.values) * p.seeds
            assert len(dense_recipes(spec, preset)) == p.seeds


# -- a real study with hostile labels (10), then runs --where (7, 8) and --sort (11) ---------

@pytest.fixture(scope="module")
def views(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("views")
    path = _write(tmp, STUDY, "views.yaml")
    out = tmp / "runs"
    res = invoke("study", path, "--out", out)
    return out, res


def _runs(out: Path, *args: str) -> list[dict]:
    res = invoke("runs", "--out", out, "--json", *args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_study_prints_labels_with_brackets_as_written(views):
    out, res = views
    assert res.exit_code == 0, res.output
    assert (out / "report.html").is_file()
    text = res.stdout
    for label in LABELS:
        assert f"{label} / PR [small]" in text and f"{label} / PR 0.5" in text
    html = (out / "report.html").read_text()
    assert "L1 lr [/2]" in html and "[bold]x" in html


def test_runs_and_report_print_labels_with_brackets_as_written(views):
    out, _ = views
    res = invoke("runs", "--out", out)
    assert res.exit_code == 0, res.output
    for label in LABELS:
        assert label in res.output
    rep = invoke("report", out, "--format", "terminal")
    assert rep.exit_code == 0, rep.output
    assert "Views [w/o bn]" in rep.output
    for label in LABELS:
        assert label in rep.output


def test_terminal_tables_never_read_text_as_markup(views):
    from prunebench import api
    from prunebench.report.terminal import metrics_table, results_table, runs_table

    out, _ = views
    rows = api.runs(out)
    buf = io.StringIO()
    Console(file=buf, width=200, no_color=True).print(runs_table(rows, width=200))
    for label in LABELS:
        assert label in buf.getvalue()
    row = {"id": "[/x]", "variant": "[bold]x / [w/o bn]", "dense_acc": None,
           "pruned_acc": None, "retrained_acc": None, "params": None, "macs": None,
           "param_sparsity": None, "speedup": None}
    buf = io.StringIO()
    console = Console(file=buf, width=120, no_color=True)
    console.print(results_table([row], title="Runs of [/y]"))
    console.print(metrics_table([{"phase": "[/z]", "epoch": 1}]))
    for text in ("[/x]", "[bold]x / [w/o bn]", "Runs of [/y]", "[/z]"):
        assert text in buf.getvalue()


def _by_variant(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["variant"], []).append(r)
    return out


def test_where_study_and_variant_match_any_of_a_runs(views, tmp_path):
    out, _ = views
    store = tmp_path / "store"
    shutil.copytree(out, store)
    rows = _by_variant(_runs(store))
    shared, twice = rows[LABELS[0]][0]["id"], rows[LABELS[1]][0]["id"]
    # a second study: one run under a label holding " | ", another under two labels
    manifest = {"study": "other", "preset": "cpu", "rows": ["A | B", "A", "B"],
                "columns": {"key": "prune.layers", "labels": ["c"], "values": [0.5]},
                "seeds": 1, "cells": [
                    {"row": "A | B", "column": "c", "value": 0.5, "seed": 0, "run": shared},
                    {"row": "A", "column": "c", "value": 0.5, "seed": 0, "run": twice},
                    {"row": "B", "column": "c", "value": 0.5, "seed": 0, "run": twice}]}
    (store / "studies" / "other-cpu.json").write_text(json.dumps(manifest))
    every = _runs(store)
    assert next(r for r in every if r["id"] == shared)["study"] == "other-cpu, views-cpu"
    assert len(_runs(store, "--where", "study=views-cpu")) == len(every)  # shared ones too
    assert {r["id"] for r in _runs(store, "--where", "study=other-cpu")} == {shared, twice}
    assert [r["id"] for r in _runs(store, "--where", f"variant={LABELS[0]}")] == [
        r["id"] for r in every if r["id"] == shared or r["variant"] == LABELS[0]]
    # the label "A | B" is one label: never the run that has "A" and "B"
    assert [r["id"] for r in _runs(store, "--where", "variant=A | B")] == [shared]
    assert [r["id"] for r in _runs(store, "--where", "variant=A")] == [twice]
    assert [r["id"] for r in _runs(store, "--where", "variant=B")] == [twice]
    shown = next(r for r in every if r["id"] == twice)
    assert shown["variant"] == f"A | B | {LABELS[1]}"  # the display joins them, ambiguously
    from prunebench import api

    listed = next(r for r in api.runs(store) if r["id"] == twice)
    assert listed["variants"] == ["A", "B", LABELS[1]]
    assert listed["studies"] == ["other-cpu", "views-cpu"]


def test_where_on_retraining_fields_matches_what_the_run_trained(views):
    out, _ = views
    scratch = {r["id"] for r in _runs(out) if r["variant"] == LABELS[2]}
    assert len(scratch) == 2
    # declared retrain.epochs 1, lr 0:0.01; trained the dense model's 2 epochs at 0:0.1
    assert {r["id"] for r in _runs(out, "--where", "retrain.epochs=2")} == scratch
    assert not scratch & {r["id"] for r in _runs(out, "--where", "retrain.epochs=1")}
    found = _runs(out, "--where", "retrain.lr=0:0.01")
    assert {r["variant"] for r in found} == {LABELS[0]} and all(r["lr"] == "0:0.01"
                                                                 for r in found)
    for spelling in ("0:0.1", "0:1e-1", "0.1", "0:0.10"):
        assert {r["id"] for r in _runs(out, "--where", f"retrain.lr={spelling}")} == scratch
        assert {r["id"] for r in _runs(out, "--where", f"lr={spelling}")} == scratch
    assert {r["variant"] for r in _runs(out, "--where", "lr=0:0.00001")} == {LABELS[1]}


def _sparsity(ratio: str) -> float:
    return 0.0 if ratio == "dense" else float(re.match(r"([\d.]+)%", ratio).group(1))


def test_sort_ratio_and_lr_by_number_missing_last(views, tmp_path):
    out, _ = views
    store = tmp_path / "store"
    shutil.copytree(out, store)
    pruned = next(r for r in _runs(store) if r["variant"] == LABELS[0]
                  and r["ratio"].startswith("54"))
    (store / pruned["id"] / "result.json").unlink()  # unfinished: no sparsity yet
    for sort in ("ratio", "-ratio"):
        rows = _runs(store, "--sort", sort)
        assert rows[-1]["id"] == pruned["id"] and rows[-1]["ratio"] == "PR 0.5"
        values = [_sparsity(r["ratio"]) for r in rows[:-1]]
        assert values == sorted(values, reverse=sort.startswith("-"))
        assert values[0] != values[-1]
    for sort in ("lr", "-lr", "retrain lr"):
        rows = _runs(store, "--sort", sort)
        assert rows[-1]["lr"] == "-"  # the dense reference has no retraining LR
        lrs = [float(r["lr"].split(":")[1]) for r in rows[:-1]]
        assert lrs == sorted(lrs, reverse=sort.startswith("-"))
        assert {r["lr"] for r in rows} == {"0:0.01", "0:1e-05", "0:0.1", "-"}
    # the table sorted the same way, in the terminal
    res = invoke("runs", "--out", store, "--sort", "ratio")
    assert res.exit_code == 0
    text = res.output
    assert text.index("dense") < text.index("5.9%") < text.index("54.5%") < text.index("PR 0.5")


@pytest.mark.parametrize("seed", ["5", 1.5, True])
def test_a_base_seed_that_is_no_whole_number_is_one_line(tmp_path, seed):
    path = _write(tmp_path, _preset(base={**BASE, "seed": seed}))
    with pytest.raises(RecipeError, match=r"presets\.cpu\.base: base\.seed is the first"):
        load_study(path)
    _one_error_line(invoke("study", path, "--out", tmp_path / "runs", "--quiet"))
    assert _nothing_written(tmp_path / "runs")


def test_set_on_a_key_a_row_sets_is_refused():
    """``--set retrain.lr=...`` over rows labelled by their LR made every row run one LR
    under labels naming others."""
    from prunebench.studies.runner import expand_study

    spec = load_study("trainability")
    for item in ("retrain.lr=0:0.01", "retrain=null", "retrain.init=inherit"):
        with pytest.raises(RecipeError, match="which row .* sets"):
            expand_study(spec, "cpu", overrides=[item])
    assert expand_study(spec, "cpu", overrides=["retrain.epochs=2"])  # the base: fine


def test_run_refuses_an_override_of_a_grid_axis(tmp_path):
    """A grid over retrain.lr with --set retrain.lr ran every cell at one LR under the
    grid's labels (and --set seed over seeds: N made N cells one run)."""
    tiny = Path(__file__).parent / "fixtures" / "tiny.yaml"
    raw = yaml.safe_load(tiny.read_text())
    raw["grid"] = {"retrain.lr": ["0:0.01", "0:0.001"]}
    recipe = tmp_path / "grid.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    out = tmp_path / "runs"
    for item in ("retrain.lr=0:0.1", "retrain={}", "finetune.lr=0:0.1"):
        res = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--set", item])
        assert res.exit_code == 2 and "replaces the grid axis" in res.output, res.output
    raw.pop("grid")
    raw["seeds"] = 2
    recipe.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--set", "seed=4"])
    assert res.exit_code == 2 and "seed axis" in res.output
    assert not out.exists() or not any(out.iterdir())


def test_the_live_display_prints_labels_as_text():
    from prunebench.cli import RichReporter

    buf = io.StringIO()
    rep = RichReporter(Console(file=buf, force_terminal=True, width=120))
    rep.begin(1, "study [/x]")
    rep.start_cell("L1 lr [/2] / PR [small]", 1)
    rep.progress.refresh()
    rep.progress.stop()
    assert "[/2]" in buf.getvalue() and "[small]" in buf.getvalue()

"""Report numbers a person reads are never silently wrong.

Each test fails on the code before its fix:

* one value per (row, column, seed): repeated runs of one seed (``report --runs``) or a
  manifest whose seeds map to one run are never averaged as seeds (no "± 0.00", no
  "3 seed(s)", the single-seed warning shown) and the duplicates are named;
* the dense reference of a cell is the dense model its runs descend from (a column over
  the width, a row with a shorter pretraining), never the study's one dense run;
* a finding is not "held" when its ``better`` row diverged somewhere: the comparison is
  listed, counted and named, and the caption counts diverged cells;
* ``report --runs`` columns are the prunings as declared (``0.5`` vs ``fc1:0.5``), and
  the sparsity row never averages different rates;
* best cells at display precision, a readable setup heading, Markdown / LaTeX escapes,
  CSV findings rows keyed by the column label.

Tiny real studies (synthetic data, a 3-layer MLP, one seed: seconds) back the tests.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import SMALL_STUDY_BASE

from prunebench.report import load_studies, render
from prunebench.report.data import CellData, StudyData, load_runs_data, load_study_data
from prunebench.report.figures import BUILDERS, DENSE_GID
from prunebench.report.findings import evaluate
from prunebench.report.paper import _diff_dense
from prunebench.report.tables import (
    Cell,
    ReportTable,
    Row,
    accuracy_table,
    csv_rows,
    dense_diff_table,
    findings_table,
    latex_escape,
    mark_best,
    stat_cell,
    to_latex,
    to_markdown,
)

BASE = copy.deepcopy(SMALL_STUDY_BASE)  # this module's own copy

#: the columns change the network; a row changes the pretraining: four dense models
WIDTH = {"name": "trust-width", "title": "Width", "presets": {"cpu": {
    "base": BASE,
    "columns": {"key": "model.kwargs.width", "values": [16, 4], "labels": ["w16", "w4"]},
    "rows": [{"label": "A", "set": {"retrain.lr": "0:0.01"}},
             {"label": "A short pretrain", "set": {"pretrain.epochs": 1}}],
    "seeds": 1}}}

#: the retraining LR is 1e12 in the second column: row A diverges there, row B (no
#: retraining epochs) does not
DIVERGE = {"name": "trust-div", "title": "Div", "presets": {"cpu": {
    "base": BASE,
    "columns": {"key": "retrain.lr", "values": ["0:0.01", "0:1e12"],
                "labels": ["lr ok", "lr huge"]},
    "rows": [{"label": "A", "set": {}}, {"label": "B", "set": {"retrain.epochs": 0}}],
    "seeds": 1}},
    "findings": [{"claim": "A beats B", "better": "A", "worse": "B", "columns": "all"},
                 {"claim": "A beats B at a huge LR", "better": "A", "worse": "B",
                  "columns": ["lr huge"]}]}


def _study(tmp_path_factory: pytest.TempPathFactory, spec: dict) -> tuple[Path, Path]:
    from prunebench.studies import run_study

    root = tmp_path_factory.mktemp(spec["name"])
    path = root / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_study(path, root / "store", preset="cpu")
    return root / "store", root / "store" / "studies" / f"{spec['name']}-cpu.json"


@pytest.fixture(scope="module")
def width(tmp_path_factory) -> tuple[Path, Path]:
    return _study(tmp_path_factory, WIDTH)


@pytest.fixture(scope="module")
def diverge(tmp_path_factory) -> tuple[Path, Path]:
    return _study(tmp_path_factory, DIVERGE)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """Plain runs (no study): three seed-0 runs of one configuration that differ only in
    fields that never change the result, and one that prunes ``fc1:0.5`` only."""
    import prunebench

    out = tmp_path_factory.mktemp("plain") / "store"
    base = {**BASE, "seed": 0, "prune": {"method": "l1", "layers": 0.5}}
    for extra in ({}, {"data": {**BASE["data"], "eval_batch_size": 500}},
                  {"measure": {"jsv_every": 1}},
                  {"prune": {"method": "l1", "layers": "fc1:0.5"}}):
        prunebench.run({**base, **extra}, out)
    return out


def _write_manifest(store: Path, manifest: dict, tmp: Path) -> Path:
    path = tmp / "studies" / f"{manifest['study']}-{manifest['preset']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


# -- 2. one value per (row, column, seed) ---------------------------------------------------

def test_runs_of_one_seed_are_one_value_not_seeds(plain):
    s = load_runs_data(plain)
    t = accuracy_table(s)
    (row,) = [r for r in t.rows if not r.info]
    col = t.columns.index("PR 0.5")
    cell = row.cells[col]
    assert cell.n == 1 and "±" not in cell.text  # once "98.83 ± 0.00" over 3 "seeds"
    kept = min(c.run_id for c in s.cells if c.column == "PR 0.5")
    assert [r.id for r in s.runs(row.label, "PR 0.5")] == [kept]  # the smallest id
    assert s.seeds == [0] and "1 seed(s)" in t.caption
    assert t.warning and "single seed" in t.warning  # once suppressed by 3 runs of seed 0
    assert "counted once" in t.caption and kept in t.caption
    assert len(s.duplicates) == 1 and "3 runs of one row, column and seed" in s.duplicates[0]


def test_manifest_seeds_that_are_one_run_are_one_seed(width, tmp_path):
    """A study run with the seed overridden maps seeds 0, 1, 2 of a cell to one run."""
    store, manifest = width
    m = json.loads(manifest.read_text())
    m["seeds"] = 3
    m["cells"] = [{**c, "seed": seed} for c in m["cells"] for seed in (0, 1, 2)]
    s = load_study_data(_write_manifest(store, m, tmp_path), store)
    assert s.seeds == [0]
    t = accuracy_table(s)
    assert "1 seed(s)" in t.caption and "3 seed(s)" not in t.caption
    assert all("±" not in c.text and "(n=" not in c.text for r in t.rows for c in r.cells)
    assert t.warning and "single seed" in t.warning
    assert "manifest seeds 0, 1, 2 are one run" in t.caption
    assert all(len(s.runs(r, c)) == 1 for r in s.rows for c in s.columns)


# -- 3. the dense model of each cell --------------------------------------------------------

def test_each_cell_is_compared_with_its_own_dense_model(width):
    store, manifest = width
    s = load_study_data(manifest)
    denses = set()
    for row in s.rows:
        for col in s.columns:
            (r,) = s.runs(row, col)
            assert r.dense_acc == r.record.dense.test_acc  # its own base model
            assert _diff_dense([r]) == pytest.approx(r.test_acc - r.record.dense.test_acc)
            denses.add(r.record.dense.test_acc)
    assert len(denses) == 4  # widths x pretraining lengths: four dense models
    t = dense_diff_table(s)
    for row in t.rows:
        for col, cell in zip(t.columns, row.cells, strict=True):
            (r,) = s.runs(row.label, col)
            assert cell.mean == pytest.approx(r.test_acc - r.record.dense.test_acc)
    # the caption claims no single dense accuracy; it names each one
    assert s.dense_acc is None and not re.search(r"dense model \d", t.caption)
    assert "dense: per cell" in t.caption
    assert all(f"{d:.2f}%" in t.caption for d in denses)
    assert "width=4" in t.caption and "width=16" in t.caption  # the model is per column too
    # no figure draws one dense line for runs of several dense models
    for kind in ("accuracy", "ratio"):
        fig = BUILDERS[kind][1](s)
        assert fig is not None
        for ax, col in zip(fig.axes, s.columns, strict=False):
            lines = [ln for ln in ax.get_lines() if ln.get_gid() == DENSE_GID]
            want = s.dense_for(column=col) if kind == "accuracy" else s.dense_acc
            assert [ln.get_ydata()[0] for ln in lines] == ([] if want is None else [want])


def test_one_dense_model_is_still_named_once(diverge):
    """Cells that all descend from the study's dense run keep its accuracy, once."""
    store, manifest = diverge
    s = load_study_data(manifest)
    ref = json.loads((store / s.manifest["dense_runs"]["0"] / "result.json").read_text())
    assert s.dense_acc == pytest.approx(ref["test_acc"])
    assert f"dense model {ref['test_acc']:.2f}%" in accuracy_table(s).caption
    assert all(r.reference_run == s.manifest["dense_runs"]["0"] for r in s.all_runs)


# -- 5. findings with diverged runs ---------------------------------------------------------

def test_a_finding_whose_better_row_diverged_is_not_held(diverge):
    store, manifest = diverge
    s = load_study_data(manifest)
    everywhere, huge = evaluate(s)
    assert everywhere.status == "mixed"  # once "held: better in 1 of 1 comparison(s)"
    assert len(everywhere.comparisons) == 2
    assert "better in 1 of 2 comparison(s)" in everywhere.summary
    assert "1 not comparable: A: seed 0 diverged (lr huge)" in everywhere.summary
    bad = next(c for c in everywhere.comparisons if c.column == "lr huge")
    assert not bad.comparable and bad.held is None and "diverged" in bad.verdict
    assert huge.status == "not held (diverged)"  # once "no data"
    assert huge.summary.startswith("not held (diverged)")
    t = findings_table(s)
    assert t is not None and sum("diverged" in r.cells[-1].text for r in t.rows) == 2
    acc = accuracy_table(s)
    cell = acc.rows[s.rows.index("A")].cells[s.columns.index("lr huge")]
    assert cell.mean is None and cell.text.startswith("diverged") and not cell.best
    assert s.missing == 1 and "1 diverged" in acc.caption  # once 0: "missing" only
    md = render([s], "md")
    assert "held: better in 1 of 1" not in md and "1 not comparable" in md


def _fake(cells: dict[tuple[str, str], list[tuple[float | None, str]]],
          findings: list[dict]) -> StudyData:
    rows = list(dict.fromkeys(r for r, _ in cells))
    cols = list(dict.fromkeys(c for _, c in cells))
    out = [CellData(r, c, None, seed, f"{r}{c}{seed}",
                    SimpleNamespace(test_acc=acc, status=status))
           for (r, c), vals in cells.items() for seed, (acc, status) in enumerate(vals)]
    m = {"study": "fake", "rows": rows, "columns": {"labels": cols}, "cells": [],
         "findings": findings}
    return StudyData(Path("fake.json"), m, out)


def test_finding_statuses_count_every_comparison():
    f = [{"claim": "A beats B", "better": "A", "worse": "B", "columns": "all"}]
    ok, div = (90.0, "done"), (None, "diverged")
    low = (80.0, "done")
    (held,) = evaluate(_fake({("A", "c1"): [ok], ("B", "c1"): [low],
                              ("A", "c2"): [ok], ("B", "c2"): [low]}, f))
    assert held.status == "held"
    # the worse row diverged in c2: A won where comparable, but not everywhere
    (inc,) = evaluate(_fake({("A", "c1"): [ok], ("B", "c1"): [low],
                             ("A", "c2"): [ok], ("B", "c2"): [div]}, f))
    assert inc.status == "incomplete" and "1 not comparable: B: seed 0 diverged" in inc.summary
    # one seed of A diverged: the mean of the survivors is never compared
    (part,) = evaluate(_fake({("A", "c1"): [ok, div], ("B", "c1"): [low, low]}, f))
    assert part.status == "not held (diverged)" and part.comparisons[0].n_better == 1


# -- 6. --runs columns are prunings, rates never averaged -----------------------------------

def test_runs_columns_keep_prunings_apart(plain):
    s = load_runs_data(plain)
    assert "PR 0.5" in s.columns and "PR fc1:0.5" in s.columns  # once one "PR 0.5"
    t = accuracy_table(s)
    sp = t.rows[-1]
    assert sp.info
    for col, cell in zip(t.columns, sp.cells, strict=True):
        ((spars, speed),) = {(r.param_sparsity, r.speedup) for r in s.runs(column=col)}
        assert cell.text == f"{spars:.2f}% / {speed:.2f}x"


def test_sparsity_row_never_averages_different_rates():
    """Runs of one column that reached different rates (a global scheme, a store of mixed
    runs): the row shows each rate, never their mean."""
    from prunebench.report.tables import _sparsity_row

    rates = [(54.49, 2.21), (57.77, 2.38), (54.49, 2.21)]
    cells = [CellData("r", "PR 0.5", None, seed, f"run{seed}",
                      SimpleNamespace(test_acc=90.0, param_sparsity=sp, speedup=su))
             for seed, (sp, su) in enumerate(rates)]
    s = StudyData(Path("fake.json"), {"rows": ["r"], "columns": {"labels": ["PR 0.5"]},
                                      "cells": []}, cells)
    cell = _sparsity_row(s).cells[0]
    assert cell.text == "mixed: 54.49% / 2.21x | 57.77% / 2.38x"  # once "55.58% / 2.27x"
    assert cell.mean is None
    same = StudyData(Path("fake.json"), {"rows": ["r"], "columns": {"labels": ["PR 0.5"]},
                                         "cells": []}, cells[:1])
    assert _sparsity_row(same).cells[0].text == "54.49% / 2.21x"


# -- 12. smaller ---------------------------------------------------------------------------

def test_best_mark_at_display_precision():
    t = ReportTable("accuracy", "t", "c", ["c1"])
    t.rows = [Row("a", [stat_cell([85.334])]), Row("b", [stat_cell([85.3349])]),
              Row("c", [stat_cell([85.32])])]
    mark_best(t)
    assert [r.cells[0].best for r in t.rows] == [True, True, False]


def test_setup_heading_reads_when_nothing_was_compared(plain):
    s = load_runs_data(plain)
    text = s.setup_summary()
    assert "computed not computed" not in text and "not computed" in text


def test_markdown_and_latex_escape_labels_and_claims():
    evil = "a_b *c* `d` |e\nf"
    t = ReportTable("accuracy", evil, evil, [evil])
    t.rows = [Row(evil, [Cell(evil)])]
    md = to_markdown(t)
    for raw in ("a_b", "*c*", "`d`", " |e", "\n f"):
        assert raw not in md
    assert r"a\_b \*c\* \`d\` \|e f" in md
    s = _fake({("A", "c1"): [(90.0, "done")], ("B", "c1"): [(80.0, "done")]},
              [{"claim": "A *really* beats B_x", "better": "A", "worse": "B"}])
    ft = findings_table(s)
    assert ft is not None and r"A \*really\* beats B\_x" in to_markdown(ft)
    assert latex_escape('a|b "q"') == r"a\textbar{}b {''}q{''}"
    tex = to_latex(t)
    assert "|" not in tex.replace(r"\textbar{}", "") and '"' not in tex


def test_csv_findings_rows_hold_the_column_label(diverge):
    store, manifest = diverge
    s = load_study_data(manifest)
    ft = findings_table(s)
    assert ft is not None
    rows = csv_rows(ft)
    assert {r["column"] for r in rows} == set(s.columns)  # once "comparison", "diff"...
    assert len(rows) == 3  # one per comparison
    ok = next(r for r in rows if r["column"] == "lr ok")
    assert isinstance(ok["mean"], float) and "A vs B" in str(ok["text"])
    text = render(load_studies(manifest), "csv")
    assert all(r["column"] not in ("comparison", "diff", "verdict")
               for r in csv.DictReader(io.StringIO(text)) if r["table"] == "findings")

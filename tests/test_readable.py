"""Readable verdicts: compare / runs / show / report output a person can read on an
80-column terminal, study variant names as labels, findings of the paper tested, the best
cell marked, single-seed results flagged, and reports of any set of runs."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from prunebench.cli import app
from prunebench.report import load_studies, render, write_report
from prunebench.report.data import CellData, StudyData, load_study_data
from prunebench.report.findings import evaluate
from prunebench.report.runinfo import layers_text, plain
from prunebench.report.tables import accuracy_table, findings_table, to_markdown, to_rich
from prunebench.report.terminal import runs_table
from prunebench.studies.spec import StudySpec, load_study

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny.yaml"
runner = CliRunner()

STUDY = {
    "name": "readable",
    "title": "Readable: LR and scratch",
    "setup": "S3.1",
    "presets": {"cpu": {
        "base": {"data": {"name": "synthetic", "batch_size": 64, "val_size": 128},
                 "model": {"name": "mlp", "kwargs": {"depth": 3, "width": 16}},
                 "pretrain": {"epochs": 2, "lr": "0:0.1"},
                 "prune": {"method": "l1", "layers": "fc1:0.5,fc2:0.5"},
                 "retrain": {"epochs": 1, "lr": "0:0.01"},
                 "measure": {"jsv_every": 0}},
        "columns": {"key": "prune.layers", "values": ["fc1:0.5,fc2:0.5"], "labels": ["PR 0.5"]},
        "rows": [{"label": "L1, LR 0.01", "set": {"retrain.lr": "0:0.01"}},
                 {"label": "L1, LR 0.001", "set": {"retrain.lr": "0:0.001"}},
                 {"label": "Scratch-E", "set": {"retrain.init": "scratch",
                                                "retrain.budget": "E"}}],
        "seeds": 1,
    }},
}
FINDINGS = [{"claim": "LR 0.01 beats LR 0.001", "better": "L1, LR 0.01",
             "worse": "L1, LR 0.001", "columns": "all"}]


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict]:
    from prunebench.studies import run_study

    out = tmp_path_factory.mktemp("readable")
    spec = out / "readable.yaml"
    spec.write_text(yaml.safe_dump(STUDY))
    manifest = run_study(spec, out / "store", preset="cpu")
    assert manifest["complete"]
    return out / "store", manifest


@pytest.fixture(scope="module")
def plain_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain")
    for ov in ([], ["retrain.lr=0:0.001"]):
        res = invoke("run", str(TINY), "--out", str(out), "--quiet", *sum(
            (["--set", o] for o in ov), []))
        assert res.exit_code == 0, res.output
    return out


# -- 1. compare -----------------------------------------------------------------------------

def test_compare_labels_are_variants_with_columns(study):
    out, manifest = study
    res = invoke("compare", "--out", str(out))
    assert res.exit_code == 3  # S3.2 is not met: LR differs
    lines = res.output.splitlines()
    assert max(len(x) for x in lines) <= 100 and "{" not in res.output
    for label in ("L1, LR 0.01", "L1, LR 0.001", "Scratch-E", "retrain LR", "seeds",
                  "ratio", "test acc", "single seed"):
        assert label in res.output
    rep = json.loads(invoke("compare", "--out", str(out), "--json").stdout)
    methods = {m["method"]: m for g in rep["groups"] for m in g["methods"]}
    assert {"L1, LR 0.01", "L1, LR 0.001", "Scratch-E"} <= set(methods)
    m = methods["L1, LR 0.01"]
    assert m["lr"] == "0:0.01" and m["n_seeds"] == 1 and "%" in m["ratio"]
    assert m["runs"] and m["acc"]["n"] == 1  # --json stays complete


def test_plain_rewrites_json():
    assert plain('mlp{"depth":3,"width":32}') == "mlp(depth=3,width=32)"
    assert "{" not in plain('layers: {"a": [1, 2]} vs 0.5')
    assert layers_text("conv*:0.5,fc1:0.5,fc2:0.5") == "0.5"
    assert layers_text([0.5, 0.3]) == "0.5/0.3"


# -- 2. findings, best cell, single-seed warning ------------------------------------------

def _fake_study(accs: dict[tuple[str, str], list[float]], findings: list[dict]) -> StudyData:
    rows = list(dict.fromkeys(r for r, _ in accs))
    cols = list(dict.fromkeys(c for _, c in accs))
    cells = [CellData(r, c, None, seed, f"{r}{c}{seed}", SimpleNamespace(test_acc=v))
             for (r, c), vals in accs.items() for seed, v in enumerate(vals)]
    m = {"study": "fake", "rows": rows, "columns": {"labels": cols}, "cells": [],
         "findings": findings}
    return StudyData(Path("fake.json"), m, cells)  # type: ignore[arg-type]


def test_findings_verdicts_on_fake_data():
    f = [{"claim": "A beats B", "better": "A", "worse": "B", "columns": "all"},
         {"claim": "B beats A in c2", "better": "B", "worse": "A", "columns": ["c2"]},
         {"claim": "rows by pattern", "better": "A*", "worse": "B", "columns": "all"}]
    held = _fake_study({("A", "c1"): [90, 91, 92], ("B", "c1"): [80, 81, 82],
                        ("A", "c2"): [90, 91, 92], ("B", "c2"): [80, 81, 79],
                        ("Ax", "c1"): [70, 71, 72], ("Ax", "c2"): [99, 98, 97]}, f)
    a, b, c = evaluate(held)
    assert a.status == "held" and all(x.significant for x in a.comparisons)
    assert "significant in 2 of 2" in a.summary and "3 seeds" in a.summary
    assert b.status == "not held" and [x.column for x in b.comparisons] == ["c2"]
    assert c.status == "mixed" and len(c.comparisons) == 4  # A and Ax, two columns
    noisy = _fake_study({("A", "c1"): [92, 80], ("B", "c1"): [80, 81]}, f[:1])
    (n,) = evaluate(noisy)
    assert n.status == "held" and n.comparisons[0].verdict == "held (not significant)"
    single = _fake_study({("A", "c1"): [90], ("B", "c1"): [95]}, f[:1])
    (s,) = evaluate(single)
    assert s.status == "not held" and s.single_seed
    assert s.comparisons[0].verdict == "not held (single seed: not tested)"
    t = findings_table(single)
    assert t is not None and "single seed: not tested" in to_markdown(t)


def test_spec_accepts_findings_and_checks_them():
    assert all(load_study(n).findings for n in
               ("lr-effect", "scratch-vs-inherit", "lr-catch-up", "trainability"))
    spec = StudySpec.model_validate({**STUDY, "findings": FINDINGS})
    assert spec.findings[0].better == "L1, LR 0.01"
    with pytest.raises(ValueError, match="matches no row"):
        StudySpec.model_validate({**STUDY, "findings": [{**FINDINGS[0], "better": "nope"}]})
    with pytest.raises(ValueError, match="no column label"):
        StudySpec.model_validate({**STUDY, "findings": [{**FINDINGS[0], "columns": ["x"]}]})
    with pytest.raises(ValueError):
        StudySpec.model_validate({**STUDY, "name": "../evil"})  # name validation kept


def test_every_built_in_preset_tests_findings_that_apply_to_it():
    """A finding naming rows a preset lacks would report "not applicable" there: each plain
    preset of every built-in study tests findings whose rows and columns it has."""
    from prunebench.studies.spec import STUDIES, match_rows

    for name in STUDIES:
        spec = load_study(name)
        for preset, p in spec.tables():
            rows = [r.label for r in p.rows]
            for f in spec.findings_for(preset):
                assert match_rows(f.better, rows), (name, preset, f.better)
                assert match_rows(f.worse, rows), (name, preset, f.worse)
                assert f.columns == "all" or set(f.columns) & set(p.columns.labels or [])
    paper = load_study("lr-catch-up").findings_for("paper")
    assert any(f.better == "P60F60 LR 0.001, +* epochs" for f in paper)


def test_a_preset_declares_its_own_findings():
    own = [{"claim": "own", "better": "Scratch-E", "worse": "L1, LR 0.01"}]
    preset = {**STUDY["presets"]["cpu"], "findings": own}
    spec = StudySpec.model_validate({**STUDY, "findings": FINDINGS,
                                     "presets": {"cpu": preset, "b": STUDY["presets"]["cpu"]}})
    assert [f.claim for f in spec.findings_for("cpu")] == ["own"]
    assert spec.findings_for("b") == spec.findings
    with pytest.raises(ValueError, match=r"presets\.cpu\.findings\[0\]\.better 'nope'"):
        StudySpec.model_validate({**STUDY, "presets": {"cpu": {
            **preset, "findings": [{**own[0], "better": "nope"}]}}})


def test_report_states_findings_best_cell_and_single_seed(study, tmp_path):
    out, _ = study
    path = out / "studies" / "readable-cpu.json"
    m = json.loads(path.read_text())
    m["findings"] = FINDINGS
    (tmp_path / "studies").mkdir()
    copy = tmp_path / "studies" / "readable-cpu.json"
    copy.write_text(json.dumps(m))
    s = load_study_data(copy, out)
    t = accuracy_table(s)
    assert t.warning and "single seed" in t.warning
    assert sum(c.best for r in t.rows for c in r.cells) == 1
    md = render([s], "md")
    assert "What this study found" in md and "LR 0.01 beats LR 0.001" in md
    assert "single seed: not tested" in md and "**⚠ single seed" in md
    assert "| **" in md  # the best cell is bold
    buf = io.StringIO()
    Console(file=buf, width=80, no_color=True).print(to_rich(t))
    assert " *" in buf.getvalue() and "single seed" in buf.getvalue()
    html = write_report(copy, "html", tmp_path / "r.html", store=out).read_text()
    assert html.index("<table") < html.index("Benchmark card")
    assert "What this study found" in html and 'class="best"' in html
    assert "single seed" in html


# -- 3./4. runs and show --------------------------------------------------------------------

def test_runs_columns_where_sort_json(study):
    out, manifest = study
    rows = json.loads(invoke("runs", "--out", str(out), "--json").stdout)
    for r in rows:
        for key in ("test_acc", "ta", "speedup", "variant", "study", "lr", "init", "seed"):
            assert key in r
    scratch = [r for r in rows if r["variant"] == "Scratch-E"]
    assert len(scratch) == 1 and scratch[0]["method"] == "l1+scratch-E"
    assert scratch[0]["init"] == "scratch-E" and scratch[0]["study"] == "readable-cpu"
    res = invoke("runs", "--out", str(out), "--json", "--where", "variant=Scratch-E")
    assert [r["id"] for r in json.loads(res.stdout)] == [scratch[0]["id"]]
    res = invoke("runs", "--out", str(out), "--json", "--where", "retrain.lr=0:0.001")
    assert [r["variant"] for r in json.loads(res.stdout)] == ["L1, LR 0.001"]
    res = invoke("runs", "--out", str(out), "--json", "--sort", "-test_acc")
    accs = [r["test_acc"] for r in json.loads(res.stdout)]
    assert accs == sorted(accs, reverse=True)
    res = invoke("runs", "--out", str(out), "--sort", "variant")
    assert res.exit_code == 0 and "L1, LR 0.001" in res.output
    assert invoke("runs", "--out", str(out), "--sort", "nope").exit_code == 2
    assert invoke("runs", "--out", str(out), "--where", "bad.key=1").exit_code == 2


def test_ids_are_never_cut_at_80_columns(study):
    from prunebench import api

    out, _ = study
    rows = api.runs(out)
    buf = io.StringIO()
    Console(file=buf, width=80, no_color=True).print(runs_table(rows, width=80))
    text = buf.getvalue()
    assert all(r["id"] in text for r in rows)
    assert max(len(x) for x in text.splitlines()) <= 80
    assert "not shown" in text  # the less important columns were dropped, not the id
    buf = io.StringIO()
    Console(file=buf, width=40, no_color=True).print(runs_table(rows, width=40))
    assert all(r["id"] in buf.getvalue().replace("\n", "") or r["id"][:6] in buf.getvalue()
               for r in rows)


def test_show_prints_the_effective_recipe(study):
    out, manifest = study
    rows = json.loads(invoke("runs", "--out", str(out), "--json").stdout)
    rid = next(r["id"] for r in rows if r["variant"] == "Scratch-E")
    res = invoke("show", rid, "--out", str(out))
    assert res.exit_code == 0, res.output
    text = res.output
    assert "effective recipe" in text
    assert "retrain.epochs: declared 1, trained 2" in " ".join(text.split())
    assert "  epochs: 2\n" in text
    for line in text.splitlines():
        if line.strip().startswith(("test_acc:", "param_sparsity:")):
            assert len(line.split(":", 1)[1].strip()) <= 6  # rounded
    # --json says the same: "recipe" is what it trained, the written one is kept beside it
    data = json.loads(invoke("show", rid, "--out", str(out), "--json").stdout)
    assert data["recipe"]["retrain"]["epochs"] == 2
    assert data["declared_recipe"]["retrain"]["epochs"] == 1
    assert data["effective_notes"] and data["id"] == rid


# -- 5. report on any set of runs ----------------------------------------------------------

def test_report_on_a_plain_run_store(plain_store, tmp_path):
    studies = load_studies(plain_store)
    (s,) = studies
    assert len(s.rows) == 2 and all("LR" in r for r in s.rows)
    for fmt in ("terminal", "md", "latex", "csv"):
        res = invoke("report", str(plain_store), "--format", fmt)
        assert res.exit_code == 0, res.output
        assert "0:0.001" in res.output
    res = invoke("report", str(plain_store), "--format", "html", "-o", str(tmp_path / "r.html"))
    assert res.exit_code == 0, res.output
    assert "<table" in (tmp_path / "r.html").read_text()
    res = invoke("report", str(plain_store), "--where", "retrain.lr=0:0.001", "-f", "md")
    assert res.exit_code == 0 and "0:0.01," not in res.output
    res = invoke("report", str(plain_store), "--where", "prune.method=random")
    assert res.exit_code == 2 and "no finished runs" in res.output


def test_report_runs_of_a_study_store(study):
    out, _ = study
    res = invoke("report", str(out), "--runs", "-f", "md")
    assert res.exit_code == 0, res.output
    assert "Scratch-E" in res.output and "dense (reference)" in res.output

"""The run store under hostile input: containment (no user string is a path outside the
store), damaged files (truncated result.json, garbage index, --out a file) and an index that
lies (the folders are the truth)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import copy_store
from typer.testing import CliRunner

import prunebench
from prunebench.cli import app
from prunebench.errors import PrunebenchError, RecipeError, StoreError
from prunebench.store import ID_LENGTH, RunStore, check_name, check_run_id, slugify

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny.yaml"
BAD_IDS = ["..", "../x", "../other/store/5f1608597201", "/etc", "/tmp/x/5f1608597201",
           "a/b", "a\x00b", "ü", "５f16", "ABC", "", " 5f", "5f\n", "0" * (ID_LENGTH + 1),
           "5f1608597201/..", ".", "~", "*", "5f*"]
BAD_NAMES = ["../../x", "/abs/x", "a/b", "a\x00b", "x\u202e", "..", ".hidden", "", "-x",
             "ü", "a b", "x" * 65, "a..b", "C:\\x"]

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(res, code: int = 2) -> str:
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, res.output
    return errors[0]


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("store")
    res = prunebench.run(TINY, out=out, overrides=["measure.jsv_every=0"])
    assert res.status == "done"
    return out, res.id


@pytest.fixture
def store(base_store, tmp_path) -> tuple[Path, str]:
    return copy_store(base_store[0], tmp_path), base_store[1]


# -- ids, names, slugs ----------------------------------------------------------------------

@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_run_ids_are_refused(bad, tmp_path):
    with pytest.raises(StoreError, match="hex digits"):
        check_run_id(bad, prefix=True)
    with pytest.raises(StoreError):
        RunStore(tmp_path).resolve(bad)
    with pytest.raises(StoreError):
        RunStore(tmp_path).run_dir(bad)


def test_good_ids_and_prefixes():
    assert check_run_id("5f1608597201") == "5f1608597201"
    assert check_run_id("5f", prefix=True) == "5f"
    with pytest.raises(StoreError):
        check_run_id("5f")  # a prefix is not an id


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_refused(bad, tmp_path):
    with pytest.raises(StoreError, match="not allowed"):
        check_name(bad)
    with pytest.raises(StoreError):
        RunStore(tmp_path).study_manifest_path(bad, "cpu")
    with pytest.raises(StoreError):
        RunStore(tmp_path).study_manifest_path("ok", bad)


def test_slug_rule():
    assert slugify("../../x") == "x"
    assert slugify("/etc/passwd") == "etc-passwd"
    assert slugify("LR 1e-3 (cpu)") == "LR-1e-3-cpu"
    assert slugify("café") == "cafe"
    assert slugify("a..b") == "a.b"
    assert slugify("\x00") == ""
    for name in ("lr-effect", "paper-resnet56", "tiny_study.v2"):
        assert check_name(name) == name == slugify(name)
    path = RunStore("runs").study_manifest_path("lr-effect", "cpu")
    assert path == Path("runs") / "studies" / "lr-effect-cpu.json"


@pytest.mark.parametrize("bad", ["../../x", "/abs/x", "a/b", "a\x00b", "ü", "..", ""])
def test_study_name_and_preset_are_validated(bad, tmp_path):
    from prunebench.studies import load_study

    base = {"data": {"name": "synthetic"}, "model": {"name": "mlp"}}
    preset = {"base": base, "columns": {"key": "prune.layers", "values": [0.5]},
              "rows": [{"label": "a"}]}
    for spec in ({"name": bad, "presets": {"cpu": preset}},
                 {"name": "ok", "presets": {bad: preset}}):
        path = tmp_path / "study.yaml"
        path.write_text(json.dumps(spec))
        with pytest.raises(RecipeError, match="not allowed") as info:
            load_study(path)
        assert "\n" not in str(info.value)
    assert not list(tmp_path.rglob("*.json"))


def test_study_cli_with_bad_name_writes_nothing(tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text("keep me")
    spec = {"name": str(victim.with_suffix("")), "presets": {"cpu": {
        "base": {"data": {"name": "synthetic"}, "model": {"name": "mlp"}},
        "columns": {"key": "prune.layers", "values": [0.5]}, "rows": [{"label": "a"}]}}}
    path = tmp_path / "study.yaml"
    path.write_text(json.dumps(spec))
    out = tmp_path / "runs"
    one_line_error(invoke("study", str(path), "--out", str(out), "--quiet"))
    assert victim.read_text() == "keep me"
    assert not out.exists()


# -- show / card never follow a path --------------------------------------------------------

def test_show_refuses_paths(store, tmp_path):
    out, rid = store
    assert len(rid) == ID_LENGTH  # the planner's key length is the id alphabet's
    other = tmp_path / "other"
    shutil.copytree(out, other)
    for arg in (str(other / rid), f"../other/{rid}", f"{other}/{rid}", str(out / rid)):
        line = one_line_error(invoke("show", arg, "--out", str(out)))
        assert "hex digits" in line
    assert invoke("show", rid[:4], "--out", str(out)).exit_code == 0


def test_card_id_is_never_a_path(store, tmp_path):
    out, rid = store
    other = tmp_path / "other"
    shutil.copytree(out, other)
    res = invoke("card", f"../other/{rid}", "--out", str(out))
    one_line_error(res)
    res = invoke("card", str(other / rid), "--out", str(out))
    one_line_error(res)
    assert not list(other.rglob("card.md")) and not list(out.rglob("card.md"))
    res = invoke("card", rid, "--out", str(out))
    assert res.exit_code == 0, res.output
    assert (out / rid / "card.md").is_file()
    # an explicit --output path is the user's choice
    res = invoke("card", rid, "--out", str(out), "-o", str(tmp_path / "mine.md"))
    assert res.exit_code == 0 and (tmp_path / "mine.md").is_file()


def test_card_study_glob_is_not_a_pattern(store):
    from prunebench.compare.card import expand_study_ids

    out, rid = store
    (out / "studies").mkdir()
    (out / "studies" / "s-cpu.json").write_text(json.dumps({"cells": [{"run": rid}]}))
    assert expand_study_ids(["s"], out) == [rid]
    assert expand_study_ids(["*"], out) == ["*"]  # not a study: left as an (invalid) id
    with pytest.raises(PrunebenchError):
        prunebench.compare.card.write_card(["*"], out)


# -- damaged stores -------------------------------------------------------------------------

def test_out_naming_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for args in (["runs", "--out", str(f)], ["show", "5f", "--out", str(f)],
                 ["runs", "--out", str(f / "sub")],
                 ["run", str(TINY), "--out", str(f), "--quiet"]):
        line = one_line_error(invoke(*args))
        assert "is a file, not a directory" in line
    assert f.read_text() == "x"


def test_truncated_result_is_an_unfinished_run(store, caplog):
    out, rid = store
    before = json.loads((out / rid / "result.json").read_text())
    text = (out / rid / "result.json").read_text()
    (out / rid / "result.json").write_text(text[: len(text) // 2])
    with caplog.at_level(logging.WARNING, logger="prunebench.store"):
        rows = RunStore(out).list_runs()
    assert [r["status"] for r in rows] == ["incomplete"]
    assert "result.json is unreadable" in caplog.text
    res = invoke("show", rid, "--out", str(out))
    assert res.exit_code == 0 and "status: incomplete" in res.output
    res = invoke("runs", "--out", str(out), "--json")
    assert res.exit_code == 0
    # running the recipe again redoes the run
    again = prunebench.run(TINY, out=out, overrides=["measure.jsv_every=0"])
    assert again.id == rid and again.status == "done"
    assert again.test_acc == before["test_acc"]
    assert RunStore(out).list_runs()[0]["status"] == "done"


@pytest.mark.parametrize("garbage", [b"not a database at all" * 100, b"", b"SQLite format 3\x00"
                                     + os.urandom(2000)])
def test_garbage_index_is_rebuilt(store, garbage, caplog):
    out, rid = store
    (out / "index.sqlite").write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="prunebench.store"):
        res = invoke("runs", "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in json.loads(res.stdout)] == [rid]
    if garbage:
        bad = list(out.glob("index.sqlite.bad-*"))
        assert len(bad) == 1 and bad[0].read_bytes() == garbage


def test_foreign_sqlite_index_is_rebuilt(store):
    out, rid = store
    (out / "index.sqlite").unlink()
    con = sqlite3.connect(out / "index.sqlite")
    con.execute("CREATE TABLE runs (x INTEGER)")
    con.commit()
    con.close()
    assert [r["id"] for r in RunStore(out).list_runs()] == [rid]
    assert list(out.glob("index.sqlite.bad-*"))


# -- the index can lie: the folders are the truth -------------------------------------------

def test_finished_run_marked_running_is_reconciled(store):
    out, rid = store
    con = sqlite3.connect(out / "index.sqlite")  # a kill after result.json, before the index
    con.execute("UPDATE runs SET status='running', result=NULL, test_acc=NULL, "
                "result_mtime=NULL, result_size=NULL WHERE id=?", (rid,))
    con.commit()
    con.close()
    rows = RunStore(out).list_runs()
    assert rows[0]["status"] == "done" and rows[0]["record"].finished
    res = invoke("compare", rid, "--out", str(out), "--json")
    assert "not finished" not in res.output


def test_folder_missing_from_index_is_added(store):
    out, rid = store
    con = sqlite3.connect(out / "index.sqlite")
    con.execute("DELETE FROM runs")
    con.commit()
    con.close()
    assert [r["id"] for r in RunStore(out).list_runs()] == [rid]


def test_result_changed_after_recording_is_re_read(store):
    out, rid = store
    RunStore(out).list_runs()
    (out / rid / "result.json").unlink()
    assert RunStore(out).list_runs()[0]["status"] == "incomplete"


# -- user text in figures -------------------------------------------------------------------

def test_tex_like_labels_do_not_crash_figures(store, tmp_path):
    from prunebench.report.data import load_study_data
    from prunebench.report.figures import write_figures

    out, rid = store
    rows, cols = ["$10^{-3$", "a $ b"], ["PR $0.5", "$x$"]
    manifest = {"study": "tex", "preset": "cpu", "rows": rows,
                "columns": {"key": "prune.layers", "labels": cols, "values": [0.5, 0.6]},
                "seeds": 1, "cells": [{"row": r, "column": c, "value": 0.5, "seed": 0,
                                       "run": rid} for r in rows for c in cols]}
    path = out / "studies" / "tex-cpu.json"
    path.parent.mkdir()
    path.write_text(json.dumps(manifest))
    figs = write_figures(load_study_data(path, out), tmp_path / "figs")
    assert figs and all(f.png.is_file() for f in figs)

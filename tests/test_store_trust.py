"""The store and the commands around it under damage and hostile settings: an unreadable
recipe.yaml, read-only stores, bad output paths, absurd bounds (--input-size, --nproc,
--workers / --cpus-per-run), an index that is a folder, a folder that is not a store, a
recipe path that is a folder and a damaged stage metrics file. Each is a one-line error
(exit 2, nothing written) or a recovery with a warning, never a traceback."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import copy_store
from typer.testing import CliRunner

import prunebench
from prunebench import io
from prunebench.cli import app
from prunebench.errors import RecipeError, StoreError
from prunebench.store import IndexUnavailable, RunStore

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny.yaml"
FAST = ["measure.jsv_every=0"]
GARBAGE = b"\x00\xff\xfe"

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(res, code: int = 2) -> str:
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.output
    return errors[0]


def files_under(path: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``path`` with its size and mtime (to see that nothing changed)."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("trust")
    res = prunebench.run(TINY, out=out, overrides=FAST)
    assert res.status == "done"
    return out, res.id


@pytest.fixture
def store(base_store, tmp_path) -> tuple[Path, str]:
    return copy_store(base_store[0], tmp_path), base_store[1]


# -- 3: an unreadable recipe.yaml ------------------------------------------------------------

@pytest.mark.parametrize("content", [GARBAGE, b"", b"- a list\n- not a recipe\n",
                                     b"key: [unclosed\n"])
def test_an_unreadable_recipe_makes_the_run_unfinished(store, caplog, content):
    out, rid = store
    (out / rid / "recipe.yaml").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="prunebench.store"):
        rows = RunStore(out).list_runs()
    assert [r["id"] for r in rows] == [rid]
    row = rows[0]
    assert row["status"] == "incomplete" and row["record"] is None and row["result"] is None
    # never labelled with a default recipe ("dense", "fashion_mnist / lenet5")
    assert row["method"] is None and row["model"] is None and row["dataset"] is None
    assert any("recipe.yaml is unreadable" in r.getMessage() and "unfinished" in r.getMessage()
               for r in caplog.records)
    loaded = RunStore(out).load(rid)
    assert loaded["record"] is None and loaded["result"] is None
    assert RunStore(out).result(rid) is None
    assert RunStore(out).run_result(rid).result == {}


def test_a_recipe_damaged_after_indexing_is_noticed(store, caplog):
    out, rid = store
    assert RunStore(out).list_runs()[0]["status"] == "done"  # indexed, consistent
    (out / rid / "recipe.yaml").write_bytes(GARBAGE)
    with caplog.at_level(logging.WARNING, logger="prunebench.store"):
        row = RunStore(out).list_runs()[0]
    assert row["status"] == "incomplete" and row["record"] is None


def test_commands_refuse_a_run_whose_recipe_is_unreadable(store):
    out, rid = store
    (out / rid / "recipe.yaml").write_bytes(GARBAGE)
    assert "not finished" in one_line_error(invoke("compare", rid, "--out", out))
    assert "not finished" in one_line_error(invoke("card", rid, "--out", out))
    assert not (out / rid / "card.md").exists()
    assert "no finished runs" in one_line_error(invoke("report", "--out", out, "-f", "md"))
    res = invoke("runs", "--out", out, "--json")
    assert res.exit_code == 0, res.output
    (listed,) = json.loads(res.stdout[res.stdout.index("["):])
    assert listed["status"] == "incomplete" and listed["method"] is None


def test_running_the_recipe_again_redoes_a_run_with_a_damaged_recipe(store):
    out, rid = store
    before = json.loads((out / rid / "result.json").read_text())["test_acc"]
    (out / rid / "recipe.yaml").write_bytes(GARBAGE)
    res = prunebench.run(TINY, out=out, overrides=FAST)
    assert res.id == rid and res.status == "done" and res.result["test_acc"] == before
    assert (out / rid / "recipe.yaml").read_text().startswith(("name:", "base_model", "data"))
    assert RunStore(out).list_runs()[0]["status"] == "done"


# -- 7: read-only stores ---------------------------------------------------------------------

@pytest.fixture
def readonly_index(monkeypatch):
    """Every index file opens read-only (as on a read-only mount): writes raise
    ``sqlite3.OperationalError: attempt to write a readonly database``."""
    real = sqlite3.connect

    def connect(path, *args, **kwargs):
        if str(path) == ":memory:":
            return real(path, *args, **kwargs)
        kwargs.pop("uri", None)
        return real(f"file:{path}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)


def test_readers_never_write_a_readonly_index(store, readonly_index, caplog):
    out, rid = store
    os.utime(out / rid / "result.json")  # the index needs an update: it cannot have one
    before = files_under(out)
    with caplog.at_level(logging.WARNING, logger="prunebench.store"):
        rows = RunStore(out).list_runs()
    assert [(r["id"], r["status"], r["method"]) for r in rows] == [(rid, "done", "l1")]
    assert any("read from their folders" in r.getMessage() for r in caplog.records)
    for args in (["runs", "--out", out], ["compare", "--out", out],
                 ["compare", rid, "--out", out], ["report", "--out", out, "-f", "md"],
                 ["show", rid, "--out", out]):
        res = invoke(*args)
        assert res.exit_code == 0 and "Traceback" not in res.output, (args, res.output)
    assert files_under(out) == before


def test_a_readonly_index_is_a_one_line_error_for_writers(store, readonly_index):
    out, rid = store
    with pytest.raises(IndexUnavailable, match="index"):
        RunStore(out).record(rid, "done", {"name": "x"})
    with pytest.raises(StoreError, match="cannot write the index"):
        RunStore(out).open_index()


def _unwritable_below(monkeypatch, root: Path) -> None:
    """Folders at or below ``root`` report "Read-only file system" (io.unwritable_reason)."""
    real = io.unwritable_reason
    top = os.path.abspath(root)

    def reason(directory):
        d = os.path.abspath(directory)
        if d == top or d.startswith(top + os.sep):
            return "Read-only file system"
        return real(directory)

    monkeypatch.setattr(io, "unwritable_reason", reason)
    monkeypatch.setattr("prunebench.store.unwritable_reason", reason)


def test_run_into_a_readonly_store_is_refused_before_it_starts(store, monkeypatch):
    out, _ = store
    _unwritable_below(monkeypatch, out)
    before, names = files_under(out), sorted(os.listdir(out))
    line = one_line_error(invoke("run", TINY, "--out", out, "-q", "--set", "seed=5",
                                 "--set", FAST[0]))
    assert "Read-only file system" in line and str(out) in line
    assert files_under(out) == before and sorted(os.listdir(out)) == names  # no run folder
    # a run already finished there is still returned (nothing is written for it)
    res = invoke("run", TINY, "--out", out, "-q", "--set", FAST[0])
    assert res.exit_code == 0, res.output
    assert files_under(out) == before


def test_card_in_a_readonly_store_says_so_and_suggests_o(store, monkeypatch, tmp_path):
    out, rid = store
    _unwritable_below(monkeypatch, out)
    line = one_line_error(invoke("card", rid, "--out", out))
    assert "card.md" in line and "Read-only file system" in line and "-o PATH" in line
    assert not (out / rid / "card.md").exists()
    res = invoke("card", rid, "--out", out, "-o", tmp_path / "card.md")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "card.md").is_file() and (tmp_path / "card.json").is_file()


@contextlib.contextmanager
def readonly_mount(src: Path, dst: Path):
    """``dst``: a read-only bind mount of ``src`` (root and mount(8) needed; else skip)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root")
    dst.mkdir()
    ok = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True)
    if ok.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {ok.stderr.decode(errors='replace').strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield dst
    finally:
        subprocess.run(["umount", str(dst)], capture_output=True)


def test_a_real_readonly_mount(store, tmp_path):
    out, rid = store
    os.utime(out / rid / "result.json")  # the index is stale: readers must not write it
    before = files_under(out)
    with readonly_mount(out, tmp_path / "ro") as ro:
        assert io.unwritable_reason(ro) is not None
        for args in (["runs", "--out", ro], ["compare", "--out", ro],
                     ["report", "--out", ro, "-o", tmp_path / "r.html"],
                     ["card", rid, "--out", ro, "-o", tmp_path / "c.md"]):
            res = invoke(*args)
            assert res.exit_code == 0 and "Traceback" not in res.output, (args, res.output)
        assert "Read-only" in one_line_error(invoke("card", rid, "--out", ro))
        assert "Read-only" in one_line_error(invoke("report", "--out", ro, "-f", "html"))
        assert "Read-only" in one_line_error(invoke("run", TINY, "--out", ro, "-q",
                                                    "--set", "seed=5"))
    assert files_under(out) == before


# -- 8: bad -o paths -------------------------------------------------------------------------

def test_bad_output_paths_are_one_line_errors(store, tmp_path):
    out, rid = store
    work = tmp_path / "work"
    (work / "adir").mkdir(parents=True)
    (work / "afile").write_text("x")
    before = files_under(work)
    cases = [
        (["report", "--out", out, "-o", work / "adir"], "is a directory"),
        (["report", "--out", out, "-f", "html", "-o", work / "afile" / "x.html"],
         "is a file, not a folder"),
        (["report", "--out", out, "-f", "md", "-o", work / "afile" / "x.md"],
         "is a file, not a folder"),
        (["report", "--out", out, "-f", "csv", "-o", work / "afile" / "sub" / "x.csv"],
         "is a file, not a folder"),
        (["card", rid, "--out", out, "-o", work / "afile" / "x.md"], "is a file, not a folder"),
    ]
    for args, want in cases:
        line = one_line_error(invoke(*args))
        assert want in line, (args, line)
    assert files_under(work) == before
    assert sorted(p.name for p in work.iterdir()) == ["adir", "afile"]  # no figures/
    assert not list((work / "adir").iterdir())
    assert not (out / rid / "card.md").exists()


def test_check_output(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    assert io.check_output(tmp_path / "new" / "deeper" / "x.md") == \
        tmp_path / "new" / "deeper" / "x.md"
    assert not (tmp_path / "new").exists()  # checked, not made
    with pytest.raises(StoreError, match="is a directory"):
        io.check_output(tmp_path / "d")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        io.check_output(tmp_path / "f" / "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"]


# -- 9: describe --input-size ----------------------------------------------------------------

def test_describe_refuses_an_absurd_input_size():
    from prunebench.pruning.describe import describe

    with pytest.raises(RecipeError, match="4096"):
        describe("mlp", "synthetic", 0.5, input_size=100000)
    line = one_line_error(invoke("describe", "mlp", "--dataset", "synthetic",
                                 "--input-size", "100000"))
    assert "100000" in line and "4096" in line


def test_describe_out_of_memory_is_a_one_line_error(monkeypatch):
    import prunebench.models as models
    from prunebench.pruning.describe import describe

    def huge(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 1280000000000 bytes")

    monkeypatch.setattr(models, "build_model", huge)
    with pytest.raises(RecipeError, match="does not fit in memory"):
        describe("mlp", "synthetic", 0.5, input_size=64)


# -- 10: --nproc -----------------------------------------------------------------------------

def _no_launch(monkeypatch):
    from prunebench import distributed

    def launch(*args, **kwargs):
        raise AssertionError("no process may be started")

    monkeypatch.setattr(distributed, "launch", launch)


def test_nproc_beyond_the_machine_is_refused_before_launching(tmp_path, monkeypatch):
    _no_launch(monkeypatch)
    out = tmp_path / "runs"
    line = one_line_error(invoke("run", TINY, "--out", out, "--nproc", "100000"))
    assert "--nproc 100000" in line and "at most" in line
    assert not out.exists()


def test_nproc_beyond_the_batch_is_refused_before_launching(tmp_path, monkeypatch):
    from prunebench import distributed

    _no_launch(monkeypatch)
    monkeypatch.setattr(distributed, "max_local_procs", lambda device: (1000, "plenty"))
    out = tmp_path / "runs"
    line = one_line_error(invoke("run", TINY, "--out", out, "--nproc", "8",
                                 "--set", "data.batch_size=4"))
    assert "--nproc 8" in line and "batch_size 4" in line
    assert not out.exists()


def test_nproc_on_cuda_is_bounded_by_the_gpus(monkeypatch):
    import torch

    from prunebench import distributed
    from prunebench.recipe import load_recipe

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    recipe = load_recipe(TINY)
    distributed.check_nproc(2, [recipe], "cuda")
    with pytest.raises(RecipeError, match="GPU"):
        distributed.check_nproc(3, [recipe], "cuda")
    distributed.check_nproc(3, [recipe], "cpu")


# -- 11: study --workers / --cpus-per-run ----------------------------------------------------

@pytest.mark.parametrize(("kwargs", "want"), [
    ({"backend": "process", "workers": 2, "cpus_per_run": 1e9}, "cpus-per-run"),
    ({"backend": "serial", "cpus_per_run": float("inf")}, "cpus-per-run"),
    ({"backend": "ray", "cpus_per_run": 1e9}, "1024"),
    ({"backend": "process", "workers": 10**6}, "workers"),
])
def test_study_options_are_bounded(kwargs, want):
    from prunebench.studies.executor import check_options

    with pytest.raises(RecipeError, match=want):
        check_options(**kwargs)


def test_study_options_that_fit_pass():
    from prunebench.studies.executor import check_options

    check_options(backend="process", workers=2, cpus_per_run=1)
    check_options(backend="ray", workers=500, cpus_per_run=64)


def test_study_cpus_per_run_1e9_is_a_one_line_error(tmp_path):
    out = tmp_path / "runs"
    line = one_line_error(invoke("study", "lr-effect", "--workers", "2", "--cpus-per-run",
                                 "1e9", "--out", out))
    assert "cpus-per-run" in line
    assert not out.exists()


# -- 12: an index that is a folder -----------------------------------------------------------

def test_an_index_folder_stops_a_run_before_anything_is_written(tmp_path):
    out = tmp_path / "runs"
    (out / "index.sqlite").mkdir(parents=True)
    line = one_line_error(invoke("run", TINY, "--out", out, "-q", "--set", FAST[0]))
    assert "index" in line and "directory" in line
    assert sorted(p.name for p in out.iterdir()) == ["index.sqlite"]
    assert not list((out / "index.sqlite").iterdir())
    with pytest.raises(StoreError, match="directory"):
        prunebench.run(TINY, out=out, overrides=FAST)
    assert sorted(p.name for p in out.iterdir()) == ["index.sqlite"]


# -- 13: readers never make a store ----------------------------------------------------------

def test_readers_write_nothing_into_a_folder_that_is_not_a_store(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    assert RunStore(plain).list_runs() == []
    for args in (["runs", "--out", plain], ["compare", "--out", plain],
                 ["report", "--out", plain, "-o", tmp_path / "r.html"],
                 ["report", "--out", plain]):
        res = invoke(*args)
        assert res.exit_code in (0, 2) and "Traceback" not in res.output, (args, res.output)
    assert sorted(p.name for p in plain.iterdir()) == ["notes.txt"]


# -- 14: a recipe path that is a folder, a damaged stage metrics file -------------------------

def test_a_recipe_folder_is_named_as_a_folder(tmp_path):
    (tmp_path / "adir").mkdir()
    line = one_line_error(invoke("run", tmp_path / "adir", "--out", tmp_path / "runs"))
    assert "is a directory" in line and "does not exist" not in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("damage", [b"garbage{\n", GARBAGE, b"[1, 2]\n"])
def test_a_damaged_stage_metrics_file_rebuilds_the_stage(store, capsys, damage):
    out, rid = store
    want = json.loads((out / rid / "result.json").read_text())["test_acc"]
    (stage,) = (out / "stages").glob("pretrain-*")
    good = (stage / "metrics.jsonl").read_text()
    (stage / "metrics.jsonl").write_bytes(damage)
    # another run sharing the stage: rebuilt with a warning, never a failed run
    res = prunebench.run(TINY, out=out, overrides=[*FAST, "retrain.epochs=1"])
    assert res.status == "done"
    err = capsys.readouterr().err
    assert "unreadable stage metrics" in err and f"rebuilding stage {stage.name}" in err
    assert [json.loads(x)["test_acc"] for x in (stage / "metrics.jsonl").read_text().split(
        "\n") if x] == [json.loads(x)["test_acc"] for x in good.split("\n") if x]
    # the rebuilt stage gives the same numbers
    (out / rid / "result.json").unlink()
    again = prunebench.run(TINY, out=out, overrides=FAST)
    assert again.status == "done" and again.result["test_acc"] == want


def test_a_study_into_a_store_it_cannot_write_stops_before_anything_runs(tmp_path):
    from prunebench.cli import app as cli_app

    (tmp_path / "runs.txt").write_text("a file, not a store")
    res = CliRunner().invoke(cli_app, ["study", "lr-effect", "--preset", "cpu",
                                       "--out", str(tmp_path / "runs.txt")])
    assert res.exit_code == 2 and "runs.txt" in res.output and "error:" in res.output

"""Audit fixes of the recipe cross-validation and the LR calibration.

* crossval never declares a winner between cells that are not comparable: rates known
  before training are refused up front (exit 2, nothing written); after the runs, A and B
  must meet S3.2 under each recipe (matched seeds) or there is no verdict (exit code 3);
* a diverged crossval cell is reported (cell, seed, run, phase, epoch, reason), never
  ranked, never a traceback (exit code 4); every cell is validated before any runs;
* calibration: an LR where any seed diverged is not eligible (its curve entry says so), the
  chosen LR's test accuracy is summarised over finished runs only, and a method with no
  eligible LR gets no choice (``no_choice`` in the record, one-line error, exit code 4).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import prunebench
from prunebench.cli import app
from prunebench.compare import CompareError
from prunebench.compare.calibrate import (
    build_record,
    calibrate,
    calibrated_picks,
    expand_calibration,
    load_records,
)
from prunebench.compare.crossval import cell_fingerprints, crossval, verdict
from prunebench.errors import PrunebenchError
from prunebench.record import RunRecord

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny.yaml"
runner = CliRunner()
FT_A = "lr=0:0.01,1:0.001,epochs=2"
FT_B = "lr=0:0.05,epochs=2"
DIVERGES = "lr=0:1e9,epochs=2"


def invoke(*args: str):
    return runner.invoke(app, list(args))


def cv_args(a: str, b: str, ft_b: str, out: Path) -> list[str]:
    return ["crossval", "--a", a, "--b", b, "--ft-a", FT_A, "--ft-b", ft_b,
            "--base", str(TINY), "--out", str(out)]


def run_dirs(out: Path) -> list[Path]:
    return [p for p in out.glob("*") if p.is_dir() and len(p.name) == 12] if out.exists() else []


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit_cv")


# -- defect 1: cells of different rates / setups ---------------------------------------------


def test_crossval_refuses_rates_known_before_training(tmp_path):
    """One-shot layerwise filter pruning: the rates are known up front, so mismatched ones
    are refused before anything runs (the audit's command once said "consistent winner")."""
    res = invoke(*cv_args("method=l1,layers=0.2", "method=random,layers=0.8", FT_B,
                          tmp_path / "runs"))
    assert res.exit_code == 2, res.output
    assert "consistent winner" not in res.output and "Traceback" not in res.output
    line = " ".join(res.output.split())
    assert line.startswith("error: crossval: A and B prune to different rates")
    assert "S1" in line
    assert run_dirs(tmp_path / "runs") == []  # nothing trained, nothing written


def test_crossval_checks_the_setup_of_finished_cells(out):
    """Weight pruning: the rate is only known after the runs; the finished cells are
    fingerprinted and A vs B fails S1 under both recipes: no winner, exit code 3."""
    rep = crossval("granularity=weight,method=magnitude,layers=0.2", FT_A,
                   "granularity=weight,method=random,layers=0.8", FT_B, base=TINY, out=out)
    assert rep["exit_code"] == 3 and rep["valid"] is False
    assert rep["winner"] is None and rep["consistent"] is False and rep["highest"] is None
    assert rep["winners"] == {"FT_A": None, "FT_B": None}
    for ft in ("FT_A", "FT_B"):
        st = rep["setups"][ft]
        assert st["met"] is False and st["missing"] == "S1" and st["satisfied"] == []
        assert any(d.startswith("param sparsity") for d in st["differences"])
        assert "not comparable: S1 is not met" in rep["tests"][ft]["text"]
    assert rep["verdict"].startswith("no verdict: A vs B under FT_A does not meet S1")
    assert "param sparsity" in rep["verdict"]
    json.dumps(rep)  # JSON-able (no fingerprint objects)
    # what a study's crossval analysis can do with its stored cells: the same verdict
    ids = {(r["method"], r["ft"]): r["runs"] for r in rep["table"]}
    acc = {(r["method"], r["ft"]): [r["test_acc"]] for r in rep["table"]}
    again = verdict(acc, ids, rep["specs"], fps=cell_fingerprints(out, ids))
    assert again["exit_code"] == 3 and again["verdict"] == rep["verdict"]
    res = invoke(*cv_args("granularity=weight,method=magnitude,layers=0.2",
                          "granularity=weight,method=random,layers=0.8", FT_B, out))
    assert "Traceback" not in res.output and "consistent winner" not in res.output
    assert rep["verdict"] in " ".join(res.output.split())


def test_crossval_needs_s32_not_only_s1(out):
    """Same rate, same dense run, but A prunes during pretraining (P2F2) and B after it:
    S2 holds, S3.1 does not (different training epochs), so no verdict."""
    rep = crossval("method=l1,at_epoch=2", FT_A, "method=random", FT_B, base=TINY, out=out)
    assert rep["exit_code"] == 3 and rep["winner"] is None
    st = rep["setups"]["FT_A"]
    assert "S1" in st["satisfied"] and "S2" in st["satisfied"] and st["missing"] == "S3.1"
    assert "does not meet S3.1" in rep["verdict"] and "so not S3.2 either" in rep["verdict"]


def test_crossval_comparable_cells_still_get_a_verdict(out):
    rep = crossval("prune.method=l1", FT_A, "method=random", FT_B, base=TINY, out=out)
    assert rep["exit_code"] == 0 and rep["valid"] is True and rep["not_done"] == []
    assert all(rep["setups"][ft]["met"] for ft in ("FT_A", "FT_B"))
    assert "S3.2" in rep["setups"]["FT_A"]["satisfied"]
    assert rep["verdict"].startswith(("consistent winner", "inconsistent"))


# -- defect 2: a diverged cell -------------------------------------------------------------


def test_crossval_reports_a_diverged_cell(out):
    rep = crossval("prune.method=l1", FT_A, "method=random", DIVERGES, base=TINY, out=out)
    assert rep["exit_code"] == 4 and rep["valid"] is False
    assert rep["winner"] is None and rep["highest"] is None
    cells = {d["cell"]: d for d in rep["not_done"]}
    assert set(cells) == {"A+FT_B", "B+FT_B"}
    for d in cells.values():
        assert d["status"] == "diverged" and d["phase"] == "retrain" and d["epoch"] == 1
        assert "non-finite" in d["reason"] and d["seed"] == 0 and len(d["run"]) == 12
    assert rep["verdict"].startswith("no verdict: 2 of 4 runs did not finish")
    assert "A+FT_B seed 0" in rep["verdict"]
    table = {(r["method"], r["ft"]): r for r in rep["table"]}
    assert len(table) == 4 and table[("A", "FT_B")]["test_acc"] is None
    assert table[("A", "FT_B")]["text"] == "1 diverged"
    assert table[("A", "FT_A")]["test_acc"] is not None  # the finished cells are shown
    assert rep["tests"]["FT_B"]["diff"] is None
    json.dumps(rep)
    res = invoke(*cv_args("prune.method=l1", "method=random", DIVERGES, out))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    assert rep["verdict"] in " ".join(res.output.split())


def test_crossval_cli_exit_codes(out):
    """Runs are reused from the tests above (same store, same recipes)."""
    res = invoke(*cv_args("prune.method=l1", "method=random", DIVERGES, out))
    assert res.exit_code == 4, res.output
    res = invoke(*cv_args("granularity=weight,method=magnitude,layers=0.2",
                          "granularity=weight,method=random,layers=0.8", FT_B, out))
    assert res.exit_code == 3, res.output


def test_crossval_validates_every_cell_before_running(tmp_path):
    """A bad layer pattern in B once stopped crossval after A's two cells had run."""
    with pytest.raises(PrunebenchError, match="crossval cell B\\+FT_A: pattern 'nolayer\\*'"):
        crossval("method=l1", FT_A, "method=random,layers=nolayer*:0.5", FT_B, base=TINY,
                 out=tmp_path / "runs")
    assert run_dirs(tmp_path / "runs") == []


def test_verdict_with_unfinished_cells_and_without_fingerprints():
    nd = [{"cell": "B+FT_B", "method": "B", "ft": "FT_B", "seed": 0, "run": "0" * 12,
           "status": "diverged", "phase": "retrain", "epoch": 3, "reason": "non-finite"}]
    rep = verdict({("A", "FT_A"): [70.0], ("B", "FT_A"): [69.0], ("A", "FT_B"): [72.0]},
                  not_done=nd)
    assert rep["exit_code"] == 4 and rep["winner"] is None and rep["highest"] is None
    assert rep["not_done"] == nd and rep["tests"]["FT_B"]["diff"] is None
    assert rep["tests"]["FT_A"]["diff"] == pytest.approx(1.0)
    # without fingerprints the setups are reported as not checked
    ok = verdict({("A", "FT_A"): [70.0], ("B", "FT_A"): [69.0], ("A", "FT_B"): [72.0],
                  ("B", "FT_B"): [71.5]})
    assert ok["setups"] is None and "setups not checked" in ok["note"]
    assert ok["exit_code"] == 0 and ok["winner"] == "A"
    with pytest.raises(CompareError, match="cell B\\+FT_B has no result"):
        verdict({("A", "FT_A"): [70.0], ("B", "FT_A"): [69.0], ("A", "FT_B"): [72.0]})


# -- defect 3: calibration with diverged seeds -----------------------------------------------


def _points(lrs: list[float], seeds: int = 2):
    raw = yaml.safe_load(TINY.read_text())
    raw["seeds"] = seeds
    raw["retrain"]["calibrate"] = {"lrs": lrs}
    return expand_calibration(raw)


def _rec(rid: str, status: str = "done", val: float | None = None,
         test: float | None = None) -> RunRecord:
    extra = {"error": "non-finite training loss at retrain epoch 1",
             "diverged": {"phase": "retrain", "epoch": 1, "reason": "non-finite training loss"}
             } if status == "diverged" else {}
    return RunRecord.parse({"schema": 2, "id": rid, "status": status, "val_acc": val,
                            "test_acc": test, **extra})


def test_an_lr_with_a_diverged_seed_is_not_eligible():
    grid, sig, points = _points([0.1, 0.01])
    outcome = {(0.1, 0): ("done", 99.0, 98.0), (0.1, 1): ("diverged", None, None),
               (0.01, 0): ("done", 90.0, 89.0), (0.01, 1): ("done", 91.0, 90.0)}
    results = [_rec(f"{i:012x}", *outcome[(p.lr, p.seed)]) for i, p in enumerate(points)]
    rec = build_record(grid, sig, points, results)
    (m,) = rec["methods"]
    # 0.1 is best on its finished seed (99) but one seed diverged: not eligible
    assert m["chosen_lr"] == 0.01 and m["val"] == pytest.approx(90.5)
    assert m["test"]["n"] == 2 and m["test"]["mean"] == pytest.approx(89.5)
    curve = {c["lr"]: c for c in m["curve"]}
    bad = curve[0.1]
    assert bad["eligible"] is False and bad["diverged"] == 1 and bad["failed"] == 0
    assert bad["val"] is None and bad["test"] is None
    assert bad["not_eligible"] == "1 of 2 seeds diverged"
    assert {r["status"] for r in bad["runs"]} == {"done", "diverged"}
    assert curve[0.01]["eligible"] is True and curve[0.01]["not_eligible"] is None
    assert rec["no_choice"] == [] and "not eligible" in rec["selection"]
    json.dumps(rec)


def test_a_method_without_an_eligible_lr_gets_no_choice(tmp_path):
    grid, sig, points = _points([0.1, 0.01])
    results = [_rec(f"{i:012x}", *(("diverged", None, None) if p.seed == 1 else
                                   ("done", 90.0, 89.0))) for i, p in enumerate(points)]
    rec = build_record(grid, sig, points, results)
    assert rec["methods"] == []
    (nc,) = rec["no_choice"]
    assert nc["label"] == "l1" and "no eligible LR" in nc["reason"]
    assert "lr 0.1: 1 of 2 seeds diverged" in nc["reason"]
    assert all(c["val"] is None and c["diverged"] == 1 for c in nc["curve"])
    # its runs are still known as calibration runs (left out of compare), none is a pick
    prunebench.io.write_json(tmp_path / "calibrations" / f"{rec['key']}.json", rec)
    picks, members = calibrated_picks(tmp_path)
    assert picks == {} and members == {r.id for r in results}


def test_calibration_where_every_lr_diverges_is_one_line_exit_4(tmp_path):
    out = tmp_path / "runs"
    res = invoke("calibrate", str(TINY), "--out", str(out),
                 "--set", "retrain.calibrate={lrs: [1.0e+9]}")
    assert res.exit_code == 4, res.output
    line = " ".join(res.output.split())
    assert line.startswith("error: calibration: no calibrated result for l1: no eligible LR")
    assert "Traceback" not in res.output
    (rec,) = load_records(out)  # the record is written, clearly marked
    assert rec["methods"] == [] and rec["no_choice"][0]["curve"][0]["diverged"] == 1


def test_real_calibration_skips_an_lr_with_a_diverged_seed(tmp_path, monkeypatch):
    """End to end: seed 1 at LR 0.001 diverges, seed 0 there looks best on validation."""
    from prunebench import pipeline
    from prunebench.record import RunResult

    real = pipeline.run_cell

    def fake(recipe, out, **kw):
        res = real(recipe, out, **kw)
        if recipe.retrain.lr.startswith("0:0.001,"):
            if recipe.seed == 1:
                return RunResult(res.id, res.dir, {**_rec(res.id, "diverged").to_json()},
                                 res.recipe)
            return RunResult(res.id, res.dir, {**res.result, "val_acc": 100.0}, res.recipe)
        return res

    monkeypatch.setattr(pipeline, "run_cell", fake)
    raw = yaml.safe_load(TINY.read_text())
    raw["seeds"] = 2
    raw["retrain"]["calibrate"] = {"lrs": [0.01, 0.001]}
    rec = calibrate(raw, tmp_path / "runs")
    (m,) = rec["methods"]
    assert m["chosen_lr"] == 0.01 and m["test"]["n"] == 2
    assert all(r["test_acc"] is not None for c in m["curve"] if c["eligible"]
               for r in c["runs"])
    bad = next(c for c in m["curve"] if c["lr"] == 0.001)
    assert bad["eligible"] is False and bad["diverged"] == 1 and bad["val"] is None
    assert load_records(tmp_path / "runs") == [rec]

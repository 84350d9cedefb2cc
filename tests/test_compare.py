"""Fair comparison end to end on tiny real runs: fingerprints, compare (exit codes),
calibration (selects on validation only), crossval, cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import prunebench
from prunebench.cli import app
from prunebench.compare import (
    CompareError,
    compare,
    crossval,
    fingerprint,
    load_fingerprints,
    select_lr,
    strictest_setup,
)
from prunebench.compare.calibrate import expand_calibration, load_records, parse_grid
from prunebench.compare.comparison import parse_where
from prunebench.compare.crossval import parse_section, verdict
from prunebench.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny.yaml"
runner = CliRunner()

VARIANTS = {
    "base": [],
    "random": ["prune.method=random"],
    "lr": ["retrain.lr=0:0.001"],
    "epochs": ["retrain.epochs=3"],
    "seed1": ["seed=1"],
    "random_seed1": ["prune.method=random", "seed=1"],
    "layers": ["prune.layers=0.25"],
    "pretrain": ["pretrain.epochs=2"],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    ids = {k: prunebench.run(TINY, out=out, overrides=ov).id for k, ov in VARIANTS.items()}
    return out, ids


def _fp(out, rid):
    return fingerprint(RunStore(out).load(rid))


def test_fingerprint_from_a_real_run(store):
    out, ids = store
    row = RunStore(out).load(ids["base"])
    f = fingerprint(row)
    res = row["result"]
    assert f.run_id == ids["base"] and f.dataset == "synthetic"
    assert f.model == 'mlp{"depth":3,"width":32}'
    assert f.base == f"pretrain:{res['stages']['pretrain']}"
    assert f.data == res["data"]["checksum"] and "val_size=128" in f.split
    assert f.param_sparsity == pytest.approx(res["pruned"]["param_sparsity"])
    assert f.speedup == pytest.approx(res["pruned"]["speedup"])
    assert (f.retrain_epochs, f.retrain_lr) == (2, "0:0.01,1:0.001")
    assert (f.prune_schedule, f.prune_epochs, f.prune_lr) == ("oneshot", 0, "-")
    assert f.total_epochs == 5 and f.total_train_macs == res["train_macs"]["total"]
    recipe = dict(f.recipe)
    assert (recipe["data.batch_size"], recipe["data.augment"], recipe["precision"]) == (
        "64", "false", "fp32")
    assert {e.weight_decay for e in f.trajectory} == {5e-4} and len(f.trajectory) == 5
    assert f.granularity == "filter" and f.inherits and f.pruned_at is None
    assert f.seed == 0 and not f.calibrated and f.test_acc == res["test_acc"]


@pytest.mark.parametrize(
    "variant,expected",
    [("random", "S4.2"), ("lr", "S3.1"), ("epochs", "S2"), ("seed1", "S1"),
     ("pretrain", "S1"), ("layers", None)],
)
def test_real_runs_drop_to_the_right_setup(store, variant, expected):
    out, ids = store
    assert strictest_setup(_fp(out, ids["base"]), _fp(out, ids[variant])) == expected


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_compare_refuses_ranking_across_retraining_schedules(store):
    out, ids = store
    res = invoke("compare", ids["base"], ids["lr"], "--out", str(out))
    assert res.exit_code == 3, res.output
    assert "ranking not possible: S3.2 is not met" in res.output
    assert "retrain LR schedule: 0:0.01,1:0.001 vs 0:0.001" in res.output
    # the same pair is fine when the user only asks for S3.1
    assert invoke("compare", ids["base"], ids["lr"], "--out", str(out),
                  "--require", "S3.1").exit_code == 0


def test_compare_ranks_within_s32_with_seeds(store):
    out, ids = store
    res = invoke("compare", ids["base"], ids["seed1"], ids["random"], ids["random_seed1"],
                 "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["valid"] and len(rep["groups"]) == 1
    g = rep["groups"][0]
    assert g["setup"].startswith("S4.2")
    ranking = g["ranking"]
    assert [r["method"] for r in ranking] in (["l1", "random"], ["random", "l1"])
    assert all(r["test_acc"]["n"] == 2 and r["test_acc"]["std"] is not None for r in ranking)
    assert ranking[0]["test_acc"]["mean"] >= ranking[1]["test_acc"]["mean"]
    assert "p" in ranking[0]["vs_next"]
    text = invoke("compare", ids["base"], ids["random"], "--out", str(out))
    assert text.exit_code == 0 and "single seed" in text.output and "Ranking" in text.output


def test_compare_where_filters(store):
    out, _ = store
    fps = load_fingerprints(out, where=["prune.method=random"])
    assert {f.prune_method for f in fps} == {"random"} and len(fps) == 2
    fps = load_fingerprints(out, where=["retrain.lr=0:0.001", "seed=0"])
    assert len(fps) == 1 and fps[0].retrain_lr == "0:0.001"
    res = invoke("compare", "--where", "prune.method=random", "--out", str(out))
    assert res.exit_code == 0, res.output
    for bad in ("nokey", "foo.bar=1"):
        res = invoke("compare", "--where", bad, "--out", str(out))
        assert res.exit_code == 2 and "error:" in res.output
    assert invoke("compare", "--require", "S9", "--out", str(out)).exit_code == 2
    assert parse_where(["model.kwargs.depth=3"])[0][1] == 3
    with pytest.raises(CompareError):
        compare([])


def test_card_contents(store, tmp_path):
    out, ids = store
    res = invoke("card", ids["base"], "--out", str(out), "-o", str(tmp_path / "c.md"))
    assert res.exit_code == 0, res.output
    md = (tmp_path / "c.md").read_text()
    data = json.loads((tmp_path / "c.json").read_text())
    row = RunStore(out).load(ids["base"])
    result = row["result"]
    for needle in (
        "final-epoch", "never the best test epoch", result["stages"]["pretrain"],
        result["data"]["checksum"], "0:0.01,1:0.001", "0:0.1", "S3.2", "SX-B",
        f"prunebench run {out / ids['base'] / 'recipe.yaml'}", "torch", "python",
        "trainability accuracy", "best-validation epoch", "seed",
    ):
        assert needle in md, needle
    e = data["runs"][0]
    assert e["final_test_acc"] == result["test_acc"] and e["ta"] == result["ta"]
    assert e["base_model"]["dense_test_acc"] == result["dense"]["test_acc"]
    assert data["software"]["prunebench"] == prunebench.__version__
    # several runs (a study reuses this): one card, a comparison, mean ± std
    from prunebench.compare import build_card

    card = build_card([ids["base"], ids["seed1"], ids["random"]], out)
    assert card["comparison"] is not None and card["seeds"] == [0, 1]
    assert {m["method"] for m in card["methods"]} == {"l1", "random"}


# -- calibration -------------------------------------------------------------------------


def test_selection_uses_validation_never_test():
    # test and validation disagree: test would pick 0.1, validation picks 0.01
    rows = [{"lr": 0.1, "val": 80.0, "test": 99.0},
            {"lr": 0.01, "val": 91.0, "test": 60.0},
            {"lr": 0.001, "val": 85.0, "test": 70.0}]
    assert select_lr(rows) == 0.01
    # ties go to the smaller LR
    assert select_lr([{"lr": 0.1, "val": 90.0}, {"lr": 0.03, "val": 90.0}]) == 0.03
    with pytest.raises(CompareError, match="only 'val'"):
        select_lr(rows, metric="test")
    with pytest.raises(CompareError, match="never uses the test split"):
        parse_grid({"lrs": [0.1], "metric": "test"})


def test_calibration_shapes_and_errors():
    raw = {"retrain": {"epochs": 90, "lr": "0:0.01,60:0.001;warmup=2",
                       "calibrate": {"lrs": [0.1, 0.003]}}}
    _, sig, points = expand_calibration(raw)
    assert [p.recipe.retrain.lr for p in points] == ["0:0.1,60:0.01;warmup=2",
                                                     "0:0.003,60:0.0003;warmup=2"]
    assert "lrs=0.1,0.003" in sig and "LR*(0:1,60:0.1;warmup=2)" in sig
    raw["retrain"]["calibrate"] = {"lrs": [0.05], "schedule": "cosine", "final_lr": 0.0001}
    _, _, points = expand_calibration(raw)
    assert points[0].recipe.retrain.lr == "cosine:0.05:0.0001;warmup=2"
    with pytest.raises(CompareError, match="not both"):
        expand_calibration({**raw, "grid": {"retrain.lr": ["0:0.1"]}})
    with pytest.raises(CompareError, match="unknown key"):
        expand_calibration({"retrain": {"calibrate": {"lrs": [0.1], "grids": 1}}})


def test_real_calibration_and_mixing_refused(store):
    out, ids = store
    raw = prunebench.recipe.read_yaml(TINY)
    raw["retrain"]["calibrate"] = {"lrs": [0.01, 0.001], "schedule": "step", "metric": "val"}
    items = prunebench.run_all(raw, out)  # the api routes it to the calibration
    assert len(items) == 2
    assert ids["base"] in {r.id for _, r in items}  # same recipe, same (stored) run
    (rec,) = load_records(out)
    (m,) = rec["methods"]
    vals = {c["lr"]: c["val"] for c in m["curve"]}
    tests = {c["lr"]: c["test"] for c in m["curve"]}
    assert set(vals) == {0.01, 0.001} and all(v is not None for v in tests.values())
    best = max(vals.values())
    assert m["chosen_lr"] == min(lr for lr, v in vals.items() if v == best)
    assert m["test"]["mean"] == tests[m["chosen_lr"]]
    # the chosen run is fingerprinted as calibrated (retrain recipe = the grid)
    pick = m["chosen_runs"][0]
    fps = {f.run_id: f for f in load_fingerprints(out, [pick, ids["random"]])}
    assert fps[pick].calibrated and fps[pick].retrain_lr.startswith("calibrated(")
    assert fps[pick].chosen_lr == m["chosen_lr"]
    res = invoke("compare", pick, ids["random"], "--out", str(out))
    assert res.exit_code == 3
    assert ("calibrated and uncalibrated results are never ranked together"
            in " ".join(res.output.split()))
    # the CLI command prints the sensitivity curve
    res = invoke("calibrate", str(TINY), "--out", str(out), "--json",
                 "--set", "retrain.calibrate={lrs: [0.01, 0.001]}")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["methods"][0]["chosen_lr"] == m["chosen_lr"]


# -- crossval ------------------------------------------------------------------------------


def test_crossval_spec_syntax():
    assert parse_section("prune.method=l1,layers=*fc1:0.5,*fc2:0.3", "prune") == {
        "method": "l1", "layers": "*fc1:0.5,*fc2:0.3"}
    assert parse_section("lr=0:0.01,60:0.001,epochs=90", "retrain") == {
        "lr": "0:0.01,60:0.001", "epochs": 90}
    with pytest.raises(CompareError, match="belongs to section"):
        parse_section("retrain.lr=0:0.1", "prune")


def test_crossval_verdicts():
    consistent = verdict({("A", "FT_A"): [70.0], ("B", "FT_A"): [69.0],
                          ("A", "FT_B"): [72.0], ("B", "FT_B"): [71.5]})
    assert consistent["consistent"] and consistent["verdict"].startswith("consistent winner: A")
    mixed = verdict({("A", "FT_A"): [70.0], ("B", "FT_A"): [69.0],
                     ("A", "FT_B"): [71.0], ("B", "FT_B"): [73.0]})
    assert not mixed["consistent"]
    assert mixed["verdict"].startswith("inconsistent: the higher result weighs more")
    assert mixed["highest"] == {"method": "B", "ft": "FT_B", "test_acc": 73.0}


def test_crossval_real_runs(store):
    out, ids = store
    rep = crossval("prune.method=l1", "lr=0:0.01,1:0.001", "method=random", "lr=0:0.001",
                   base=TINY, out=out)
    runs = {(r["method"], r["ft"]): r["runs"][0] for r in rep["table"]}
    assert runs[("A", "FT_A")] == ids["base"] and runs[("B", "FT_A")] == ids["random"]
    assert runs[("A", "FT_B")] == ids["lr"]
    assert rep["verdict"].startswith(("consistent winner", "inconsistent"))
    res = invoke("crossval", "--a", "prune.method=l1", "--ft-a", "lr=0:0.01,1:0.001",
                 "--b", "method=random", "--ft-b", "lr=0:0.001", "--base", str(TINY),
                 "--out", str(out))
    assert res.exit_code == 0 and rep["verdict"] in res.output
    bad = invoke("crossval", "--a", "method", "--ft-a", "x=1", "--b", "method=l1",
                 "--ft-b", "lr=0:0.1", "--base", str(TINY), "--out", str(out))
    assert bad.exit_code == 2


def test_card_for_a_whole_study(tmp_path):
    import yaml

    from prunebench.compare.card import expand_study_ids, write_card
    from prunebench.studies import run_study

    spec = {
        "name": "card-study",
        "presets": {"cpu": {
            "base": yaml.safe_load(TINY.read_text()),
            "columns": {"key": "retrain.lr", "values": ["0:0.01", "0:0.001"]},
            "rows": [{"label": "l1", "set": {"prune.method": "l1"}}],
        }},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "runs"
    manifest = run_study(path, out, preset="cpu")
    ids = [c["run"] for c in manifest["cells"]]
    assert expand_study_ids(["card-study"], out) == ids
    assert expand_study_ids(["card-study-cpu", ids[0]], out) == ids
    md, js = write_card(["card-study"], out)
    text = md.read_text()
    assert all(i in text for i in ids) and js.is_file()

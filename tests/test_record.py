"""The typed run record and the audit's defects, on tiny real runs (issue 9).

Each test names the defect it pins down; each failed on the code before the record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import prunebench
from prunebench.compare import compare, differences, satisfied_setups, strictest_setup
from prunebench.compare.fingerprint import fingerprint
from prunebench.compare.setups import setup_label
from prunebench.errors import StoreError
from prunebench.recipe import build_recipe
from prunebench.record import SCHEMA, RunRecord, origin
from prunebench.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny.yaml"
# a dense schedule with real stages, so "following it" is a real constraint
DENSE = ["pretrain.epochs=4", "pretrain.lr=0:0.1,2:0.01"]


def _run(out, *sets):
    return prunebench.run(TINY, out=out, overrides=[*DENSE, *sets])


def _fp(out, rid):
    return fingerprint(RunStore(out).load(rid))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec")
    ids = {
        "w50": _run(out, "prune.granularity=weight", "prune.method=magnitude",
                    "prune.layers=0.5").id,
        "w90": _run(out, "prune.granularity=weight", "prune.method=magnitude",
                    "prune.layers=0.9").id,
        "base": _run(out).id,
        "orth": _run(out, "retrain.orth_reg=0.001").id,
        # Mystery 2 on a 4-epoch dense run `0:0.1,2:0.01`
        "scratch": _run(out, "prune.at_epoch=0", "retrain.init=scratch",
                        "retrain.budget=E").id,
        "p1f3": _run(out, "prune.at_epoch=1", "retrain.epochs=3",
                     "retrain.lr=0:0.1,1:0.01").id,  # follows the dense LR: S4.2
        "p1f3_hi": _run(out, "prune.at_epoch=1", "retrain.epochs=3",
                        "retrain.lr=0:0.1").id,  # a larger LR: SX-A
        "p2f2": _run(out, "prune.at_epoch=2", "retrain.epochs=2", "retrain.lr=0:0.01").id,
        "se_total": _run(out, "retrain.init=scratch", "retrain.budget=total").id,
    }
    return out, ids


def test_record_is_typed_and_versioned(store):
    out, ids = store
    raw = json.loads((out / ids["base"] / "result.json").read_text())
    assert raw["schema"] == SCHEMA
    rec = RunStore(out).result(ids["base"])
    assert isinstance(rec, RunRecord) and rec.finished
    assert rec.origin == f"pretrain:{rec.stages['pretrain']}"
    assert [s.phase for s in rec.trajectory] == ["pretrain", "retrain"]
    assert rec.epochs.total == 4 + 2 and rec.epochs.pretrain == 4
    assert rec.train_macs.total == sum(s.train_macs for s in rec.trajectory)


def test_defect1_masked_runs_compare_by_nonzero_sparsity(store):
    out, ids = store
    a, b = _fp(out, ids["w50"]), _fp(out, ids["w90"])
    assert a.granularity == b.granularity == "weight"
    # non-zero sparsity over all parameters (biases are not masked): ~47 % and ~85 %
    assert 40 < a.param_sparsity < 50 and 80 < b.param_sparsity < 90
    assert a.speedup is None and b.speedup is None
    assert strictest_setup(a, b) is None  # not even S1
    rep = compare([a, b])
    assert all(g["ranking"] is None for g in rep["groups"])
    assert "param sparsity" in " ".join(differences(a, b))


def test_defect2_scratch_vs_pxfy_meets_the_papers_setups(store):
    out, ids = store
    s = _fp(out, ids["scratch"])
    assert setup_label(satisfied_setups(s, _fp(out, ids["p1f3"]))) == "S4.2 +SX-A"
    hi = satisfied_setups(s, _fp(out, ids["p1f3_hi"]))
    assert "SX-A" in hi and "S3.2" not in hi
    # PxFy rows that follow the dense schedule are S4.2 with each other too
    assert "S4.2" in satisfied_setups(_fp(out, ids["p1f3"]), _fp(out, ids["p2f2"]))


def test_defect3_scratch_budget_excludes_pretraining(store):
    out, ids = store
    rec = RunStore(out).result(ids["scratch"])
    assert rec is not None and not rec.inherits
    assert rec.epochs.pretrain == 0 and rec.train_macs.pretrain == 0
    assert rec.epochs.total == rec.epochs.retrain == 4
    macs = rec.pruned.macs_pruned
    assert rec.train_macs.total == 4 * rec.data.train_images * macs * 3


def test_defect4_scratch_e_trains_the_dense_epochs(store):
    out, ids = store
    rec = RunStore(out).result(ids["scratch"])
    assert (rec.retrain.epochs, rec.retrain.lr) == (4, "0:0.1,2:0.01")  # K1, dense schedule
    total = RunStore(out).result(ids["se_total"])
    assert total.retrain.epochs == 4 + 2  # K1 + K2: the SX-A-fair variant
    assert "SX-A" in satisfied_setups(_fp(out, ids["base"]), _fp(out, ids["se_total"]))
    assert setup_label(satisfied_setups(_fp(out, ids["base"]), _fp(out, ids["scratch"]))) \
        == "S2"


def test_defect5_every_method_option_shows(store):
    out, ids = store
    a, b = _fp(out, ids["base"]), _fp(out, ids["orth"])
    assert a.config != b.config and a.label != b.label
    assert "retrain.orth_reg: 0.0 vs 0.001" in differences(a, b)


def test_schema1_results_still_load(store, tmp_path):
    """A result.json written before the record (no schema, scratch budget charged with
    the pretraining) loads, with the budget recomputed from the trajectory."""
    out, ids = store
    rec = RunStore(out).result(ids["scratch"])
    old = rec.to_json()
    for k in ("schema", "origin", "pruned_at", "trajectory", "code"):
        old.pop(k)
    old["pruned"].pop("granularity")
    old["epochs"] = {"pretrain": 0, "retrain": 4, "total": 99}
    recipe = RunStore(out).load(ids["scratch"])["recipe"]
    up = RunRecord.parse(old, recipe)
    assert up.epochs.total == 4 and up.trajectory == rec.trajectory
    # schema-1 keys had no data identity: the origin is named as those keys named it
    assert up.origin == origin(build_recipe(recipe), legacy=True) != rec.origin
    assert up.origin.startswith("pretrain:") and up.pruned.granularity == "filter"
    with pytest.raises(StoreError, match="result field"):
        RunRecord.parse({**old, "test_acc": "high"}, recipe)


def test_no_nan_in_json():
    rec = RunRecord(id="x", test_acc=float("nan"), val_acc=float("inf"))
    js = rec.to_json()
    assert js["test_acc"] is None and js["val_acc"] is None
    json.dumps(js, allow_nan=False)

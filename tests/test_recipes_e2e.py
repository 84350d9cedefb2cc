"""Every pruning schedule and retraining variant, end to end on the tiny recipe."""

from __future__ import annotations

import pytest
import torch

import prunebench
from prunebench.errors import RecipeError
from prunebench.recipe import build_recipe, load_recipe


def run(tiny, tmp_path, *overrides):
    return prunebench.run(tiny, out=tmp_path, overrides=list(overrides))


@pytest.mark.parametrize("method", ["l1", "l2", "random", "taylor_fo", "fpgm"])
def test_structured_criteria_from_a_recipe(tiny_recipe, tmp_path, method):
    res = run(tiny_recipe, tmp_path, f"prune.method={method}")
    assert res.status == "done" and res.result["pruned"]["speedup"] > 1


def test_global_scheme_and_targets(tiny_recipe, tmp_path):
    g = run(tiny_recipe, tmp_path, "prune.scheme=global", "prune.layers=0.5")
    assert g.result["pruned"]["param_sparsity"] > 0
    t = run(tiny_recipe, tmp_path, "prune.target_speedup=2.0")
    assert t.result["pruned"]["speedup"] == pytest.approx(2.0, rel=0.15)


@pytest.mark.parametrize("schedule", ["greg", "tpp"])
def test_regularised_schedules_record_their_phase(tiny_recipe, tmp_path, schedule):
    res = run(tiny_recipe, tmp_path, f"prune.schedule={schedule}", "prune.epochs=2",
              "prune.lr=0:0.01", "prune.reg_granularity=0.1", "prune.update_interval=1")
    p = res.result["pruned"]
    assert p["schedule"] == schedule and p["epochs"] == 2 and p["lr"] == "0:0.01"
    assert res.result["epochs"]["prune"] == 2 and res.result["train_macs"]["prune"] > 0
    phases = [m["phase"] for m in res.metrics()]
    assert phases.count("retrain") == 2


def test_regularised_schedule_needs_its_epochs():
    with pytest.raises(RecipeError, match="prune.epochs"):
        build_recipe({"prune": {"schedule": "greg"}})


def test_unstructured_masks_survive_retraining(tiny_recipe, tmp_path):
    res = run(tiny_recipe, tmp_path, "prune.granularity=weight", "prune.method=magnitude",
              "prune.layers=0.7")
    p = res.result["pruned"]
    assert p["speedup"] == pytest.approx(1.0) and p["nonzero_sparsity"] > 50
    final = torch.load(res.dir / "checkpoints" / "final.pt", weights_only=True)
    masks = torch.load(res.dir / "checkpoints" / "masks.pt", weights_only=True)
    for name, mask in masks.items():
        assert torch.all(final[name][~mask] == 0), name


def test_lottery_ticket_rounds(tiny_recipe, tmp_path):
    res = run(tiny_recipe, tmp_path, "prune.granularity=weight", "prune.method=magnitude",
              "prune.schedule=imp", "prune.rounds=2", "prune.layers=0.5",
              "prune.rewind_epoch=1")
    p = res.result["pruned"]
    assert p["rounds"] == 2 and p["imp_epochs"] == 2  # one round retrained epochs 1..3


def test_scratch_e_and_b_budgets(tiny_recipe, tmp_path):
    # Scratch-E: the dense model's epochs K1 (= 3), not K1 + K2; its budget excludes them
    e = run(tiny_recipe, tmp_path, "retrain.init=scratch", "retrain.budget=E")
    assert e.result["retrain"]["epochs"] == 3 and e.result["epochs"]["retrain"] == 3
    assert e.result["epochs"]["pretrain"] == 0 and e.result["epochs"]["total"] == 3
    b = run(tiny_recipe, tmp_path, "retrain.init=scratch", "retrain.budget=B")
    p = b.result["pruned"]
    expected = round(3 * p["macs_dense"] / p["macs_pruned"])
    assert b.result["retrain"]["epochs"] == expected
    t = run(tiny_recipe, tmp_path, "retrain.init=scratch", "retrain.budget=total_flops")
    assert t.result["retrain"]["epochs"] == round(3 * p["macs_dense"] / p["macs_pruned"] + 2)
    assert b.result["train_macs"]["total"] == sum(
        v for k, v in b.result["train_macs"].items() if k != "total")


def test_orthp_and_orth_reg(tiny_recipe, tmp_path):
    o = run(tiny_recipe, tmp_path, "retrain.init=orthp")
    assert o.result["retrain"]["init"] == "orthp"
    # retraining starts from exact isometries (relu MLP: gain sqrt(2), so W W^T = 2 I)
    start = o.result["isometry"]["start"]
    assert set(start) == {"fc1", "fc2", "fc3"}
    for layer in start.values():
        assert layer["sv_min"] == pytest.approx(2**0.5, rel=1e-5)
        assert layer["sv_max"] == pytest.approx(2**0.5, rel=1e-5)
    inherit = run(tiny_recipe, tmp_path)
    fc2 = inherit.result["isometry"]["start"]["fc2"]
    assert fc2["sv_max"] / fc2["sv_min"] > 1.5
    r = run(tiny_recipe, tmp_path, "retrain.orth_reg=0.001")
    assert r.status == "done"


def test_pxfy_rule_and_at_epoch(tiny_recipe, tmp_path):
    r = load_recipe(tiny_recipe, ["retrain.lr=pxfy:0.1", "retrain.epochs=90"])
    assert r.retrain.lr == "0:0.1,30:0.01,60:0.001,75:0.0001,83:1e-05"
    res = run(tiny_recipe, tmp_path, "prune.at_epoch=1")
    assert res.result["dense"]["epochs"] == 1


def test_trainability_is_recorded(tiny_recipe, tmp_path):
    res = run(tiny_recipe, tmp_path)
    ta = res.result["ta"]
    retrain = [m for m in res.metrics() if m["phase"] == "retrain"]
    assert ta["epochs"] == 1  # first LR stage of "0:0.01,1:0.001"
    assert ta["test"] == pytest.approx(retrain[0]["test_acc"])
    jsv = res.result["jsv"]
    assert jsv["mode"] == "eval" and jsv["dense"]["mean"] > 0 and jsv["pruned"]["mean"] > 0
    assert all("jsv_mean" in m for m in retrain)
    assert jsv["calls"] == 2 + len(retrain) and jsv["seconds_per_call"] > 0
    row = prunebench.runs(tmp_path)[0]
    assert row["ta"] == pytest.approx(ta["test"])
    assert row["jsv_pruned"] == pytest.approx(jsv["pruned"]["mean"])


def test_bf16_precision_runs_and_is_its_own_configuration(tiny_recipe, tmp_path):
    fp32 = run(tiny_recipe, tmp_path)
    bf16 = run(tiny_recipe, tmp_path, "precision=bf16")
    assert bf16.id != fp32.id and bf16.status == "done"
    assert bf16.result["stages"]["pretrain"] != fp32.result["stages"]["pretrain"]
    from prunebench.compare.fingerprint import fingerprint

    rows = {r["id"]: r for r in prunebench.runs(tmp_path)}
    assert dict(fingerprint(rows[bf16.id]).recipe)["precision"] == "bf16"
    assert dict(fingerprint(rows[fp32.id]).recipe)["precision"] == "fp32"

"""Comparison verdicts that once could be silently wrong (an audit's findings), each on
real tiny runs or on real fingerprints: runs repeating a configuration and seed, bases
that are different checkpoints under one path, calibration tuning runs left out visibly,
ties, store-order independence, unique labels, strict JSON, masked vs filter rates,
named diverged runs, and card prefixes."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import prunebench
from prunebench.cli import app
from prunebench.compare import compare
from prunebench.compare.card import build_card
from prunebench.compare.comparison import configurations, load_selection
from prunebench.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny.yaml"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("trust")
    ids = {
        "l1": prunebench.run(TINY, out=out).id,
        "l1_s1": prunebench.run(TINY, out=out, overrides=["seed=1"]).id,
        "rnd": prunebench.run(TINY, out=out, overrides=["prune.method=random"]).id,
        "rnd_s1": prunebench.run(TINY, out=out, overrides=["prune.method=random",
                                                           "seed=1"]).id,
        # repeats l1 seed 0 but for a measurement setting: another id, the same weights
        "l1_ta": prunebench.run(TINY, out=out, overrides=["measure.ta_epochs=1"]).id,
    }
    return out, ids


def test_a_run_repeating_a_configuration_and_seed_is_listed_not_fatal(store):
    out, ids = store
    assert ids["l1_ta"] != ids["l1"]
    res = invoke("compare", "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    (dup,) = rep["duplicates"]
    assert {dup["id"], dup["same_as"]} == {ids["l1"], ids["l1_ta"]}
    assert dup["test_acc"] == dup["same_as_test_acc"]  # the same weights
    (g,) = rep["groups"]
    assert sorted(len(m["seeds"]) for m in g["methods"]) == [2, 2]
    text = invoke("compare", "--out", str(out)).output
    assert "duplicates (one run per configuration and seed is compared)" in text


def test_one_base_path_holding_two_checkpoints_is_two_configurations(store, tmp_path):
    src, ids = store
    out = tmp_path / "runs"
    base = tmp_path / "base.pt"
    dense = RunStore(src).run_dir(ids["l1"]) / "dense.pt"
    if not dense.exists():  # where the dense model of a run lies
        dense = next(RunStore(src).root.glob("stages/pretrain-*/model.pt"))
    shutil.copy(dense, base)
    over = ["pretrain=null", f"base_model={base}"]
    a0 = prunebench.run(TINY, out=out, overrides=over).id
    b0 = prunebench.run(TINY, out=out, overrides=[*over, "prune.method=random"]).id
    state = torch.load(base, weights_only=True)
    torch.save({k: (v + 0.5 if v.is_floating_point() else v) for k, v in state.items()}
               if isinstance(state, dict) and all(torch.is_tensor(v) for v in state.values())
               else state, base)
    a1 = prunebench.run(TINY, out=out, overrides=[*over, "seed=1"]).id
    fps = {f.run_id: f for f in load_selection(out).fps}
    assert fps[a0].base != fps[a1].base  # two checkpoints
    assert fps[a0].config != fps[a1].config  # hence two configurations, never one mean
    assert fps[b0].base == fps[a0].base
    rep = compare(list(fps.values()))
    for g in rep["groups"]:
        for m in g["methods"]:
            bases = {fps[r].base for r in m["runs"]}
            assert len(bases) == 1, m


def test_ties_share_a_rank_and_name_every_best(store):
    out, ids = store
    fps = load_selection(out).fps
    l1 = [f for f in fps if f.run_id in (ids["l1"], ids["l1_s1"])]
    rnd = [dataclasses.replace(f, test_acc=g.test_acc)
           for f, g in zip(sorted((f for f in fps if f.run_id in (ids["rnd"], ids["rnd_s1"])),
                                  key=lambda f: f.seed),
                           sorted(l1, key=lambda f: f.seed), strict=True)]
    rep = compare([*l1, *rnd])
    ranking = rep["groups"][0]["ranking"]
    assert [r["rank"] for r in ranking] == [1, 1]
    from prunebench.compare.comparison import best_of

    assert len(best_of(ranking)) == 2


def test_grouping_does_not_depend_on_the_store_order(store):
    out, ids = store
    fps = [f for f in load_selection(out).fps if f.run_id in (ids["l1"], ids["rnd"])]
    third = dataclasses.replace(fps[0], run_id="c" * 12, config="c" * 10)
    spread = [dataclasses.replace(f, param_sparsity=v) for f, v in
              zip([*fps, third], [50.0, 50.9, 51.8], strict=True)]
    groups = []
    for order in (spread, spread[::-1], [spread[1], spread[0], spread[2]]):
        rep = compare(order)
        groups.append(sorted(sorted(m["runs"][0] for m in g["methods"])
                             for g in rep["groups"]))
    assert groups[0] == groups[1] == groups[2]


def test_labels_are_unique_even_when_cut(store):
    out, ids = store
    fps = [f for f in load_selection(out).fps if f.run_id in (ids["l1"], ids["rnd"])]
    long = "0:0.01,1:0.001,50:0.0001,70:0.0000"
    a = dataclasses.replace(fps[0], config="a" * 10, retrain_lr=long + "1")
    b = dataclasses.replace(fps[0], run_id="b" * 12, config="b" * 10,
                            retrain_lr=long + "2")
    labels = [c.label for c in configurations([a, b])]
    assert len(set(labels)) == 2, labels


def test_json_outputs_are_strict_json(store, tmp_path):
    out, ids = store
    fps = load_selection(out).fps
    l1 = [dataclasses.replace(f, test_acc=90.0) for f in fps
          if f.run_id in (ids["l1"], ids["l1_s1"])]
    rnd = [dataclasses.replace(f, test_acc=80.0) for f in fps
           if f.run_id in (ids["rnd"], ids["rnd_s1"])]
    rep = compare([*l1, *rnd])  # zero variance on both sides: Welch's t is infinite
    from prunebench.compare.cli import dumps

    text = dumps(rep)
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    from prunebench.io import read_json, write_json

    write_json(tmp_path / "x.json", {"t": float("inf"), "n": [float("nan")]})
    assert read_json(tmp_path / "x.json") == {"t": None, "n": [None]}


def test_masked_and_filter_rates_are_never_one_rate(store):
    out, ids = store
    (f,) = [f for f in load_selection(out).fps if f.run_id == ids["l1"]]
    masked = dataclasses.replace(f, run_id="d" * 12, config="d" * 10, granularity="weight",
                                 speedup=None)
    rep = compare([f, masked])
    assert len(rep["groups"]) == 2


def test_a_named_diverged_run_makes_compare_exit_4(store, tmp_path):
    out, ids = store
    bad = prunebench.run(TINY, out=out, overrides=["retrain.lr=0:1e9"])
    assert bad.status == "diverged"
    res = invoke("compare", ids["l1"], bad.id, "--out", str(out))
    assert res.exit_code == 4, res.output
    assert "cannot be compared" in res.output and bad.id in res.output
    by_filter = invoke("compare", "--out", str(out), "--where", "retrain.lr=0:1e9")
    assert by_filter.exit_code == 0 and "diverged (never ranked)" in by_filter.output


def test_card_names_a_run_once_by_prefix_and_id(store):
    out, ids = store
    card = build_card([ids["l1"][:4], ids["l1"]], out)
    assert [r["id"] for r in card["runs"]] == [ids["l1"]]


@pytest.mark.parametrize("args", [
    ["card", "[/x]"], ["compare", "[/x]"], ["compare", "--where", "[/x]=1"],
    ["compare", "--require", "[/x]"], ["report", "[/x]"], ["card", "[bold]abc"],
    ["report", "runs[red]"], ["calibrate", "[/x].yaml"],
])
def test_error_lines_show_bad_values_as_given(store, args):
    """Error messages are text, not rich markup: '[/x]' crashed rich, '[bold]abc' lost its
    brackets (the line named another value than the one given)."""
    out, _ = store
    res = invoke(*args, "--out", str(out)) if args[0] != "report" else invoke(*args)
    assert res.exit_code == 2, res.output
    bad = next(a for a in args[1:] if "[" in a).split("=")[0]
    assert bad in res.output and res.output.count("error:") == 1


def test_a_damaged_calibration_record_is_an_error_everywhere(store, tmp_path):
    """A damaged record once made report rank the LRs a calibration rejected (read as 'no
    calibrations') and crashed compare and card with a traceback."""
    out, ids = store
    copy = tmp_path / "store"
    shutil.copytree(out, copy)
    (copy / "calibrations").mkdir(exist_ok=True)
    for text in ('{"signature": "x", "meth', "[1, 2]", '{"signature": 1, "methods": []}'):
        (copy / "calibrations" / "abc.json").write_text(text)
        for args in (["compare", "--out", str(copy)], ["card", ids["l1"], "--out", str(copy)],
                     ["report", "--out", str(copy), "--runs", "-f", "md"]):
            res = invoke(*args)
            assert res.exit_code == 2, (args, res.output)
            assert "calibration record" in res.output and "abc.json" in res.output

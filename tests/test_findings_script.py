"""scripts/findings.py: verdict logic, formatting and the README block, on fake study data
(no training)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("findings_script", ROOT / "scripts" / "findings.py")
assert _spec is not None and _spec.loader is not None
findings = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(findings)


def fake_run(acc, ta=None, dense=88.0, jsv=None, sparsity=74.3, speedup=3.05, epochs=6):
    record = SimpleNamespace(jsv=jsv, retrain=SimpleNamespace(epochs=epochs))
    return SimpleNamespace(test_acc=acc, ta=ta, dense_acc=dense, param_sparsity=sparsity,
                           speedup=speedup, record=record)


class FakeStudy:
    """What the generator reads from report.data.StudyData: cells with .run and a few fields."""

    def __init__(self, name, table, ta=None, manifest=None):
        # table: {row: {column: [acc per seed]}}
        self.name, self.key = name, f"{name}-cpu"
        self.rows = list(table)
        self.columns = list(next(iter(table.values())))
        self.cells = []
        for row, cols in table.items():
            for col, accs in cols.items():
                for seed, acc in enumerate(accs):
                    t = (ta or {}).get(row, {}).get(col, [None] * len(accs))[seed]
                    self.cells.append(SimpleNamespace(row=row, column=col, seed=seed,
                                                      run=fake_run(acc, t)))
        self.seeds = sorted({c.seed for c in self.cells})
        self.manifest = manifest or {}
        self.description, self.note = f"{name} description", f"{name} cpu note"
        self.command = f"prunebench study {name} --preset cpu"
        self.path = Path("runs/findings/studies") / f"{self.key}.json"

    def runs(self, row=None, column=None):
        return [c.run for c in self.cells if (row is None or c.row == row)
                and (column is None or c.column == column)]


def test_compare_yes_no_mixed_single():
    c = findings.compare({0: 87.4, 1: 87.6}, {0: 85.4, 1: 85.2})
    assert c["word"] == "yes" and c["n"] == 2
    assert c["text"] == "yes, 87.50 ± 0.14 vs 85.30 ± 0.14, 2 seeds"
    assert findings.compare({0: 80.0, 1: 81.0}, {0: 82.0, 1: 83.0})["word"] == "no"
    mixed = findings.compare({0: 80.0, 1: 84.0}, {0: 82.0, 1: 83.0})
    assert mixed["word"] == "mixed"
    one = findings.compare({0: 87.45}, {0: 85.43})
    assert one["word"] == "yes" and "single seed: noisy" in one["text"]
    assert "87.45 vs 85.43" in one["text"]
    # only common seeds are paired
    assert findings.compare({0: 1.0, 1: 2.0}, {1: 1.0})["n"] == 1
    assert findings.compare({}, {0: 1.0})["word"] == "n/a"


def test_combine_words():
    y = findings.compare({0: 2.0, 1: 2.0}, {0: 1.0, 1: 1.0})
    n = findings.compare({0: 0.0, 1: 0.0}, {0: 1.0, 1: 1.0})
    m = findings.compare({0: 2.0, 1: 0.0}, {0: 1.0, 1: 1.0})
    assert findings.combine([("a", y), ("b", y)])["word"] == "yes"
    assert findings.combine([("a", n), ("b", n)])["word"] == "no"
    assert findings.combine([("a", y), ("b", n)])["word"] == "partly"
    assert findings.combine([("a", n), ("b", m)])["word"] == "mostly no (mixed seeds)"
    assert findings.combine([("a", y), ("b", m), ("c", n)])["word"] == "partly"
    assert findings.combine([("a", y), ("b", m)])["word"] == "mostly yes (mixed seeds)"
    text = findings.combine([("a", y), ("b", n)])["text"]
    assert "b no (" in text and text.endswith("2 seeds")
    single = findings.compare({0: 2.0}, {0: 1.0})
    assert findings.combine([("a", single), ("b", y)])["text"].endswith("single seed: noisy")


def test_fmt():
    assert findings.fmt({0: 87.449}) == "87.45"
    assert findings.fmt([1.0, 3.0]) == "2.00 ± 1.41"
    assert findings.fmt({}) == "-"
    assert findings.fmt([0.00247], -1) == "0.00247"
    assert findings.fmt([1.91, 1.93], -1) == "1.92 ± 0.0141"


LR_TABLE = {
    "Scratch (step)": {"PR 0.5": [86.9, 87.1], "PR 0.8": [80.8, 80.6]},
    "Scratch (cosine)": {"PR 0.5": [87.1, 87.0], "PR 0.8": [80.9, 81.0]},
    "L1, step, LR 0.001": {"PR 0.5": [85.4, 85.5], "PR 0.8": [75.5, 82.0]},
    "L1, step, LR 0.01": {"PR 0.5": [87.4, 87.6], "PR 0.8": [79.9, 80.1]},
    "L1, cosine, LR 0.001": {"PR 0.5": [85.6, 85.7], "PR 0.8": [75.9, 76.0]},
    "L1, cosine, LR 0.01": {"PR 0.5": [87.5, 87.7], "PR 0.8": [80.3, 80.5]},
}


def test_lr_effect_claims_and_mixed():
    st = FakeStudy("lr-effect", LR_TABLE)
    c = findings.lr_effect_claims(st)
    words = {label: part["word"] for label, part in c["final_parts"]}
    assert words == {"PR 0.5 step": "yes", "PR 0.8 step": "mixed", "PR 0.5 cosine": "yes",
                     "PR 0.8 cosine": "yes"}
    assert c["final"]["word"] == "mostly yes (mixed seeds)"
    assert "PR 0.8 step mixed" in c["final"]["text"]
    assert c["ta"]["word"] == "n/a"  # no TA in the fake data


def test_single_seed_verdict_says_noisy():
    table = {row: {col: accs[:1] for col, accs in cols.items()} for row, cols in LR_TABLE.items()}
    c = findings.lr_effect_claims(FakeStudy("lr-effect", table))
    assert c["final"]["word"] == "yes"  # seed 0 alone: LR 0.01 wins everywhere
    assert "single seed: noisy" in c["final"]["text"]


def test_catch_up_and_crossval():
    st = FakeStudy("lr-catch-up", {
        "LR 0.01": {"PR 0.8": [80.7, 80.9]},
        "LR 0.001": {"PR 0.8": [76.3, 76.0]},
        "LR 0.001, +4 first-stage epochs": {"PR 0.8": [77.8, 77.5]},
        "LR 0.001, +16 first-stage epochs": {"PR 0.8": [79.9, 79.0]},
    })
    c = findings.catch_up_claims(st)
    assert c["shrink"]["word"] == "yes" and c["caught"]["word"] == "no"
    assert "+4/+16 first-stage epochs" in c["shrink"]["text"]
    cv = FakeStudy("crossval", {"A: L1-norm": {"FT_A: x": [80.7], "FT_B: y": [76.3]},
                                "B: Taylor-FO": {"FT_A: x": [79.4], "FT_B: y": [64.5]}},
                   manifest={"analysis": {"verdict": "consistent winner: A"}})
    c = findings.crossval_claims(cv)
    assert c["ab"]["word"] == "yes" and c["verdict"] == "consistent winner: A"
    assert "single seed: noisy" in c["ab"]["text"]


def test_scratch_claims():
    cols = ["PR 0.3", "PR 0.6", "PR 0.9"]
    t = {
        "Scratch": [86.0, 84.4, 10.0],
        "P3F9 LR 0.005 (S4.2)": [85.0, 85.0, 73.8],
        "P6F6 LR 0.0005 (S4.2)": [85.5, 84.9, 57.0],
        "P9F3 LR 5e-5 (S4.2)": [85.9, 61.3, 13.8],
        "P3F9 LR 0.05 (SX-A)": [88.3, 86.5, 77.0],
        "P9F3 LR 0.005 (SX-A)": [86.7, 82.1, 71.6],
    }
    st = FakeStudy("scratch-vs-inherit", {r: {c: [v] for c, v in zip(cols, vs, strict=True)}
                                          for r, vs in t.items()})
    c = findings.scratch_claims(st)
    assert c["s42"]["word"] == "no"  # wins 0 / 2 / 3: the highest ratio wins most
    assert "PR 0.6: 2/3" in c["s42"]["text"]
    assert c["sxa"]["word"] == "partly"  # P9F3 SX-A loses at PR 0.6
    assert c["larger_lr"]["word"] == "yes"
    assert c["late"]["word"] == "yes" and c["late"]["row"] == "P9F3 LR 5e-5 (S4.2)"
    assert c["chance"] == ["PR 0.9"]


def test_markdown_table_and_section():
    st = FakeStudy("lr-effect", LR_TABLE)
    table = findings.grid_table(st)
    assert table.splitlines()[0] == "| variant | PR 0.5 | PR 0.8 |"
    assert "| L1, step, LR 0.01 | 87.50 ± 0.14 | 80.00 ± 0.14 |" in table
    assert "74.30 % / 3.05x" in table
    assert "2 seeds" in findings.caption(st)
    one = FakeStudy("x", {"r": {"c": [1.0]}})
    assert "single seed" in findings.caption(one)
    text = "\n".join(findings.lr_effect_section(st, {"lr-effect-accuracy.png": "x"}))
    assert "lr-effect description" in text and "figures/lr-effect-accuracy.png" in text
    rows = findings.summary_rows({"lr-effect": st})
    assert rows[0][1].startswith("mostly yes (mixed seeds)")


def test_readme_block_replaced_in_place(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copyfile(ROOT / "README.md", readme)
    before = readme.read_text()
    assert findings.DEMO_BEGIN in before and findings.DEMO_END in before
    block = findings.demo_block(FakeStudy("lr-effect", LR_TABLE), seed=0)
    after = findings.replace_block(before, block)
    assert after.count(findings.DEMO_BEGIN) == 1 and after.count(findings.DEMO_END) == 1
    assert "87.40 vs 85.40 % at PR 0.5" in after and "seed 0" in after
    assert "79.90 vs 75.50 % at PR 0.8" in after
    head, tail = before.split(findings.DEMO_BEGIN)[0], before.split(findings.DEMO_END)[1]
    assert after.startswith(head) and after.endswith(tail)
    assert findings.replace_block(after, block) == after  # idempotent
    with pytest.raises(ValueError):
        findings.replace_block("no markers", block)


def test_parse_seeds():
    names = findings.STUDIES
    assert set(findings.parse_seeds("2", names).values()) == {2}
    s = findings.parse_seeds("2,trainability=1", names)
    assert s["trainability"] == 1 and s["lr-effect"] == 2
    with pytest.raises(SystemExit):
        findings.parse_seeds("2,nope=1", names)


def test_trainability_claims():
    st = FakeStudy("trainability", {r: {"PR 0.8": [0.0, 0.0]} for r in
                                    ["LR 0.01, inherit", "LR 0.001, inherit",
                                     "LR 0.01, OrthP", "LR 0.001, OrthP"]})
    accs = {"LR 0.01, inherit": [81.8, 82.0], "LR 0.001, inherit": [69.6, 70.0],
            "LR 0.01, OrthP": [84.5, 84.4], "LR 0.001, OrthP": [84.2, 84.3]}
    for c in st.cells:
        orth = "OrthP" in c.row
        jsv = {"dense": {"mean": 1.91}, "pruned": {"mean": 1.0 if orth else 0.00247},
               "final": 2.0}
        c.run = fake_run(accs[c.row][c.seed], jsv=jsv)
    c = findings.trainability_claims(st)
    assert c["collapse"]["word"] == "yes" and "773x lower" in c["collapse"]["text"]
    assert c["restore"]["word"] == "yes"
    assert c["gap"]["word"] == "yes" and "gap 12.10 ± 0.14 -> 0.20 ± 0.14" in c["gap"]["text"]
    text = "\n".join(findings.trainability_section(st, {}))
    assert "| LR 0.01, inherit | PR 0.8 | 81.90 ± 0.14 | - | 0.00247 ± 0 | 2 ± 0 |" in text

"""Scratch-E/B epoch budgets and the PxFy retraining-schedule rule (arXiv 2301.05219)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunebench.errors import RecipeError
from prunebench.pruning.scratch import (
    pxfy_schedule,
    scratch_b_epochs,
    scratch_b_schedule,
    scratch_budget_epochs,
    scratch_e_epochs,
)
from prunebench.schedule import parse_schedule


def canon(text: str) -> str:
    return parse_schedule(text).canonical()


def test_scratch_e_is_the_dense_epochs():
    """Scratch-E (Liu et al. 2019; the paper's appendix C): K1 epochs, not K1 + K2."""
    assert scratch_e_epochs(200) == 200
    assert scratch_e_epochs(30) == 30
    with pytest.raises(RecipeError):
        scratch_e_epochs(-1)


def test_budgets():
    kw = {"dense_epochs": 200, "used_epochs": 200, "prune_epochs": 0, "retrain_epochs": 120,
          "f1": 125.49e6, "f2": 62.96e6}
    assert scratch_budget_epochs("E", **kw) == 200
    assert scratch_budget_epochs("B", **kw) == 399  # 200 * F1/F2
    assert scratch_budget_epochs("total", **kw) == 320  # the SX-A-fair K1 + K2
    assert scratch_budget_epochs("total_flops", **kw) == 519
    # PxFy: the pipeline used x = 30 pretraining epochs, then y = 90
    px = {**kw, "used_epochs": 30, "retrain_epochs": 90, "dense_epochs": 120}
    assert scratch_budget_epochs("total", **px) == 120
    assert scratch_budget_epochs("E", **px) == 120
    # a GReg phase counts at the dense cost
    assert scratch_budget_epochs("total", **{**kw, "prune_epochs": 10}) == 330
    with pytest.raises(RecipeError, match="bad retrain.budget 'X'"):
        scratch_budget_epochs("X", **kw)


def test_scratch_b_resnet56_and_formula():
    assert scratch_b_epochs(200, 125.49e6, 62.96e6) == 399
    assert scratch_b_epochs(200, 125.49e6, 62.96e6, 120) == 519
    assert scratch_b_epochs(200, 125.49, 62.96, 120) == 519  # only the ratio matters
    assert scratch_b_epochs(10, 2.0, 2.0, 5) == 15  # unpruned: Scratch-B == Scratch-E
    assert scratch_b_epochs(10, 3.0, 2.0, 0) == 15
    assert scratch_b_epochs(3, 1.0, 3.0, 0) == 1  # 1.0 rounds to nearest
    with pytest.raises(RecipeError):
        scratch_b_epochs(10, 1.0, 0.0, 5)


def test_scratch_b_schedule():
    out = scratch_b_schedule("0:0.1,100:0.01,150:0.001", 200, 519)
    assert out.canonical() == "0:0.1,260:0.01,389:0.001"
    same = scratch_b_schedule(parse_schedule("0:0.1,100:0.01"), 200, 200)
    assert same.canonical() == "0:0.1,100:0.01"
    cos = scratch_b_schedule("cosine:0.1:0", 200, 519)
    assert cos.canonical() == "cosine:0.1:0"
    assert cos.lr_at(519, 519) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("lr", "epochs", "expected"),
    [
        (0.1, 90, "0:1e-1,30:1e-2,60:1e-3,75:1e-4,83:1e-5"),  # P30F90 LR 0.1
        (0.01, 60, "0:1e-2,30:1e-3,45:1e-4,53:1e-5"),  # P60F60 LR 0.01
        (0.01, 90, "0:1e-2,30:1e-3,60:1e-4,75:1e-5"),  # P30F90 LR 0.01
        (0.001, 60, "0:1e-3,30:1e-4,45:1e-5"),  # P60F60 LR 0.001
        (1e-4, 30, "0:1e-4,15:1e-5"),  # P90F30 LR 1e-4
        (0.01, 30, "0:1e-2,15:1e-3,23:1e-4,27:1e-5"),  # P90F30 LR 0.01
        (1e-5, 10, "0:1e-5"),
    ],
)
def test_pxfy_paper_examples(lr: float, epochs: int, expected: str):
    assert pxfy_schedule(lr, epochs) == canon(expected)


def test_pxfy_few_epochs_and_errors():
    assert pxfy_schedule(0.1, 1) == "0:0.1"
    assert pxfy_schedule(0.1, 2) == canon("0:0.1,1:1e-5")
    assert pxfy_schedule(0.1, 3) == canon("0:0.1,2:1e-5")  # ceil(3/2) = 2 epochs at 0.1
    assert pxfy_schedule(0.1, 6) == canon("0:0.1,3:0.01,5:1e-5")
    assert pxfy_schedule(0.1, 120, max_stage=40) == canon(
        "0:0.1,40:0.01,80:0.001,100:1e-4,110:1e-5"
    )
    assert pxfy_schedule(3e-5, 10) == canon("0:3e-5,5:1e-5")
    with pytest.raises(RecipeError):
        pxfy_schedule(1e-6, 10)
    with pytest.raises(RecipeError):
        pxfy_schedule(0.1, 0)


@settings(max_examples=60, deadline=None)
@given(
    exponent=st.integers(-5, 0),
    mantissa=st.sampled_from([1.0, 2.0, 5.0]),
    epochs=st.integers(2, 400),
    max_stage=st.integers(1, 60),
)
def test_pxfy_properties(exponent: int, mantissa: float, epochs: int, max_stage: int):
    start = float(f"{mantissa * 10.0**exponent:g}")
    end = 1e-5
    text = pxfy_schedule(start, epochs, end_lr=end, max_stage=max_stage)
    sched = parse_schedule(text)
    assert text == sched.canonical()
    keys = [k for k, _ in sched.steps]
    lrs = [v for _, v in sched.steps]
    assert keys[0] == 0
    assert all(a < b for a, b in zip(keys, keys[1:], strict=False))
    assert keys[-1] < epochs
    assert lrs[0] == start
    assert lrs[-1] == pytest.approx(end, rel=1e-9)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    for a, b in zip(keys, keys[1:], strict=False):
        assert b - a <= max_stage

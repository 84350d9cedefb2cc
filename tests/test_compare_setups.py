"""Setup predicates: changing exactly one factor drops the setup to the right level, and
the trajectory rule judges scratch-vs-pipeline (Mystery 2) exactly as the paper does."""

from __future__ import annotations

from dataclasses import replace

import pytest

from prunebench.compare import CompareError, differences, satisfied_setups, strictest_setup
from prunebench.compare.fingerprint import Fingerprint, expand
from prunebench.compare.setups import (
    SETUPS,
    check_setup,
    group_satisfied,
    group_satisfies,
    satisfies,
    setup_label,
)
from prunebench.pruning.scratch import pxfy_schedule
from prunebench.record import Segment, budgets

DENSE = "0:0.1,100:0.01,150:0.001"
RETRAIN = "0:0.01,60:0.001,90:0.0001"
IMAGES, F1, F2 = 45000, 125_000_000, 62_500_000


def seg(phase, epochs, lr, *, first=0, span=None, macs=F2, wd=5e-4, momentum=0.9):
    return Segment(phase=phase, epochs=epochs, lr=lr, first=first,
                   span=epochs if span is None else span, momentum=momentum, nesterov=False,
                   weight_decay=wd, macs=macs, images=IMAGES)


def fp(segments=None, *, inherits=True, calibration=None, **kw) -> Fingerprint:
    """A fingerprint whose trajectory, totals and informational fields agree."""
    if segments is None:
        segments = [seg("pretrain", 200, DENSE, macs=F1), seg("retrain", 120, RETRAIN)]
    ep, macs = budgets(segments)
    retrain = [s for s in segments if s.phase == "retrain"]
    prune = [s for s in segments if s.phase == "prune"]
    base = dict(
        run_id="a", config="c1", label="l1", dataset="cifar10",
        split="val_size=5000,seed=0,train_subset=None", data="abc", model="resnet56",
        granularity="filter", param_sparsity=50.0, flops_sparsity=50.0, speedup=2.0,
        base="pretrain:p0", pruned_at=None, inherits=inherits,
        inherited_epochs=sum(s.epochs for s in segments if s.phase == "pretrain"),
        dense_acc=93.0, method=(("prune.method", "l1"),),
        recipe=(("data.augment", "true"), ("data.batch_size", "128"), ("precision", "fp32")),
        trajectory=expand(segments, calibration), total_epochs=ep.total,
        total_train_macs=macs.total, prune_method="l1", prune_schedule="oneshot",
        prune_epochs=ep.prune, prune_lr=prune[0].lr if prune else "-",
        retrain_epochs=ep.retrain, retrain_lr=retrain[0].lr if retrain else "-",
        retrain_init="inherit" if inherits else "scratch", seed=0,
        calibrated=calibration is not None, test_acc=93.0, val_acc=93.5,
    )
    base.update(kw)
    return Fingerprint(**base)  # type: ignore[arg-type]


BASE = fp()


def test_identical_setups_meet_everything():
    assert satisfied_setups(BASE, BASE) == list(SETUPS)
    assert strictest_setup(BASE, BASE) == "S4.2"
    assert differences(BASE, BASE) == []


PRE = seg("pretrain", 200, DENSE, macs=F1)


@pytest.mark.parametrize(
    "other,strictest,side",
    [
        (fp(dataset="cifar100"), None, ()),
        (fp(model="resnet20"), None, ()),
        (fp(split="val_size=0"), None, ()),
        (fp(data="other-copy"), None, ()),
        (fp(param_sparsity=60.0, speedup=2.5), None, ()),
        (fp(base="pretrain:p1"), "S1", ()),
        (fp([PRE, seg("retrain", 90, RETRAIN)]), "S2", ()),
        (fp([PRE, seg("retrain", 120, "0:0.1,60:0.01,90:0.001")]), "S3.1", ("SX-A", "SX-B")),
        (fp([PRE, seg("retrain", 120, RETRAIN, wd=1e-4)]), "S3.1", ("SX-A", "SX-B")),
        (fp([PRE, seg("retrain", 120, RETRAIN, momentum=0.5)]), "S3.1", ("SX-A", "SX-B")),
        (fp(recipe=(("data.augment", "false"), ("data.batch_size", "128"),
                    ("precision", "fp32"))), "S3.1", ("SX-A", "SX-B")),
        (fp(calibrated=True), "S3.1", ("SX-A", "SX-B")),
        (fp([PRE, seg("prune", 30, "0:0.01", macs=F1), seg("retrain", 120, RETRAIN)]),
         "S3.2", ()),
        # the same pruning epochs at another LR: S4.1
        ((fp([PRE, seg("prune", 30, "0:0.001", macs=F1), seg("retrain", 120, RETRAIN)]),
          fp([PRE, seg("prune", 30, "0:0.01", macs=F1), seg("retrain", 120, RETRAIN)])),
         "S4.1", ("SX-A", "SX-B")),
        # "compression OR speedup rate": one of the two is enough for S1
        (fp(param_sparsity=55.0), "S4.2", ("SX-A", "SX-B")),
        (fp(speedup=2.03, param_sparsity=50.5), "S4.2", ("SX-A", "SX-B")),
        # the method itself and the seed are what is compared, not the setup
        (fp(method=(("prune.method", "taylor_fo"),)), "S4.2", ("SX-A", "SX-B")),
        (fp(seed=1), "S4.2", ("SX-A", "SX-B")),
    ],
)
def test_one_factor_drops_to_the_right_level(other, strictest, side):
    a, b = other if isinstance(other, tuple) else (BASE, other)
    assert strictest_setup(a, b) == strictest
    sat = satisfied_setups(a, b)
    assert [s for s in ("SX-A", "SX-B") if s in sat] == list(side)
    assert satisfied_setups(b, a) == sat  # symmetric
    if strictest is not None:
        assert satisfies(strictest, a, b)
        nxt = SETUPS[SETUPS.index(strictest) + 1] if strictest != "S4.2" else None
        if nxt:
            assert not satisfies(nxt, a, b)


def test_unknown_values_never_match():
    """A missing rate or data checksum is not a default: nothing is comparable with it."""
    assert strictest_setup(BASE, fp(param_sparsity=None, speedup=None)) is None
    assert strictest_setup(BASE, fp(data=None)) is None
    assert strictest_setup(BASE, fp(base=None)) == "S1"
    # a masked run has no speedup: its sparsity alone decides the rate
    masked = fp(granularity="weight", param_sparsity=90.0, speedup=None)
    assert strictest_setup(masked, fp(granularity="weight", param_sparsity=50.0,
                                      speedup=None)) is None
    assert strictest_setup(masked, fp(granularity="weight", param_sparsity=90.5,
                                      speedup=None)) == "S4.2"


# -- Mystery 2: scratch vs PxFy (spec section 4) -------------------------------------------

IN100 = "0:0.1,30:0.01,60:0.001,90:0.0001,105:0.00001"


def scratch(lr=IN100, epochs=120):
    return fp([seg("retrain", epochs, lr)], inherits=False, label="l1+scratch")


def pxfy(x, lr, *, total=120, dense=IN100, dense_epochs=120):
    return fp([seg("pretrain", x, dense, span=dense_epochs, macs=F1),
               seg("retrain", total - x, pxfy_schedule(lr, total - x))], pruned_at=x)


def test_s42_rows_follow_the_scratch_schedule():
    """P30F90 LR 0.01, P60F60 LR 0.001, P90F30 LR 1e-4 keep the scratch LR epoch by epoch
    over 120 epochs: S4.2 with scratch (and with each other), SX-A; not SX-B (pretraining
    epochs cost dense FLOPs)."""
    rows = [pxfy(30, 0.01), pxfy(60, 0.001), pxfy(90, 1e-4)]
    for r in rows:
        assert setup_label(satisfied_setups(scratch(), r)) == "S4.2 +SX-A"
    assert group_satisfies("S4.2", [scratch(), *rows])


def test_sxa_rows_raise_the_lr():
    for r in (pxfy(30, 0.1), pxfy(90, 0.01)):
        sat = satisfied_setups(scratch(), r)
        assert "SX-A" in sat and "S3.2" not in sat and "SX-B" not in sat
        assert any("training epoch 31 after the shared pretraining differs" in d
                   or "training epoch 91" in d for d in differences(scratch(), r))


def test_sxb_same_total_flops():
    """Scratch for as many epochs as the pipeline's FLOPs buy: x*F1/F2 + y."""
    r = pxfy(30, 0.1)
    sb = scratch("cosine:0.1:0", 30 * F1 // F2 + 90)
    assert "SX-B" in satisfied_setups(sb, r)
    assert "SX-A" not in satisfied_setups(sb, r)


def test_scratch_budget_excludes_pretraining():
    s = scratch()
    assert s.total_epochs == 120 and s.inherited_epochs == 0
    assert s.total_train_macs == 120 * IMAGES * F2 * 3


def test_full_pipeline_vs_scratch_e_share_only_s2():
    """lr-effect: L1 + 120 retraining epochs after 200 pretraining epochs vs Scratch-E
    (200 epochs, the dense schedule): the same base, nothing more."""
    se = scratch(DENSE, 200)
    assert setup_label(satisfied_setups(BASE, se)) == "S2"
    total = scratch(DENSE, 320)  # the total-budget variant: SX-A
    assert "SX-A" in satisfied_setups(BASE, total)


def test_differences_standard_form():
    other = fp([PRE, seg("retrain", 120, "0:0.001")], seed=2,
               method=(("prune.layers", "0.3"),))
    d = differences(fp(method=(("prune.layers", "0.5"),)), other)
    assert d[:2] == [
        "retrain LR schedule: 0:0.01,60:0.001,90:0.0001 vs 0:0.001",
        "seed: 0 vs 2",
    ]
    assert "prune.layers: 0.5 vs 0.3" in d
    assert any(x.startswith("training epoch 1 after the shared pretraining differs: lr 0.01 "
                            "vs 0.001") for x in d)
    assert differences(BASE, fp(speedup=2.5)) == ["speedup: 2.00x vs 2.50x"]
    # a method option nobody put in a label still shows as a difference
    assert differences(fp(method=(("retrain.orth_reg", "0.0"),)),
                       fp(method=(("retrain.orth_reg", "0.0001"),))) == [
        "retrain.orth_reg: 0.0 vs 0.0001"]


def test_group_predicates_and_labels():
    b = replace(BASE, run_id="b", prune_method="random")
    c = fp([PRE, seg("retrain", 120, "0:0.001")], run_id="c")
    assert group_satisfies("S4.2", [BASE, b])
    assert not group_satisfies("S3.2", [BASE, b, c])
    assert group_satisfied([BASE, b, c]) == ["S1", "S2", "S3.1", "SX-A", "SX-B"]
    assert setup_label(group_satisfied([BASE, b, c])) == "S3.1 +SX-A +SX-B"
    assert setup_label([]) == "none (not even S1)"


def test_unknown_setup_is_a_one_line_error():
    assert check_setup("s3.2") == "S3.2"
    with pytest.raises(CompareError, match="unknown setup 'S5'"):
        check_setup("S5")

"""Setup predicates: changing exactly one factor drops the setup to the right level."""

from __future__ import annotations

from dataclasses import replace

import pytest

from prunebench.compare import CompareError, differences, satisfied_setups, strictest_setup
from prunebench.compare.fingerprint import Fingerprint
from prunebench.compare.setups import (
    SETUPS,
    check_setup,
    group_satisfied,
    group_satisfies,
    satisfies,
    setup_label,
)

BASE = Fingerprint(
    run_id="a", config="c1", label="l1", dataset="cifar10", split="val_size=5000",
    data="abc", model="resnet56", param_sparsity=50.0, flops_sparsity=50.0, speedup=2.0,
    base="pretrain:p0", dense_acc=93.0, prune_method="l1", prune_config='{"layers":0.5}',
    prune_schedule="oneshot", prune_epochs=0, prune_lr="-", retrain_epochs=120,
    retrain_lr="0:0.01,60:0.001,90:0.0001", retrain_init="inherit", batch_size=128,
    weight_decay=5e-4, momentum=0.9, nesterov=False, augment=True, precision="fp32",
    total_epochs=320, total_train_macs=10**12, seed=0, test_acc=93.0, val_acc=93.5,
)


def test_identical_setups_meet_everything():
    assert satisfied_setups(BASE, BASE) == list(SETUPS)
    assert strictest_setup(BASE, BASE) == "S4.2"
    assert differences(BASE, BASE) == []


@pytest.mark.parametrize(
    "change,strictest,side",
    [
        ({"dataset": "cifar100"}, None, ()),
        ({"model": "resnet20"}, None, ()),
        ({"split": "val_size=0"}, None, ()),
        ({"param_sparsity": 60.0, "speedup": 2.5}, None, ()),
        ({"base": "pretrain:p1"}, "S1", ()),
        ({"retrain_epochs": 90}, "S2", ("SX-A", "SX-B")),
        ({"retrain_lr": "0:0.1,60:0.01,90:0.001"}, "S3.1", ("SX-A", "SX-B")),
        ({"batch_size": 64}, "S3.1", ("SX-A", "SX-B")),
        ({"weight_decay": 1e-4}, "S3.1", ("SX-A", "SX-B")),
        ({"augment": False}, "S3.1", ("SX-A", "SX-B")),
        ({"calibrated": True}, "S3.1", ("SX-A", "SX-B")),
        ({"prune_epochs": 30}, "S3.2", ("SX-A", "SX-B")),
        ({"prune_lr": "0:0.001"}, "S4.1", ("SX-A", "SX-B")),
        ({"total_epochs": 300}, "S4.2", ("SX-B",)),
        ({"total_train_macs": int(1.05e12)}, "S4.2", ("SX-A",)),
        # within the 2% tolerances nothing drops
        ({"total_train_macs": int(1.01e12)}, "S4.2", ("SX-A", "SX-B")),
        ({"speedup": 2.03, "param_sparsity": 50.5}, "S4.2", ("SX-A", "SX-B")),
        # "compression OR speedup rate": one of the two is enough for S1
        ({"param_sparsity": 55.0}, "S4.2", ("SX-A", "SX-B")),
        # the method itself and the seed are what is compared, not the setup
        ({"prune_method": "taylor_fo"}, "S4.2", ("SX-A", "SX-B")),
        ({"seed": 1}, "S4.2", ("SX-A", "SX-B")),
    ],
)
def test_one_factor_drops_to_the_right_level(change, strictest, side):
    other = replace(BASE, **change)
    assert strictest_setup(BASE, other) == strictest
    sat = satisfied_setups(BASE, other)
    assert [s for s in ("SX-A", "SX-B") if s in sat] == list(side)
    assert satisfied_setups(other, BASE) == sat  # symmetric
    if strictest is not None:
        assert satisfies(strictest, BASE, other)
        nxt = SETUPS[SETUPS.index(strictest) + 1] if strictest != "S4.2" else None
        if nxt:
            assert not satisfies(nxt, BASE, other)


def test_differences_standard_form():
    other = replace(BASE, retrain_lr="0:0.001", seed=2, prune_config='{"layers":0.3}')
    assert differences(BASE, other) == [
        "prune.layers: 0.5 vs 0.3",
        "retrain LR schedule: 0:0.01,60:0.001,90:0.0001 vs 0:0.001",
        "seed: 0 vs 2",
    ]
    assert differences(BASE, replace(BASE, speedup=2.5)) == ["speedup: 2.00x vs 2.50x"]


def test_group_predicates_and_labels():
    b = replace(BASE, run_id="b", prune_method="random")
    c = replace(BASE, run_id="c", retrain_lr="0:0.001")
    assert group_satisfies("S4.2", [BASE, b])
    assert not group_satisfies("S3.2", [BASE, b, c])
    assert group_satisfied([BASE, b, c]) == ["S1", "S2", "S3.1", "SX-A", "SX-B"]
    assert setup_label(group_satisfied([BASE, b, c])) == "S3.1 +SX-A +SX-B"
    assert setup_label([]) == "none (not even S1)"


def test_unknown_setup_is_a_one_line_error():
    assert check_setup("s3.2") == "S3.2"
    with pytest.raises(CompareError, match="unknown setup 'S5'"):
        check_setup("S5")

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prunebench.errors import ScheduleError
from prunebench.schedule import parse_schedule

lrs = st.floats(min_value=1e-6, max_value=10, allow_nan=False, allow_infinity=False)


@st.composite
def step_specs(draw):
    keys = sorted(draw(st.sets(st.integers(1, 500), max_size=5)))
    values = [draw(lrs) for _ in range(len(keys) + 1)]
    return [(0, values[0]), *zip(keys, values[1:], strict=True)]


def test_paper_schedule():
    s = parse_schedule("0:0.01,60:0.001,90:0.0001")
    assert [s.lr_at(e, 120) for e in (0, 59, 60, 89, 90, 119)] == [
        0.01,
        0.01,
        0.001,
        0.001,
        0.0001,
        0.0001,
    ]
    assert s.first_stage_epochs(120) == 60
    assert s.canonical() == "0:0.01,60:0.001,90:0.0001"


@given(step_specs(), st.integers(0, 600))
def test_step_lr_is_the_largest_key_at_or_below_epoch(steps, epoch):
    spec = ",".join(f"{k}:{v!r}" for k, v in steps)
    s = parse_schedule(spec)
    expected = [v for k, v in steps if k <= epoch][-1]
    assert s.lr_at(epoch, 1000) == pytest.approx(expected)
    # the canonical form parses back to the same schedule
    assert parse_schedule(s.canonical()).canonical() == s.canonical()


@given(lrs, lrs, st.integers(1, 300))
def test_cosine_bounds(start, end, total):
    s = parse_schedule(f"cosine:{start!r}:{end!r}")
    assert s.lr_at(0, total) == pytest.approx(start)
    lo, hi = min(start, end), max(start, end)
    for e in range(0, total, max(1, total // 7)):
        assert lo - 1e-12 <= s.lr_at(e, total) <= hi + 1e-12
    assert s.first_stage_epochs(total) == max(1, math.ceil(total / 4))


def test_warmup_ramps_linearly():
    s = parse_schedule("0:0.1,10:0.01;warmup=4")
    assert [s.lr_at(e, 20) for e in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    assert s.canonical() == "0:0.1,10:0.01;warmup=4"


def test_numbers_and_mappings():
    assert parse_schedule(0.01).canonical() == "0:0.01"
    assert parse_schedule({"kind": "cosine", "start": 0.1, "end": 0.001}).canonical() == (
        "cosine:0.1:0.001"
    )


@pytest.mark.parametrize(
    ("spec", "token"),
    [
        ("0:0.1,x:0.01", "'x:0.01'"),
        ("0:0.1,60", "'60'"),
        ("5:0.1", "'5:0.1'"),
        ("0:0.1,50:0.01,40:0.001", "'40:0.001'"),
        ("0:abc", "'abc'"),
        ("cosine:0.1", "cosine"),
        ("0:0.1;warm=3", "'warm=3'"),
        ("0:-0.1", "'-0.1'"),
    ],
)
def test_parse_errors_name_the_bad_token(spec, token):
    with pytest.raises(ScheduleError) as info:
        parse_schedule(spec)
    assert token in str(info.value)
    assert "\n" not in str(info.value)


@given(st.text(alphabet="0123456789:,.;abcosine=-", max_size=30))
def test_parser_never_crashes(text):
    try:
        s = parse_schedule(text)
    except ScheduleError:
        return
    assert s.lr_at(0, 10) >= 0


def test_scaled_keys_for_scratch_b():
    s = parse_schedule("0:0.1,100:0.01,150:0.001").scaled(1.5)
    assert s.canonical() == "0:0.1,150:0.01,225:0.001"


# -- the first LR stage (trainability accuracy's N, paper Eq. 1) ------------------------------


def test_first_stage_ends_when_the_lr_changes_not_at_the_second_key():
    # a key that repeats the LR does not end the stage (the old rule gave 30)
    s = parse_schedule("0:0.01,30:0.01,60:0.001")
    assert s.first_stage(120) == (0, 60)
    assert s.first_stage_epochs(120) == 60


def test_first_stage_starts_after_warmup():
    # warm-up epochs are not part of the first stage (the old rule gave 60)
    assert parse_schedule("0:0.01,60:0.001;warmup=5").first_stage(120) == (5, 55)
    assert parse_schedule("0:0.01,60:0.001;warmup=5").first_stage_epochs(120) == 55
    # the stage's LR is the one in force when warm-up ends
    assert parse_schedule("0:0.1,3:0.05,10:0.01;warmup=5").first_stage(20) == (5, 5)
    assert parse_schedule("0:0.1,5:0.05,10:0.01;warmup=5").first_stage(20) == (5, 5)


def test_first_stage_without_an_lr_change_is_every_epoch_after_warmup():
    assert parse_schedule("0.01").first_stage(10) == (0, 10)
    assert parse_schedule("0:0.01,50:0.01;warmup=2").first_stage(80) == (2, 78)
    assert parse_schedule("0:0.1,200:0.01").first_stage(120) == (0, 120)  # change never reached
    assert parse_schedule("0:0.1,200:0.01;warmup=20").first_stage(120) == (20, 100)


def test_first_stage_when_warmup_takes_every_epoch():
    assert parse_schedule("0:0.1,2:0.01;warmup=5").first_stage(5) == (5, 0)
    assert parse_schedule("cosine:0.1:0;warmup=8").first_stage(4) == (8, 0)
    assert parse_schedule("0:0.1").first_stage(0) == (0, 0)


def test_first_stage_of_cosine_is_a_fraction_of_the_epochs_after_warmup():
    s = parse_schedule("cosine:0.01:0.0001")
    assert s.first_stage(120) == (0, 30)
    assert s.first_stage(120, 0.5) == (0, 60)
    assert s.first_stage(3, 0.01) == (0, 1)  # at least 1
    w = parse_schedule("cosine:0.01:0.0001;warmup=5")
    assert w.first_stage(120) == (5, 30)  # ceil(0.25 * 120), counted after warm-up
    assert w.first_stage(12, 1.0) == (5, 7)  # at most the epochs left
    assert parse_schedule("cosine:0.01:0;warmup=100").first_stage(120) == (100, 20)


@given(
    st.lists(st.sampled_from([0.1, 0.01, 0.001]), min_size=1, max_size=6),
    st.lists(st.integers(1, 40), min_size=5, max_size=5, unique=True),
    st.integers(0, 30),
    st.integers(0, 60),
)
def test_first_stage_is_the_run_of_the_first_post_warmup_lr(values, keys, warmup, total):
    """N = epochs from warm-up's end whose lr_at equals the first post-warm-up LR, up to
    the first change (repeated LRs are drawn often, to exercise keys that change nothing)."""
    epochs = [0, *sorted(keys)[: len(values) - 1]]
    spec = ",".join(f"{k}:{v}" for k, v in zip(epochs, values, strict=True))
    s = parse_schedule(f"{spec};warmup={warmup}" if warmup else spec)
    n = 0
    if warmup < total:
        first = s.lr_at(warmup, total)
        while warmup + n < total and s.lr_at(warmup + n, total) == first:
            n += 1
    assert s.first_stage(total) == (warmup, n)
    assert (n >= 1) == (warmup < total)

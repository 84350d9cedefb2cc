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

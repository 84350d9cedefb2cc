"""compare.stats against scipy reference values."""

from __future__ import annotations

import math

import pytest

from prunebench.compare.stats import betainc, summarize, t_cdf, t_ppf, welch

scipy_stats = pytest.importorskip("scipy.stats")
scipy_special = pytest.importorskip("scipy.special")


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 29, 100, 1.5, 3.7, 1000])
@pytest.mark.parametrize("q", [0.6, 0.9, 0.95, 0.975, 0.995, 0.9995, 0.025])
def test_t_quantile_matches_scipy(df, q):
    assert t_ppf(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), abs=1e-6, rel=1e-8)


@pytest.mark.parametrize("df", [1, 2.5, 9, 60])
@pytest.mark.parametrize("t", [-3.0, -0.4, 0.0, 0.7, 2.1, 12.0])
def test_t_cdf_and_betainc_match_scipy(df, t):
    assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-10)
    x = df / (df + t * t)
    assert betainc(df / 2, 0.5, x) == pytest.approx(scipy_special.betainc(df / 2, 0.5, x),
                                                    abs=1e-10)


def test_summary_mean_std_ci_match_scipy():
    xs = [70.12, 71.4, 69.85, 70.9, 70.33]
    s = summarize(xs)
    assert s.n == 5 and s.mean == pytest.approx(sum(xs) / 5)
    import numpy as np

    assert s.std == pytest.approx(np.std(xs, ddof=1))
    lo, hi = scipy_stats.t.interval(0.95, 4, loc=np.mean(xs), scale=scipy_stats.sem(xs))
    assert (s.ci_low, s.ci_high) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    assert "±" in s.text() and "95% CI" in s.text()


def test_single_seed_is_labelled():
    s = summarize([93.2])
    assert s.single_seed and s.std is None and s.ci_low is None
    assert s.text() == "93.20 (single seed)"
    assert s.to_dict()["label"] == "single seed"
    w = welch([93.2], [92.0, 92.5])
    assert w.p is None and "needs >= 2 seeds" in w.text()


@pytest.mark.parametrize(
    "a,b",
    [
        ([70.1, 70.5, 69.9], [69.0, 69.4, 69.8, 68.7]),
        ([93.0, 93.1], [92.0, 95.0]),
        ([1.0, 2.0, 3.0, 4.0, 5.0], [2.5, 2.6, 2.4]),
    ],
)
def test_welch_matches_scipy(a, b):
    ref = scipy_stats.ttest_ind(a, b, equal_var=False)
    w = welch(a, b)
    assert w.t == pytest.approx(ref.statistic, rel=1e-10)
    assert w.p == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)
    assert w.significant == (ref.pvalue < 0.05)
    assert ("not significant" in w.text()) == (ref.pvalue >= 0.05)


def test_identical_samples_not_significant():
    w = welch([1.0, 1.0], [1.0, 1.0])
    assert w.p == 1.0 and not w.significant and not math.isnan(w.diff)

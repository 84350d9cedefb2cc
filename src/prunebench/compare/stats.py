"""Small statistics without scipy: mean +- std, Student-t CIs, Welch's t-test.

The Student-t CDF comes from the regularised incomplete beta function (a Lentz continued
fraction, accurate to ~1e-12); its quantile is found by bisection on the CDF. scipy is a
dev dependency only: the tests check these numbers against it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.05


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
    ln += b * math.log1p(-x)
    front = math.exp(ln)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (possibly fractional) degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    return 1.0 - t_sf(t, df)


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on the CDF, to ~1e-12)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile {q!r} must be in (0, 1)")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof=1) and 95% t confidence interval of one configuration."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def single_seed(self) -> bool:
        return self.n == 1

    def text(self, digits: int = 2) -> str:
        if self.n == 1 or self.std is None:
            return f"{self.mean:.{digits}f} (single seed)"
        assert self.ci_low is not None and self.ci_high is not None
        return (
            f"{self.mean:.{digits}f} ± {self.std:.{digits}f} "
            f"(95% CI {self.ci_low:.{digits}f}..{self.ci_high:.{digits}f}, n={self.n})"
        )

    def to_dict(self) -> dict[str, object]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95": (
            None if self.ci_low is None else [self.ci_low, self.ci_high]),
            "label": "single seed" if self.n == 1 else f"{self.n} seeds"}


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean ± std (ddof=1) and a t-distribution confidence interval; one value: single seed."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("summarize needs at least one value")
    n = len(xs)
    mean = math.fsum(xs) / n
    if n == 1:
        return Summary(1, mean, None, None, None)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Welch:
    """Welch's unequal-variance t-test of mean(a) - mean(b)."""

    diff: float
    t: float | None
    df: float | None
    p: float | None

    @property
    def significant(self) -> bool | None:
        return None if self.p is None else self.p < ALPHA

    def text(self) -> str:
        if self.p is None:
            return f"diff {self.diff:+.2f} (no test: needs >= 2 seeds on both sides)"
        verdict = "significant" if self.significant else "not significant"
        return f"diff {self.diff:+.2f}, Welch p={self.p:.3g} ({verdict} at {ALPHA})"

    def to_dict(self) -> dict[str, object]:
        return {"diff": self.diff, "t": self.t, "df": self.df, "p": self.p,
                "significant": self.significant}


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """Two-sided Welch t-test (as ``scipy.stats.ttest_ind(a, b, equal_var=False)``)."""
    sa, sb = summarize(a), summarize(b)
    diff = sa.mean - sb.mean
    if sa.n < 2 or sb.n < 2:
        return Welch(diff, None, None, None)
    assert sa.std is not None and sb.std is not None
    va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
    if va + vb == 0.0:
        p = 1.0 if diff == 0 else 0.0
        return Welch(diff, None if diff == 0 else math.copysign(math.inf, diff), None, p)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
    return Welch(diff, t, df, min(1.0, 2.0 * t_sf(abs(t), df)))

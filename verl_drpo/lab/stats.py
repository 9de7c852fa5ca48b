"""Paired statistics, with no knowledge of the lab: the mean of paired differences with its 95 % Student-t
interval, the two-sided paired-t p-value in closed form, and Holm's and Benjamini-Hochberg's adjusted p-values."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Student-t 0.975 quantiles for 1..30 degrees of freedom (two-sided 95 % intervals); 1.96 beyond.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    if df < 1:
        raise ValueError("a confidence interval needs at least 2 paired values")
    return T975[df - 1] if df <= len(T975) else 1.96


@dataclass(frozen=True)
class Interval:
    """Mean of paired differences with its two-sided 95 % t-interval (sample std, n - 1)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def resolved(self) -> bool:
        return self.low > 0 or self.high < 0

    def text(self, fmt: str = "{:+.3f}") -> str:
        return f"{fmt.format(self.mean)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def paired_interval(xs: list[float], ys: list[float]) -> Interval:
    """95 % t-interval of mean(x_i - y_i) over pairs (the same seed)."""
    if len(xs) != len(ys):
        raise ValueError(f"paired values need equal lengths, got {len(xs)} and {len(ys)}")
    d = [x - y for x, y in zip(xs, ys)]
    if len(d) < 2:
        raise ValueError("a confidence interval needs at least 2 paired values")
    m = statistics.fmean(d)
    half = t975(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return Interval(m, m - half, m + half, len(d))


def t_two_sided_p(t: float, df: int) -> float:
    """Two-sided p-value of Student's t with an integer number of degrees of freedom, in closed form (Abramowitz &
    Stegun 26.7.3-4: a finite series in cos(theta), theta = atan(|t| / sqrt(df))); no scipy needed."""
    if df < 1:
        raise ValueError("a t-test needs at least 2 paired values")
    if math.isnan(t):
        return float("nan")
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, sin, cos = math.cos(theta) ** 2, math.sin(theta), math.cos(theta)
    if df % 2:  # odd
        series, term = (1.0 if df > 1 else 0.0), 1.0
        for k in range(1, (df - 1) // 2):  # 1, (2/3) c2, (2*4)/(3*5) c2^2, ... up to df - 3
            term *= c2 * (2 * k) / (2 * k + 1)
            series += term
        inside = 2 / math.pi * (theta + sin * cos * series)
    else:
        series, term = 1.0, 1.0
        for k in range(1, df // 2):  # 1, (1/2) c2, (1*3)/(2*4) c2^2, ... up to df - 2
            term *= c2 * (2 * k - 1) / (2 * k)
            series += term
        inside = sin * series
    return min(1.0, max(0.0, 1.0 - inside))


def paired_p(d: dict) -> float:
    """Two-sided p of the paired t-test behind an interval dict (mean, low, high, n): sd/sqrt(n) from the width."""
    n = d["n"]
    se = (d["high"] - d["low"]) / 2 / t975(n - 1)
    if se == 0:
        return 1.0 if d["mean"] == 0 else 0.0
    return t_two_sided_p(d["mean"] / se, n - 1)


def holm(ps: list[float], alpha: float = 0.05) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error): p_(i) * (m - i + 1), made monotone, capped at 1."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def benjamini_hochberg(ps: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false-discovery rate): p_(i) * m / i, made monotone from the top."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i], reverse=True)
    out, running = [0.0] * m, 1.0
    for pos, i in enumerate(order):
        rank = m - pos  # 1-based rank from the smallest
        running = min(running, ps[i] * m / rank)
        out[i] = min(1.0, running)
    return out


ALPHA = 0.05


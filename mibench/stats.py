"""Small statistics for tables: Student-t confidence intervals without SciPy."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def t_pdf(x: np.ndarray, df: float) -> np.ndarray:
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(logc - (df + 1) / 2 * np.log1p(x**2 / df))


def t_cdf(t: float, df: float, n: int = 4000) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (Simpson's rule on the density)."""
    if t == 0:
        return 0.5
    # substitute x = tan(u) so the heavy tail (df = 1, 2) integrates on a finite interval
    u = np.linspace(0.0, math.atan(abs(t)), n + 1)
    f = t_pdf(np.tan(u), df) / np.cos(u) ** 2
    h = u[1] - u[0]
    area = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    return 0.5 + math.copysign(area, t)


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (bisection on :func:`t_cdf`), e.g. t_quantile(0.975, 4) = 2.776."""
    if not 0 < p < 1:
        raise ValueError(f"p={p} is not in (0, 1)")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the Student-t ``level`` interval, n) over the finite values; half-width is
    NaN for fewer than two values."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(x[0]), math.nan, 1
    half = t_quantile(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return float(x.mean()), float(half), n

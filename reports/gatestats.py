"""The statistics of the CI gate: an exact Mann-Whitney U test (a rank test of a shift in
location, so of the medians the reports show), a prediction test of one night's median
against earlier nights' medians, and Benjamini-Hochberg / Holm adjustment across every test of one comparison.

Pure standard library (no scipy in the dependencies): the rank test enumerates every
split of the pooled repeats when there are at most EXACT_LIMIT of them, else draws MC_DRAWS
seeded splits; Student's t CDF comes from the regularized incomplete beta function."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from functools import lru_cache

EXACT_LIMIT = 20_000
MC_DRAWS = 10_000


@lru_cache(maxsize=64)
def _splits(n: int, k: int) -> tuple[tuple[int, ...], ...] | None:
    if math.comb(n, k) > EXACT_LIMIT:
        return None
    return tuple(itertools.combinations(range(n), k))


def _midranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def mann_whitney_p(a: list[float], b: list[float], seed: int = 0) -> float | None:
    """Two-sided p of the Mann-Whitney U (Wilcoxon rank-sum) test: does one side tend to lie
    above the other, i.e. a shift of the median. Exact over every split of the pooled repeats
    (midranks for ties) when they are few, else MC_DRAWS seeded splits. The smallest attainable
    p is 2 / C(n_a + n_b, n_b): 1/126 at 5 vs 5. None when a side has fewer than 2 values."""
    if len(a) < 2 or len(b) < 2:
        return None
    ranks = _midranks(list(a) + list(b))
    n, k = len(ranks), len(b)
    centre = k * (n + 1) / 2                  # the expected rank sum of b under no change
    observed = abs(sum(ranks[len(a):]) - centre)
    tol = 1e-9

    def stat(idx) -> float:
        return abs(sum(ranks[i] for i in idx) - centre)

    splits = _splits(n, k)
    if splits is not None:
        return sum(1 for s in splits if stat(s) >= observed - tol) / len(splits)
    rng = random.Random(seed)
    hits = sum(1 for _ in range(MC_DRAWS) if stat(rng.sample(range(n), k)) >= observed - tol)
    return (hits + 1) / (MC_DRAWS + 1)


# -- Student's t (for the between-night prediction test) ----------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    if math.isinf(t):
        return 0.0
    return _betai(df / 2.0, 0.5, df / (df + t * t))


def prediction_p(history: list[float], new: float) -> float | None:
    """Two-sided p that `new` comes from the distribution of `history` (earlier nights'
    medians), on logs (changes are relative): t = (x - mean) / (sd * sqrt(1 + 1/k)), k-1 df.
    None with fewer than 3 positive history values."""
    hist = [math.log(v) for v in history if v and v > 0]
    if len(hist) < 3 or not new or new <= 0:
        return None
    k, x = len(hist), math.log(new)
    mean, sd = statistics.fmean(hist), statistics.stdev(hist)
    if sd == 0:
        return 1.0 if x == mean else 0.0
    return t_two_sided_p((x - mean) / (sd * math.sqrt(1 + 1 / k)), k - 1)


# -- multiple comparisons -----------------------------------------------------------------------
def benjamini_hochberg(ps: list[float | None]) -> list[float | None]:
    """BH-adjusted p values (q values) over the testable ones; None stays None. Rejecting where
    q < alpha keeps the expected share of false flags at alpha, and the chance of any false
    flag at alpha when nothing changed."""
    idx = sorted((i for i, p in enumerate(ps) if p is not None), key=lambda i: ps[i])
    m, out, running = len(idx), [None] * len(ps), 1.0
    for rank in range(m, 0, -1):
        i = idx[rank - 1]
        running = min(running, ps[i] * m / rank)
        out[i] = min(1.0, running)
    return out


def holm(ps: list[float | None]) -> list[float | None]:
    """Holm step-down adjusted p values (family-wise error); None stays None."""
    idx = sorted((i for i, p in enumerate(ps) if p is not None), key=lambda i: ps[i])
    m, out, running = len(idx), [None] * len(ps), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


ADJUST = {"bh": benjamini_hochberg, "holm": holm}

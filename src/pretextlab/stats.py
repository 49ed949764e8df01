"""Statistics over seeds: mean, standard deviation, Student-t confidence intervals, paired differences.

A study repeats every run once per seed (new label subset, new initialisation), so the seeds are
the sample. Intervals are two-sided Student t intervals with n - 1 degrees of freedom, the usual
small-sample interval for a mean when the spread is estimated from the same few values. Method
differences are *paired* by seed (both methods saw the same label subset), which removes the
subset-to-subset variation they share (Dror et al. 2018, "The Hitchhiker's Guide to Testing
Statistical Significance in NLP", ACL). A difference counts as significant only when its paired
interval excludes zero; one seed gives no interval, so nothing is called significant or not.
"""

from __future__ import annotations

import math
import statistics
from functools import lru_cache
from typing import Any, Mapping, Sequence

CONFIDENCE = 0.95
RULE = (f"{CONFIDENCE:.0%} confidence intervals are Student t intervals over seeds (n - 1 degrees of freedom); "
        "a difference from the baseline is the mean of the per-seed differences (paired by seed: same label "
        "subset) and is called significant only when its interval excludes zero; one seed gives no interval")


def _t_central_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df, in closed form (Abramowitz & Stegun 26.7.3-4).

    With theta = atan(t / sqrt(df)) the probability is a finite series in cos(theta)^2: odd df
    add a term to 2 theta / pi, even df are a series times sin(theta). No special functions needed.
    """
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # 1, 3, 5, ...: (2/pi) (theta + sin cos (1 + 2/3 c2 + 2*4/(3*5) c2^2 + ...))
        term = series = 1.0
        for k in range(1, (df - 1) // 2):
            term *= 2 * k / (2 * k + 1) * c2
            series += term
        tail = math.sin(theta) * math.cos(theta) * series if df > 1 else 0.0
        return 2 / math.pi * (theta + tail)
    term = series = 1.0  # 2, 4, 6, ...: sin (1 + 1/2 c2 + 1*3/(2*4) c2^2 + ...)
    for k in range(1, df // 2):
        term *= (2 * k - 1) / (2 * k) * c2
        series += term
    return math.sin(theta) * series


@lru_cache(maxsize=None)
def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student t critical value: P(|T| <= t) = confidence, found by bisection."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    lo, hi = 0.0, 1.0
    while _t_central_mass(hi, df) < confidence:
        lo, hi = hi, 2 * hi
    for _ in range(200):  # monotone in t: halve until the bracket stops shrinking
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if _t_central_mass(mid, df) < confidence else (lo, mid)
    return hi


# Why a caution at n = 2: with one degree of freedom the interval is usually very wide, but when the two
# per-seed differences happen to agree it is narrow, and the std of two numbers says little about a third.
TWO_SEEDS = (f"two seeds give a t interval with one degree of freedom (multiplier {t_critical(1):.1f}): wide "
             "unless the two per-seed differences happen to agree, and then even a tiny difference is called "
             "significant; read such verdicts with care, a third seed settles them")


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float | None,
                                                                           tuple[float, float] | None]:
    """Mean, sample standard deviation and t confidence interval of the mean (None, None for n = 1)."""
    if not values:
        raise ValueError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    std = statistics.stdev(values)
    half = t_critical(len(values) - 1, confidence) * std / math.sqrt(len(values))
    return mean, std, (mean - half, mean + half)


def describe(values: Sequence[float]) -> dict[str, Any]:
    """summary.json's form: {"mean", "std": null for n = 1, "n", "ci95": [lo, hi] | null for n = 1}."""
    mean, std, ci = mean_ci(values)
    return {"mean": mean, "std": std, "n": len(values), "ci95": list(ci) if ci else None}


def paired_difference(baseline: Mapping[int, float], other: Mapping[int, float]) -> dict[str, Any]:
    """other minus baseline over the seeds both have, with its t interval and the significance verdict.

    "significant" is True or False only when the interval exists (two or more shared seeds), else None.
    """
    seeds = sorted(set(baseline) & set(other))
    if not seeds:
        raise ValueError("paired_difference needs at least one seed present in both")
    diffs = [other[s] - baseline[s] for s in seeds]
    mean, std, ci = mean_ci(diffs)
    return {"difference": mean, "std": std, "n": len(seeds), "ci95": list(ci) if ci else None,
            "significant": None if ci is None else ci[0] > 0 or ci[1] < 0, "seeds": seeds}

"""The report's rules on curves and differences, pure functions on numbers so they can be tested on hand-made curves.

Each rule is also stated in words (PLATEAU_RULE, T95_RULE), which summary.json and the report quote.
"""

from __future__ import annotations

from typing import Sequence

EQUAL_WITHIN = 0.005  # metric differences at most this large are reported as "about equal"
PLATEAU_TOL = 0.01
FRACTION_OF_BEST = 0.95
PLATEAU_RULE = (f"the plateau epoch is the first epoch e such that no later epoch's validation macro-F1 "
                f"exceeds the value at e by more than {PLATEAU_TOL} (absolute)")
T95_RULE = (f"time to {FRACTION_OF_BEST:.0%} is the first epoch whose validation macro-F1 reaches "
            f"{FRACTION_OF_BEST} x the run's own best, with the cumulative training wall time at that epoch")


def plateau_epoch(values: Sequence[float], tol: float = PLATEAU_TOL) -> int:
    """First epoch (1-based) after which the curve never rises more than `tol` above its value there.

    Why this rule: "the best epoch" is noisy and often the last one of a decaying learning rate;
    this one asks when further training stopped buying a meaningful gain.
    """
    if not values:
        raise ValueError("plateau_epoch needs at least one value")
    for i, v in enumerate(values):
        if max(values[i:]) - v <= tol + 1e-12:  # 1e-12: 0.515 - 0.505 is 0.01 in decimal, not in binary
            return i + 1
    return len(values)  # unreachable: the last epoch always qualifies


def time_to_fraction_of_best(values: Sequence[float], times: Sequence[float],
                             frac: float = FRACTION_OF_BEST) -> tuple[int, float]:
    """First epoch (1-based) whose value reaches frac x max(values), and the wall time at that epoch.

    For non-negative metrics that grow (macro-F1, accuracy); measures speed against the run's own
    best, so it says how fast a run got near where it ended up, not how good that was.
    """
    if not values or len(values) != len(times):
        raise ValueError("time_to_fraction_of_best needs equally long, non-empty values and times")
    threshold = frac * max(values)
    i = next(i for i, v in enumerate(values) if v >= threshold)
    return i + 1, float(times[i])


def verdict(diff: float, lower_is_better: bool, tol: float) -> str:
    """'pretrained', 'scratch' or 'equal' for a pretrained-minus-scratch difference: within `tol` is no winner."""
    if abs(diff) <= tol:
        return "equal"
    return "pretrained" if (diff < 0) == lower_is_better else "scratch"

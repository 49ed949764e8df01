"""The report's rules on curves and differences: pure functions on numbers, so they can be tested on hand-made
curves and a reader can recompute every verdict from a run's metrics.csv.

A curve is a list of (optimizer step, value) points in step order: one per validation evaluation of a
fine-tuning run (older runs evaluated once per epoch: their step is epoch x steps per epoch). The budget is
a run's planned optimizer steps. Each rule is also stated in words (the *_RULE texts), which summary.json
and the report quote, with the constants below in them.
"""

from __future__ import annotations

import statistics
from typing import Sequence

Curve = Sequence[tuple[float, float]]

EPS = 1e-12  # 0.515 - 0.505 is 0.01 in decimal, not in binary
SMOOTH_SPAN = 0.10  # losses: trailing mean over the evaluations of the last 10% of the budget
TARGET_FRACTION = 0.95  # macro-F1 target: this fraction of scratch's final validation macro-F1
PLATEAU_TOL = 0.01  # macro-F1: a rise above this is an improvement; a band this wide is flat
PLATEAU_SPAN = 0.20  # the share of the budget over which "still improving" and "plateau" are judged
MIN_DELTA = 0.001  # the plateau schedule's improvement (spelled again: the report never imports training)
SAME_SPEED = 0.05  # one seed: steps within 5% of the budget are "about equally fast"
EQUAL_WITHIN = 0.005  # one seed: metric differences at most this large are "about equal"

LOSS_RULE = (f"each loss point at step s is replaced by the mean of the evaluations at steps in (s - w, s], w = "
             f"{SMOOTH_SPAN:.0%} of the budget (an evaluation exactly w steps earlier is left out; a training-loss "
             "point is already the mean over the steps since the evaluation before); the "
             "common level is the final smoothed level of the arm that ends higher (the slower); each arm's time "
             "is the first optimizer step at which its smoothed curve is at or below that level; speed-up = "
             "scratch's steps / the pretrained arm's steps")
METRIC_RULE = (f"the target is {TARGET_FRACTION:.0%} of the scratch run's final validation macro-F1 (same seed); "
               "each arm's time is the first optimizer step whose validation macro-F1 is at or above the target "
               "(never reached: no such evaluation); speed-up = scratch's steps / the pretrained arm's steps")
AREA_RULE = ("normalised area = the trapezoid integral of validation macro-F1 over optimizer steps, from the first "
             "evaluation to the end of the budget (a run stopped early keeps its last value), divided by that span: "
             "the mean macro-F1 over training")
PLATEAU_RULE = (f"under a decaying schedule a curve is still improving at the end when its validation macro-F1 "
                f"rose by more than {PLATEAU_TOL} over the last {PLATEAU_SPAN:.0%} of the budget (last evaluation "
                f"minus the last one at or before that point); it plateaued at the first evaluation from which it "
                f"stays inside a band {PLATEAU_TOL} wide to the end, over at least {PLATEAU_SPAN:.0%} of the "
                "budget; otherwise it is not settled (it moved by more than the band without rising that much)")
STOP_RULE = (f"under the plateau schedule a run stops when validation macro-F1 has not beaten its best by more than "
             f"{MIN_DELTA} for `patience` evaluations; the arm that stopped first trained the fewer optimizer steps; "
             "its last improvement is the evaluation that set that best")
VERDICT_RULE = (f"with one seed, times at most {SAME_SPEED:.0%} of the budget apart count as equally fast and metric "
                f"differences of at most {EQUAL_WITHIN} as equal, and nothing is called significant; with several "
                "seeds every quantity is computed per seed and a difference (pretrained minus scratch, paired by "
                "seed) is called only when its 95% t interval excludes 0; a time is known to the nearest evaluation "
                "only (runs from before the step column evaluated once per epoch)")
TREND_RULE = ("a trend across fractions (the gain grows or shrinks as labels shrink) is stated only with at least 2 "
              "seeds, when every change of the gain from one fraction to the next smaller one, paired by seed, has a "
              "95% interval that excludes 0 and all changes point the same way")
RULES = {"losses": LOSS_RULE, "metric_speed": METRIC_RULE, "area": AREA_RULE, "plateau": PLATEAU_RULE,
         "plateau_schedule": STOP_RULE, "verdicts": VERDICT_RULE, "trend": TREND_RULE}
CONSTANTS = {"smooth_span": SMOOTH_SPAN, "target_fraction": TARGET_FRACTION, "plateau_tol": PLATEAU_TOL,
             "plateau_span": PLATEAU_SPAN, "min_delta": MIN_DELTA, "same_speed": SAME_SPEED,
             "equal_within": EQUAL_WITHIN}


def smooth(curve: Curve, window: float) -> list[tuple[float, float]]:
    """Each point replaced by the mean of the points in the `window` steps up to it: (s - window, s]."""
    return [(s, statistics.fmean(v for t, v in curve[:i + 1] if t > s - window)) for i, (s, _) in enumerate(curve)]


def first_step(curve: Curve, level: float, below: bool) -> float | None:
    """The first step at which the curve is at or below `level` (below=True) or at or above it; None: never."""
    return next((s for s, v in curve if (v <= level + EPS if below else v >= level - EPS)), None)


def speedup(scratch_step: float | None, pretrained_step: float | None) -> float | None:
    """Scratch's steps over the pretrained arm's: 2 = the pretrained arm needed half the steps."""
    if scratch_step is None or pretrained_step is None or pretrained_step <= 0:
        return None
    return scratch_step / pretrained_step


def loss_speed(scratch: Curve, pretrained: Curve) -> dict[str, float | str | None]:
    """How fast two (smoothed) loss curves fell: the common level is the final level of the arm that ends
    higher, and each arm's time is the first step at which it is at or below that level."""
    if not scratch or not pretrained:
        raise ValueError("loss_speed needs two non-empty curves")
    ends = {"scratch": scratch[-1][1], "pretrained": pretrained[-1][1]}
    slower = "pretrained" if ends["pretrained"] > ends["scratch"] else "scratch"
    level = ends[slower]
    a, b = first_step(scratch, level, True), first_step(pretrained, level, True)
    return {"level": level, "slower": slower, "scratch_step": a, "pretrained_step": b, "speedup": speedup(a, b)}


def metric_speed(scratch: Curve, pretrained: Curve, scratch_final: float,
                 fraction: float = TARGET_FRACTION) -> dict[str, float | None]:
    """Steps each arm needs to reach `fraction` x scratch's final value of a metric that grows (macro-F1)."""
    target = fraction * scratch_final
    a, b = first_step(scratch, target, False), first_step(pretrained, target, False)
    return {"target": target, "scratch_step": a, "pretrained_step": b, "speedup": speedup(a, b)}


def normalised_area(curve: Curve, budget: float) -> float:
    """The trapezoid area under the curve from its first point to the end of the budget (the last value held
    when the run stopped before it), divided by that span: the curve's mean over training."""
    if not curve:
        raise ValueError("normalised_area needs a non-empty curve")
    points = list(curve)
    if points[-1][0] < budget:
        points.append((budget, points[-1][1]))
    span = points[-1][0] - points[0][0]
    if span <= 0:
        return points[0][1]
    return sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in zip(points, points[1:])) / span


def plateau(curve: Curve, budget: float, tol: float = PLATEAU_TOL,
            span: float = PLATEAU_SPAN) -> dict[str, float | str | None]:
    """Under a decaying schedule: "plateau" (with its first step), "rising" (still improving at the end),
    "unsettled" or "short" (no evaluation as early as `span` x budget before the end), and the rise over
    that last span (last value minus the last value at or before its start)."""
    if not curve:
        raise ValueError("plateau needs a non-empty curve")
    end, window = curve[-1][0], span * budget
    starts = [i for i, (s, _) in enumerate(curve) if s <= end - window + EPS]
    if not starts or curve[starts[-1]][0] >= end:
        return {"state": "short", "step": None, "rise": None}
    rise = curve[-1][1] - curve[starts[-1]][1]
    for i in starts:
        values = [v for _, v in curve[i:]]
        if max(values) - min(values) <= tol + EPS:
            return {"state": "plateau", "step": curve[i][0], "rise": rise}
    return {"state": "rising" if rise > tol + EPS else "unsettled", "step": None, "rise": rise}


def last_improvement(curve: Curve, min_delta: float = MIN_DELTA) -> float:
    """The step of the evaluation that set the best the plateau schedule compares with: the last one that
    beat the best before it by more than min_delta (for a metric that grows)."""
    if not curve:
        raise ValueError("last_improvement needs a non-empty curve")
    best_step, best = curve[0]
    for s, v in curve[1:]:
        if v > best + min_delta:
            best_step, best = s, v
    return best_step


def sooner(scratch_step: float | None, pretrained_step: float | None, budget: float,
           same: float = SAME_SPEED) -> str:
    """Which arm got there first: "pretrained", "scratch", "same" (within `same` x budget) or "neither"."""
    if scratch_step is None and pretrained_step is None:
        return "neither"
    if pretrained_step is None:
        return "scratch"
    if scratch_step is None:
        return "pretrained"
    if abs(scratch_step - pretrained_step) <= same * budget + EPS:
        return "same"
    return "pretrained" if pretrained_step < scratch_step else "scratch"


def verdict(diff: float, lower_is_better: bool, tol: float) -> str:
    """'pretrained', 'scratch' or 'equal' for a pretrained-minus-scratch difference: within `tol` is no winner."""
    if abs(diff) <= tol:
        return "equal"
    return "pretrained" if (diff < 0) == lower_is_better else "scratch"


def trend(changes: Sequence[tuple[float, bool | None]]) -> str | None:
    """"grows" or "shrinks" when every change of the gain from one fraction to the next smaller one
    (difference, significant) is significant and points the same way; else None (no trend claimed)."""
    if not changes or any(sig is not True for _, sig in changes):
        return None
    if all(d > 0 for d, _ in changes):
        return "grows"
    if all(d < 0 for d, _ in changes):
        return "shrinks"
    return None

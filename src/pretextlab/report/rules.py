"""The report's rules on curves and differences: pure functions on numbers, so they can be tested on hand-made
curves and a reader can recompute every verdict from a run's metrics.csv.

A curve is a list of (optimizer step, value) points in step order: one per validation evaluation of a
fine-tuning run (older runs evaluated once per epoch: their step is epoch x steps per epoch). The budget is
a run's planned optimizer steps. Each rule is also stated in words (the *_RULE texts), which summary.json
and the report quote, with the constants below in them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

Curve = Sequence[tuple[float, float]]

EPS = 1e-12  # 0.515 - 0.505 is 0.01 in decimal, not in binary
LOSS_SMOOTH_SHARE = 0.05  # steps.csv's training loss: a centred running mean over this share of its values ...
LOSS_MIN_WINDOW = 3  # ... and at least this many
PLATEAU_TOL = 0.01  # the primary metric: a rise above this is an improvement; a band this wide is flat
PLATEAU_SPAN = 0.20  # the share of the budget over which "still improving" and "plateau" are judged
MIN_DELTA = 0.001  # the plateau schedule's improvement (spelled again: the report never imports training)
EQUAL_WITHIN = 0.005  # one seed: metric differences at most this large are "about equal"

PLATEAU_RULE = (f"under a decaying schedule a curve is still improving at the end when its validation metric "
                f"rose by more than {PLATEAU_TOL} over the last {PLATEAU_SPAN:.0%} of the budget (last evaluation "
                f"minus the last one at or before that point); it plateaued at the first evaluation from which it "
                f"stays inside a band {PLATEAU_TOL} wide to the end, over at least {PLATEAU_SPAN:.0%} of the "
                "budget; otherwise it is not settled (it moved by more than the band without rising that much)")
STOP_RULE = (f"under the plateau schedule a run stops when the validation metric has not beaten its best by more than "
             f"{MIN_DELTA} for `patience` evaluations; the arm that stopped first trained the fewer optimizer steps; "
             "its last improvement is the evaluation that set that best")
VERDICT_RULE = ("times at most one evaluation apart are equal (a time is known to the nearest evaluation only); "
                f"with one seed metric differences of at most {EQUAL_WITHIN} are equal and nothing is called "
                "significant; with several seeds every quantity is computed per seed and a difference (pretrained "
                "minus scratch, paired by seed) is called only when its 95% t interval excludes 0 (and, for times, "
                "it exceeds one evaluation)")
TREND_RULE = ("a trend across fractions (the gain grows or shrinks as labels shrink) is stated only with at least 2 "
              "seeds, when every change of the gain from one fraction to the next smaller one, paired by seed, has a "
              "95% interval that excludes 0 and all changes point the same way")


def centred_mean(values: Sequence[float], window: int) -> list[float]:
    """Each value replaced by the mean of the `window` values centred on it (fewer at the ends, so no value is
    invented): how the training loss logged every few steps is drawn and read."""
    k, out = window // 2, []
    for i in range(len(values)):
        part = values[max(0, i - k):i + k + 1]
        out.append(sum(part) / len(part))
    return out


def loss_window(n: int) -> int:
    """The centred mean's window for a run that logged n training-loss values: an odd count near
    LOSS_SMOOTH_SHARE of them, at least LOSS_MIN_WINDOW."""
    return max(LOSS_MIN_WINDOW, int(n * LOSS_SMOOTH_SHARE) // 2 * 2 + 1)


def first_step(curve: Curve, level: float, below: bool) -> float | None:
    """The first step at which the curve is at or below `level` (below=True) or at or above it; None: never."""
    return next((s for s, v in curve if (v <= level + EPS if below else v >= level - EPS)), None)


def speedup(scratch_step: float | None, pretrained_step: float | None) -> float | None:
    """Scratch's steps over the pretrained arm's: 2 = the pretrained arm needed half the steps."""
    if scratch_step is None or pretrained_step is None or pretrained_step <= 0:
        return None
    return scratch_step / pretrained_step


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


def sooner(scratch_step: float | None, pretrained_step: float | None, budget: float, same: float) -> str:
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


def length_verdict(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """LENGTH_RULE on the gains over scratch at each pretraining length ({epochs, gain, ci95, significant}, by
    epochs): "no gain", "saturated" or "still rising", and the length that pays (None with no gain)."""
    if not points:
        return {"verdict": None, "pays": None}
    best = max(points, key=lambda p: p["gain"])
    def called(p: Mapping[str, Any]) -> bool:  # the verdict rule: an interval over seeds, else EQUAL_WITHIN
        return p["gain"] > 0 and p["significant"] is True if p.get("significant") is not None \
            else p["gain"] > EQUAL_WITHIN

    if not any(called(p) for p in points):
        return {"verdict": "no gain", "pays": None}
    lo, hi = best["ci95"] if best.get("ci95") else (best["gain"] - EQUAL_WITHIN, best["gain"] + EQUAL_WITHIN)
    pays = min(p["epochs"] for p in points if p["gain"] >= lo - EPS)
    longest = max(p["epochs"] for p in points)
    return {"verdict": "saturated" if pays < longest else "still rising", "pays": pays}


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


# ---------------------------------------------------------------------------------------------------------
# The answer page's rules: speed read along the whole curve, the plateau before the rate falls, ties at the
# evaluation spacing. Each returns plain numbers that a sentence (answers.py) quotes and a reader can redo.

LEVELS = (0.25, 0.50, 0.75, 0.90)  # shares of the way from the common start to the better final value
TIE_SHARE = 0.02  # "ahead": the curves differ by more than this share of the start-to-final range
PLATEAU_GAIN = 0.005  # a new best of the validation metric must beat the old one by more than this ...
PLATEAU_WAIT = 0.15  # ... and a plateau is a best not beaten for this share of the run (at least 2 evaluations)

LEVELS_RULE = ("how fast a curve moved: the common start is the worse of the two networks' first values, the end the "
               "better of their final values; each network's time to a level (25, 50, 75 and 90% of the way from "
               "start to end) is the first step at which its curve is at or past that level; two times at most one "
               "evaluation apart are equal; ahead: the share of the steps both ran where one curve is better by more "
               f"than {TIE_SHARE:.0%} of the start-to-end range")
STABLE_PLATEAU_RULE = ("a network reached its plateau at the evaluation that set its best validation metric (the "
                       "task's primary: macro-F1, mean IoU) when no "
                       f"later evaluation beat that best by more than {PLATEAU_GAIN} for at least "
                       f"{PLATEAU_WAIT:.0%} of the run (and 2 evaluations), all before the learning rate starts to "
                       "fall: only then is the flattening the network's and not the schedule's")


def level_steps(scratch: Curve, pretrained: Curve, lower_is_better: bool, spacing: float,
                levels: Sequence[float] = LEVELS) -> dict[str, object]:
    """The steps at which each network first reaches common levels of a curve (see LEVELS_RULE), with a verdict
    per level: "pretrained", "scratch", "same" (at most `spacing` apart) or "neither"."""
    if not scratch or not pretrained:
        raise ValueError("level_steps needs two non-empty curves")
    worse, better = (max, min) if lower_is_better else (min, max)
    start, end = worse(scratch[0][1], pretrained[0][1]), better(scratch[-1][1], pretrained[-1][1])
    out = []
    for share in levels:
        level = start + share * (end - start)
        a, b = first_step(scratch, level, lower_is_better), first_step(pretrained, level, lower_is_better)
        out.append({"share": share, "level": level, "scratch_step": a, "pretrained_step": b,
                    "speedup": speedup(a, b), "sooner": sooner(a, b, 1.0, same=spacing)})
    return {"start": start, "end": end, "spacing": spacing, "levels": out,
            "ahead": ahead_shares(scratch, pretrained, lower_is_better, TIE_SHARE * abs(end - start))}


def ahead_shares(scratch: Curve, pretrained: Curve, lower_is_better: bool, tie: float) -> dict[str, float]:
    """The shares of the steps both curves span where the pretrained one is better, scratch is, or neither by
    more than `tie` (each interval between the merged steps judged at its midpoint, values interpolated)."""
    lo, hi = max(scratch[0][0], pretrained[0][0]), min(scratch[-1][0], pretrained[-1][0])
    grid = sorted({s for s, _ in (*scratch, *pretrained) if lo <= s <= hi} | {lo, hi})
    shares = {"pretrained": 0.0, "scratch": 0.0, "level": 0.0}
    if hi <= lo:
        return shares

    def at(curve: Curve, x: float) -> float:
        for (s0, v0), (s1, v1) in zip(curve, curve[1:]):
            if s0 <= x <= s1:
                return v0 if s1 == s0 else v0 + (v1 - v0) * (x - s0) / (s1 - s0)
        return curve[-1][1]

    for x0, x1 in zip(grid, grid[1:]):
        mid = (x0 + x1) / 2
        gain = at(scratch, mid) - at(pretrained, mid)  # > 0: pretrained lower
        gain = gain if lower_is_better else -gain
        who = "level" if abs(gain) <= tie + EPS else ("pretrained" if gain > 0 else "scratch")
        shares[who] += (x1 - x0) / (hi - lo)
    return shares


def stable_plateau(curve: Curve, run_steps: float, stable_end: float, gain: float = PLATEAU_GAIN,
                   wait: float = PLATEAU_WAIT) -> dict[str, float | str | None]:
    """STABLE_PLATEAU_RULE on a validation metric that grows: {"state": "plateau", "step", "best"} or
    {"state": "rising", "step": None, "best", "last_gain_step"} (still beating its best by more than `gain`
    within `wait` of the run before the rate falls at `stable_end`, or too few evaluations to tell). The
    plateau is the last new best, not the first pause: a curve that pauses and climbs again had not settled."""
    if not curve:
        raise ValueError("stable_plateau needs a non-empty curve")
    points = [(s, v) for s, v in curve if s <= stable_end + EPS]
    if not points:
        return {"state": "rising", "step": None, "best": None, "last_gain_step": None}
    best_step, best = points[0]
    for s, v in points[1:]:
        if v > best + gain + EPS:  # the last such step is where the curve reached the level it keeps
            best_step, best = s, v
    after = [t for t, _ in points if t > best_step]
    if after and after[-1] - best_step >= wait * run_steps - EPS and len(after) >= 2:
        return {"state": "plateau", "step": best_step, "best": best}
    return {"state": "rising", "step": None, "best": best, "last_gain_step": best_step}


LENGTH_RULE = ("how much pretraining pays: at each pretraining length the gain is the fine-tuned network's headline "
               "score minus scratch's, paired by seed with its 95% t interval; the length that pays is the "
               "shortest whose mean gain lies within the 95% interval of the best length's gain (with one seed: "
               f"within {EQUAL_WITHIN} of it). Saturated: that is not the longest length (longer pretraining "
               "added no more than the spread between seeds); still rising: only the longest reaches the best "
               "gain's interval; no gain: no length's gain is called higher than scratch by the verdict rule")
RULES = {"levels": LEVELS_RULE, "lengths": LENGTH_RULE, "plateau": STABLE_PLATEAU_RULE,
         "decaying_plateau": PLATEAU_RULE, "plateau_schedule": STOP_RULE, "verdicts": VERDICT_RULE, "trend": TREND_RULE}
CONSTANTS = {"levels": list(LEVELS), "tie_share": TIE_SHARE, "plateau_gain": PLATEAU_GAIN, "plateau_wait": PLATEAU_WAIT,
             "plateau_tol": PLATEAU_TOL, "plateau_span": PLATEAU_SPAN, "min_delta": MIN_DELTA,
             "equal_within": EQUAL_WITHIN, "loss_smooth_share": LOSS_SMOOTH_SHARE, "loss_min_window": LOSS_MIN_WINDOW}

"""The answer page's four sentences on hand-made curves: per-seed entries built the way answers.pair_answers
builds them (no run folders), fed to answers.fraction_answers, and the rules behind them (level_steps,
ahead_shares, stable_plateau) on their own. Evaluations every 10 steps over a 200-step run."""

from __future__ import annotations

from typing import Any

import pytest

from pretextlab.report import answers, rules

GAP = 10.0  # the evaluation spacing
RUN_STEPS = 200
STABLE_END = 160  # wsd: the rate starts to fall here
STEPS = list(range(10, RUN_STEPS + 1, 10))
ARM = "rotation"
Curve = list[tuple[float, float]]
QUESTIONS = ("losses", "metric", "plateau", "best")


def path(*points: tuple[float, float], shift: float = 0.0) -> Curve:
    """A curve through (step, value) corners, linear between them and flat outside, evaluated every 10 steps;
    shift > 0 moves it that many steps later (the value at a step is the unshifted one `shift` steps before)."""
    def at(x: float) -> float:
        if x <= points[0][0]:
            return points[0][1]
        for (s0, v0), (s1, v1) in zip(points, points[1:]):
            if x <= s1:  # a corner's value exactly, so a peak is one evaluation's
                return v1 if x == s1 else v0 + (v1 - v0) * (x - s0) / (s1 - s0)
        return points[-1][1]
    return [(float(s), at(s - shift)) for s in STEPS]


def ramp(lo: float, hi: float, t0: float, t1: float, shift: float = 0.0) -> Curve:
    """lo up to step t0, a straight rise to hi at step t1, then hi."""
    return path((t0, lo), (t1, hi), shift=shift)


def end_of(curve: Curve, final: float | None = None) -> dict[str, float | None]:
    best = max(v for _, v in curve)
    return {"final": curve[-1][1] if final is None else final, "max": best,
            "max_step": next(s for s, v in curve if v == best), "test": None}


def seed_entry(a_f1: Curve, b_f1: Curve, finals: tuple[float, float] | None = None,
               decaying: bool = False) -> dict[str, Any]:
    """One seed as pair_answers builds it (a: scratch, b: pretrained); the losses mirror macro-F1."""
    a_loss, b_loss = ([(s, 2.0 * (1.0 - v)) for s, v in c] for c in (a_f1, b_f1))

    def plateau_of(c: Curve) -> dict[str, Any]:
        if decaying:
            return {**rules.plateau(c, RUN_STEPS), "rule": "decaying"}
        return {**rules.stable_plateau(c, RUN_STEPS, STABLE_END), "rule": "stable", "until": STABLE_END}

    p = {"scratch": plateau_of(a_f1), "pretrained": plateau_of(b_f1)}
    fa, fb = finals if finals else (None, None)
    return {"train_loss": rules.level_steps(a_loss, b_loss, True, GAP),
            "val_loss": rules.level_steps(a_loss, b_loss, True, GAP),
            "metric": rules.level_steps(a_f1, b_f1, False, GAP),
            "plateau": {**p, "first": rules.sooner(p["scratch"]["step"], p["pretrained"]["step"], 1.0, same=GAP)},
            "end": {"scratch": end_of(a_f1, fa), "pretrained": end_of(b_f1, fb)}}


def entry(*seeds: dict[str, Any], schedule: str = "wsd") -> dict[str, Any]:
    by_seed = dict(enumerate(seeds))
    return {"seeds": list(by_seed), "budget": RUN_STEPS, "schedule": schedule,
            "stable_end": STABLE_END if schedule == "wsd" else None, "spacing": GAP, "by_seed": by_seed,
            "over_seeds": answers.over_seeds(by_seed, GAP)}


def sentences(e: dict[str, Any]) -> dict[str, str]:
    """fraction_answers' four sentences, keyed losses / metric / plateau / best."""
    out = answers.fraction_answers({"answers": {"0.1": {ARM: e}}}, "0.1", ARM)
    assert len(out) == 4
    return dict(zip(QUESTIONS, (s for _, s in out)))


def verdicts(e: dict[str, Any], key: str = "metric") -> list[str]:
    return [lv["verdict"] for lv in e["over_seeds"][key]["levels"]]


# ---------------------------------------------------------------------------------------------------------
# The sentences


def test_a_faster_arm_in_every_seed_is_named_first_at_every_level_with_steps_and_ratio():
    """The headline case: a pretrained curve that is clearly faster in all seeds must be called faster."""
    spans = ((150, 70), (190, 90), (170, 90))  # (scratch, pretrained) step at which 0.2 -> 0.8 is done
    e = entry(*(seed_entry(ramp(0.2, 0.8, 10, a), ramp(0.2, 0.8, 10, b)) for a, b in spans))
    assert verdicts(e) == ["pretrained"] * 4
    s = sentences(e)["metric"]
    assert ": rotation got to every level first." in s
    # halfway (0.5): scratch at 80, 100, 90 (mean 90), rotation at 40, 50, 50 (mean 46.7)
    assert f"Halfway (0.500): rotation at step 47, scratch at step 90, {90 / (140 / 3):.1f}x sooner" in s
    assert "1.9x sooner" in s
    ahead = e["over_seeds"]["metric"]["ahead"]
    assert ahead["pretrained"] > 0.8 and ahead["scratch"] == 0.0
    assert f"The rotation curve was higher for {ahead['pretrained']:.0%} of the steps, scratch's for 0%." in s
    assert "rotation got to every level first" in sentences(e)["losses"]  # the losses mirror macro-F1


def test_curves_that_cross_name_rotation_early_and_scratch_late():
    """A crossing must not be summarised as one winner: the early and the late levels differ."""
    scratch = path((10, 0.2), (150, 0.9))
    pretrained = path((10, 0.2), (40, 0.6), (120, 0.7), (200, 0.88))
    e = entry(seed_entry(scratch, pretrained))
    assert verdicts(e) == ["pretrained", "pretrained", "scratch", "scratch"]
    s = sentences(e)["metric"]
    assert "rotation got there first at 25% and 50%, scratch got there first at 75% and 90% of the way" in s
    assert "90% of the way (0.830): rotation at step 180, scratch at step 140, 1.3x sooner for scratch" in s
    ahead = e["over_seeds"]["metric"]["ahead"]
    assert ahead["pretrained"] > 0 and ahead["scratch"] > 0
    assert f"higher for {ahead['pretrained']:.0%} of the steps, scratch's for {ahead['scratch']:.0%}" in s
    assert "for 0%" not in s


def test_an_early_lead_that_closes_is_ahead_early_and_tied_late():
    """A head start that the other network catches up must read as "first early, tied late", not as faster."""
    scratch = path((10, 0.2), (100, 0.6), (150, 0.8))
    pretrained = path((10, 0.2), (30, 0.6), (100, 0.6), (150, 0.8))  # identical to scratch from step 100
    e = entry(seed_entry(scratch, pretrained))
    assert verdicts(e) == ["pretrained", "pretrained", "same", "same"]
    s = sentences(e)["metric"]
    assert ("rotation got there first at 25% and 50%, tied (at most one evaluation, 10 steps, apart) at 75% and "
            "90% of the way") in s
    assert "90% of the way (0.740): rotation at step 140, scratch at step 140." in s
    assert "scratch's for 0%" in s


@pytest.mark.parametrize("offset, tied", [(10, True), (20, False)])
def test_an_offset_of_one_evaluation_is_a_tie_and_of_two_is_not(offset: float, tied: bool):
    """A time is known to one evaluation only: 10 steps apart is equally fast, 20 steps in every seed is not."""
    e = entry(*(seed_entry(ramp(0.2, 0.8, 10, t, shift=offset), ramp(0.2, 0.8, 10, t)) for t in (90, 110, 130)))
    s = sentences(e)["metric"]
    if tied:
        assert verdicts(e) == ["same"] * 4
        assert "both got to every level within one evaluation (10 steps) of each other: equally fast" in s
        assert "x sooner" not in s
    else:
        assert verdicts(e) == ["pretrained"] * 4
        assert "rotation got to every level first" in s and "equally fast" not in s and "tied" not in s


def test_the_network_that_flattens_first_reached_its_plateau_first():
    """Question 3: the plateau is where the best stops improving, quoted with both networks' steps."""
    scratch = path((10, 0.2), (80, 0.7), (120, 0.704), (160, 0.7))  # +0.004 after step 80 is no new best
    pretrained = path((10, 0.3), (40, 0.7))
    e = entry(seed_entry(scratch, pretrained))
    assert e["over_seeds"]["plateau"]["verdict"] == "pretrained"
    s = sentences(e)["plateau"]
    assert s.startswith("The rotation-pretrained network reached its plateau first: rotation at step 40; "
                        "scratch at step 80 (the plateau: ")


def test_curves_still_rising_at_the_decay_have_no_plateau():
    """A curve still gaining when the rate starts to fall has not plateaued: neither network may be named."""
    e = entry(seed_entry(path((10, 0.2), (200, 0.6)), path((10, 0.3), (200, 0.7))))  # +0.021 per evaluation
    assert e["over_seeds"]["plateau"]["verdict"] == "neither"
    assert sentences(e)["plateau"].startswith(
        "Neither network reached a plateau before the learning rate started to fall at step 160:")


def test_seeds_that_disagree_give_no_winner_for_the_levels_or_the_best_values():
    """One faster seed must not decide: when the seeds flip, the levels and values are called unclear."""
    # scratch rises over steps 50-130 in every seed; rotation 40 steps sooner, 30 later, 40 sooner
    seeds = [seed_entry(ramp(0.2, 0.8, 50, 130), ramp(0.2, 0.8, t0, t0 + 80), finals=(0.70, final))
             for t0, final in ((10, 0.72), (80, 0.68), (10, 0.71))]
    e = entry(*seeds)
    assert verdicts(e) == ["unclear"] * 4
    s = sentences(e)
    assert "no clear winner (the seeds disagree) at 25%, 50%, 75% and 90% of the way" in s["metric"]
    assert "got to every level first" not in s["metric"]
    assert answers.value_verdict(e["over_seeds"]["end"]["final"]) == "unclear"
    assert "+0.0033 for rotation, within the spread between seeds (95% interval" in s["best"]


@pytest.mark.parametrize("peak, final, words", [(0.713, 0.703, "+0.0030 for rotation, about equal."),
                                                (0.73, 0.72, "+0.0200 for rotation.")])
def test_best_values_with_one_seed(peak: float, final: float, words: str):
    """One seed: a difference within EQUAL_WITHIN is about equal, a larger one is quoted without a winner's claim."""
    scratch = path((10, 0.2), (120, 0.71), (200, 0.70))  # highest 0.71 at step 120, final 0.70
    pretrained = path((10, 0.2), (150, peak), (200, final))
    s = sentences(entry(seed_entry(scratch, pretrained)))["best"]
    assert f"is {final:.4f} with rotation pretraining vs 0.7000 from scratch: {words[:-1]}" in s
    assert s.endswith(f"The highest value during training was {peak:.4f} (rotation, at step 150) vs 0.7100 "
                      "(scratch, at step 120).")
    assert ("about equal" in s) == (abs(final - 0.70) <= rules.EQUAL_WITHIN)


def test_a_difference_of_exactly_equal_within_is_about_equal():
    """VERDICT_RULE: with one seed a difference of AT MOST 0.005 is equal, including 0.005 itself."""
    scratch, pretrained = path((10, 0.2), (200, 0.700)), path((10, 0.2), (200, 0.705))
    assert "+0.0050 for rotation, about equal" in sentences(entry(seed_entry(scratch, pretrained)))["best"]


def test_a_decaying_schedule_makes_the_plateau_question_unanswerable():
    """Under one-cycle the flattening is the schedule's, so the page must refuse to name a plateau winner."""
    scratch = path((10, 0.2), (120, 0.71), (200, 0.70))
    pretrained = path((10, 0.2), (60, 0.72))
    e = entry(seed_entry(scratch, pretrained, decaying=True), schedule="onecycle")
    assert e["by_seed"][0]["plateau"]["pretrained"]["state"] == "plateau"  # flat at the end, yet not an answer
    s = sentences(e)["plateau"]
    assert s.startswith("Not answerable from this run: under one-cycle")
    assert "reached its plateau first" not in s


# ---------------------------------------------------------------------------------------------------------
# The rules


@pytest.mark.parametrize("lower, scratch, pretrained, start, end", [
    (True, path((10, 2.0), (200, 0.5)), path((10, 1.5), (100, 0.4)), 2.0, 0.4),
    (False, path((10, 0.1), (200, 0.7)), path((10, 0.3), (200, 0.8)), 0.1, 0.8)])
def test_level_steps_runs_from_the_worse_start_to_the_better_end(lower: bool, scratch: Curve, pretrained: Curve,
                                                                 start: float, end: float):
    """The levels are common to both networks: from the worse first value to the better final one."""
    r = rules.level_steps(scratch, pretrained, lower, GAP)
    assert (r["start"], r["end"]) == (start, end)
    assert [lv["level"] for lv in r["levels"]] == pytest.approx([start + f * (end - start) for f in rules.LEVELS])
    for lv in r["levels"]:  # each step is the first evaluation at or past the level
        for arm, c in (("scratch", scratch), ("pretrained", pretrained)):
            assert lv[f"{arm}_step"] == rules.first_step(c, lv["level"], lower)


def test_ahead_shares_of_identical_curves_are_all_level():
    """Two identical curves: neither network is ahead anywhere."""
    c = path((10, 0.2), (120, 0.7), (200, 0.65))
    assert rules.ahead_shares(c, list(c), False, 0.01) == pytest.approx({"pretrained": 0, "scratch": 0, "level": 1})


def test_stable_plateau_is_the_last_new_best_not_the_first_pause():
    """A curve that pauses long enough to look flat and then climbs again had not settled at the pause."""
    c = path((10, 0.2), (40, 0.6), (100, 0.6), (120, 0.7))  # a 60-step pause, then +0.1
    assert rules.stable_plateau(c, RUN_STEPS, STABLE_END) == {"state": "plateau", "step": 120, "best": 0.7}


def test_stable_plateau_too_close_to_the_decay_is_still_rising():
    """A best set 20 steps before the decay (less than 15% of 200 steps) cannot be called a plateau."""
    r = rules.stable_plateau(path((10, 0.2), (140, 0.7)), RUN_STEPS, STABLE_END)
    assert r == {"state": "rising", "step": None, "best": 0.7, "last_gain_step": 140}

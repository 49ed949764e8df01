"""The report's rules on hand-made curves of (optimizer step, value): loss speed to a common level, steps to
95% of scratch's final macro-F1, normalised area, plateau or still rising, the plateau schedule's stop, ties,
and the trend rule."""

from __future__ import annotations

import pytest

from pretextlab.report import rules

STEPS = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


def curve(values, steps=STEPS):
    return list(zip(steps, values))


def test_a_faster_arm_reaches_the_slower_arms_final_loss_in_fewer_steps():
    scratch = curve([2.0, 1.6, 1.3, 1.1, 1.0], STEPS[:5])
    pretrained = curve([1.5, 1.1, 0.9, 0.8, 0.75], STEPS[:5])
    r = rules.loss_speed(scratch, pretrained)
    assert r["slower"] == "scratch" and r["level"] == 1.0  # the arm that ends higher sets the level
    assert (r["scratch_step"], r["pretrained_step"]) == (50, 30)  # 0.9 at step 30 is the first <= 1.0
    assert r["speedup"] == pytest.approx(50 / 30)
    assert rules.sooner(r["scratch_step"], r["pretrained_step"], 50) == "pretrained"


def test_curves_that_cross_are_judged_at_the_slower_arms_final_level_not_at_the_start():
    # pretrained starts far lower but ends higher: lower at step 10 is not "fell faster"
    scratch = curve([2.0, 1.4, 1.0, 0.7, 0.5], STEPS[:5])
    pretrained = curve([1.2, 0.9, 0.8, 0.75, 0.72], STEPS[:5])
    r = rules.loss_speed(scratch, pretrained)
    assert r["slower"] == "pretrained" and r["level"] == 0.72
    assert (r["scratch_step"], r["pretrained_step"]) == (40, 50)
    assert r["speedup"] == pytest.approx(0.8)  # below 1: scratch needed fewer steps
    assert rules.sooner(r["scratch_step"], r["pretrained_step"], 50) == "scratch"


def test_smoothing_is_a_trailing_mean_over_a_window_of_steps():
    c = curve([1.0, 3.0, 2.0, 4.0], STEPS[:4])
    assert rules.smooth(c, 5) == c  # a window narrower than the spacing: each point alone
    assert rules.smooth(c, 20) == [(10, 1.0), (20, 2.0), (30, 2.5), (40, 3.0)]  # (s - 20, s]: two points
    # a noisy dip below the level is not a crossing once smoothed
    noisy = curve([2.0, 1.2, 1.9, 1.5, 1.4, 1.3], STEPS[:6])
    level = 1.35
    assert next(s for s, v in noisy if v <= level) == 20
    assert next(s for s, v in rules.smooth(noisy, 20) if v <= level + 1e-12) == 60  # 1.6, 1.55, 1.7, 1.45, 1.35


def test_steps_to_95_percent_of_scratchs_final_macro_f1():
    scratch = curve([0.2, 0.4, 0.5, 0.56, 0.6])
    pretrained = curve([0.4, 0.5, 0.58, 0.6, 0.62])
    r = rules.metric_speed(scratch, pretrained, 0.6)  # target 0.57
    assert r["target"] == pytest.approx(0.57)
    assert (r["scratch_step"], r["pretrained_step"]) == (50, 30) and r["speedup"] == pytest.approx(50 / 30)
    # the target is the same for both arms: the better arm is not penalised for its higher final value
    # (the old rule measured each arm against 95% of its own best)


def test_an_arm_that_never_reaches_the_target():
    r = rules.metric_speed(curve([0.3, 0.5, 0.6]), curve([0.3, 0.4, 0.5]), 0.6)
    assert r["scratch_step"] == 30 and r["pretrained_step"] is None and r["speedup"] is None
    assert rules.sooner(r["scratch_step"], r["pretrained_step"], 30) == "scratch"
    assert rules.sooner(None, None, 30) == "neither"


def test_a_tie_within_noise_is_about_equally_fast_and_about_equal():
    a = curve([0.30, 0.45, 0.55, 0.60, 0.62, 0.63, 0.635, 0.64, 0.642, 0.645])
    b = curve([0.31, 0.44, 0.56, 0.59, 0.62, 0.631, 0.634, 0.641, 0.643, 0.644])
    r = rules.metric_speed(a, b, 0.645)  # target 0.61275: both at step 50
    assert rules.sooner(r["scratch_step"], r["pretrained_step"], 100) == "same"
    assert rules.sooner(50, 55, 100) == "same" and rules.sooner(60, 50, 100) == "pretrained"  # within 5% of the budget
    assert rules.verdict(0.644 - 0.645, False, 0.005) == "equal"


def test_normalised_area_is_the_mean_over_training():
    assert rules.normalised_area(curve([0.5] * 10), 100) == pytest.approx(0.5)
    assert rules.normalised_area([(0, 0.0), (100, 1.0)], 100) == pytest.approx(0.5)  # a straight rise
    # stopped at step 50 of 100: the last value is held to the end of the budget
    assert rules.normalised_area([(0, 0.0), (50, 1.0)], 100) == pytest.approx((25 + 50) / 100)
    faster, slower = curve([0.4, 0.6, 0.7, 0.7, 0.7]), curve([0.2, 0.4, 0.6, 0.7, 0.7])
    assert rules.normalised_area(faster, 50) > rules.normalised_area(slower, 50)


def test_a_plateau_is_called_only_when_the_curve_stays_flat_over_the_stated_span():
    flat_after_50 = curve([0.3, 0.5, 0.6, 0.7, 0.705, 0.71, 0.708, 0.712, 0.709, 0.711])
    p = rules.plateau(flat_after_50, 100)
    assert p["state"] == "plateau" and p["step"] == 50  # from 0.705 on, inside a band 0.01 wide
    assert p["rise"] == pytest.approx(0.711 - 0.712)  # last minus the last evaluation at or before step 80


def test_a_curve_still_rising_at_the_end_of_a_decaying_schedule_is_no_plateau():
    # the old rule called this a plateau at its last epoch
    p = rules.plateau(curve([0.3, 0.4, 0.5, 0.55, 0.58, 0.6, 0.62, 0.64, 0.655, 0.67]), 100)
    assert p == {"state": "rising", "step": None, "rise": pytest.approx(0.67 - 0.64)}
    # a rise of at most 0.01 over the last 20% that still moves by more than the band before: not settled
    p = rules.plateau(curve([0.3, 0.4, 0.5, 0.6, 0.7, 0.64, 0.66, 0.70, 0.655, 0.705]), 100)
    assert p["state"] == "unsettled" and p["rise"] == pytest.approx(0.005)
    assert rules.plateau([(10, 0.5)], 100)["state"] == "short"  # nothing 20% of the budget before the end


def test_which_plateaued_first():
    early = rules.plateau(curve([0.5, 0.6, 0.65, 0.655, 0.66, 0.66, 0.661, 0.662, 0.66, 0.661]), 100)
    late = rules.plateau(curve([0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.74, 0.745, 0.747, 0.748]), 100)
    rising = rules.plateau(curve([0.3, 0.4, 0.5, 0.55, 0.58, 0.6, 0.62, 0.64, 0.655, 0.67]), 100)
    assert (early["step"], late["step"]) == (40, 70)
    assert rules.sooner(late["step"], early["step"], 100) == "pretrained"  # pretrained = early
    assert rules.sooner(rising["step"], early["step"], 100) == "pretrained"  # scratch never plateaued
    assert rules.sooner(rising["step"], rising["step"], 100) == "neither"


def test_plateau_schedule_pair_one_stops_first():
    # patience 3 with min delta 0.001: scratch's best is set at step 40, pretrained's at step 70
    scratch = curve([0.5, 0.6, 0.65, 0.66, 0.6605, 0.659, 0.66], STEPS[:7])
    pretrained = curve([0.55, 0.62, 0.66, 0.68, 0.69, 0.70, 0.71, 0.7105, 0.709, 0.71])
    assert rules.last_improvement(scratch) == 40 and rules.last_improvement(pretrained) == 70
    assert rules.sooner(70, 100, 100) == "scratch"  # scratch trained 70 steps, pretrained 100: scratch stopped first
    assert rules.sooner(100, 100, 100) == "same"


@pytest.mark.parametrize("changes, expected", [
    ([(0.01, True), (0.03, True)], "grows"),
    ([(-0.01, True), (-0.02, True)], "shrinks"),
    ([(0.01, True), (0.03, False)], None),  # one change not significant: no trend
    ([(0.01, None), (0.03, None)], None),  # one seed: nothing tested, no trend
    ([(0.01, True), (-0.03, True)], None),  # changes that point both ways
    ([], None),
])
def test_trend_needs_every_change_significant_and_one_way(changes, expected):
    assert rules.trend(changes) == expected


def test_every_rule_is_stated_with_its_constants():
    assert "10% of the budget" in rules.RULES["losses"] and "95%" in rules.RULES["metric_speed"]
    assert "0.01" in rules.RULES["plateau"] and "20% of the budget" in rules.RULES["plateau"]
    assert "0.001" in rules.RULES["plateau_schedule"] and "at least 2 seeds" in rules.RULES["trend"]


@pytest.mark.parametrize("diff, lower_is_better, expected", [
    (0.004, False, "equal"),  # within the tolerance: no winner
    (0.01, False, "pretrained"),  # pretrained minus scratch above zero, higher is better
    (0.01, True, "scratch"),  # ... but lower is better (a loss)
    (-0.01, True, "pretrained"),
])
def test_verdict(diff, lower_is_better, expected):
    assert rules.verdict(diff, lower_is_better, 0.005) == expected

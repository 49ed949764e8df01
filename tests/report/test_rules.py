"""The report's rules on hand-made curves of (optimizer step, value): the training loss's centred smoothing,
plateau or still rising under a decaying schedule, the plateau schedule's stop, ties, and the trend rule (the
answer page's level and plateau rules: test_answers.py)."""

from __future__ import annotations

import pytest

from pretextlab.report import rules

STEPS = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


def curve(values, steps=STEPS):
    return list(zip(steps, values))


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
    assert rules.sooner(late["step"], early["step"], 1, same=10) == "pretrained"  # pretrained = early
    assert rules.sooner(rising["step"], early["step"], 1, same=10) == "pretrained"  # scratch never plateaued
    assert rules.sooner(rising["step"], rising["step"], 1, same=10) == "neither"


def test_plateau_schedule_pair_one_stops_first():
    # patience 3 with min delta 0.001: scratch's best is set at step 40, pretrained's at step 70
    scratch = curve([0.5, 0.6, 0.65, 0.66, 0.6605, 0.659, 0.66], STEPS[:7])
    pretrained = curve([0.55, 0.62, 0.66, 0.68, 0.69, 0.70, 0.71, 0.7105, 0.709, 0.71])
    assert rules.last_improvement(scratch) == 40 and rules.last_improvement(pretrained) == 70
    assert rules.sooner(70, 100, 1, same=10) == "scratch"  # scratch trained 70 steps, pretrained 100: scratch first
    assert rules.sooner(100, 100, 1, same=10) == "same" and rules.sooner(100, 110, 1, same=10) == "same"


def test_the_training_loss_is_smoothed_by_a_centred_mean_that_invents_no_value():
    assert rules.centred_mean([1.0, 3.0, 2.0, 4.0], 3) == [2.0, 2.0, 3.0, 3.0]  # fewer values at the ends
    assert rules.centred_mean([1.0, 3.0], 1) == [1.0, 3.0]
    assert rules.loss_window(10) == 3 and rules.loss_window(200) == 11  # 5% of the values, odd, at least 3


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
    assert "25, 50, 75 and 90%" in rules.RULES["levels"] and "2%" in rules.RULES["levels"]
    assert "0.005" in rules.RULES["plateau"] and "15% of the run" in rules.RULES["plateau"]
    assert "0.01" in rules.RULES["decaying_plateau"] and "20% of the budget" in rules.RULES["decaying_plateau"]
    assert "0.001" in rules.RULES["plateau_schedule"] and "at least 2 seeds" in rules.RULES["trend"]


@pytest.mark.parametrize("diff, lower_is_better, expected", [
    (0.004, False, "equal"),  # within the tolerance: no winner
    (0.01, False, "pretrained"),  # pretrained minus scratch above zero, higher is better
    (0.01, True, "scratch"),  # ... but lower is better (a loss)
    (-0.01, True, "pretrained"),
])
def test_verdict(diff, lower_is_better, expected):
    assert rules.verdict(diff, lower_is_better, 0.005) == expected

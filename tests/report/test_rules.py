"""The report's rules on hand-made curves: plateau, time to 95% of the run's own best, about equal."""

from __future__ import annotations

import pytest

from pretextlab.report.rules import plateau_epoch, time_to_fraction_of_best, verdict


@pytest.mark.parametrize("values, expected", [
    ([0.1, 0.2, 0.3, 0.4], 4),  # still rising by more than tol every epoch: plateaus at the end
    ([0.5, 0.8, 0.7, 0.6], 2),  # early peak
    ([0.5, 0.5, 0.5, 0.5], 1),  # flat
    ([0.5, 0.505, 0.51, 0.515], 2),  # slow rise: from epoch 2 on, the gain left is exactly tol
    ([0.2, 0.6, 0.605, 0.612, 0.609], 3),  # small late gains within tol do not move the plateau
    ([0.7], 1),
])
def test_plateau_epoch(values, expected):
    assert plateau_epoch(values) == expected


def test_plateau_epoch_tolerance_and_empty():
    assert plateau_epoch([0.5, 0.52, 0.53], tol=0.05) == 1
    assert plateau_epoch([0.5, 0.52, 0.53], tol=0.0) == 3
    with pytest.raises(ValueError):
        plateau_epoch([])


@pytest.mark.parametrize("values, expected", [
    ([0.1, 0.5, 0.9, 1.0], (4, 40.0)),  # monotone: 0.9 < 0.95 x 1.0, so only the last epoch
    ([0.1, 0.5, 0.95, 1.0], (3, 30.0)),  # reaching exactly 0.95 x best counts
    ([0.2, 0.96, 0.5, 1.0], (2, 20.0)),  # early near-peak counts, even if it dips later
    ([0.4, 0.4, 0.4, 0.4], (1, 10.0)),  # flat: reached at once
    ([0.0, 0.0, 0.0, 0.0], (1, 10.0)),
])
def test_time_to_fraction_of_best(values, expected):
    assert time_to_fraction_of_best(values, [10.0, 20.0, 30.0, 40.0]) == expected


def test_time_to_fraction_of_best_other_fraction_and_errors():
    assert time_to_fraction_of_best([0.1, 0.5, 0.9, 1.0], [1, 2, 3, 4], frac=0.5) == (2, 2.0)
    with pytest.raises(ValueError):
        time_to_fraction_of_best([0.1, 0.2], [1.0])
    with pytest.raises(ValueError):
        time_to_fraction_of_best([], [])


@pytest.mark.parametrize("diff, lower_is_better, expected", [
    (0.004, False, "equal"),  # within the tolerance: no winner
    (0.01, False, "pretrained"),  # pretrained minus scratch above zero, higher is better
    (0.01, True, "scratch"),  # ... but lower is better (a loss)
    (-0.01, True, "pretrained"),
])
def test_verdict(diff, lower_is_better, expected):
    assert verdict(diff, lower_is_better, 0.005) == expected

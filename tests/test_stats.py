"""Statistics over seeds, checked against printed t tables and hand-computed intervals."""

import math

import pytest

from pretextlab.stats import describe, mean_ci, paired_difference, t_critical


@pytest.mark.parametrize("df, confidence, expected", [  # two-sided critical values as printed in t tables
    (1, 0.95, 12.706), (2, 0.95, 4.303), (3, 0.95, 3.182), (4, 0.95, 2.776), (5, 0.95, 2.571),
    (9, 0.95, 2.262), (10, 0.95, 2.228), (30, 0.95, 2.042), (120, 0.95, 1.980),
    (1, 0.99, 63.657), (4, 0.99, 4.604), (10, 0.99, 3.169), (5, 0.90, 2.015), (20, 0.90, 1.725),
])
def test_t_critical_matches_the_table(df, confidence, expected):
    assert t_critical(df, confidence) == pytest.approx(expected, abs=5e-4)


def test_t_critical_tends_to_the_normal_and_rejects_bad_input():
    assert t_critical(10_000) == pytest.approx(1.95996, abs=1e-3)
    assert t_critical(3) > t_critical(4) > t_critical(5)  # fewer seeds, wider intervals
    for bad in ((0, 0.95), (2.5, 0.95), (3, 1.0), (3, 0.0)):
        with pytest.raises(ValueError):
            t_critical(*bad)


def test_mean_ci_by_hand():
    # mean 0.5, sample std 0.1, n 3: half width 4.30265 x 0.1 / sqrt(3) = 0.248414
    mean, std, (lo, hi) = mean_ci([0.4, 0.5, 0.6])
    assert mean == pytest.approx(0.5) and std == pytest.approx(0.1)
    assert lo == pytest.approx(0.5 - 0.248414, abs=1e-5) and hi == pytest.approx(0.5 + 0.248414, abs=1e-5)
    assert mean_ci([0.7]) == (0.7, None, None)  # one seed: no spread, no interval
    with pytest.raises(ValueError):
        mean_ci([])


def test_describe_two_seeds_and_one():
    d = describe([0.6, 0.4])
    assert d["mean"] == pytest.approx(0.5) and d["n"] == 2
    assert d["std"] == pytest.approx(math.sqrt(0.02))
    half = 12.7062 * math.sqrt(0.02) / math.sqrt(2)  # = 12.7062 x 0.1: two seeds give a wide interval
    assert d["ci95"] == pytest.approx([0.5 - half, 0.5 + half], abs=1e-4)
    assert describe([0.3]) == {"mean": 0.3, "std": None, "n": 1, "ci95": None}


def test_paired_difference_is_significant_only_when_the_interval_excludes_zero():
    scratch = {0: 0.50, 1: 0.60, 2: 0.70}
    # the same gain on every subset: a large spread between seeds, but the paired interval is tight
    consistent = paired_difference(scratch, {0: 0.53, 1: 0.62, 2: 0.74})
    assert consistent["difference"] == pytest.approx(0.03) and consistent["n"] == 3
    assert consistent["std"] == pytest.approx(0.01)
    half = 4.3027 * 0.01 / math.sqrt(3)
    assert consistent["ci95"] == pytest.approx([0.03 - half, 0.03 + half], abs=1e-5)
    assert consistent["significant"] is True and consistent["seeds"] == [0, 1, 2]
    # the same mean gain, but one seed loses: the interval straddles zero
    noisy = paired_difference(scratch, {0: 0.60, 1: 0.58, 2: 0.71})
    assert noisy["difference"] == pytest.approx(0.03)
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1] and noisy["significant"] is False
    # a consistent loss is significant too (the interval lies below zero)
    assert paired_difference(scratch, {0: 0.40, 1: 0.51, 2: 0.59})["significant"] is True


def test_paired_difference_uses_shared_seeds_and_says_nothing_with_one():
    one = paired_difference({0: 0.5, 1: 0.6}, {1: 0.9, 2: 0.1})  # only seed 1 is in both
    assert one == {"difference": pytest.approx(0.3), "std": None, "n": 1, "ci95": None, "significant": None,
                   "seeds": [1]}
    with pytest.raises(ValueError):
        paired_difference({0: 0.5}, {1: 0.5})

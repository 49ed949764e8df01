"""A study's numbers: the plateau and time-to-95 % rules on hand-made curves."""

from __future__ import annotations

import pytest

from pretextlab.results import PretextRun, Run, Study, compare, plateau_epoch, remade_note, time_to_fraction_of_best


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


def test_compare_pairs_the_difference_over_shared_seeds():
    # scratch has a third seed the pretrained arm lacks: the means cover different seeds, the
    # difference must not (it is the centre of the paired interval)
    c = compare({0: 0.80, 1: 0.82, 2: 0.90}, {0: 0.81, 1: 0.83})
    assert c["scratch"] == pytest.approx(0.84) and c["pretrained"] == pytest.approx(0.82)
    assert c["pretrained_minus_scratch"] == pytest.approx(0.01)
    lo, hi = c["paired_ci95"]
    assert lo <= c["pretrained_minus_scratch"] <= hi and c["n_seeds"] == [3, 2] and c["paired_n"] == 2
    # no shared seed: no interval, the difference of the means
    c = compare({0: 0.80}, {1: 0.90})
    assert c["pretrained_minus_scratch"] == pytest.approx(0.10) and c["paired_ci95"] is None and c["paired_n"] == 0


def test_remade_note_says_which_weights_the_finished_runs_started_from(tmp_path):
    def study(init_hashes: list[str]) -> Study:
        runs = [Run(f"f1-context-s{i}", tmp_path, 1.0, "context", i, [], {"init_sha256": h})
                for i, h in enumerate(init_hashes)]
        return Study(tmp_path, {}, runs, {})

    same = PretextRun("context", tmp_path, [], {"backbone_sha256": "a", "earlier_backbone_sha256": "a"})
    assert remade_note(study(["a", "a"]), same).endswith("bit-identical to the earlier one, so every run of this "
                                                         "arm started from the same weights.")
    other = PretextRun("context", tmp_path, [], {"backbone_sha256": "b", "earlier_backbone_sha256": "a"})
    note = remade_note(study(["a", "a", "b"]), other)
    assert "not bit-identical" in note and "2 finished fine-tuning run(s) of this arm started from the earlier one" in note
    assert remade_note(study(["a"]), PretextRun("context", tmp_path, [], {"backbone_sha256": "a"})) is None

"""summary.json's numbers: paired comparisons over seeds, and the note on a re-made backbone."""

from __future__ import annotations

import pytest

from pretextlab.report.results import PretextRun, Run, Study
from pretextlab.report.summary import compare, remade_note


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
    assert "not bit-identical" in note
    assert "2 finished fine-tuning run(s) of this arm started from the earlier one" in note
    assert remade_note(study(["a"]), PretextRun("context", tmp_path, [], {"backbone_sha256": "a"})) is None


def test_remade_note_of_a_per_seed_pretraining_counts_that_seed_only(tmp_path):
    runs = [Run(f"f1-context-s{s}", tmp_path, 1.0, "context", s, [], {"init_sha256": "a"}) for s in (0, 1)]
    redone = PretextRun("context", tmp_path, [], {"backbone_sha256": "b", "earlier_backbone_sha256": "a"}, seed=1)
    note = remade_note(Study(tmp_path, {}, runs, {}), redone)
    assert note.startswith("`pretrain-context-s1` was pretrained again")
    assert "1 finished fine-tuning run(s) of this arm with seed 1 started from the earlier one" in note

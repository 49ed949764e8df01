"""summary.json's numbers: paired comparisons over seeds, and the note on a re-made backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fabricated import make_study, memory_run

from pretextlab.report import write_report
from pretextlab.report.records import PretextSummary, RunSummary
from pretextlab.report.results import PretextRun, Run, Study, study_config
from pretextlab.report.rules import RULES, level_steps
from pretextlab.report.summary import compare, finite, remade_note, summarize_study


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


def remade(new: str, old: str) -> PretextSummary:
    """A pretraining's summary after it was pretrained again on resume: its new and its earlier weights' hashes."""
    return PretextSummary(backbone_sha256=new, remade=True, earlier_backbone_sha256=old)


def test_remade_note_says_which_weights_the_finished_runs_started_from(tmp_path):
    def study(init_hashes: list[str]) -> Study:
        runs = [Run(f"f1-context-s{i}", tmp_path, 1.0, "context", i, [], RunSummary(init_sha256=h))
                for i, h in enumerate(init_hashes)]
        return Study(tmp_path, study_config({}), runs, {})

    same = PretextRun("context", tmp_path, [], remade("a", "a"))
    assert remade_note(study(["a", "a"]), same).endswith("bit-identical to the earlier one, so every run of this "
                                                         "arm started from the same weights.")
    other = PretextRun("context", tmp_path, [], remade("b", "a"))
    note = remade_note(study(["a", "a", "b"]), other)
    assert "not bit-identical" in note
    assert "2 finished fine-tuning run(s) of this arm started from the earlier one" in note
    assert remade_note(study(["a"]), PretextRun("context", tmp_path, [], PretextSummary(backbone_sha256="a"))) is None


def test_remade_note_of_a_per_seed_pretraining_counts_that_seed_only(tmp_path):
    runs = [Run(f"f1-context-s{s}", tmp_path, 1.0, "context", s, [], RunSummary(init_sha256="a")) for s in (0, 1)]
    redone = PretextRun("context", tmp_path, [], remade("b", "a"), seed=1)
    note = remade_note(Study(tmp_path, study_config({}), runs, {}), redone)
    assert note.startswith("`pretrain-context-s1` was pretrained again")
    assert "1 finished fine-tuning run(s) of this arm with seed 1 started from the earlier one" in note


def test_summary_records_every_rule_per_run_and_per_pair_with_intervals():
    rising = [0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.58, 0.6, 0.62, 0.64]
    runs = [memory_run(0.1, "scratch", s, [v + 0.01 * s for v in rising]) for s in range(3)]
    runs += [memory_run(0.1, "context", s, [0.1 + v + 0.02 * s for v in rising]) for s in range(3)]
    config = {"fractions": [0.1], "seeds": [0, 1, 2], "pretexts": ["context"]}
    summary = json.loads(json.dumps(finite(summarize_study(Study(Path("m"), study_config(config), runs, {})))))
    assert summary["rules"]["levels"] == RULES["levels"] and summary["rules"]["constants"]["plateau_gain"]
    run = summary["runs"]["f0.1-context-s1"]["curves"]
    assert run["plateau"]["state"] == "rising" and run["stopped_early"] is False and run["budget"] == 100
    d = summary["answers"]["0.1"]["context"]
    assert d["seeds"] == [0, 1, 2] and set(d["by_seed"]) == {"0", "1", "2"} and d["budget"] == 100
    assert d["spacing"] == 10
    for s, r in d["by_seed"].items():  # recomputable from the runs' curves
        scratch = [(10 * (i + 1), v + 0.01 * int(s)) for i, v in enumerate(rising)]
        context = [(10 * (i + 1), 0.1 + v + 0.02 * int(s)) for i, v in enumerate(rising)]
        expected = level_steps(scratch, context, False, 10)
        assert [lv["pretrained_step"] for lv in r["metric"]["levels"]] == [
            lv["pretrained_step"] for lv in expected["levels"]]
    level = d["over_seeds"]["metric"]["levels"][1]  # halfway: every seed's context run is ahead
    diffs = [r["metric"]["levels"][1]["pretrained_step"] - r["metric"]["levels"][1]["scratch_step"]
             for r in d["by_seed"].values()]
    assert level["difference"]["pretrained_minus_scratch"] == pytest.approx(sum(diffs) / 3)
    assert level["difference"]["paired_n"] == 3 and level["verdict"] == "pretrained"
    assert d["over_seeds"]["plateau"]["verdict"] == "neither"  # one-cycle: decaying, no plateau called
    assert d["over_seeds"]["end"]["final"]["paired_ci95"] is not None


def test_the_planned_time_is_set_beside_the_actual_total(tmp_path):
    plan = {"estimate": {"rate": 1.0, "estimated_s": 3000.0, "stages": 5}, "total_time_s": 3600.0}
    md = write_report(make_study(tmp_path / "planned", extra=plan)).read_text()
    assert ("Total: 1 h 00 min, against 50 min 00 s planned at the study's start (study.json estimate, 5 stages): "
            "the study took 1.20x its plan.") in md
    older = write_report(make_study(tmp_path / "older")).read_text()  # no estimate, no total_time_s yet
    assert ("Total of the stages finished so far (study.json has no total yet): 50 s; study.json holds no plan to "
            "set beside it") in older

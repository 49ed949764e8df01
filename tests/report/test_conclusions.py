"""The generated sentences phrase only what the rules returned, on hand-made curves, and say when one or two
seeds cannot show it."""

from __future__ import annotations

import json
from pathlib import Path

from fabricated import make_study, memory_run

from pretextlab.report import write_report
from pretextlab.report.answers import fraction_answers
from pretextlab.report.conclusions import headline_scope, overall_conclusions
from pretextlab.report.results import Study, study_config
from pretextlab.report.summary import summarize_study

RISING = [0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.58, 0.6, 0.62, 0.64]  # 10 evaluations over a 100-step budget
SLOW_LOSS = [2.0, 1.8, 1.6, 1.45, 1.3, 1.2, 1.1, 1.0, 0.95, 0.9]
FAST_LOSS = [1.6, 1.3, 1.1, 1.0, 0.9, 0.85, 0.8, 0.75, 0.72, 0.7]


def _summary(curves: dict, pretexts: tuple[str, ...] = ("context",)) -> dict:
    """summary.json of an in-memory study: {(arm, seed) or (arm, seed, fraction): memory_run keywords}."""
    runs = [memory_run(k[2] if len(k) == 3 else 0.1, k[0], k[1], **spec) for k, spec in curves.items()]
    config = {"fractions": sorted({r.fraction for r in runs}, reverse=True), "seeds": sorted({r.seed for r in runs}),
              "pretexts": list(pretexts)}
    return summarize_study(Study(Path("memory"), study_config(config), runs, {}))


def _answers(curves: dict, fraction: str = "0.1") -> dict[str, str]:
    """The four answers of an in-memory study, by question."""
    return dict(fraction_answers(_summary(curves), fraction, "context"))


LOSSES, RISE, PLATEAU, BEST = ("How fast the losses fell", "How fast validation macro-F1 rose",
                               "Which network reached a plateau first", "Best values")


def test_a_faster_arm_one_seed():
    a = _answers({("scratch", 0): {"f1": RISING, "train_loss": SLOW_LOSS},
                  ("context", 0): {"f1": [0.4, 0.5, 0.55, 0.6, 0.62, 0.64, 0.65, 0.66, 0.67, 0.68],
                                   "train_loss": FAST_LOSS}})
    assert a[LOSSES].startswith("Training loss fell from 2.000 to 0.700: context got to every level first. "
                                "Halfway (1.350): context at step 20, scratch at step 50, 2.5x sooner; 90% of the way "
                                "(0.830): context at step 70, scratch never got there.")
    assert a[RISE].startswith("Validation macro-F1 rose from 0.200 to 0.680: context got to every level first. "
                              "Halfway (0.440): context at step 20, scratch at step 40, 2.0x sooner")
    assert "The context curve was higher for 100% of the steps, scratch's for 0%." in a[RISE]
    assert a[PLATEAU].startswith("Not answerable from this run: under one-cycle")
    assert a[BEST] == ("On validation the final model's macro-F1 is 0.6800 with context pretraining vs "
                       "0.6400 from scratch: +0.0400 for context. The highest value during training was 0.6800 "
                       "(context, at step 100) vs 0.6400 (scratch, at step 100).")


def test_curves_that_cross_are_read_along_the_whole_curve():
    # context's training loss starts far lower but ends higher: context first early on, scratch first late
    a = _answers({("scratch", 0): {"f1": RISING, "train_loss": [2.0, 1.6, 1.3, 1.0, 0.8, 0.7, 0.6, 0.55, 0.5, 0.45]},
                  ("context", 0): {"f1": RISING, "train_loss": [1.2, 1.0, 0.9, 0.8, 0.75, 0.7, 0.68, 0.66, 0.65,
                                                                 0.64]}})
    assert a[LOSSES].startswith("Training loss fell from 2.000 to 0.450: tied (at most one evaluation, 10 steps, "
                                "apart) at 25% and 75%, context got there first at 50%, scratch got there first at 90% "
                                "of the way.")
    assert "The context curve was lower for 44% of the steps, scratch's for 44%." in a[LOSSES]


def test_a_plateau_in_the_constant_phase_and_a_curve_still_rising_there():
    wsd = {"schedule": "wsd"}  # 100 steps, the rate falls over the last 20: the plateau is read up to step 80
    a = _answers({("scratch", 0): {**wsd, "f1": [0.3, 0.5, 0.6, 0.7, 0.702, 0.705, 0.703, 0.704, 0.74, 0.75]},
                  ("context", 0): {**wsd, "f1": [0.3, 0.4, 0.5, 0.55, 0.58, 0.6, 0.62, 0.64, 0.655, 0.67]}})
    assert a[PLATEAU] == ("Only scratch reached a plateau before the learning rate started to fall at step 80: "
                          "context never reached one before the learning rate started to fall at step 80; scratch at "
                          "step 40 (the plateau: its best validation macro-F1 not beaten by more than 0.005 for 15% "
                          "of the run).")


def test_a_tie_within_one_evaluation_is_no_winner():
    a = _answers({("scratch", 0): {"f1": [0.30, 0.45, 0.55, 0.60, 0.62, 0.63, 0.635, 0.64, 0.642, 0.645]},
                  ("context", 0): {"f1": [0.31, 0.44, 0.56, 0.59, 0.62, 0.631, 0.634, 0.641, 0.643, 0.644]}})
    assert "both got to every level within one evaluation (10 steps) of each other: equally fast" in a[RISE]
    assert a[BEST].startswith("On validation the final model's macro-F1 is 0.6440 with context pretraining "
                              "vs 0.6450 from scratch: -0.0010 for context, about equal.")


def test_a_plateau_schedule_pair_keeps_the_best_and_says_who_settled_first():
    plateau = {"schedule": "plateau", "patience": 3, "epochs": 10}
    a = _answers({("scratch", 0): {**plateau, "f1": [0.5, 0.6, 0.65, 0.66, 0.6605, 0.659, 0.66],
                                   "steps": [10, 20, 30, 40, 50, 60, 70], "train_loss": SLOW_LOSS[:7]},
                  ("context", 0): {**plateau, "f1": [0.55, 0.62, 0.66, 0.68, 0.69, 0.70, 0.71, 0.7105, 0.709, 0.71],
                                   "train_loss": FAST_LOSS}})
    assert a[PLATEAU] == ("Only scratch reached a plateau (the plateau schedule stopped each run after it): context "
                          "never reached one (the plateau schedule stopped each run after it); scratch at step 40 "
                          "(the plateau: its last new best before patience ran out).")


def test_the_final_model_is_the_answer_and_the_highest_value_stands_beside_it():
    # context peaks higher mid-run but ends lower
    a = _answers({("scratch", 0): {"f1": RISING},
                  ("context", 0): {"f1": [0.4, 0.5, 0.6, 0.7, 0.72, 0.7, 0.66, 0.64, 0.62, 0.6]}})
    assert a[BEST] == ("On validation the final model's macro-F1 is 0.6000 with context pretraining vs "
                       "0.6400 from scratch: -0.0400 for context. The highest value during training was 0.7200 "
                       "(context, at step 50) vs 0.6400 (scratch, at step 100).")


def _seeds(scratch_shift: list[float], context_steps: list[int]) -> dict:
    """Three seeds; context's training loss reaches its floor at context_steps[seed], scratch's falls evenly."""
    curves = {}
    for s, shift in enumerate(scratch_shift):
        curves[("scratch", s)] = {"f1": [v + shift for v in RISING], "train_loss": SLOW_LOSS}
        loss = [0.9 + 0.1 * max(0, (context_steps[s] - step) / 10) for step in range(10, 101, 10)]
        curves[("context", s)] = {"f1": [v + 2 * shift + 0.03 for v in RISING], "train_loss": loss}
    return curves


def test_several_seeds_call_a_difference_only_when_its_paired_interval_excludes_zero():
    a = _answers(_seeds([0.0, 0.01, 0.02], [50, 60, 70]))
    assert "higher for context (95% interval" in a[BEST]
    noisy = _answers(_seeds([0.0, 0.01, 0.02], [30, 100, 60]))  # context's loss floor late in one seed
    assert "no clear winner (the seeds disagree) at 50%, 75% and 90% of the way" in noisy[LOSSES]
    s = _summary(_seeds([0.0, 0.01], [50, 50]))  # two seeds that agree exactly: a zero-width interval
    level = s["answers"]["0.1"]["context"]["over_seeds"]["train_loss"]["levels"][-1]
    assert level["difference"]["paired_ci95"][0] == level["difference"]["paired_ci95"][1]
    assert level["verdict"] in ("pretrained", "same")  # called only beyond one evaluation


def test_a_trend_is_claimed_only_with_seeds_and_significant_changes():
    def study(gains: dict[float, list[float]]) -> dict:
        curves = {}
        for f, per_seed in gains.items():
            for s, g in enumerate(per_seed):
                curves[("scratch", s, f)] = {"f1": [0.3, 0.5 + 0.01 * s]}
                curves[("context", s, f)] = {"f1": [0.3, 0.5 + 0.01 * s + g]}
        return _summary(curves)

    growing = study({1.0: [0.00, 0.01, 0.00], 0.1: [0.05, 0.07, 0.06]})
    assert growing["trend"]["context"]["verdict"] == "grows"
    text = overall_conclusions(growing, ["context"], [1.0, 0.1])[0]
    assert "The gain grows as the label budget shrinks: every change of it from one fraction to the next" in text
    mixed = study({1.0: [0.00, 0.01, 0.00], 0.1: [0.05, -0.04, 0.02]})
    assert mixed["trend"]["context"]["verdict"] is None
    assert "No trend across fractions is claimed" in overall_conclusions(mixed, ["context"], [1.0, 0.1])[0]
    one = study({1.0: [0.00], 0.1: [0.08]})  # one seed: an observation, no trend
    text = overall_conclusions(one, ["context"], [1.0, 0.1])[0]
    assert "grows" not in text and "No trend" not in text
    assert "With one seed per arm, every difference in this report is a single observation" in headline_scope(one)
    assert "single observation" not in headline_scope(growing)


def test_a_difference_that_changes_sign_across_seeds_is_not_significant(tmp_path: Path):
    curves = {(0.5, "scratch", 0): [0.40], (0.5, "scratch", 1): [0.50],
              (0.5, "context", 0): [0.45], (0.5, "context", 1): [0.48]}  # +0.05, -0.02
    root = make_study(tmp_path / "mixed", curves, seeds=[0, 1])
    write_report(root)
    summary = json.loads((root / "summary.json").read_text())
    final = summary["comparison"]["0.5"]["context"]["final_f1_macro"]
    assert final["significant"] is False and final["paired_ci95"][0] < 0 < final["paired_ci95"][1]
    md = (root / "report.md").read_text()
    assert "context − baseline" in md and "not significant" in md and "**significant**" not in md
    assert ("**Pretraining with context**, on validation macro-F1 of the final model (pretrained minus scratch "
            "[paired 95% t interval over seeds]): made no significant difference at fraction 0.5 (+0.0150 [") in md
    assert "ahead" not in [line for line in md.splitlines() if "Pretraining with context" in line][0]
    assert "0.4650 with context pretraining vs 0.4500 from scratch: +0.0150 for context, within the spread" in md


def test_a_two_seed_verdict_carries_a_caution(tmp_path: Path):
    # both seeds lose 0.0012-0.0014: a tiny difference whose one-degree-of-freedom interval excludes zero
    curves = {(1.0, "scratch", 0): [0.8266], (1.0, "scratch", 1): [0.8277],
              (1.0, "context", 0): [0.8254], (1.0, "context", 1): [0.8263]}
    root = make_study(tmp_path / "two", curves, seeds=[0, 1])
    write_report(root)
    final = json.loads((root / "summary.json").read_text())["comparison"]["1"]["context"]["final_f1_macro"]
    assert final["significant"] is True and final["paired_n"] == 2
    md = (root / "report.md").read_text()
    assert "At fraction 1 the interval rests on two seeds: two seeds give a t interval with one degree of " \
           "freedom (multiplier 12.7)" in md
    assert "Caution: some intervals below rest on two seeds" in md


def test_the_kept_model_is_named_by_what_the_run_kept():
    """Only runs that kept their best evaluation's weights (summary "kept": "best") call their model the kept one."""
    import dataclasses

    plateau = {"schedule": "plateau", "patience": 3}
    runs = [memory_run(0.1, arm, 0, [0.5, 0.6, 0.65, 0.66], **plateau) for arm in ("scratch", "context")]
    config = {"fractions": [0.1], "seeds": [0], "pretexts": ["context"]}
    older = summarize_study(Study(Path("m"), study_config(config), runs, {}))
    assert "the final model's macro-F1" in dict(fraction_answers(older, "0.1", "context"))["Best values"]
    for r in runs:
        r.summary = dataclasses.replace(r.summary, kept="best")
    kept = summarize_study(Study(Path("m"), study_config(config), runs, {}))
    assert "the kept (best) model's macro-F1" in dict(fraction_answers(kept, "0.1", "context"))["Best values"]

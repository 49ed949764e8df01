"""The generated sentences phrase only what the rules returned, on hand-made curves, and say when one or two
seeds cannot show it."""

from __future__ import annotations

import json
from pathlib import Path

from fabricated import make_study, memory_run

from pretextlab.report import write_report
from pretextlab.report.conclusions import headline_scope, overall_conclusions
from pretextlab.report.questions import fraction_conclusions
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


def _lines(curves: dict, fraction: str = "0.1") -> list[str]:
    return fraction_conclusions(_summary(curves), fraction, "context")


def test_a_faster_arm_one_seed():
    lines = _lines({("scratch", 0): {"f1": RISING, "train_loss": SLOW_LOSS},
                    ("context", 0): {"f1": [0.4, 0.5, 0.55, 0.6, 0.62, 0.64, 0.65, 0.66, 0.67, 0.68],
                                     "train_loss": FAST_LOSS}})
    assert lines[0] == ("Training loss fell faster for context: to 0.9000 (scratch's final smoothed level, the "
                        "higher), context at step 50 (50% of the budget), scratch at step 100 (100% of the budget): "
                        "2.00x fewer steps for context.")
    assert lines[1].startswith("Validation loss fell faster for context: to 0.9600")  # val loss 1.6 - macro-F1
    assert lines[2].startswith("Validation macro-F1 rose faster for context: to 0.6080 (95% of scratch's final "
                               "validation macro-F1 0.6400), context at step 50 (50% of the budget), scratch at step "
                               "90 (90% of the budget): 1.80x fewer steps for context.")
    assert "Normalised area under the macro-F1 curve (its mean over training): 0.6033 (context) vs 0.4911" in lines[2]
    assert lines[3].startswith("Neither plateaued under the onecycle schedule: both were still improving at the end "
                               "(validation macro-F1 +0.0200 (context) and +0.0400 (scratch) over the last 20%")
    assert lines[4].startswith("End of training (validation macro-F1 of the final model, the primary protocol): "
                               "context ended higher: 0.6800 (context) vs 0.6400 (scratch), +0.0400.")


def test_curves_that_cross_are_judged_at_the_common_level():
    # context's training loss starts far lower but ends higher: scratch reached context's final level first
    lines = _lines({("scratch", 0): {"f1": RISING, "train_loss": [2.0, 1.6, 1.3, 1.0, 0.8, 0.7, 0.6, 0.55, 0.5,
                                                                   0.45]},
                    ("context", 0): {"f1": RISING, "train_loss": [1.2, 1.0, 0.9, 0.8, 0.75, 0.7, 0.68, 0.66, 0.65,
                                                                   0.64]}})
    assert lines[0] == ("Training loss fell faster for scratch: to 0.6400 (context's final smoothed level, the "
                        "higher), context at step 100 (100% of the budget), scratch at step 70 (70% of the budget): "
                        "1.43x fewer steps for scratch.")


def test_a_plateau_against_a_still_rising_curve():
    lines = _lines({("scratch", 0): {"f1": [0.3, 0.5, 0.6, 0.7, 0.705, 0.71, 0.708, 0.712, 0.709, 0.711]},
                    ("context", 0): {"f1": [0.3, 0.4, 0.5, 0.55, 0.58, 0.6, 0.62, 0.64, 0.655, 0.67]}})
    plateau = next(t for t in lines if "plateau" in t)
    assert plateau == ("Scratch plateaued first under the onecycle schedule: it plateaued at step 50 (50% of the "
                       "budget) and stayed inside a band 0.01 wide to the end; context was still improving at the "
                       "end (+0.0300 over the last 20% of the budget).")


def test_a_tie_within_noise_is_no_winner():
    lines = _lines({("scratch", 0): {"f1": [0.30, 0.45, 0.55, 0.60, 0.62, 0.63, 0.635, 0.64, 0.642, 0.645]},
                    ("context", 0): {"f1": [0.31, 0.44, 0.56, 0.59, 0.62, 0.631, 0.634, 0.641, 0.643, 0.644]}})
    assert next(t for t in lines if "macro-F1 rose" in t).startswith("Validation macro-F1 rose about equally fast")
    assert lines[-1].startswith("End of training (validation macro-F1 of the final model, the primary protocol): "
                                "about equal (|difference| <= 0.005): 0.6440 (context) vs 0.6450 (scratch), -0.0010")


def test_an_arm_that_never_reaches_the_target():
    lines = _lines({("scratch", 0): {"f1": RISING},
                    ("context", 0): {"f1": [0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.58, 0.6]}})
    assert next(t for t in lines if "macro-F1 rose" in t).startswith(
        "Validation macro-F1 rose faster for scratch: to 0.6080 (95% of scratch's final validation macro-F1 0.6400), "
        "context never reached it, scratch at step 90 (90% of the budget).")


def test_a_plateau_schedule_pair_where_one_stops_first():
    plateau = {"schedule": "plateau", "patience": 3, "epochs": 10}
    lines = _lines({("scratch", 0): {**plateau, "f1": [0.5, 0.6, 0.65, 0.66, 0.6605, 0.659, 0.66],
                                     "steps": [10, 20, 30, 40, 50, 60, 70], "train_loss": SLOW_LOSS[:7]},
                    ("context", 0): {**plateau, "f1": [0.55, 0.62, 0.66, 0.68, 0.69, 0.70, 0.71, 0.7105, 0.709, 0.71],
                                     "train_loss": FAST_LOSS}})
    stop = next(t for t in lines if "stopped" in t)
    assert stop == ("Scratch stopped first (plateau schedule, patience 3 evaluations): context trained its whole "
                    "budget (100 steps) after 20 s of training, its last improvement at step 70; scratch stopped at "
                    "step 70 (70% of the budget) after 14 s of training, its last improvement at step 40.")
    assert not any("plateaued" in t for t in lines)  # the decaying-schedule rule is not applied


def test_the_primary_protocol_is_the_final_model_and_the_best_evaluation_only_secondary():
    # context peaks higher mid-run but ends lower: the answer is the end of training
    lines = _lines({("scratch", 0): {"f1": RISING},
                    ("context", 0): {"f1": [0.4, 0.5, 0.6, 0.7, 0.72, 0.7, 0.66, 0.64, 0.62, 0.6]}})
    assert lines[-1] == ("End of training (validation macro-F1 of the final model, the primary protocol): scratch "
                         "ended higher: 0.6000 (context) vs 0.6400 (scratch), -0.0400. Secondary, not the answer: the "
                         "best validation macro-F1 over the evaluations (picked on the validation split itself, so "
                         "optimistic) was 0.7200 (context) vs 0.6400 (scratch), at step 50 vs 100.")


def _seeds(scratch_shift: list[float], context_steps: list[int]) -> dict:
    """Three seeds; context's training loss reaches scratch's final level at context_steps[seed]."""
    curves = {}
    for s, shift in enumerate(scratch_shift):
        curves[("scratch", s)] = {"f1": [v + shift for v in RISING], "train_loss": SLOW_LOSS}
        loss = [0.9 + 0.1 * max(0, (context_steps[s] - step) / 10) for step in range(10, 101, 10)]
        curves[("context", s)] = {"f1": [v + 2 * shift + 0.03 for v in RISING], "train_loss": loss}
    return curves


def test_several_seeds_call_a_difference_only_when_its_paired_interval_excludes_zero():
    lines = _lines(_seeds([0.0, 0.01, 0.02], [50, 60, 70]))
    assert lines[0].startswith("Training loss fell faster for context: to the common level (mean 0.9000 over seeds), "
                               "context at step 60 vs scratch at step 100 on average (60% vs 100% of the budget)")
    assert "paired difference -40 steps, 95% CI [-64.8, -15.2], significant (3 seeds)" in lines[0]
    assert "ended significantly higher" in lines[-1] and "paired 95% CI [" in lines[-1]
    noisy = _lines(_seeds([0.0, 0.01, 0.02], [50, 100, 90]))  # context sooner by 50, 0, 10 steps
    assert noisy[0].startswith("Training loss: no significant difference in how fast it fell to the common level")
    assert "not significant (3 seeds)" in noisy[0]
    two = _lines(_seeds([0.0, 0.01], [50, 50]))  # two seeds that agree exactly: a zero-width interval
    assert "paired difference -50 steps, 95% CI [-50, -50], significant (2 seeds, one degree of freedom: read " \
           "with care)" in two[0]


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
    assert "the primary protocol): no significant difference: 0.4650 (context) vs 0.4500 (scratch)" in md
    assert "includes 0" in md


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

"""The generated sentences claim only what the numbers show, and say when one or two seeds cannot show it."""

from __future__ import annotations

import json
from pathlib import Path

from fabricated import make_study

from pretextlab.report import write_report
from pretextlab.report.conclusions import fraction_conclusions
from pretextlab.report.summary import compare


def _cmp(**pairs: tuple[float, float]) -> dict:
    """A one-seed comparison from {quantity: (scratch, pretrained)}."""
    return {k: compare({0: a}, {0: b}) for k, (a, b) in pairs.items()}


def test_conclusions_claim_only_what_the_numbers_show():
    close = _cmp(f1_macro=(0.600, 0.603), train_loss_first_epoch=(1.500, 1.498), train_loss_mean=(1.0, 1.004),
                 time_to_95_epoch=(3, 3), time_to_95_wall_time_s=(30.0, 31.0), plateau_epoch=(5, 5))
    text = " ".join(fraction_conclusions(close, "context"))
    assert "Training loss fell about equally fast" in text
    assert "rose equally fast" in text and "about the same epoch" in text
    assert "The maximum was about equal" in text and "+0.0030" in text
    # scratch gets near its own best sooner, but its best is far lower: say so
    apart = _cmp(f1_macro=(0.50, 0.60), train_loss_first_epoch=(1.2, 1.5), train_loss_mean=(1.0, 0.8),
                 time_to_95_epoch=(1, 4), time_to_95_wall_time_s=(10.0, 40.0), plateau_epoch=(2, 6))
    lines = fraction_conclusions(apart, "context")
    assert lines[0].startswith("Training loss: mixed")  # lower after epoch 1 for scratch, lower mean for context
    assert lines[1].startswith("Validation macro-F1 rose faster for scratch") and "less far to go" in lines[1]
    assert lines[2].startswith("Scratch plateaued first")
    assert lines[3].startswith("Context reached the higher maximum") and "+0.1000" in lines[3]


def test_a_difference_that_changes_sign_across_seeds_is_not_significant(tmp_path: Path):
    curves = {(0.5, "scratch", 0): [0.40], (0.5, "scratch", 1): [0.50],
              (0.5, "context", 0): [0.45], (0.5, "context", 1): [0.48]}  # +0.05, -0.02
    root = make_study(tmp_path / "mixed", curves, seeds=[0, 1])
    write_report(root)
    summary = json.loads((root / "summary.json").read_text())
    best = summary["comparison"]["0.5"]["context"]["f1_macro"]
    assert best["significant"] is False and best["paired_ci95"][0] < 0 < best["paired_ci95"][1]
    md = (root / "report.md").read_text()
    assert "context − baseline" in md and "not significant" in md and "**significant**" not in md
    assert "the difference is significant at no fraction; not significant at 0.5" in md
    assert "paired 95% CI of the difference [" in md and "so not significant" in md


def test_a_two_seed_verdict_carries_a_caution(tmp_path: Path):
    # both seeds lose 0.0012-0.0014: a tiny difference whose one-degree-of-freedom interval excludes zero
    curves = {(1.0, "scratch", 0): [0.8266], (1.0, "scratch", 1): [0.8277],
              (1.0, "context", 0): [0.8254], (1.0, "context", 1): [0.8263]}
    root = make_study(tmp_path / "two", curves, seeds=[0, 1])
    write_report(root)
    best = json.loads((root / "summary.json").read_text())["comparison"]["1"]["context"]["f1_macro"]
    assert best["significant"] is True and best["paired_n"] == 2
    md = (root / "report.md").read_text()
    assert "At fraction 1 the interval rests on two seeds: two seeds give a t interval with one degree of " \
           "freedom (multiplier 12.7)" in md
    assert "Caution: some intervals below rest on two seeds" in md

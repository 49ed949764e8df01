"""The report's tables: mean ± std over seeds and the pretrained-minus-scratch column."""

from __future__ import annotations

from pathlib import Path

import pytest
from fabricated import make_study

from pretextlab.report import load_study, summarize_study
from pretextlab.report.tables import fraction_table


def test_several_seeds_show_mean_and_std(tmp_path: Path):
    curves = {(0.5, "scratch", 0): [0.30, 0.40], (0.5, "scratch", 1): [0.32, 0.44],
              (0.5, "context", 0): [0.40, 0.50], (0.5, "context", 1): [0.41, 0.50]}
    root = make_study(tmp_path / "seeds", curves, seeds=[0, 1])
    summary = summarize_study(load_study(root))
    agg = summary["aggregate"]["0.5"]["scratch"]["f1_macro"]
    assert agg["mean"] == pytest.approx(0.42) and agg["std"] == pytest.approx(0.0282843, abs=1e-6)
    assert agg["n"] == 2
    c = summary["comparison"]["0.5"]["context"]["f1_macro"]
    assert c["pretrained_minus_scratch"] == pytest.approx(0.08)
    assert c["paired_std"] == pytest.approx(0.0282843, abs=1e-6)  # std of the differences 0.10 and 0.06
    header, rows = fraction_table(summary, 0.5, ["scratch", "context"])
    assert header[1:] == ["scratch (n=2)", "context (n=2)", "context − scratch"]
    assert rows[0][:2] == ["**final val macro-F1 (end of training) (primary)**", "0.4200 ± 0.0283"]
    best = next(r for r in rows if r[0].startswith("secondary: best val macro-F1"))
    assert best[1] == "0.4200 ± 0.0283 (step 20 ± 0)" and best[3] == "+0.0800 (step +0)"


def test_a_difference_over_fewer_seeds_than_the_means_says_so(tmp_path: Path):
    """Part-way through a study the means cover different seeds: the paired difference names its seeds."""
    curves = {(0.5, "scratch", 0): [0.30, 0.40], (0.5, "scratch", 1): [0.32, 0.44],
              (0.5, "context", 0): [0.40, 0.50]}
    root = make_study(tmp_path / "partial", curves, seeds=[0, 1])
    summary = summarize_study(load_study(root))
    _, rows = fraction_table(summary, 0.5, ["scratch", "context"])
    assert rows[0][1] == "0.4200 ± 0.0283" and rows[0][3] == "+0.1000 (paired over 1 seed)"  # 0.50 - 0.40
    full = make_study(tmp_path / "full", {**curves, (0.5, "context", 1): [0.41, 0.50]}, seeds=[0, 1])
    _, rows = fraction_table(summarize_study(load_study(full)), 0.5, ["scratch", "context"])
    assert rows[0][3] == "+0.0800"

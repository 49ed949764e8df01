"""pretextlab.report.lengths and rules.length_verdict: how much pretraining pays, on hand-made gains."""

from __future__ import annotations

import pytest

from pretextlab.report.lengths import length_sentences
from pretextlab.report.rules import EQUAL_WITHIN, length_verdict


def point(epochs: int, gain: float, half: float | None = 0.01, significant: bool | None = None) -> dict:
    """A gain over scratch at one length; half: its 95% interval's half width (None: one seed)."""
    ci = [gain - half, gain + half] if half is not None else None
    sig = significant if significant is not None else (None if ci is None else ci[0] > 0 or ci[1] < 0)
    return {"epochs": epochs, "gain": gain, "ci95": ci, "significant": sig, "n": 3 if ci else 1}


@pytest.mark.parametrize("gains, verdict, pays", [
    ((0.01, 0.04, 0.045), "saturated", 8),  # 8 epochs already inside the best's interval [0.035, 0.055]
    ((0.01, 0.02, 0.05), "still rising", 32),  # only the longest reaches it
    ((0.05, 0.049, 0.05), "saturated", 2),  # every length alike: the shortest pays
])
def test_the_shortest_length_within_the_best_interval_pays(gains, verdict, pays):
    assert length_verdict([point(n, g) for n, g in zip((2, 8, 32), gains)]) == {"verdict": verdict, "pays": pays}


def test_no_length_called_higher_than_scratch_is_no_gain():
    points = [point(2, 0.004, 0.02), point(8, 0.01, 0.02), point(32, -0.01, 0.02)]  # every interval holds 0
    assert length_verdict(points) == {"verdict": "no gain", "pays": None}


def test_with_one_seed_equal_within_decides():
    assert length_verdict([point(2, EQUAL_WITHIN, None), point(8, EQUAL_WITHIN / 2, None)])["verdict"] == "no gain"
    assert length_verdict([point(2, 0.02, None), point(8, 0.03, None), point(32, 0.033, None)]) == \
        {"verdict": "saturated", "pays": 8}


def test_the_sentences_quote_every_length_and_the_call():
    lengths = {"context": {"lengths": [2, 8], "pretext": {
        "2": {"accuracy": 0.41, "loss": 1.6, "minutes": 3.0}, "8": {"accuracy": 0.55, "loss": 1.2, "minutes": 12.5}},
        "fractions": {"0.1": {"points": [point(2, 0.0, 0.01), point(8, 0.03, 0.01)],
                              **length_verdict([point(2, 0.0, 0.01), point(8, 0.03, 0.01)])}}}}
    lines = length_sentences(lengths, "macro-F1")
    assert lines[0] == ("**context, 10% of the labels**: macro-F1 gain over scratch +0.0000 [-0.0100, +0.0100] after 2 "
                        "epochs; +0.0300 [+0.0200, +0.0400] after 8 epochs: still rising: only the longest, 8 epochs, "
                        "reaches the best gain.")
    assert lines[1] == ("**context**: pretraining 2, 8 epochs took 3.0, 12.5 min; its held-out pretext accuracy at "
                        "the end: 0.4100, 0.5500.")

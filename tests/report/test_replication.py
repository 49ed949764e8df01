"""A replicate's report says, verdict by verdict, whether the original study's answer held, reading the
original's numbers only from the original-summary.json copied beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fabricated import make_replicate, make_study, write_probes

from pretextlab.report import write_report
from pretextlab.report.replication import judge

SCRATCH_F1 = (0.40, 0.45, 0.50)
CONTEXT_F1 = (0.48, 0.50, 0.60)  # +0.08 +0.05 +0.10: mean +0.0767, paired 95% CI [+0.0142, +0.1392]
RANDOM_PROBE = (0.30, 0.32, 0.34)
PROBE_GAIN = (0.10, 0.11, 0.10)  # linear and k-NN: +0.1033, 95% CI [+0.0890, +0.1177]


def _study(root: Path, seeds: list[int], scratch: tuple, gains: tuple, probe_gains: tuple, **kw) -> Path:
    """A finished study at fraction 0.5: context = scratch + gains, probes = random + probe_gains, per seed."""
    curves = {(0.5, "scratch", s): [0.30, v] for s, v in zip(seeds, scratch)}
    curves |= {(0.5, "context", s): [0.35, v + d] for s, v, d in zip(seeds, scratch, gains)}
    maker = make_replicate if "original" in kw else make_study
    root = maker(root, curves=curves, seeds=seeds, **kw)
    write_probes(root, "random-init", {(0.5, s): v for s, v in zip(seeds, RANDOM_PROBE)})
    write_probes(root, "pretrain-context", {(0.5, s): v + d for s, v, d in zip(seeds, RANDOM_PROBE, probe_gains)})
    return root


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    root = _study(tmp_path_factory.mktemp("original") / "first", [0, 1, 2], SCRATCH_F1,
                  tuple(c - s for s, c in zip(SCRATCH_F1, CONTEXT_F1)), PROBE_GAIN)
    write_report(root)
    return root


def _replicate(tmp_path: Path, original: Path, gains: tuple, probe_gains: tuple) -> tuple[dict, str]:
    """A replicate with seeds 3-5, rendered after the original is gone (only its copied summary.json is left)."""
    gone = shutil.copytree(original, tmp_path / "gone")
    root = _study(tmp_path / "again", [3, 4, 5], (0.42, 0.44, 0.46), gains, probe_gains, original=gone)
    shutil.rmtree(gone)
    md = write_report(root).read_text()
    return json.loads((root / "summary.json").read_text())["replication"], md


def test_a_replicate_that_agrees_holds(original: Path, tmp_path: Path):
    rep, md = _replicate(tmp_path, original, (0.07, 0.08, 0.06), PROBE_GAIN)
    first = json.loads((original / "summary.json").read_text())
    ft = next(v for v in rep["verdicts"] if v["protocol"] == "finetune")
    assert ft["original"]["difference"] == first["comparison"]["0.5"]["context"]["f1_macro"]["pretrained_minus_scratch"]
    assert ft["replicate"]["difference"] == pytest.approx(0.07) and ft["held"] is True
    assert [(v["protocol"], v["held"]) for v in rep["verdicts"]] == [("finetune", True), ("linear", True),
                                                                     ("knn", True)]
    assert rep["counts"] == {"held": 3, "not_held": 0, "not_tested": 0}
    assert "## Does the original study's answer hold?" in md
    assert "replicate's mean paired difference lies inside the original's 95% interval and the significance" in md
    assert "**3 of 3 tested verdicts held**" in md
    assert ("| fine-tune | 0.5 | context | +0.0767 [+0.0142, +0.1392] **significant** | +0.0700 [+0.0452, +0.0948] "
            "**significant** | **held**: the replicate's difference is inside the original's interval and its "
            "verdict is the same |") in md
    assert md.index("## Does the original study's answer hold?") < md.index("## Every method under every")


def test_a_replicate_that_disagrees_does_not_hold(original: Path, tmp_path: Path):
    rep, md = _replicate(tmp_path, original, (0.01, -0.02, 0.02), (0.0, 0.02, 0.01))
    assert [(v["protocol"], v["inside"], v["same_significance"], v["held"]) for v in rep["verdicts"]] == [
        ("finetune", False, False, False), ("linear", False, False, False), ("knn", False, False, False)]
    assert "**0 of 3 tested verdicts held**" in md
    assert ("**not held**: the replicate's difference is outside the original's interval and its verdict is not "
            "the same") in md


def test_a_verdict_without_an_interval_is_not_tested():
    one = {"difference": 0.05, "ci95": None, "significant": None, "n": 1}
    three = {"difference": 0.05, "ci95": [0.01, 0.09], "significant": True, "n": 3}
    assert judge("finetune", "1", "context", "f1_macro", "validation", one, three)["held"] is None
    v = judge("finetune", "1", "context", "f1_macro", "validation", three, one)
    assert v["held"] is None and v["inside"] is True and "one seed" in v["why"]
    assert judge("linear", "1", "context", "f1_macro", "validation", three, None)["why"].startswith("not in the")

"""The study layouts the report reads: pretraining per seed or shared, with or without a test split, and
the precision a study ran at; each says in the report what its numbers cover."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fabricated import make_study, write_probes

from pretextlab.report import load_study, write_report

FRACTIONS = (1.0, 0.5)
PROTOCOLS = {"protocols": ["finetune", "linear", "knn"]}


def _curves(seeds: tuple[int, ...] = (0, 1)) -> dict:
    """Two fractions x two arms x seeds; context ahead by 0.10 (+0.02 per seed)."""
    return {(f, arm, s): [0.30, 0.40 + 0.1 * f + 0.03 * s + (0.10 + 0.02 * s) * (arm == "context")]
            for f in FRACTIONS for arm in ("scratch", "context") for s in seeds}


def _answer_lead(md: str) -> str:
    """The first paragraph of the report's answer (the headline's own caveats)."""
    return md.split("## Answer\n\n")[1].split("\n\n")[0]


@pytest.fixture(scope="module")
def per_seed(tmp_path_factory) -> Path:
    """Two seeds, each with its own pretraining (pretrain-context-s0, -s1) and its own probes.json."""
    root = make_study(tmp_path_factory.mktemp("per_seed") / "demo", _curves(), seeds=[0, 1], pretraining="per-seed",
                      extra=PROTOCOLS)
    write_probes(root, "random-init", {(f, s): 0.30 + 0.01 * s for f in FRACTIONS for s in (0, 1)})
    for s in (0, 1):
        write_probes(root, f"pretrain-context-s{s}", {(f, s): 0.40 + 0.02 * s for f in FRACTIONS})
    write_report(root)
    return root


def test_a_per_seed_study_is_read_whole(per_seed: Path):
    study = load_study(per_seed)
    assert study.missing == [] and study.missing_probes == [] and not study.problems
    assert [p.folder for p in study.pretrainings["context"]] == ["pretrain-context-s0", "pretrain-context-s1"]
    assert study.pretexts["context"].seed == 0  # the one the report shows
    assert sorted(study.probes["context"]) == ["f0.5-s0", "f0.5-s1", "f1-s0", "f1-s1"]  # both files merged
    md = (per_seed / "report.md").read_text()
    assert "incomplete" not in md and "Missing" not in md and "Probes not run yet" not in md
    assert "All runs finished (8 fine-tuning, 2 pretext)." in md
    summary = json.loads((per_seed / "summary.json").read_text())
    linear = summary["evaluation"]["cells"]["linear"]["0.5"]["context"]["f1_macro"]
    assert linear["by_seed"] == pytest.approx({"0": 0.40, "1": 0.42})
    assert summary["evaluation"]["vs_baseline"]["knn"]["1"]["context"]["f1_macro"]["seeds"] == [0, 1]


def test_pretraining_costs_count_every_pretraining(per_seed: Path, tmp_path: Path):
    summary = json.loads((per_seed / "summary.json").read_text())
    ctx = summary["pretext"]["context"]
    assert ctx["pretrainings"] == 2 and ctx["total_cost_s"] == pytest.approx(14.5 + 15.5)
    assert ctx["backbone_sha256_by_seed"] == {"0": "sha0", "1": "sha1"} and ctx["shown"] == "pretrain-context-s0"
    md = (per_seed / "report.md").read_text()
    assert "Pretraining cost 15 s per seed on average (2 pretrainings, 30 s in all)." in md
    assert "| pretrain-context-s0 | 14.5 |" in md and "| pretrain-context-s1 | 15.5 |" in md  # stage table
    assert "Shown: `pretrain-context-s0/`, seed 0's pretraining, one of 2" in md
    assert "| pretraining | per seed: each seed pretrains its own backbone |" in md

    shared = make_study(tmp_path / "shared", _curves(), seeds=[0, 1])  # study.json without the key: shared
    shared_md = write_report(shared).read_text()
    assert "Pretraining cost 14 s once, shared by all seeds and fractions." in shared_md
    assert json.loads((shared / "summary.json").read_text())["pretext"]["context"]["pretrainings"] == 1


def test_the_headline_says_whether_intervals_cover_pretraining(per_seed: Path, tmp_path: Path):
    shared = write_report(make_study(tmp_path / "shared", _curves(), seeds=[0, 1])).read_text()
    assert ("Its intervals over the 2 seeds cover label subsets and initialisations but not pretraining: one "
            "pretraining per task (seed 0), shared by every seed.") in _answer_lead(shared)
    lead = _answer_lead((per_seed / "report.md").read_text())
    assert ("Each of the 2 seeds is a whole replicate (its own pretraining, label subset and initialisation), so "
            "the intervals include pretraining's variance.") in lead
    assert "but not pretraining" not in (per_seed / "report.md").read_text()
    one = write_report(make_study(tmp_path / "one", _curves((0,)), seeds=[0])).read_text()
    assert "not pretraining" not in _answer_lead(one) and "whole replicate" not in one


def test_test_split_numbers_are_reported_and_their_split_named(tmp_path: Path):
    test = {(f, arm, s): 0.35 + 0.02 * s + (0.10 + 0.02 * s) * (arm == "context")  # context ahead 0.10, 0.12
            for f in FRACTIONS for arm in ("scratch", "context") for s in (0, 1)}
    root = make_study(tmp_path / "tested", _curves(), seeds=[0, 1], test=test)
    write_probes(root, "random-init", {(f, s): 0.30 for f in FRACTIONS for s in (0, 1)}, test=-0.05)
    write_probes(root, "pretrain-context", {(f, s): 0.40 + 0.01 * s for f in FRACTIONS for s in (0, 1)}, test=-0.05)
    md = write_report(root).read_text()
    summary = json.loads((root / "summary.json").read_text())
    assert summary["headline"]["split"] == "test" and summary["headline"]["quantity"] == "test_f1_macro"
    c = summary["comparison"]["0.5"]["context"]
    assert c["test_f1_macro"]["pretrained_minus_scratch"] == pytest.approx(0.11)
    assert c["test_accuracy"]["paired_ci95"] is not None and "test_recall_macro" in c
    test_ev = summary["evaluation"]["test"]
    assert test_ev["cells"]["finetune"]["1"]["context"]["f1_macro"]["by_seed"] == pytest.approx({"0": 0.45, "1": 0.49})
    assert test_ev["cells"]["linear"]["1"]["context"]["f1_macro"]["by_seed"] == pytest.approx({"0": 0.35, "1": 0.36})
    assert test_ev["vs_baseline"]["knn"]["0.5"]["context"]["f1_macro"]["difference"] == pytest.approx(0.105)
    assert summary["evaluation"]["cells"]["linear"]["1"]["context"]["f1_macro"]["mean"] == pytest.approx(0.405)

    assert "claims (the answer, the protocol comparison) are on the **test split** (60 images)" in md
    assert "The answer rests on the **test split**" in _answer_lead(md)
    assert ("**Pretraining with context**, on test macro-F1 of the final model (pretrained minus scratch [paired 95% "
            "t interval over seeds]): made no significant difference at fraction 1 (+0.1100 [") in md
    assert "| fraction | labelled images | scratch test macro-F1 | context test macro-F1 | context − scratch |" in md
    assert "Test macro-F1: mean ± std [95% CI] over seeds" in md and "Validation macro-F1: mean ± std" in md
    assert "**linear probe, context vs random init** (test macro-F1)" in md
    assert "| **test macro-F1 (final model) (primary)** | 0.3600 ± 0.0141 | 0.4700 ± 0.0283 | +0.1100 |" in md
    assert ("Means over 2 seeds: on the test split (never used for any choice) the final model's "
            "macro-F1 is 0.4700 with context pretraining vs 0.3600 from scratch: +0.1100 for context, within the "
            "spread between seeds") in md
    assert "*Test macro-F1 vs label fraction" in md


def test_without_a_test_split_the_report_says_so(per_seed: Path):
    md = (per_seed / "report.md").read_text()
    assert "**no test split**: every number is on the validation split" in md
    assert ("The answer rests on the **validation split** (there is no test split): validation macro-F1 of each "
            "run's final model (end of training, no evaluation picked)") in md
    assert "Every row is on the validation split" in md and "| context test macro-F1 |" not in md


def test_precision_is_stated_and_a_run_at_another_warned(tmp_path: Path):
    root = make_study(tmp_path / "p", extra={"precision": "fp32"})
    md = write_report(root).read_text()
    assert "| precision | fp32 (decided once for the study) |" in md and "**Warning**" not in md
    config = json.loads((root / "f1-context-s0" / "config.json").read_text())
    (root / "f1-context-s0" / "config.json").write_text(json.dumps({**config, "resolved": {"precision": "bf16"}}))
    md = write_report(root).read_text()
    assert ("**Warning**: 1 run(s) trained at another precision than the study's fp32 (config.json "
            "resolved.precision): `f1-context-s0` (bf16).") in md
    assert json.loads((root / "summary.json").read_text())["precision"]["differing"] == {"f1-context-s0": "bf16"}
    older = write_report(make_study(tmp_path / "older")).read_text()  # study.json from before "precision"
    assert "| precision | fp32 (every run's config.json; study.json does not record it) |" in older

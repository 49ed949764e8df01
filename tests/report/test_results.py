"""Reading a study folder: planned and found runs, pretrain folders, probes, and what is missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fabricated import make_study, write_probes

from pretextlab.report import load_study, write_report


def test_load_study_finds_planned_and_unplanned_folders(tmp_path: Path):
    root = make_study(tmp_path / "study")
    shutil.copytree(root / "pretrain-context", root / "pretrain-rotation")  # on disk, not in study.json
    shutil.rmtree(root / "f0.1-context-s0")
    config = json.loads((root / "study.json").read_text())
    (root / "study.json").write_text(json.dumps({**config, "protocols": ["finetune", "linear"]}))
    write_probes(root, "random-init", {(1.0, 0): 0.3})
    study = load_study(root)
    assert [r.name for r in study.runs] == ["f1-scratch-s0", "f1-context-s0", "f0.1-scratch-s0"]
    assert study.missing == ["f0.1-context-s0"]
    assert list(study.pretexts) == ["context", "rotation"] and study.pretexts["rotation"].status == "finished"
    assert list(study.probes) == ["scratch"]
    assert study.probes["scratch"]["f1-s0"].on("validation", "linear")["f1_macro"] == 0.3
    assert study.missing_probes == ["scratch f0.1-s0", "context f1-s0", "context f0.1-s0"]
    assert study.fractions == [1.0, 0.1] and study.arms == ["scratch", "context"] and not study.problems


def test_runs_of_both_formats_read_as_curves_over_optimizer_steps(tmp_path: Path):
    # new: a step column, steps.csv, run length in summary.json; older: one row per epoch and none of these
    curves = {(0.5, "scratch", 0): {"f1": [0.3, 0.4, 0.5, 0.55], "old_format": True},
              (0.5, "context", 0): {"f1": [0.35, 0.42, 0.48, 0.5, 0.51, 0.53, 0.6, 0.61], "epochs": 4}}
    root = make_study(tmp_path / "formats", curves)
    assert (root / "f0.5-context-s0" / "steps.csv").exists() and not (root / "f0.5-scratch-s0" / "steps.csv").exists()
    study = load_study(root)
    old, new = study.finished(0.5, "scratch")[0], study.finished(0.5, "context")[0]
    assert "step" not in old.history[0] and old.budget == 40 and old.schedule == "onecycle"
    assert old.curve("val_f1_macro") == [(10.0, 0.3), (20.0, 0.4), (30.0, 0.5), (40.0, 0.55)]  # epoch x 10 steps
    assert new.curve("val_f1_macro")[:2] == [(5.0, 0.35), (10.0, 0.42)] and new.history[0]["epoch"] == 0.5
    assert new.budget == new.summary.planned_steps == 40 and new.history[-1]["images_seen"] == 40 * 32
    md = write_report(root).read_text()  # both read and compared on one step axis
    entry = json.loads((root / "summary.json").read_text())["answers"]["0.5"]["context"]
    top = entry["by_seed"]["0"]["metric"]["levels"][-1]  # 90% of the way from 0.3 to 0.61: 0.579
    assert entry["budget"] == 40 and top["scratch_step"] is None and top["pretrained_step"] == 35
    assert "90% of the way (0.579): context at step 35, scratch never got there" in md


def test_patience_is_read_from_the_config_when_a_summary_lacks_it(tmp_path: Path):
    """Runs finished before summaries recorded the plateau schedule's patience still report it."""
    from fabricated import write_finetune_run

    root = tmp_path / "old"
    root.mkdir()
    write_finetune_run(root, 0.1, "scratch", 0, [0.3, 0.4, 0.4], {}, schedule="plateau", patience=4)
    summary_path = root / "f0.1-scratch-s0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary.pop("patience")
    summary_path.write_text(json.dumps(summary))
    assert load_study(root).runs[0].patience == 4

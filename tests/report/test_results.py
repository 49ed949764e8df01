"""Reading a study folder: planned and found runs, pretrain folders, probes, and what is missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fabricated import make_study, write_probes

from pretextlab.report import load_study


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
    assert list(study.probes) == ["scratch"] and study.probes["scratch"]["f1-s0"]["linear"]["f1_macro"] == 0.3
    assert study.missing_probes == ["scratch f0.1-s0", "context f1-s0", "context f0.1-s0"]
    assert study.fractions == [1.0, 0.1] and study.arms == ["scratch", "context"] and not study.problems

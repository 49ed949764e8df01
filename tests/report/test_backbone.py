"""pretextlab.report.backbone: the views that run the pretrained network load it as plain data only."""

from __future__ import annotations

import os

import torch
from fabricated import make_study

from pretextlab.report import write_report


class _Plant:
    """Unpickling this object would create the marker file: a checkpoint that runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_report_on_a_study_with_a_replaced_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "code-ran"
    study = make_study(tmp_path / "s")
    ckpt = study / "pretrain-context" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    torch.save({**state, "plant": _Plant(marker)}, ckpt)
    (study / "pretrain-context" / "backbone.safetensors").unlink(missing_ok=True)
    write_report(study)
    assert not marker.exists()
    assert "refused" in (study / "report.md").read_text()

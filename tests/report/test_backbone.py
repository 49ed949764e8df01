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


def test_a_user_file_backbone_is_not_run_and_the_report_says_why(tmp_path):
    marker = tmp_path / "code-ran"
    net_file = tmp_path / "mynet.py"
    net_file.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n\n"
                        "def Net(channels):\n    raise SystemExit('the report built the network')\n")
    study = make_study(tmp_path / "s")
    spec = f"{net_file}:Net"
    ckpt = study / "pretrain-context" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    torch.save({**state, "meta": {**state["meta"], "backbone": spec}}, ckpt)
    write_report(study)
    assert not marker.exists()
    md = (study / "report.md").read_text()
    note = [line for line in md.splitlines() if "runs no code a study folder names" in line]
    assert note == [f"The backbone `{spec}` is the study's own Python file; the report runs no code a study folder "
                    "names, so it shows no filters or feature maps for it."]
    assert not list((study / "figures").glob("filters_*.png")) and not list((study / "figures").glob("feature_*"))


def test_an_exported_study_keeps_the_backbone_figures_drawn_while_it_had_weights(tmp_path):
    """export leaves weights out: re-rendering the copy must not drop the filters and feature maps."""
    study = make_study(tmp_path / "s")
    write_report(study)
    drawn = sorted(p.name for p in (study / "figures").glob("f*_context.png"))
    assert drawn == ["feature_maps_context.png", "filters_context.png"]
    for name in ("checkpoint.pt", "backbone.safetensors"):
        (study / "pretrain-context" / name).unlink(missing_ok=True)
    write_report(study)
    md = (study / "report.md").read_text()
    assert "an exported study keeps no weights" in md and all(f"figures/{n}" in md for n in drawn)
    assert sorted(p.name for p in (study / "figures").glob("f*_context.png")) == drawn

"""`pretextlab report` on hostile or broken study folders: data strings stay text in report.md and report.html,
a malformed file, a full disk or a link where the report writes ends in one line, and a malformed image file
only leaves its figure out."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from fabricated import make_study
from matplotlib.figure import Figure

from pretextlab import cli
from pretextlab.report import write_report

HOSTILE = ["<script>alert(1)<", "<img src=x onerror=alert(2)>", "$\\frac$ a_b *c* [x](y) |p| `t` \\ &amp;"]
CURVES = {(1.0, "scratch", 0): [0.30, 0.41, 0.47], (1.0, "context", 0): [0.45, 0.55, 0.58]}


@pytest.fixture(scope="module")
def study_template(tmp_path_factory) -> Path:
    """A small finished study, copied by each test that breaks it."""
    return make_study(tmp_path_factory.mktemp("template") / "study", CURVES)


@pytest.fixture
def study(study_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(study_template, tmp_path / "study"))


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_strings_from_data_stay_text_in_report_md_and_html(study: Path):
    _edit_json(study / "study.json", backbone="<b>net</b>", data={"source": "<i>src</i>", "val_fraction": 0.1},
               dataset={**json.loads((study / "study.json").read_text())["dataset"], "classes": HOSTILE,
                        "name": "<u>ds</u>"})
    for run in ("f1-scratch-s0", "f1-context-s0"):
        _edit_json(study / run / "summary.json", classes=HOSTILE)
    write_report(study)
    page, md = (study / "report.html").read_text(), (study / "report.md").read_text()
    for tag in ("<script", "<img src=x", "<b>net", "<i>src", "<u>ds"):
        assert tag not in page and tag not in md, tag
    assert not re.search(r"<[^>]*onerror=", page)
    cell = ("&lt;script&gt;alert(1)&lt;, &lt;img src=x onerror=alert(2)&gt;, "
            "$\\frac$ a_b *c* [x](y) |p| `t` \\ &amp;amp;")
    assert f"<td>3: {cell}</td>" in page  # Python-Markdown shows every character literally, in one cell
    assert "<td>&lt;u&gt;ds&lt;/u&gt;</td>" in page and "<strong>&lt;b&gt;net&lt;/b&gt;</strong>" in page


MALFORMED = {  # what is written where, and the words the one line must hold
    "summary strings": ("f1-scratch-s0/summary.json", lambda s: {**s, "final": {**s["final"], "f1_macro": "high"}},
                        '"final.f1_macro" is "high"'),
    "summary NaN": ("f1-context-s0/summary.json", lambda s: {**s, "final": {**s["final"], "f1_macro": float("nan")}},
                    '"final.f1_macro" is NaN'),
    "summary huge array": ("f1-scratch-s0/summary.json", lambda s: {**s, "planned_steps": [0] * 2_000_000},
                           '"planned_steps" is a list of 2000000 items'),
    "study fractions a string": ("study.json", lambda s: {**s, "fractions": "0.1,0.5"}, '"fractions" is "0.1,0.5"'),
    "study wrong types": ("study.json", lambda s: {**s, "stage_times_s": {"f1-scratch-s0": "slow"}},
                          '"stage_times_s.f1-scratch-s0" is "slow"'),
    "probes wrong types": ("random-init/probes.json", lambda s: {"results": {"f1-s0": {"fraction": 1, "seed": "0"}}},
                           '"results.f1-s0.seed" is "0"'),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_json_file_is_one_line_naming_it(study: Path, case: str, monkeypatch, capsys):
    name, change, words = MALFORMED[case]
    path = study / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(change(json.loads(path.read_text()) if path.exists() else {})))
    _refused(study, monkeypatch, capsys, str(path), words, "where", "re-run the study")


@pytest.mark.parametrize("name", ["study.json", "f1-scratch-s0/summary.json", "f1-scratch-s0/config.json",
                                  "pretrain-context/summary.json"])
def test_a_truncated_json_file_is_one_line_naming_it(study: Path, name: str, monkeypatch, capsys):
    text = (study / name).read_text()
    (study / name).write_text(text[:len(text) // 2])
    _refused(study, monkeypatch, capsys, str(study / name), "is not valid JSON", "restore it")


GARBAGE_CSV = {
    "random bytes": b"\xff\xfe\x00epoch,step\n" + random.Random(0).randbytes(4096),
    "wrong header": b"a,b,c\n1,2,3\n4,5,6\n",
    "non-numeric cells": b"epoch,step,val_f1_macro\n1,10,0.3\n2,20,abc\n",
}


@pytest.mark.parametrize("case", list(GARBAGE_CSV))
def test_a_garbage_metrics_csv_is_one_line_naming_it(study: Path, case: str, monkeypatch, capsys):
    path = study / "f1-context-s0" / "metrics.csv"
    path.write_bytes(GARBAGE_CSV[case])
    _refused(study, monkeypatch, capsys, str(path), "restore it")


def _report_in_process(study: Path, monkeypatch, capsys) -> str:
    """`pretextlab report STUDY` through the CLI's main in this process (so that a writer can be patched):
    asserts exit 2 with one stderr line and returns it."""
    monkeypatch.setattr(sys, "argv", ["pretextlab", "report", str(study)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("pretextlab: error: "), err
    return err[0]


def _refused(study: Path, monkeypatch, capsys, *fragments: str) -> None:
    """The report of `study` is refused in one line holding every fragment (in process: a subprocess per case
    would cost the suite a torch import each)."""
    line = _report_in_process(study, monkeypatch, capsys)
    for f in fragments:
        assert f in line, (f, line)


def test_a_full_disk_while_writing_a_figure_is_one_line(study: Path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    line = _report_in_process(study, monkeypatch, capsys)
    assert "figures" in line and ".png" in line and "the disk is full" in line


def test_a_full_disk_while_writing_report_md_is_one_line(study: Path, monkeypatch, capsys):
    replace = os.replace

    def full_at_report_md(src, dst, *args, **kwargs):
        if Path(dst).name == "report.md":
            raise OSError(errno.ENOSPC, "No space left on device")
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_at_report_md)
    line = _report_in_process(study, monkeypatch, capsys)
    assert "report.md" in line and "the disk is full" in line


@pytest.mark.parametrize("name", ["figures", "report.md", "report.html", "summary.json", "figures/loss.png"])
def test_the_report_never_writes_through_a_link(study: Path, tmp_path: Path, name: str, monkeypatch, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    target = outside if name == "figures" else outside / "keep.txt"
    (study / name).parent.mkdir(exist_ok=True)
    (study / name).symlink_to(target)
    _refused(study, monkeypatch, capsys, str(study / name), "is a link to", "remove the link")
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]  # nothing written, nothing deleted
    assert (outside / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("name, content", [
    ("pretrain-context/samples.pt", torch.zeros(3)),  # a tensor, not the dict of images samples() writes
    ("f1-scratch-s0/examples.pt", torch.rand(8, 3, 16, 16)),  # float, not uint8 images
])
def test_a_malformed_image_file_only_leaves_its_figure_out(study: Path, name: str, content, caplog):
    for path in [study / name, *study.glob(f"f*-s*/{Path(name).name}")]:
        torch.save(content, path)
    with caplog.at_level(logging.WARNING, logger="pretextlab.report"):
        md = write_report(study).read_text()
    assert any(Path(name).name in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    figure = "pretext_samples_context.png" if "samples" in name else "examples_f1.png"
    assert not (study / "figures" / figure).exists() and f"figures/{figure}" not in md
    assert (study / "figures" / "loss.png").exists()  # the rest of the report is there

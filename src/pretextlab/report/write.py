"""Writing a study's report files: what `pretextlab report` and the end of `pretextlab study` call."""

from __future__ import annotations

import logging
from pathlib import Path

from matplotlib import rc_context

from ..errors import UserError
from ..io import save_json, save_text
from ..layout import FIGURES, REPORT_HTML, REPORT_MD, REPORT_SUMMARY, pretrain_dir
from ..layout import METRICS as METRICS_CSV
from .files import refuse_link
from .render import html
from .results import load_study
from .sections import build
from .summary import finite, summarize_study

log = logging.getLogger(__name__)


def write_report(study_dir: Path) -> Path:
    """Write report.md, report.html, figures/*.png and summary.json into the study folder; return report.md."""
    study = load_study(Path(study_dir))
    if not study.runs and not study.pretexts:
        raise UserError(f"{study_dir} holds no run with a finished epoch yet (no f*-*-s*/{METRICS_CSV} or "
                        f"{pretrain_dir('*')}/{METRICS_CSV}); run the study first, or pass the study's folder")
    fig_dir = study.path / FIGURES
    for name in (FIGURES, REPORT_MD, REPORT_HTML, REPORT_SUMMARY):  # before anything is written
        refuse_link(study.path / name)
    summary = summarize_study(study)
    with rc_context({"text.parse_math": False}):  # a class or task name with "$" is text, not broken math
        doc = build(study, summary, fig_dir)
    save_json(finite(summary), study.path / REPORT_SUMMARY)
    markdown = doc.markdown()
    save_text(markdown, study.path / REPORT_MD)
    save_text(html(markdown, fig_dir, f"pretextlab report: {summary['study']}"), study.path / REPORT_HTML)
    # A figure of an earlier state of the study (say the confusion matrix of what was then the smallest
    # fraction) would otherwise stay in figures/ beside a report that no longer shows it, and be exported.
    for stale in fig_dir.glob("*.png"):
        if stale.name not in doc.figures and (stale.is_symlink() or stale.is_file()):  # a link: itself, not its target
            stale.unlink()
    log.info("wrote %s, %s and %s", study.path / REPORT_MD, study.path / REPORT_HTML, fig_dir)
    return study.path / REPORT_MD

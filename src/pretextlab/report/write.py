"""Writing a study's report files: what `pretextlab report` and the end of `pretextlab study` call."""

from __future__ import annotations

import logging
from pathlib import Path

from matplotlib import rc_context

from ..errors import UserError
from ..io import save_json, save_text
from ..layout import ANSWERS_HTML, ANSWERS_MD, FIGURES, REPORT_HTML, REPORT_MD, REPORT_SUMMARY, pretrain_dir
from ..layout import METRICS as METRICS_CSV
from .answer_page import build_answers
from .files import refuse_link
from .render import html
from .results import load_study
from .sections import build
from .summary import finite, summarize_study

log = logging.getLogger(__name__)


def write_report(study_dir: Path) -> Path:
    """Write answers.md and answers.html (the page a student pastes), report.md and report.html (the details),
    figures/*.png and summary.json into the study folder; return report.md."""
    study = load_study(Path(study_dir))
    if not study.runs and not study.pretexts:
        raise UserError(f"{study_dir} holds no run with a finished epoch yet (no f*-*-s*/{METRICS_CSV} or "
                        f"{pretrain_dir('*')}/{METRICS_CSV}); run the study first, or pass the study's folder")
    fig_dir = study.path / FIGURES
    for name in (FIGURES, REPORT_MD, REPORT_HTML, REPORT_SUMMARY, ANSWERS_MD, ANSWERS_HTML):  # before any write
        refuse_link(study.path / name)
    summary = summarize_study(study)
    with rc_context({"text.parse_math": False}):  # a class or task name with "$" is text, not broken math
        doc = build(study, summary, fig_dir)
        examples = [n for n in doc.figures if n.startswith("examples_")]
        answers = build_answers(study, summary, fig_dir, examples[-1] if examples else None)
    save_json(finite(summary), study.path / REPORT_SUMMARY)
    markdown = doc.markdown()
    save_text(markdown, study.path / REPORT_MD)
    save_text(html(markdown, fig_dir, f"pretextlab report: {summary['study']}"), study.path / REPORT_HTML)
    page = answers.markdown()
    save_text(page, study.path / ANSWERS_MD)
    save_text(html(page, fig_dir, f"pretextlab answers: {summary['study']}"), study.path / ANSWERS_HTML)
    # A figure of an earlier state of the study (say the confusion matrix of what was then the smallest
    # fraction) would otherwise stay in figures/ beside a report that no longer shows it, and be exported.
    for stale in fig_dir.glob("*.png"):
        kept = stale.name in doc.figures + answers.figures
        if not kept and (stale.is_symlink() or stale.is_file()):  # a link: itself, not its target
            stale.unlink()
    log.info("wrote %s (the answers), %s (the details), their html and %s", study.path / ANSWERS_MD,
             study.path / REPORT_MD, fig_dir)
    return study.path / REPORT_MD

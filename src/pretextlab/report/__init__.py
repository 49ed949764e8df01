"""The study report: the homework's questions answered from the numbers the runs wrote.

`write_report(study_dir)` reads a study folder (it never trains) and writes answers.md (the page a student
pastes: the four answers per label fraction), report.md (the details; figures linked as figures/NAME.png), their
self-contained .html copies, figures/*.png and summary.json, the numbers behind both. A study still in progress
renders too: missing and unfinished runs are listed, curves show what exists, and tables and conclusions use
finished runs only.

The package reads what the runs wrote and never imports the training side (study, train, finetune,
pretext), so a report renders anywhere the files are. Its modules, one concern each:

    files        reading and writing a study's files safely: typed checks derived from pretextlab.schema,
                 schema.upgrade at the reading edge, size limits, one-line errors, no links
    records      the typed records a study's files are read into (StudyConfig, RunSummary, ProbeEntry, ...)
    results      reading a study folder into them, once (Study, Run, PretextRun, load_study)
    image_files  reading the image files the figures show (examples.pt, samples.pt)
    rules        the pure rules on curves of (step, value): steps to common levels, who is ahead, the plateau
                 before the rate falls (or under a decaying or the plateau schedule), ties, trends
    dynamics     per-run curve facts, paired comparisons and the trend across fractions
    answers      the four questions per seed's pair of runs and over seeds (summary.json "answers"), in sentences
    summary      per-run numbers, aggregates over seeds, paired comparisons: summary.json
    replication  a replicate's verdicts on the study it repeats (original-summary.json)
    formatting   numbers as text
    conclusions  the generated sentences of the answer: headline, per arm across fractions, per protocol
    notes        the rules, splits, precision and timing, stated once
    tables       the tables
    canvas       what every figure shares: the canvas, the width, one colour per arm, the legend
    figures      the figures drawn from curves and numbers (against optimizer steps)
    images       the image figures: predictions, confusion matrices, pretext samples
    backbone     the figures that run a network (filters, feature maps)
    render       report.md as a Doc, report.html from it with Python-Markdown; md(), every data string's escape
    sections     report.md's sections in reading order
    answer_page  answers.md
    write        write_report
"""

from __future__ import annotations

from .figures import run_figure
from .results import load_study
from .summary import summarize_study
from .write import write_report

__all__ = ["load_study", "run_figure", "summarize_study", "write_report"]

"""answers.md: the page a student pastes into a README. Per label fraction: one figure (training loss,
validation loss and validation macro-F1, every seed's run to its end), the metric table (final and highest per
network, test beside validation where there is a test split) and the four answers in short plain sentences;
then example predictions and a few lines on how to read it. The rules, the intervals and the full tables are in
report.md, which it links: this page defines every word it uses and nothing more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..layout import REPORT_MD, SCRATCH, parse_run_name
from .answers import fraction_answers
from .figures import answer_figure, length_figure
from .formatting import labels_at, number
from .lengths import length_sentences
from .render import Doc, md
from .results import Study, fraction_key
from .rules import LEVELS, PLATEAU_GAIN, PLATEAU_WAIT, RULES

SCHEDULES = {"wsd": "warm up, hold the learning rate constant, then lower it to zero over the last {cooldown:.0%} "
                    "of the steps",
             "onecycle": "warm up, then lower the learning rate steadily to zero",
             "cosine": "lower the learning rate to zero along a cosine",
             "constant": "a constant learning rate",
             "plateau": "a constant learning rate, stopping once validation {metric} has not improved for "
                        "{patience} evaluations{kept}"}


def build_answers(study: Study, summary: dict[str, Any], fig_dir: Path, examples: str | None) -> Doc:
    """The answer page of a study; its figures are drawn into fig_dir. `examples`: the name of the example
    predictions figure report.md drew (None: no finished run has examples yet)."""
    doc = Doc()
    sc = study.scoring
    arms = [a for a in study.arms if a != SCRATCH]
    cfg = study.config
    name = next((n for n in (cfg.dataset and cfg.dataset.name, cfg.data.source) if n is not None), "the data")
    doc.heading(1, f"Does {' / '.join(md(a) for a in arms) or 'pretext'} pretraining help? ({md(name)})")
    doc.para(_setup(study, summary, arms))
    done = len(study.finished())
    planned = len(study.runs) + len([n for n in study.missing if parse_run_name(n)])  # not the pretrainings
    if done < planned:
        doc.para(f"**This study is not finished**: {done} of {planned} fine-tuning runs are done; the "
                 "figures also show runs still training (to where they are), the tables and answers use finished "
                 "runs only, and an answer compares only the seeds both networks have finished.")
    for f in study.fractions:
        key = fraction_key(f)
        n = labels_at(summary, f)
        doc.heading(2, f"{f:.0%} of the labels" + (f" ({n:,} images)" if n else ""))
        if not any(r.fraction == f for r in study.runs):
            doc.para("No run at this fraction has finished an evaluation yet.")
            continue
        fig = f"answers_f{f:g}.png"
        answer_figure(study, f, fig_dir / fig)
        doc.figure(fig, "Left to right: training loss (smoothed), validation loss, validation "
                        f"{sc.name}, against optimizer steps; one line per network and seed, each to its end")
        doc.table(*metric_table(study, summary, f))
        if any(r.summary.per_class_iou for r in study.finished(f)):  # segmentation: the IoU of every class
            doc.table(*class_iou_table(study, f))
        for arm in arms:
            answers = fraction_answers(summary, key, arm)
            if not answers:
                doc.para(f"{md(arm)} vs scratch: waiting for finished runs of both.")
                continue
            if len(arms) > 1:
                doc.heading(3, f"{md(arm)} vs scratch")
            doc.blocks.append("\n".join(f"{i}. **{q}.** {text}" for i, (q, text) in enumerate(answers, 1)))
    if summary.get("lengths"):
        doc.heading(2, "How much pretraining pays")
        length_figure(summary["lengths"], sc.name, fig_dir / "lengths.png")
        doc.figure("lengths.png", f"Left: validation {sc.name} of the fine-tuned network minus scratch's against "
                                  "pretraining epochs (bars: 95% intervals over seeds); right: the pretext task's "
                                  "own held-out score at the end of each pretraining")
        doc.bullets(length_sentences(summary["lengths"], sc.name))
        doc.para(f"The rule: {RULES['lengths']}.")
    if examples:
        masks = any(r.summary.per_class_iou for r in study.finished())  # segmentation's examples are masks
        doc.heading(2, "Example predictions")
        doc.figure(examples, "Validation images, the true class above each, and each network's prediction with its "
                             "confidence (green: right, red: wrong)" if not masks else
                   "Validation images (left), their true masks, and each network's predicted mask at the smallest "
                   "label fraction; one colour per class (legend below), grey: ignored pixels")
    doc.heading(2, "How to read this page")
    doc.bullets(reading_notes(study, summary))
    return doc


def _setup(study: Study, summary: dict[str, Any], arms: list[str]) -> str:
    cfg = study.config
    runs = [r for r in study.runs if r.finished] or study.runs
    schedule = runs[0].schedule if runs else None
    cooldown = runs[0].config.cooldown if runs else None
    kept = ", keeping the best model" if runs and runs[0].summary and runs[0].summary.kept == "best" else ""
    how = SCHEDULES.get(schedule or "", schedule or "?").format(cooldown=cooldown or 0, metric=study.scoring.name,
                                                                 patience=runs[0].patience if runs else "?", kept=kept)
    seeds = len(study.seeds)
    return (f"The backbone **{md(cfg.backbone or '?')}** was trained twice at each label fraction: from random "
            f"weights (**scratch**) and from the weights that {' and '.join(f'**{md(a)}**' for a in arms)} "
            "pretraining learned without labels. Both use the same recipe and the same number of steps"
            + (f" ({how})" if schedule else "") + f"; {seeds} seed" + ("s" if seeds != 1 else "")
            + " (each a full repeat: pretraining, label subset, initialisation; the answers give means over them)"
            + ("" if summary["headline"]["split"] != "test" else "; test scores are on a separate test split")
            + f". {_ignored(runs)}Details, rules and per-seed numbers: [{REPORT_MD}]({REPORT_MD}).")


def _ignored(runs: list) -> str:
    """Segmentation: which mask value counted nowhere, said once (empty where no run ignored one)."""
    ignore = next((r.summary.ignore_index for r in runs if r.summary and r.summary.ignore_index is not None), None)
    if ignore is None:
        return ""
    n = next((len(r.summary.classes) for r in runs if r.summary and r.summary.classes), None)
    return (f"Pixels whose mask value is {ignore} (unlabelled in the data) are ignored: they count in neither the "
            f"loss nor any metric" + (f", which score the {n} classes" if n else "") + ". ")


def metric_table(study: Study, summary: dict[str, Any], fraction: float) -> tuple[list[str], list[list[str]]]:
    """Per network: the final (kept) model's validation score (the task's primary and secondary metrics: macro-F1
    and accuracy, or mean IoU and pixel accuracy), the highest of each during training and its step, and the test
    score where there is one (means over finished seeds)."""
    test = summary["headline"]["split"] == "test"
    sc = study.scoring
    m1, m2 = sc.name, sc.secondary_name
    header = ["network", f"final val {m1}", f"highest val {m1} (at step)", f"final val {m2}",
              f"highest val {m2} (at step)", *([f"test {m1}"] if test else []), "seeds"]
    rows = []
    for arm in study.arms:
        runs = study.finished(fraction, arm)
        if not runs:
            continue
        final = [r.summary.final.get(sc.primary) for r in runs if r.summary.final]
        second = [r.summary.final.get(sc.secondary) for r in runs if r.summary.final]
        tests = [r.summary.test.get(sc.primary) for r in runs if r.summary.test]
        rows.append([md(arm) if arm != SCRATCH else "scratch", _mean(final), _highest(runs, sc.primary),
                     _mean(second), _highest(runs, sc.secondary), *([_mean(tests)] if test else []), str(len(runs))])
    return header, rows


def class_iou_table(study: Study, fraction: float) -> tuple[list[str], list[list[str]]]:
    """Segmentation: each class's validation IoU per network (means over finished seeds), rarest classes being
    where pretraining may matter most; "–" where a class was never seen in truth or prediction."""
    arms = [a for a in study.arms if study.finished(fraction, a)]
    per = {a: [r.summary.per_class_iou for r in study.finished(fraction, a) if r.summary.per_class_iou] for a in arms}
    classes = next((list(p[0]) for p in per.values() if p), [])
    rows = []
    for c in classes:
        cells = []
        for a in arms:
            vals = [p[c] for p in per[a] if c in p and p[c] == p[c]]  # NaN: not scored in that run
            cells.append(_mean(vals))
        rows.append([md(c), *cells])
    return ["class (validation IoU)", *[md(a) if a != SCRATCH else "scratch" for a in arms]], rows


def _highest(runs: list, metric: str) -> str:
    """The highest value of a validation metric over each run's evaluations, and its step (means over runs)."""
    best = [r.best[metric] for r in runs if metric in r.best]
    return _mean([b.value for b in best]) + (f" ({round(sum(b.step for b in best) / len(best))})" if best else "")


def _mean(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    return number(sum(values) / len(values), "metric") if values else "–"


def reading_notes(study: Study, summary: dict[str, Any]) -> list[str]:
    """The words the answers use, one line each."""
    levels = ", ".join(f"{s:.0%}" for s in LEVELS)
    return [
        "**Step**: one optimizer update on one batch; both networks get the same number, so the same compute.",
        "**Validation**: images held out from training (" + (
            "the answers' curves); the test split is scored once at the end and never used to choose anything."
            if summary["headline"]["split"] == "test" else "every number here; the study has no test split)."),
        f"**How fast**: each curve is followed from the worse start of the two networks to the better end; at "
        f"{levels} of that way we note the first step each network gets there. Steps at most one evaluation apart "
        "count as tied. 'Lower (higher) for N% of the steps' compares the two curves step by step.",
        f"**Plateau**: the step of a network's best validation {study.scoring.name} when nothing later beat it by more "
        f"than {PLATEAU_GAIN} for {PLATEAU_WAIT:.0%} of the run, before the learning rate starts to fall.",
        "**Seeds**: with several seeds the numbers are means, and a difference is called only when its 95% "
        "interval over seeds excludes zero; otherwise the answer says the seeds disagree.",
    ]

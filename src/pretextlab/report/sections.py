"""The report's sections, in reading order: each writes its text and tables into the Doc and draws its figures.

`build` answers the study's question first (does pretraining help, at which label budget; for a replicate,
whether the original's answer held), then shows the evidence (every protocol, the curves, per-fraction
tables, predictions, confusion matrices, what the pretext task taught the backbone) and ends with the setup
the numbers came from. The intro says once which split the numbers are on; every table says it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.augment import normalize
from ..layout import (
    ANSWERS_MD,
    CHECKPOINT,
    EXAMPLES,
    ORIGINAL_SUMMARY,
    PROBES,
    SAMPLES,
    SCRATCH,
    STUDY,
    SUMMARY,
    parse_run_name,
    pretext_of,
)
from ..layout import METRICS as METRICS_CSV
from ..models import random_backbone
from ..stats import TWO_SEEDS
from .answers import fraction_answers
from .backbone import UserBackbone, early_features, feature_maps_figure, filters_figure, load_pretext_backbone
from .conclusions import evaluation_conclusions, headline_scope, overall_conclusions
from .figures import (
    SAMPLE_CAPTIONS,
    confusion_figure,
    curves_caption,
    examples_figure,
    fraction_figure,
    loss_figure,
    mask_examples_figure,
    metrics_figure,
    pretext_figure,
    samples_figure,
)
from .formatting import fraction_title
from .image_files import load_samples, read_examples
from .notes import precision_warning, rule_lines, split_note, timing_sentence
from .render import Doc, fenced, md
from .results import PER_SEED, PretextRun, Study, class_names
from .summary import NAMES, fraction_key
from .tables import (
    answer_table,
    answers_table,
    evaluation_table,
    fraction_table,
    pretext_table,
    replication_table,
    setup_table,
    stage_table,
)


def build(study: Study, summary: dict[str, Any], fig_dir: Path) -> Doc:
    """The whole report of a study; its figures are drawn into fig_dir on the way."""
    doc = Doc()
    _intro(doc, study, summary)
    images_of = read_examples(study)  # before _status, which lists the files that could not be read
    _status(doc, study, summary)
    _answer(doc, study, summary)
    _replication(doc, summary)
    _evaluation(doc, study, summary, fig_dir)
    _curves(doc, study, summary, fig_dir)
    _results(doc, study, summary)
    _examples(doc, study, images_of, fig_dir)
    _confusion(doc, study, fig_dir)
    _pretext(doc, study, summary, images_of, fig_dir)
    _setup(doc, study, summary)
    return doc


def _intro(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    doc.heading(1, f"Does pretraining help? Study {md(summary['study'], code=True)}")
    doc.para(f"The four answers per label fraction, short, with their figures: [{ANSWERS_MD}]({ANSWERS_MD}). This "
             "page holds the details: every protocol, the rules, the per-seed tables and intervals.")
    cfg = study.config
    name = next((n for n in (cfg.dataset and cfg.dataset.name, cfg.data.source) if n is not None), "unknown")
    doc.para(f"Dataset **{md(name)}**, backbone "
             f"**{md('?' if cfg.backbone is None else cfg.backbone)}**, label fractions "
             f"{', '.join(f'{f:g}' for f in study.fractions)}, seeds {', '.join(map(str, study.seeds))}, "
             f"pretext tasks {', '.join(md(a) for a in study.arms if a != SCRATCH) or 'none'}. Each fraction is "
             "fine-tuned from scratch and from the pretrained backbone with the same recipe"
             + ("; frozen backbones (pretrained and random init) are also read out by a linear probe and k-NN."
                if study.probes else "."))
    doc.para(split_note(summary))


def _status(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    st = summary["status"]
    if not st["in_progress"] and not st["missing"] and not st["missing_probes"] and not study.problems:
        doc.para(f"All runs finished ({len(st['finished'])} fine-tuning, "
                 f"{sum(map(len, study.pretrainings.values()))} pretext).")
        return
    doc.para("**This study is incomplete**; the report shows what exists.")
    items = []
    if st["missing"]:
        items.append("Missing (no finished epoch): " + ", ".join(md(n, code=True) for n in st["missing"]))
    if st["in_progress"]:
        items.append("In progress (curves only): " + ", ".join(
            f"{md(r['run'], code=True)} (epoch {r['epochs']:g}"
            + (f" of {r['planned_epochs']})" if r.get("planned_epochs") else ")")
            for r in st["in_progress"]))
    if st["missing_probes"]:
        items.append("Probes not run yet: " + ", ".join(md(n, code=True) for n in st["missing_probes"]))
    items += [f"Note: {md(p)}" for p in study.problems]
    doc.bullets(items)


def _answer(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    doc.heading(2, "Answer")
    doc.para(headline_scope(summary))
    doc.bullets(overall_conclusions(summary, [a for a in study.arms if a != SCRATCH], study.fractions))
    doc.table(*answer_table(study, summary))


def _replication(doc: Doc, summary: dict[str, Any]) -> None:
    """A replicate's verdicts on the original, beside the original's numbers (from its copied summary.json)."""
    rep = summary.get("replication")
    if not rep:
        return
    doc.heading(2, "Does the original study's answer hold?")
    settings = {k: ", ".join(f"{n} {md(', '.join(map(str, v)) if isinstance(v, list) else v)}"
                             for n, v in s.items() if v is not None) for k, s in rep["settings"].items()}
    doc.para(f"This study repeats {md(rep['original'], code=True)} ({settings['original']}) with "
             f"{settings['replicate']}; "
             f"the original's numbers are read from `{ORIGINAL_SUMMARY}`, the copy of its {SUMMARY} kept here.")
    if rep["problem"]:
        doc.para(md(rep["problem"]) + ".")
        return
    c = rep["counts"]
    what = NAMES.get(rep["quantity"].removeprefix("test_"), rep["quantity"])
    what = f"test {what} of the final model" if rep["quantity"].startswith("test_") else f"best validation {what}"
    doc.para(f"Verdicts: fine-tuning on {what} (pretrained minus scratch, paired by seed) and "
             f"the probes on {rep['probe_split']} macro-F1 (pretrained minus random init). Rule: {rep['rule']}. "
             f"**{c['held']} of {c['held'] + c['not_held']} tested verdicts held**"
             + (f"; {c['not_tested']} not tested" if c["not_tested"] else "") + ".")
    doc.table(*replication_table(rep))


def _evaluation(doc: Doc, study: Study, summary: dict[str, Any], fig_dir: Path) -> None:
    """Every protocol on the split claims are made on (test where there is one), then validation's tables."""
    ev = summary["evaluation"]
    claims = ev.get("test") or ev
    doc.heading(2, "Every method under every evaluation protocol")
    if study.scoring.primary not in ev.get("metrics", []):  # segmentation: probes need a label per image
        doc.para("This study evaluates each backbone by fine-tuning only: the linear and k-NN probes of frozen "
                 "features need one label per image, which this task's labels are not. The fine-tuning results "
                 "follow.")
        return
    if not ev["cells"] and not claims["cells"]:
        doc.para("No finished fine-tuning run or probe yet.")
        return
    split = ("on the test split (the validation split's tables follow)" if claims is not ev
             else "all on the validation split")
    doc.para(f"Three ways to read out a backbone at each label fraction, {split} and all with the labelled subset "
             "of that fraction and seed: **fine-tune** (the whole network trained; the baseline is training from "
             "scratch; numbers are the end-of-training metrics, no epoch picked on the validation split), **linear "
             "probe** (frozen backbone, BatchNorm statistics re-estimated on whole images; L2-regularised logistic "
             "regression fit by L-BFGS on cached features) and **k-NN** (k = 200, cosine similarity, temperature "
             "0.07, Wu et al. 2018; the labelled subset is the memory bank). For the probes the baseline is the "
             "frozen random initialisation each seed's scratch run starts from. " + _pretraining_scope(study)
             + f" Rule: {ev['rule']}.")
    cells = [c for by_f in claims["cells"].values() for cs in by_f.values() for m in cs.values() for c in m.values()]
    if cells and max(c["n"] for c in cells) < 2:
        doc.para("Every cell comes from a single seed, so no confidence interval can be computed and no difference "
                 "is called significant; run the study with several seeds (e.g. --seeds 0,1,2) for intervals.")
    if any(c["n"] == 2 and c["ci95"] is not None for by_f in claims["vs_baseline"].values() for ms in by_f.values()
           for m in ms.values() for c in m.values()):
        doc.para(f"Caution: some intervals below rest on two seeds (each conclusion gives its number of seeds); "
                 f"{TWO_SEEDS}.")
    if not study.probes:
        doc.para(f"No probe results ({PROBES}) in this study yet: it predates the probe stages or has not reached "
                 "them. Re-running the study command adds them; finished runs are reused.")
    doc.bullets(evaluation_conclusions(claims))
    methods = study.arms
    for e in [claims, ev] if claims is not ev else [ev]:
        for metric in e["metrics"]:
            doc.para(f"{e['split'].capitalize()} {NAMES[metric]}: mean ± std [95% CI] over seeds; differences are "
                     "paired by seed.")
            doc.table(*evaluation_table(e, metric, methods))
    fraction_figure(claims, methods, fig_dir / "f1_vs_fraction.png")
    doc.figure("f1_vs_fraction.png", f"{claims['split'].capitalize()} macro-F1 vs label fraction (log scale), one "
                                     "panel per protocol; error bars are 95% t confidence intervals over seeds "
                                     "(none with one seed)")


def _pretraining_scope(study: Study) -> str:
    """What the seeds vary, so what the intervals over them cover."""
    if study.pretraining == PER_SEED:
        return ("Each seed pretrained its own backbones (and drew its own label subset and initialisation), so "
                "intervals include pretraining's variance.")
    return ("Pretrained backbones are pretrained once (first seed); seeds vary the label subset and the "
            "initialisation, so intervals describe those, not pretraining.")


def _curves(doc: Doc, study: Study, summary: dict[str, Any], fig_dir: Path) -> None:
    doc.heading(2, "Fine-tuning curves")
    if not study.runs:
        doc.para("No fine-tuning run has finished an epoch yet.")
        return
    loss_figure(study, summary, fig_dir / "loss.png")
    doc.figure("loss.png", "Training and validation loss, scratch vs each pretrained arm (one colour per arm in "
                           f"every figure), one row per label fraction; {curves_caption(study.runs)}")
    eps = study.config.label_smoothing
    doc.para("The training loss is measured on augmented batches"
             + (f" and includes label smoothing ({md(eps)})" if eps else "")
             + "; the validation loss is plain cross-entropy, so their levels differ by construction and the loss "
               "gap in the tables is a relative measure.")
    metrics_figure(study, summary, fig_dir / "val_metrics.png")
    sc = study.scoring
    doc.figure("val_metrics.png", f"Validation {sc.name} and {sc.secondary_name} per evaluation vs optimizer steps, "
                                  "one row per label fraction, axes, lines and bands as above (the other metrics "
                                  "are in the tables)")


def _results(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    doc.heading(2, "Results per label fraction")
    doc.para("Per fraction: a table of each arm's numbers (mean ± sample std over seeds, n per arm in the header; "
             "differences are pretrained minus scratch, paired by seed), then for each pretrained arm a table of "
             "the four questions (how fast each loss fell, how fast the validation metric rose, which plateaued or "
             "stopped first, which ended higher) and the sentences that answer them. Only finished runs count; gaps "
             "are taken at the last evaluation. "
             + ("Each row names its split: val rows are on the validation split, test rows on the test split (the "
                "final model, end of training)." if summary["headline"]["split"] == "test"
                else "Every row is on the validation split (the study has no test split).")
             + " Each answer is one of these rules, applied per seed to the runs' metrics.csv and summary.json "
               "(steps are optimizer steps, the budget a run's planned steps; a run from before the step column "
               "counts epoch x steps per epoch from its config.json):")
    doc.bullets(rule_lines(summary))
    for f in study.fractions:
        doc.heading(3, fraction_title(summary, f))
        header, rows = fraction_table(summary, f, study.arms)
        if rows:
            doc.table(header, rows)
        cmp = summary["comparison"].get(fraction_key(f), {})
        waiting = [n for n in [*study.missing, *(r.name for r in study.runs if not r.finished)]
                   if (key := parse_run_name(n)) and key.fraction == f]
        notes = []
        for a in (a for a in study.arms if a in cmp):
            if table := answers_table(summary, f, a):
                doc.para(f"**{md(a)} vs scratch**, the four questions per seed's pair of runs (mean over seeds; "
                         "difference paired by seed, with its 95% CI where there are several seeds):")
                doc.table(*table)
            doc.bullets(f"**{q}.** {text}" for q, text in fraction_answers(summary, fraction_key(f), a))
        if waiting:
            notes.append(f"Waiting for {', '.join(map(md, waiting))} (missing or still training).")
        if not cmp:
            notes.append("No comparison yet: it needs finished scratch and pretrained runs.")
        if notes:
            doc.bullets(notes)


def _examples(doc: Doc, study: Study, images_of: dict[str, Tensor], fig_dir: Path) -> None:
    doc.heading(2, "Predictions on validation examples")
    classes = class_names(study)
    drawn = False
    for f in study.fractions:  # segmentation: masks (a dict per run's examples.pt)
        shown = {}
        for arm in study.arms:
            runs = [r for r in sorted(study.finished(f, arm), key=lambda r: r.seed)
                    if isinstance(images_of.get(r.name), dict)]
            if runs:
                shown[arm] = images_of[runs[0].name]
        if not shown:
            continue
        first = next(iter(shown.values()))
        name = f"examples_f{f:g}.png"
        mask_examples_figure(first["images"], first["truth"], {a: e["pred"] for a, e in shown.items()},
                             first.get("classes") or classes, first.get("ignore_index"), fig_dir / name)
        doc.figure(name, f"Fraction {f:g}: validation images (the same in every run), their true masks and each "
                         "arm's predicted mask (its lowest finished seed); one colour per class, grey: ignored")
        drawn = True
    for f in study.fractions:  # classification: images, and each run's predicted classes in its summary
        images, examples = _examples_for(study, images_of, f)
        if images is None or not examples:
            continue
        name = f"examples_f{f:g}.png"
        examples_figure(images, examples, classes, fig_dir / name)
        doc.figure(name, f"Fraction {f:g}: validation images (the same in every run; one per class where there "
                         "are at most 10), the true class above each, and a row per arm with its prediction and "
                         "confidence (✓ on green: right, ✗ on red: wrong)")
        drawn = True
    if not drawn:
        doc.para(f"No finished run has example predictions ({EXAMPLES} and {SUMMARY}) yet.")


def _examples_for(study: Study, images_of: dict[str, Tensor],
                  fraction: float) -> tuple[Tensor | None, dict[str, list[dict[str, Any]]]]:
    """examples.pt of the fraction, and each arm's predictions on them (its lowest finished seed)."""
    images, examples = None, {}
    for arm in study.arms:
        runs = sorted(study.finished(fraction, arm), key=lambda r: r.seed)
        if runs and runs[0].summary.examples:
            examples[f"{arm} s{runs[0].seed}" if len({r.seed for r in study.runs}) > 1 else arm] = \
                runs[0].summary.examples
        if images is None:
            images = next((images_of[r.name] for r in runs if isinstance(images_of.get(r.name), Tensor)), None)
    return images, examples


def _confusion(doc: Doc, study: Study, fig_dir: Path) -> None:
    finished_fractions = sorted({r.fraction for r in study.runs if r.finished and r.summary.confusion_val})
    doc.heading(2, "Confusion matrices at the smallest label fraction")
    if not finished_fractions:
        doc.para("No finished run has a confusion matrix yet.")
        return
    f = finished_fractions[0]
    matrices = {}
    for arm in study.arms:
        ms = [np.array(r.summary.confusion_val, dtype=float) for r in study.finished(f, arm)
              if r.summary.confusion_val]
        if ms:
            matrices[arm] = sum(ms)
    name = f"confusion_f{f:g}.png"
    confusion_figure(matrices, class_names(study), f"fraction {f:g}", fig_dir / name)
    doc.figure(name, f"Validation confusion matrices at fraction {f:g}, each row normalised to 1 (rows: true "
                     "class, columns: predicted; one colour scale for every panel)"
               + (", summed over seeds" if len(study.finished(f)) > len(matrices) else ""))


def _pretext(doc: Doc, study: Study, summary: dict[str, Any], images_of: dict[str, Tensor], fig_dir: Path) -> None:
    doc.heading(2, "What the pretext task taught the backbone")
    if not study.pretexts:
        doc.para("No pretext run has finished an epoch yet.")
        return
    ps = summary["pretext"]
    doc.table(*pretext_table(summary))
    for task in ps:
        if ps[task].get("remade"):
            doc.para(ps[task]["remade"])

    for task, run in study.pretexts.items():
        doc.heading(3, f"Pretext: {md(task)}")
        if run.seed is not None:
            n = len(study.pretrainings[task])
            doc.para(f"Shown: {md(run.folder + '/', code=True)}, seed {run.seed}'s pretraining" + (
                f", one of {n} (one per seed; the Setup section lists every pretraining's time)." if n > 1 else "."))
        pretext_figure(run, ps[task]["chance"], fig_dir / f"pretext_{task}.png")
        doc.figure(f"pretext_{task}.png", f"{md(task)}: pretext loss and, where the task has them, accuracy (with the "
                                          "chance level, dotted) and its other held-out metrics, vs optimizer steps; "
                                          "train dashed (smoothed where the run has steps.csv), held-out images "
                                          "solid")
        samples = load_samples(run.path)
        if samples is not None and len(samples.get("first", [])):
            samples_figure(samples, task, fig_dir / f"pretext_samples_{task}.png")
            doc.figure(f"pretext_samples_{task}.png",
                       f"{md(task)} inputs: {SAMPLE_CAPTIONS.get(pretext_of(task), 'held-out examples')}")
        else:
            doc.para(f"No pretext samples ({SAMPLES}) in {md(run.folder + '/', code=True)}.")
        _backbone_views(doc, run, images_of, fig_dir)


BACKBONE_CAPTIONS = ("First convolution's filters, each min-max scaled on its own",
                     "Feature maps of one validation image (first 16 channels, each min-max scaled) after the first "
                     "conv stage and the first block")


def _backbone_views(doc: Doc, run: PretextRun, images_of: dict[str, Tensor], fig_dir: Path) -> None:
    """First-layer filters and early feature maps: pretrained vs randomly initialised (seed 0)."""
    task, folder = run.task, run.folder
    if not (run.path / CHECKPOINT).exists():
        drawn = [n for n in (f"filters_{task}.png", f"feature_maps_{task}.png") if (fig_dir / n).is_file()]
        if not drawn:
            doc.para(f"No checkpoint in {md(folder + '/', code=True)}, so no filters or feature maps.")
            return
        # an exported study keeps no weights: the figures drawn while it had them stay, and say so
        doc.para(f"No checkpoint in {md(folder + '/', code=True)} (an exported study keeps no weights): the figures "
                 "below were drawn when it had them.")
        for name, caption in zip(drawn, BACKBONE_CAPTIONS):
            doc.figure(name, caption)
        return
    try:
        pretrained, meta, source = load_pretext_backbone(run)
        nets = {f"pretrained ({task})": pretrained,
                "random init (seed 0)": random_backbone(meta["backbone"], meta["channels"])}
    except UserBackbone as e:  # building it would run the study's own file
        doc.para(str(e))  # its message escapes the spec
        return
    except Exception as e:  # an unreadable or mismatched checkpoint is noted, not fatal
        doc.para(f"Could not load the backbone of {md(folder + '/', code=True)} ({type(e).__name__}: {md(e)}).")
        return
    doc.para(f"Pretrained weights: {md(f'{folder}/{source}', code=True)}; the reference is the same architecture "
             "freshly initialised with seed 0. Feature maps are computed in eval mode (running BatchNorm statistics).")
    filters_figure(nets, fig_dir / f"filters_{task}.png")
    doc.figure(f"filters_{task}.png", BACKBONE_CAPTIONS[0] + (" (RGB)" if meta["channels"] == 3 else
                                                              " (mean over input channels)"))
    if not images_of:
        doc.para(f"No example image ({EXAMPLES}) yet, so no feature maps.")
        return
    first = next(iter(images_of.values()))
    image = (first["images"] if isinstance(first, dict) else first)[0]  # segmentation: a dict with its masks
    try:  # the study's own image through its own network: a mismatch (channels, size) only leaves the figure out
        x = normalize(image[None], torch.tensor(meta["mean"]), torch.tensor(meta["std"]))
        maps = {label: early_features(net, x) for label, net in nets.items()}
    except Exception as e:
        doc.para(f"Could not compute feature maps of an example image ({type(e).__name__}: {md(e)}).")
        return
    feature_maps_figure(image, maps, fig_dir / f"feature_maps_{task}.png")
    doc.figure(f"feature_maps_{task}.png", BACKBONE_CAPTIONS[1])


def _setup(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    cfg = study.config
    doc.heading(2, "Setup")
    doc.table(*setup_table(study, summary))
    if warning := precision_warning(summary["precision"]):
        doc.para(warning)
    machine = cfg.machine or {}
    if machine:
        doc.para("Machine and library versions:")
        doc.table(["item", "value"], [[md(k), "none" if v is None else md(v)] for k, v in machine.items()])
    for m in cfg.earlier_machines:
        doc.para("Parts of the study ran earlier on another machine or setup: "
                 + ", ".join(f"{k} {md(v)}" for k, v in m.items() if k in ("cpu", "cpu_capability", "threads", "torch",
                                                                      "cuda")))
    doc.para(f"Run time per stage (stage time from {STUDY}, including evaluation and start-up; training time "
             f"and images/s from each run's {METRICS_CSV}):")
    doc.table(*stage_table(study, summary))
    if text := timing_sentence(summary["timing"]):
        doc.para(text)
    # < > & only ever inside JSON strings: written as \u escapes (the same JSON), so no markup reaches report.md
    dump = json.dumps(cfg.raw, indent=2, default=str).translate({ord(c): f"\\u{ord(c):04x}" for c in "<>&"})
    doc.details("Configuration", f"The study's full configuration ({STUDY}):",
                fenced(dump, "json") if cfg.recorded else f"(no {STUDY})")

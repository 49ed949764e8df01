"""A study's numbers: per-run statistics, aggregates over seeds and paired comparisons, i.e. summary.json.

`summarize_study(load_study(study_dir))` holds every number the report shows; `write_report` saves it as
summary.json, the tables and conclusions render it as text and the figures draw it. Tables and conclusions
use finished runs only (a partial curve has no "best" yet). Its shape is pretextlab.schema.ReportSummary
("schema": schema.SCHEMA_VERSION), every field in docs/schema.md; "answers" is answers.py's, "trend" dynamics.py's,
"replication" replication.py's.

A quantity (summary.json "aggregate" and "comparison") is one of QUANTITIES: final_<metric> and final_loss (the
final model on validation, the primary protocol without a test split), test_<metric> and test_loss,
f1_macro, precision_macro, recall_macro, accuracy, loss (best values over the evaluations: secondary) with
<metric>_step, steps, gap_accuracy, gap_loss, evaluations, wall_time_s, images_per_s.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from ..layout import SCRATCH
from ..metrics import METRIC_NAMES
from ..runs import summarize
from ..schema import SCHEMA_KEY, SCHEMA_VERSION
from ..stats import RULE as CI_RULE
from ..stats import describe, paired_difference
from .answers import answers_summary
from .dynamics import compare, run_curves, trend_summary
from .image_files import load_samples
from .lengths import length_summary
from .records import PretextSummary
from .render import md
from .replication import replication_summary
from .results import (
    PER_SEED,
    PROBE_PROTOCOLS,
    PROTOCOLS,
    PretextRun,
    Run,
    Study,
    column,
    fraction_key,
)
from .rules import CONSTANTS, RULES
from .scoring import ALL_METRICS

__all__ = ["compare", "fraction_key", "summarize_study"]

METRICS = ALL_METRICS  # every task's validation metrics: a run's entries are those its task logs
NAMES = METRIC_NAMES
QUANTITIES = (*(f"final_{m}" for m in (*METRICS, "loss")), *(f"test_{m}" for m in (*METRICS, "loss")),
              *METRICS, "loss", *(f"{m}_step" for m in (*METRICS, "loss")), "steps", "gap_accuracy",
              "gap_loss", "evaluations", "wall_time_s", "images_per_s")
EVAL_METRICS = ("f1_macro", "accuracy")
TEST, VALIDATION = "test", "validation"


def run_stats(run: Run) -> dict[str, Any]:
    """The per-run entry of summary.json "runs" (schema.RunStats) of a finished run."""
    h, s, best = run.history, run.summary, run.best
    last = h[-1]
    out: dict[str, Any] = {
        "fraction": run.fraction, "arm": run.arm, "seed": run.seed, "epochs": last.get("epoch"),
        "n_train": s.n_train,
        "best": {k: {"value": best[k].value, "epoch": best[k].epoch, "step": best[k].step}
                 for k in (*METRICS, "loss") if k in best},
        "final": s.final,
        "curves": run_curves(run),
        "gap": {"accuracy_train_minus_val": last["train_accuracy"] - last["val_accuracy"]
                if "train_accuracy" in last and "val_accuracy" in last else None,
                "loss_val_minus_train": last.get("val_loss", math.nan) - last.get("train_loss", math.nan)},
        "images_per_s": statistics.fmean(column(h, "images_per_s") or [math.nan]),
        "wall_time_s": math.nan if run.wall_time_s is None else run.wall_time_s,
    }
    if s.test is not None:
        out["test"] = s.test
    return out


def quantities(stats: dict[str, Any]) -> dict[str, float]:
    """A run's stats flattened to the QUANTITIES compared between arms."""
    q: dict[str, Any] = {}
    for m, b in stats["best"].items():
        q[m], q[f"{m}_step"] = b["value"], b["step"]
    for split in ("final", "test"):
        for m in (*METRICS, "loss"):
            q[f"{split}_{m}"] = (stats.get(split) or {}).get(m)
    c = stats["curves"]
    q.update(steps=c["steps"], gap_accuracy=stats["gap"]["accuracy_train_minus_val"],
             gap_loss=stats["gap"]["loss_val_minus_train"], evaluations=c["evaluations"],
             wall_time_s=stats["wall_time_s"], images_per_s=stats["images_per_s"])
    return {k: q[k] for k in QUANTITIES if q.get(k) is not None}


def summarize_study(study: Study) -> dict[str, Any]:
    """Everything summary.json holds; the markdown and HTML are rendered from it."""
    cfg = study.config
    runs = {r.name: run_stats(r) for r in study.runs if r.finished}
    by_seed: dict[str, dict[str, dict[str, dict[int, float]]]] = {}  # fraction -> arm -> quantity -> seed -> value
    for st in runs.values():
        arm_q = by_seed.setdefault(fraction_key(st["fraction"]), {}).setdefault(st["arm"], {})
        for k, v in quantities(st).items():
            arm_q.setdefault(k, {})[st["seed"]] = v
    aggregate = {f: {arm: {k: describe(list(v.values())) for k, v in qs.items()} for arm, qs in arms.items()}
                 for f, arms in by_seed.items()}
    comparison = {}
    for f, arms in by_seed.items():
        pretrained = [arm for arm in arms if arm != SCRATCH]
        if SCRATCH in arms and pretrained:
            comparison[f] = {arm: {k: compare(arms[SCRATCH][k], v) for k, v in arms[arm].items()
                                   if k in arms[SCRATCH]} for arm in pretrained}
    evaluation = {"split": VALIDATION, **evaluation_summary(evaluation_values(study, runs), study.arms),
                  "test": None}
    if has_test_split(study):
        evaluation["test"] = {"split": TEST, **evaluation_summary(evaluation_values(study, runs, TEST), study.arms)}
    resolved = {name: p for name, p in [*((r.name, r.precision) for r in study.runs),
                                        *((p.folder, p.precision) for ps in study.pretrainings.values() for p in ps)]
                if p}
    summary = {
        SCHEMA_KEY: SCHEMA_VERSION,
        "study": study.path.resolve().name,
        "dataset": cfg.dataset.raw if cfg.dataset else None,
        "seeds": study.seeds, "pretraining": study.pretraining,
        "headline": headline(study),
        "precision": {"study": cfg.precision, "runs": resolved,
                      "differing": {n: p for n, p in resolved.items() if cfg.precision not in (None, p)}},
        "status": {"finished": [r.name for r in study.runs if r.finished],
                   "in_progress": [{"run": r.name, "epochs": r.history[-1].get("epoch", len(r.history)),
                                    "planned_epochs": r.planned_epochs} for r in study.runs if not r.finished]
                   + [{"run": p.folder, "epochs": p.history[-1].get("epoch", len(p.history)),
                       "planned_epochs": p.planned_epochs}
                      for ps in study.pretrainings.values() for p in ps if p.summary is None],
                   "missing": study.missing, "missing_probes": study.missing_probes},
        "rules": {**RULES, "constants": CONSTANTS},
        "runs": runs,
        "aggregate": aggregate,
        "comparison": comparison,
        "answers": answers_summary(study),
        "trend": trend_summary(by_seed, headline(study)["quantity"]),
        "evaluation": evaluation,
        "pretext": {t: task_pretext(study, t) for t in study.pretexts},
        "machine": cfg.machine, "earlier_machines": cfg.earlier_machines, "stage_times_s": cfg.stage_times_s,
        "timing": timing(study),
    }
    summary["replication"] = replication_summary(study, summary)
    summary["lengths"] = length_summary(study, summary)
    return summary


def has_test_split(study: Study) -> bool:
    """study.json says the dataset has test images, or a finished run scored some (a study from before the
    test split was recorded in study.json)."""
    return bool(study.config.dataset and study.config.dataset.n_test) or any(
        r.summary.test is not None for r in study.runs if r.finished)


def headline(study: Study) -> dict[str, Any]:
    """The one primary protocol of the answer, the tables and the significance verdicts: the final model
    (end of training, no evaluation picked), scored on the test split where there is one (validation is
    for choices, test for claims), else on the validation split."""
    m, name = study.scoring.primary, study.scoring.name
    if has_test_split(study):
        return {"split": TEST, "quantity": f"test_{m}", "metric": m, "protocol": "finetune",
                "text": f"test {name} of the final model"}
    return {"split": VALIDATION, "quantity": f"final_{m}", "metric": m, "protocol": "finetune",
            "text": f"validation {name} of the final model"}


def timing(study: Study) -> dict[str, Any]:
    """The time the study planned at its start (study.json "estimate") beside the time it took: total_time_s
    once it finished, else the stage times so far."""
    cfg = study.config
    total = cfg.total_time_s
    return {"estimated_s": cfg.estimated_s, "estimate": cfg.estimate,
            "total_s": total if total is not None else sum(cfg.stage_times_s.values()) or None,
            "finished": total is not None}


def evaluation_values(study: Study, runs: dict[str, dict[str, Any]], split: str = VALIDATION) -> dict[str, Any]:
    """{protocol: {fraction: {method: {metric: {seed: value}}}}}: fine-tuning's end-of-training metrics
    (no epoch picked on the validation split, like the probes) and the probes', on `split`."""
    values: dict[str, Any] = {}

    def put(protocol: str, fraction: float, method: str, seed: int, metrics: dict[str, float] | None) -> None:
        for m in EVAL_METRICS:
            if (metrics or {}).get(m) is not None:
                (values.setdefault(protocol, {}).setdefault(fraction_key(fraction), {}).setdefault(method, {})
                 .setdefault(m, {}))[seed] = metrics[m]

    for st in runs.values():
        put("finetune", st["fraction"], st["arm"], st["seed"], st.get("final" if split == VALIDATION else "test"))
    for method, results in study.probes.items():
        for r in results.values():
            for protocol in PROBE_PROTOCOLS:
                put(protocol, r.fraction, method, r.seed, r.on(split, protocol))
    return values


def evaluation_summary(values: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    """summary.json's "evaluation": every cell over seeds, and every method minus scratch paired by seed."""
    cells: dict[str, Any] = {}
    vs: dict[str, Any] = {}
    for protocol in (p for p in PROTOCOLS if p in values):
        for f in sorted(values[protocol], key=float, reverse=True):
            by_method = values[protocol][f]
            order = [m for m in dict.fromkeys([*methods, *by_method]) if m in by_method]
            cells.setdefault(protocol, {})[f] = {
                m: {k: {**describe(list(v.values())), "by_seed": {str(s): v[s] for s in sorted(v)}}
                    for k, v in by_method[m].items()} for m in order}
            base = by_method.get(SCRATCH, {})
            diffs = {m: {k: paired_difference(base[k], v) for k, v in by_method[m].items()
                         if set(base.get(k, {})) & set(v)} for m in order if m != SCRATCH}
            if any(diffs.values()):
                vs.setdefault(protocol, {})[f] = {m: d for m, d in diffs.items() if d}
    return {"protocols": {p: PROTOCOLS[p] for p in cells}, "metrics": list(EVAL_METRICS), "baseline": SCRATCH,
            "rule": CI_RULE, "cells": cells, "vs_baseline": vs}


def baseline_name(protocol: str) -> str:
    """What a pretrained backbone is compared with: scratch fine-tuning, or the frozen random init."""
    return "scratch" if protocol == "finetune" else "random init"


def pretext_stats(run: PretextRun) -> dict[str, Any]:
    """summary.json's entry of a pretext run; chance is the sample's number of positions if the run did not say."""
    s = run.summary or PretextSummary()
    chance = s.chance
    if chance is None:
        samples = load_samples(run.path)
        chance = 1 / len(samples["positions"]) if samples and samples.get("positions") else None
    h = run.history
    return {"status": run.status, "epochs": len(h), "chance": chance, "best": summarize(h)["best"], "last": h[-1],
            "knn_accuracy": s.knn_accuracy,  # pretext.pretrain's diagnostic: {"pretrained": acc, "random": acc}
            "images_per_s": statistics.fmean(column(h, "images_per_s")) if column(h, "images_per_s") else None,
            "wall_time_s": run.wall_time_s, "backbone_sha256": s.backbone_sha256}


def task_pretext(study: Study, task: str) -> dict[str, Any]:
    """summary.json's "pretext" entry of a task: the shown pretraining's numbers, and every pretraining's
    cost and weights (one per seed, or the shared one), since the cost of pretraining is all of them."""
    shown, every = study.pretexts[task], study.pretrainings[task]
    times = study.config.stage_times_s
    folders = {}
    for p in every:
        folders[p.folder] = {"seed": p.seed, "status": p.status, "epochs": len(p.history),
                             "cost_s": times.get(p.folder, p.wall_time_s),
                             "backbone_sha256": p.summary.backbone_sha256 if p.summary else None,
                             "remade": remade_note(study, p)}
    costs = [f["cost_s"] for f in folders.values() if f["cost_s"] is not None]
    notes = [f["remade"] for f in folders.values() if f["remade"]]
    planned = len(study.seeds) if study.pretraining == PER_SEED else 1
    return {"shown": shown.folder, "seed": shown.seed, **pretext_stats(shown), "remade": " ".join(notes) or None,
            "pretrainings": len(every), "planned_pretrainings": max(planned, len(every)),
            "total_cost_s": sum(costs) if costs else None,
            "backbone_sha256_by_seed": {"shared" if f["seed"] is None else str(f["seed"]): f["backbone_sha256"]
                                        for f in folders.values()},
            "folders": folders}


def remade_note(study: Study, run: PretextRun) -> str | None:
    """Say when a pretrained backbone was re-made (a study resumed from `pretextlab export`, which keeps
    no weights) and how many finished fine-tuning runs started from the earlier one."""
    task, summary = run.task, run.summary
    if summary is None or not summary.remade:
        return None
    new, old = summary.backbone_sha256, summary.earlier_backbone_sha256
    head = (f"{md(run.folder, code=True)} was pretrained again when the study resumed without its weights; the re-made "
            "backbone is")
    whose = "this arm" if run.seed is None else f"this arm with seed {run.seed}"
    if old == new:
        return f"{head} bit-identical to the earlier one, so every run of {whose} started from the same weights."
    earlier = sum(1 for r in study.runs if r.arm == task and (run.seed is None or r.seed == run.seed)
                  and r.summary and r.summary.init_sha256 != new)
    bits = ("not bit-identical to the earlier one (same recipe and seed; another machine or library build)" if old
            else "of unknown likeness: the earlier one's SHA-256 was not kept")
    return (f"{head} {bits}. {earlier} finished fine-tuning run(s) of {whose} started from the earlier one, the "
            "runs still to come start from the re-made one.")


def finite(obj: Any) -> Any:
    """NaN/inf (a column a run did not log) as null: summary.json stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj

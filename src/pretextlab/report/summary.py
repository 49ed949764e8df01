"""A study's numbers: per-run statistics, aggregates over seeds and paired comparisons, i.e. summary.json.

`summarize_study(load_study(study_dir))` holds every number the report shows; `write_report` saves it as
summary.json (schema below), the tables and conclusions render it as text and the figures draw it. Tables
and conclusions use finished runs only (a partial curve has no "best" yet).

summary.json schema. Fractions are keys formatted with :g ("1", "0.5", "0.1"); over seeds,
"mean" is the mean, "std" the sample standard deviation and "ci95" the 95% Student t interval of
the mean ([lo, hi]; both null for one seed). Seeds as keys are strings.

{
  "study": str,                                  # the study folder's name
  "dataset": {...} | null,                       # study.json "dataset" as written (name, classes, ...)
  "seeds": [int], "pretraining": "per-seed" | "shared",   # shared: one pretraining per task for every seed
  "headline": {"split": "test" | "validation",   # test where the study has a test split, else validation
               "quantity": "test_f1_macro" | "final_f1_macro", "metric": "f1_macro", "protocol": "finetune",
               "text": str},                     # the one primary protocol: the final model (end of training)
  "precision": {"study": str | null, "runs": {run: str}, "differing": {run: str}},  # config.json "resolved"
  "status": {"finished": [run], "in_progress": [{"run": str, "epochs": float, "planned_epochs": int | null}],
             "missing": [run],                  # missing: planned in study.json, no finished epoch yet
             "missing_probes": [str]},          # "<method> f<fraction>-s<seed>" planned, not in probes.json
  "rules": {name: str, ..., "constants": {name: float}},   # rules.RULES, the texts the report prints
  "runs": {                                      # finished fine-tuning runs
    run: {
      "fraction": float, "arm": "scratch" | <pretext>, "seed": int, "epochs": float, "n_train": int | null,
      "best": {metric: {"value": float, "epoch": float, "step": float}},   # secondary: picked on validation;
                  # f1_macro, precision_macro, recall_macro, accuracy (highest), loss (lowest)
      "final": {metric: float} | null,                    # end-of-training evaluation ("final" of the run)
      "test": {metric: float},                            # only with a test split: the final model on it
      "curves": dynamics.run_curves,                      # budget, steps, schedule, area, plateau, ...
      "gap": {"accuracy_train_minus_val": float, "loss_val_minus_train": float},  # last evaluation
      "images_per_s": float, "wall_time_s": float
    }
  },
  "aggregate": {fraction: {arm: {quantity: {"mean": float, "std": float | null, "n": int,
                                             "ci95": [float, float] | null}}}},
  "comparison": {fraction: {<pretext arm>: {quantity: {
      "scratch": float, "pretrained": float,     # means over seeds
      "pretrained_minus_scratch": float,         # mean per-seed difference over the shared seeds (the
                                                 # centre of paired_ci95); difference of the means if none
      "paired_std": float | null,                # std of per-seed differences (>= 2 shared seeds)
      "paired_ci95": [float, float] | null,      # t interval of the mean per-seed difference
      "significant": bool | null,                # paired_ci95 excludes 0; null: one shared seed
      "n_seeds": [int, int],                     # [scratch, pretrained]
      "paired_n": int}}}},                       # seeds both arms have (the paired interval's n)
  "evaluation": {                                # every method under every protocol, final numbers only
    "split": "validation", "protocols": {protocol: str},  # finetune | linear | knn -> its name in the report
    "metrics": ["f1_macro", "accuracy"], "baseline": "scratch", "rule": str,
    "cells": {protocol: {fraction: {method: {metric: {     # method: scratch (random init) | <pretext>
        "mean": float, "std": float | null, "n": int, "ci95": [float, float] | null,
        "by_seed": {seed: float}}}}}},
    "vs_baseline": {protocol: {fraction: {<pretext>: {metric: {   # method minus scratch, paired by seed
        "difference": float, "std": float | null, "n": int, "ci95": [float, float] | null,
        "significant": bool | null, "seeds": [int]}}}}},
    "test": {"split": "test", ...} | null        # the same on the test split (none without one)
  },                                             # finetune: the end-of-training metrics
  "pretext": {task: {                            # the pretraining the report shows (first seed's, or shared):
                     "shown": folder, "seed": int | null, "status": str, "epochs": int, "chance": float | null,
                     "best": {metric: {"value", "epoch"}},   # every val_* column (loss: lowest)
                     "last": {column: float},                 # the last metrics.csv row
                     "knn_accuracy": {backbone: float},       # e.g. pretrained / random, if the run wrote it
                     "images_per_s": float | null, "wall_time_s": float | null,
                     "backbone_sha256": str | null,           # the weights fine-tuning starts from
                     "remade": str | null,                    # remade_note's sentences, if re-made on resume
                     "pretrainings": int, "planned_pretrainings": int,   # every pretraining of the task
                     "total_cost_s": float | null,            # their summed cost_s
                     "backbone_sha256_by_seed": {seed | "shared": str | null},
                     "folders": {folder: {"seed": int | null, "status": str, "epochs": int,
                                          "cost_s": float | null,     # stage time, else training time
                                          "backbone_sha256": str | null, "remade": str | null}}}},
  "dynamics": {...}, "trend": {...},            # the four questions per fraction and arm (dynamics.py)
  "replication": {...} | null,                   # a replicate's verdicts on the original (replication.py)
  "machine": {...}, "earlier_machines": [{...}], "stage_times_s": {stage: float},
  "timing": {"estimated_s": float | null, "estimate": {...} | null,   # study.json "estimate": planned at start
             "total_s": float | null, "finished": bool}   # total_time_s, else the stage times so far
}

quantity is one of QUANTITIES: final_<metric> and final_loss (the final model on validation, the primary
protocol without a test split), test_<metric> and test_loss, f1_macro, precision_macro, recall_macro,
accuracy, loss (best values over the evaluations: secondary) with <metric>_step, area_f1, steps,
gap_accuracy, gap_loss, evaluations, wall_time_s, images_per_s.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from ..layout import SCRATCH
from ..runs import summarize
from ..stats import RULE as CI_RULE
from ..stats import describe, paired_difference
from .dynamics import compare, dynamics_summary, run_curves, trend_summary
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
    load_samples,
)
from .rules import CONSTANTS, RULES

__all__ = ["compare", "fraction_key", "summarize_study"]

METRICS = ("f1_macro", "precision_macro", "recall_macro", "accuracy")
NAMES = {"f1_macro": "macro-F1", "precision_macro": "macro precision", "recall_macro": "macro recall",
         "accuracy": "accuracy", "loss": "loss"}
QUANTITIES = (*(f"final_{m}" for m in (*METRICS, "loss")), *(f"test_{m}" for m in (*METRICS, "loss")),
              *METRICS, "loss", *(f"{m}_step" for m in (*METRICS, "loss")), "area_f1", "steps", "gap_accuracy",
              "gap_loss", "evaluations", "wall_time_s", "images_per_s")
EVAL_METRICS = ("f1_macro", "accuracy")
TEST, VALIDATION = "test", "validation"


def run_stats(run: Run) -> dict[str, Any]:
    """The per-run entry of summary.json (see the module docstring)."""
    h, s = run.history, run.summary or {}
    best = s.get("best") or summarize(h)["best"]
    last = h[-1]
    out: dict[str, Any] = {
        "fraction": run.fraction, "arm": run.arm, "seed": run.seed, "epochs": last.get("epoch"),
        "n_train": s.get("n_train"),
        "best": {k: {**best[k], "step": best[k].get("step", run.step(best[k]))} for k in (*METRICS, "loss")
                 if k in best},
        "final": s.get("final"),
        "curves": run_curves(run),
        "gap": {"accuracy_train_minus_val": last.get("train_accuracy", math.nan) - last.get("val_accuracy", math.nan),
                "loss_val_minus_train": last.get("val_loss", math.nan) - last.get("train_loss", math.nan)},
        "images_per_s": statistics.fmean(column(h, "images_per_s") or [math.nan]),
        "wall_time_s": s.get("wall_time_s", last.get("wall_time_s", math.nan)),
    }
    if "test" in s:
        out["test"] = s["test"]
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
    q.update(area_f1=c["area_f1"], steps=c["steps"], gap_accuracy=stats["gap"]["accuracy_train_minus_val"],
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
        "study": study.path.resolve().name,
        "dataset": cfg.get("dataset"),
        "seeds": study.seeds, "pretraining": study.pretraining,
        "headline": headline(study),
        "precision": {"study": cfg.get("precision"), "runs": resolved,
                      "differing": {n: p for n, p in resolved.items() if cfg.get("precision") not in (None, p)}},
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
        "dynamics": dynamics_summary(study),
        "trend": trend_summary(by_seed, headline(study)["quantity"]),
        "evaluation": evaluation,
        "pretext": {t: task_pretext(study, t) for t in study.pretexts},
        "machine": cfg.get("machine"), "earlier_machines": cfg.get("earlier_machines", []),
        "stage_times_s": cfg.get("stage_times_s", {}),
        "timing": timing(study),
    }
    summary["replication"] = replication_summary(study, summary)
    return summary


def has_test_split(study: Study) -> bool:
    """study.json says the dataset has test images, or a finished run scored some (a study from before the
    test split was recorded in study.json)."""
    return bool((study.config.get("dataset") or {}).get("n_test")) or any(
        "test" in r.summary for r in study.runs if r.finished)


def headline(study: Study) -> dict[str, Any]:
    """The one primary protocol of the answer, the tables and the significance verdicts: the final model
    (end of training, no evaluation picked), scored on the test split where there is one (validation is
    for choices, test for claims), else on the validation split."""
    if has_test_split(study):
        return {"split": TEST, "quantity": "test_f1_macro", "metric": "f1_macro", "protocol": "finetune",
                "text": "test macro-F1 of the final model"}
    return {"split": VALIDATION, "quantity": "final_f1_macro", "metric": "f1_macro", "protocol": "finetune",
            "text": "validation macro-F1 of the final model"}


def timing(study: Study) -> dict[str, Any]:
    """The time the study planned at its start (study.json "estimate") beside the time it took: total_time_s
    once it finished, else the stage times so far."""
    cfg = study.config
    estimate = cfg.get("estimate") or None
    total = cfg.get("total_time_s")
    return {"estimated_s": (estimate or {}).get("estimated_s"), "estimate": estimate,
            "total_s": total if total is not None else sum((cfg.get("stage_times_s") or {}).values()) or None,
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
            scores = r if split == VALIDATION else r.get("test") or {}
            for protocol in PROBE_PROTOCOLS:
                put(protocol, float(r["fraction"]), method, int(r["seed"]), scores.get(protocol))
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


def labels_at(summary: dict[str, Any], fraction: float) -> int | None:
    """How many labelled images a fraction's finished runs trained on (None before one has finished)."""
    return next((s["n_train"] for s in summary["runs"].values() if s["fraction"] == fraction and s["n_train"]), None)


def pretext_stats(run: PretextRun) -> dict[str, Any]:
    """summary.json's entry of a pretext run; chance is the sample's number of positions if the run did not say."""
    s = run.summary or {}
    chance = s.get("chance")
    if chance is None:
        samples = load_samples(run.path)
        chance = 1 / len(samples["positions"]) if samples and samples.get("positions") else None
    h = run.history
    knn = s.get("knn_accuracy")  # pretext.pretrain's diagnostic: {"pretrained": acc, "random": acc}
    return {"status": run.status, "epochs": len(h), "chance": chance, "best": summarize(h)["best"], "last": h[-1],
            "knn_accuracy": knn if isinstance(knn, dict) else {},
            "images_per_s": statistics.fmean(column(h, "images_per_s")) if column(h, "images_per_s") else None,
            "wall_time_s": s.get("wall_time_s", h[-1].get("wall_time_s")), "backbone_sha256": s.get("backbone_sha256")}


def task_pretext(study: Study, task: str) -> dict[str, Any]:
    """summary.json's "pretext" entry of a task: the shown pretraining's numbers, and every pretraining's
    cost and weights (one per seed, or the shared one), since the cost of pretraining is all of them."""
    shown, every = study.pretexts[task], study.pretrainings[task]
    times = study.config.get("stage_times_s") or {}
    folders = {}
    for p in every:
        wall = (p.summary or {}).get("wall_time_s", p.history[-1].get("wall_time_s"))
        folders[p.folder] = {"seed": p.seed, "status": p.status, "epochs": len(p.history),
                             "cost_s": times.get(p.folder, wall), "backbone_sha256": (p.summary or {}).get(
                                 "backbone_sha256"), "remade": remade_note(study, p)}
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
    task, summary = run.task, run.summary or {}
    if "earlier_backbone_sha256" not in summary:
        return None
    new, old = summary.get("backbone_sha256"), summary["earlier_backbone_sha256"]
    head = (f"{md(run.folder, code=True)} was pretrained again when the study resumed without its weights; the re-made "
            "backbone is")
    whose = "this arm" if run.seed is None else f"this arm with seed {run.seed}"
    if old == new:
        return f"{head} bit-identical to the earlier one, so every run of {whose} started from the same weights."
    earlier = sum(1 for r in study.runs if r.arm == task and (run.seed is None or r.seed == run.seed)
                  and r.summary and r.summary.get("init_sha256") != new)
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

"""The study report: the homework's questions answered from the numbers the runs wrote.

`write_report(study_dir)` only reads (it never trains) a study folder: study.json,
pretrain-<task>/ and f<fraction>-<arm>-s<seed>/ run folders, and the frozen-backbone probes in
pretrain-<task>/probes.json and random-init/probes.json. It writes

- report.md   figures referenced as figures/NAME.png, so report.md and figures/ can be copied
              together into docs/ and render on GitHub;
- report.html the same content, self-contained (figures inlined as base64);
- figures/*.png, drawn with matplotlib's Agg canvas (no display needed);
- summary.json, the numbers behind the report (schema below).

A study still in progress renders too: missing and unfinished runs are listed, curves show what
exists, and tables and conclusions use finished runs only (a partial curve has no "best" yet).

summary.json schema. Fractions are keys formatted with :g ("1", "0.5", "0.1"); over seeds,
"mean" is the mean, "std" the sample standard deviation and "ci95" the 95% Student t interval of
the mean ([lo, hi]; both null for one seed). Seeds as keys are strings.

{
  "study": str,                                  # the study folder's name
  "dataset": {...} | null,                       # study.json "dataset" as written (name, classes, ...)
  "status": {"finished": [run], "in_progress": [{"run": str, "epochs": int, "planned_epochs": int | null}],
             "missing": [run],                  # missing: planned in study.json, no finished epoch yet
             "missing_probes": [str]},          # "<method> f<fraction>-s<seed>" planned, not in probes.json
  "rules": {"plateau": str, "time_to_95": str, "equal_within": 0.005},
  "runs": {                                      # finished fine-tuning runs
    run: {
      "fraction": float, "arm": "scratch" | <pretext>, "seed": int, "epochs": int, "n_train": int | null,
      "best": {metric: {"value": float, "epoch": int}},   # f1_macro, precision_macro, recall_macro,
                                                          # accuracy (highest), loss (lowest)
      "final": {metric: float} | null,                    # end-of-training evaluation ("final" of the run)
      "test": {metric: float},                            # only when the run evaluated a test split
      "time_to_95": {"epoch": int, "wall_time_s": float}, # first epoch with val macro-F1 >= 0.95 x best
      "plateau_epoch": int,
      "gap": {"accuracy_train_minus_val": float, "loss_val_minus_train": float},  # last epoch
      "train_loss": {"first_epoch": float, "mean": float},                          # mean = area / epochs
      "images_per_s": float, "wall_time_s": float
    }
  },
  "aggregate": {fraction: {arm: {quantity: {"mean": float, "std": float | null, "n": int,
                                             "ci95": [float, float] | null}}}},
  "comparison": {fraction: {<pretext arm>: {quantity: {
      "scratch": float, "pretrained": float,     # means over seeds
      "pretrained_minus_scratch": float,         # difference of the means
      "paired_std": float | null,                # std of per-seed differences (>= 2 shared seeds)
      "paired_ci95": [float, float] | null,      # t interval of the mean per-seed difference
      "significant": bool | null,                # paired_ci95 excludes 0; null: one shared seed
      "n_seeds": [int, int]}}}},                 # [scratch, pretrained]
  "evaluation": {                                # every method under every protocol, final numbers only
    "protocols": {protocol: str},                # finetune | linear | knn -> its name in the report
    "metrics": ["f1_macro", "accuracy"], "baseline": "scratch", "rule": str,
    "cells": {protocol: {fraction: {method: {metric: {     # method: scratch (random init) | <pretext>
        "mean": float, "std": float | null, "n": int, "ci95": [float, float] | null,
        "by_seed": {seed: float}}}}}},
    "vs_baseline": {protocol: {fraction: {<pretext>: {metric: {   # method minus scratch, paired by seed
        "difference": float, "std": float | null, "n": int, "ci95": [float, float] | null,
        "significant": bool | null, "seeds": [int]}}}}}
  },                                             # finetune: the end-of-training validation metrics
  "pretext": {task: {"status": str, "epochs": int, "chance": float | null,
                     "best": {metric: {"value", "epoch"}},   # every val_* column (loss: lowest)
                     "last": {column: float},                 # the last metrics.csv row
                     "knn_accuracy": {backbone: float},       # e.g. pretrained / random, if the run wrote it
                     "images_per_s": float | null, "wall_time_s": float | null,
                     "backbone_sha256": str | null,           # the weights fine-tuning starts from
                     "remade": str | null}},                  # remade_note's sentence, if re-made on resume
  "machine": {...}, "earlier_machines": [{...}], "stage_times_s": {stage: float}
}

quantity is one of QUANTITIES: f1_macro, precision_macro, recall_macro, accuracy, loss (best values),
<metric>_epoch, final_f1_macro, final_accuracy, test_f1_macro, test_accuracy, time_to_95_epoch,
time_to_95_wall_time_s, plateau_epoch, gap_accuracy, gap_loss, train_loss_first_epoch,
train_loss_mean, epochs, wall_time_s, images_per_s.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator
from torch import Tensor, nn

from .data import normalize
from .errors import UserError
from .finetune import summarize
from .io import load_json, save_json, save_text
from .models import make_backbone
from .probe import PROTOCOLS as PROBE_PROTOCOLS, random_backbone
from .stats import RULE as CI_RULE, describe, paired_difference
from .study import RANDOM_INIT_DIR, probe_key, run_name
from .train import read_csv

log = logging.getLogger(__name__)

EQUAL_WITHIN = 0.005  # metric differences at most this large are reported as "about equal"
PLATEAU_TOL = 0.01
FRACTION_OF_BEST = 0.95
METRICS = ("f1_macro", "precision_macro", "recall_macro", "accuracy")
NAMES = {"f1_macro": "macro-F1", "precision_macro": "macro precision", "recall_macro": "macro recall",
         "accuracy": "accuracy", "loss": "loss"}
PLATEAU_RULE = (f"the plateau epoch is the first epoch e such that no later epoch's validation macro-F1 "
                f"exceeds the value at e by more than {PLATEAU_TOL} (absolute)")
T95_RULE = (f"time to {FRACTION_OF_BEST:.0%} is the first epoch whose validation macro-F1 reaches "
            f"{FRACTION_OF_BEST} x the run's own best, with the cumulative training wall time at that epoch")
RUN_NAME = re.compile(r"^f(?P<fraction>\d*\.?\d+(?:e[+-]?\d+)?)-(?P<arm>.+)-s(?P<seed>\d+)$")
QUANTITIES = (*METRICS, "loss", *(f"{m}_epoch" for m in (*METRICS, "loss")), "final_f1_macro", "final_accuracy",
              "test_f1_macro",
              "test_accuracy", "time_to_95_epoch", "time_to_95_wall_time_s", "plateau_epoch", "gap_accuracy",
              "gap_loss", "train_loss_first_epoch", "train_loss_mean", "epochs", "wall_time_s", "images_per_s")
DPI = 110


# ----------------------------------------------------------------------------------------------
# The rules, pure so they can be tested on hand-made curves


def plateau_epoch(values: Sequence[float], tol: float = PLATEAU_TOL) -> int:
    """First epoch (1-based) after which the curve never rises more than `tol` above its value there.

    Why this rule: "the best epoch" is noisy and often the last one of a decaying learning rate;
    this one asks when further training stopped buying a meaningful gain.
    """
    if not values:
        raise ValueError("plateau_epoch needs at least one value")
    for i, v in enumerate(values):
        if max(values[i:]) - v <= tol + 1e-12:  # 1e-12: 0.515 - 0.505 is 0.01 in decimal, not in binary
            return i + 1
    return len(values)  # unreachable: the last epoch always qualifies


def time_to_fraction_of_best(values: Sequence[float], times: Sequence[float],
                             frac: float = FRACTION_OF_BEST) -> tuple[int, float]:
    """First epoch (1-based) whose value reaches frac x max(values), and the wall time at that epoch.

    For non-negative metrics that grow (macro-F1, accuracy); measures speed against the run's own
    best, so it says how fast a run got near where it ended up, not how good that was.
    """
    if not values or len(values) != len(times):
        raise ValueError("time_to_fraction_of_best needs equally long, non-empty values and times")
    threshold = frac * max(values)
    i = next(i for i, v in enumerate(values) if v >= threshold)
    return i + 1, float(times[i])


# ----------------------------------------------------------------------------------------------
# Reading a study


@dataclass
class Run:
    """A fine-tuning run folder: its per-epoch metrics and, once finished, its summary."""

    name: str
    path: Path
    fraction: float
    arm: str
    seed: int
    history: list[dict[str, float]]
    summary: dict[str, Any] | None
    planned_epochs: int | None = None  # from the run's config.json

    @property
    def finished(self) -> bool:
        return self.summary is not None


@dataclass
class PretextRun:
    """A pretrain-<task> folder: pretext curves and, once finished, its summary."""

    task: str
    path: Path
    history: list[dict[str, float]]
    summary: dict[str, Any] | None
    planned_epochs: int | None = None

    @property
    def status(self) -> str:
        return "finished" if self.summary is not None else "in progress"


@dataclass
class Study:
    path: Path
    config: dict[str, Any]
    runs: list[Run]
    pretexts: dict[str, PretextRun]
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> probes.json "results"
    missing: list[str] = field(default_factory=list)  # expected runs without a finished epoch
    missing_probes: list[str] = field(default_factory=list)  # expected probe entries not in probes.json
    problems: list[str] = field(default_factory=list)  # files that exist but could not be read

    @property
    def fractions(self) -> list[float]:
        """Largest first, from study.json and the folders found."""
        return sorted({float(f) for f in self.config.get("fractions", [])} | {r.fraction for r in self.runs},
                      reverse=True)

    @property
    def arms(self) -> list[str]:
        """scratch first, then the pretext arms in study order."""
        found = {r.arm for r in self.runs}
        order = ["scratch", *self.config.get("pretexts", []), *sorted(found)]
        return list(dict.fromkeys(a for a in order if a in found or a in self.expected_arms))

    @property
    def expected_arms(self) -> list[str]:
        return ["scratch", *self.config.get("pretexts", [])] if self.config else []

    def finished(self, fraction: float | None = None, arm: str | None = None) -> list[Run]:
        return [r for r in self.runs if r.finished and (fraction is None or r.fraction == fraction)
                and (arm is None or r.arm == arm)]


def fraction_key(fraction: float) -> str:
    return f"{fraction:g}"


def load_study(study_dir: Path) -> Study:
    """Every run the study planned or holds; unreadable or absent ones become notes, not errors."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise UserError(f"{study_dir} is not a folder; pass a study folder (holding study.json and run folders)")
    problems: list[str] = []
    config: dict[str, Any] = {}
    if (study_dir / "study.json").exists():
        try:
            config = load_json(study_dir / "study.json")
        except (OSError, ValueError) as e:
            problems.append(f"study.json could not be read ({e})")
    else:
        problems.append("study.json is missing: fractions, arms and seeds are taken from the folders found")

    expected = [run_name(float(f), arm, int(s)) for f in config.get("fractions", [])
                for arm in ["scratch", *config.get("pretexts", [])] for s in config.get("seeds", [])]
    on_disk = [p.name for p in sorted(study_dir.iterdir()) if p.is_dir() and RUN_NAME.match(p.name)]
    runs, missing = [], []
    for name in dict.fromkeys([*expected, *on_disk]):
        m = RUN_NAME.match(name)
        history, summary = _read_run_files(study_dir / name, problems)
        if not history:
            missing.append(name)
            continue
        planned = (_read_json(study_dir / name / "config.json").get("train") or {}).get("epochs")
        runs.append(Run(name, study_dir / name, float(m["fraction"]), m["arm"], int(m["seed"]), history, summary,
                        planned))

    tasks = [*config.get("pretexts", []),
             *(p.name.removeprefix("pretrain-") for p in sorted(study_dir.glob("pretrain-*")) if p.is_dir())]
    pretexts = {}
    for task in dict.fromkeys(tasks):
        history, summary = _read_run_files(study_dir / f"pretrain-{task}", problems)
        if history:
            path = study_dir / f"pretrain-{task}"
            planned = (_read_json(path / "config.json").get("train") or {}).get("epochs")
            pretexts[task] = PretextRun(task, path, history, summary, planned)
        else:
            missing.append(f"pretrain-{task}")
    probes, missing_probes = _read_probes(study_dir, config, list(dict.fromkeys(tasks)), problems)
    return Study(study_dir, config, runs, pretexts, probes, missing, missing_probes, problems)


def _read_probes(study_dir: Path, config: dict[str, Any], tasks: list[str],
                 problems: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each method's probes.json results (scratch: the random-init folder), and the planned entries
    not there yet (planned: study.json lists the linear or k-NN protocol)."""
    probes = {}
    for method, folder in (("scratch", RANDOM_INIT_DIR), *((t, f"pretrain-{t}") for t in tasks)):
        path = study_dir / folder / "probes.json"
        if path.exists():
            try:
                probes[method] = load_json(path)["results"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                problems.append(f"{folder}/probes.json could not be read ({e})")
    planned = set(config.get("protocols", [])) & set(PROBE_PROTOCOLS)
    missing = [f"{method} {probe_key(float(f), int(s))}" for method in ("scratch", *config.get("pretexts", []))
               for s in config.get("seeds", []) for f in config.get("fractions", []) if planned
               and probe_key(float(f), int(s)) not in probes.get(method, {})]
    return probes, missing


def _read_run_files(path: Path, problems: list[str]) -> tuple[list[dict[str, float]], dict[str, Any] | None]:
    history: list[dict[str, float]] = []
    summary = None
    try:
        if (path / "metrics.csv").exists():
            history = read_csv(path / "metrics.csv")
        if (path / "summary.json").exists():
            summary = load_json(path / "summary.json")
    except (OSError, ValueError) as e:
        problems.append(f"{path.name}: could not read its files ({e})")
    return history, summary


# ----------------------------------------------------------------------------------------------
# Numbers


def _column(history: list[dict[str, float]], key: str) -> list[float]:
    return [row[key] for row in history if key in row]


def run_stats(run: Run) -> dict[str, Any]:
    """The per-run entry of summary.json (see the module docstring)."""
    h, s = run.history, run.summary or {}
    f1 = _column(h, "val_f1_macro")
    t95_epoch, t95_time = time_to_fraction_of_best(f1, _column(h, "wall_time_s"))
    best = s.get("best") or summarize(h)["best"]
    last = h[-1]
    out: dict[str, Any] = {
        "fraction": run.fraction, "arm": run.arm, "seed": run.seed, "epochs": len(h), "n_train": s.get("n_train"),
        "best": {k: best[k] for k in (*METRICS, "loss") if k in best},
        "final": s.get("final"),
        "time_to_95": {"epoch": t95_epoch, "wall_time_s": t95_time},
        "plateau_epoch": plateau_epoch(f1),
        "gap": {"accuracy_train_minus_val": last.get("train_accuracy", math.nan) - last.get("val_accuracy", math.nan),
                "loss_val_minus_train": last.get("val_loss", math.nan) - last.get("train_loss", math.nan)},
        "train_loss": {"first_epoch": h[0]["train_loss"], "mean": statistics.fmean(_column(h, "train_loss"))},
        "images_per_s": statistics.fmean(_column(h, "images_per_s") or [math.nan]),
        "wall_time_s": s.get("wall_time_s", last.get("wall_time_s", math.nan)),
    }
    if "test" in s:
        out["test"] = s["test"]
    return out


def quantities(stats: dict[str, Any]) -> dict[str, float]:
    """A run's stats flattened to the QUANTITIES compared between arms."""
    q: dict[str, float] = {}
    for m, b in stats["best"].items():
        q[m], q[f"{m}_epoch"] = b["value"], b["epoch"]
    if stats.get("final"):
        q["final_f1_macro"], q["final_accuracy"] = stats["final"]["f1_macro"], stats["final"]["accuracy"]
    if "test" in stats:
        q["test_f1_macro"], q["test_accuracy"] = stats["test"]["f1_macro"], stats["test"]["accuracy"]
    q.update(time_to_95_epoch=stats["time_to_95"]["epoch"], time_to_95_wall_time_s=stats["time_to_95"]["wall_time_s"],
             plateau_epoch=stats["plateau_epoch"], gap_accuracy=stats["gap"]["accuracy_train_minus_val"],
             gap_loss=stats["gap"]["loss_val_minus_train"], train_loss_first_epoch=stats["train_loss"]["first_epoch"],
             train_loss_mean=stats["train_loss"]["mean"], epochs=stats["epochs"], wall_time_s=stats["wall_time_s"],
             images_per_s=stats["images_per_s"])
    return {k: q[k] for k in QUANTITIES if k in q}


def compare(scratch: dict[int, float], pretrained: dict[int, float]) -> dict[str, Any]:
    """Pretrained minus scratch for one quantity, given {seed: value} of each arm."""
    a, b = statistics.fmean(scratch.values()), statistics.fmean(pretrained.values())
    paired = (paired_difference(scratch, pretrained) if set(scratch) & set(pretrained)
              else {"std": None, "ci95": None, "significant": None})
    return {"scratch": a, "pretrained": b, "pretrained_minus_scratch": b - a, "paired_std": paired["std"],
            "paired_ci95": paired["ci95"], "significant": paired["significant"],
            "n_seeds": [len(scratch), len(pretrained)]}


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
        pretrained = [arm for arm in arms if arm != "scratch"]
        if "scratch" in arms and pretrained:
            comparison[f] = {arm: {k: compare(arms["scratch"][k], v) for k, v in arms[arm].items()
                                   if k in arms["scratch"]} for arm in pretrained}
    return {
        "study": study.path.resolve().name,
        "dataset": cfg.get("dataset"),
        "status": {"finished": [r.name for r in study.runs if r.finished],
                   "in_progress": [{"run": r.name, "epochs": len(r.history), "planned_epochs": r.planned_epochs}
                                   for r in study.runs if not r.finished]
                   + [{"run": f"pretrain-{t}", "epochs": len(p.history), "planned_epochs": p.planned_epochs}
                      for t, p in study.pretexts.items()
                      if p.summary is None],
                   "missing": study.missing, "missing_probes": study.missing_probes},
        "rules": {"plateau": PLATEAU_RULE, "time_to_95": T95_RULE, "equal_within": EQUAL_WITHIN},
        "runs": runs,
        "aggregate": aggregate,
        "comparison": comparison,
        "evaluation": evaluation_summary(evaluation_values(study, runs), study.arms),
        "pretext": {t: {**pretext_stats(p), "remade": remade_note(study, p)} for t, p in study.pretexts.items()},
        "machine": cfg.get("machine"), "earlier_machines": cfg.get("earlier_machines", []),
        "stage_times_s": cfg.get("stage_times_s", {}),
    }


PROTOCOLS = {"finetune": "fine-tune", "linear": "linear probe", "knn": "k-NN"}
EVAL_METRICS = ("f1_macro", "accuracy")


def evaluation_values(study: Study, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{protocol: {fraction: {method: {metric: {seed: value}}}}}: fine-tuning's end-of-training
    validation metrics (no epoch picked on the validation split, like the probes) and the probes'."""
    values: dict[str, Any] = {}

    def put(protocol: str, fraction: float, method: str, seed: int, metrics: dict[str, float]) -> None:
        for m in EVAL_METRICS:
            if metrics.get(m) is not None:
                (values.setdefault(protocol, {}).setdefault(fraction_key(fraction), {}).setdefault(method, {})
                 .setdefault(m, {}))[seed] = metrics[m]

    for st in runs.values():
        if st.get("final"):
            put("finetune", st["fraction"], st["arm"], st["seed"], st["final"])
    for method, results in study.probes.items():
        for r in results.values():
            for protocol in PROBE_PROTOCOLS:
                if protocol in r:
                    put(protocol, float(r["fraction"]), method, int(r["seed"]), r[protocol])
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
            base = by_method.get("scratch", {})
            diffs = {m: {k: paired_difference(base[k], v) for k, v in by_method[m].items()
                         if set(base.get(k, {})) & set(v)} for m in order if m != "scratch"}
            if any(diffs.values()):
                vs.setdefault(protocol, {})[f] = {m: d for m, d in diffs.items() if d}
    return {"protocols": {p: PROTOCOLS[p] for p in cells}, "metrics": list(EVAL_METRICS), "baseline": "scratch",
            "rule": CI_RULE, "cells": cells, "vs_baseline": vs}


def pretext_stats(run: PretextRun) -> dict[str, Any]:
    s = run.summary or {}
    chance = s.get("chance")
    if chance is None:
        samples = _load_samples(run.path)
        chance = 1 / len(samples["positions"]) if samples and samples.get("positions") else None
    h = run.history
    knn = s.get("knn_accuracy")  # pretext.pretrain's diagnostic: {"pretrained": acc, "random": acc}
    return {"status": run.status, "epochs": len(h), "chance": chance, "best": summarize(h)["best"], "last": h[-1],
            "knn_accuracy": knn if isinstance(knn, dict) else {},
            "images_per_s": statistics.fmean(_column(h, "images_per_s")) if _column(h, "images_per_s") else None,
            "wall_time_s": s.get("wall_time_s", h[-1].get("wall_time_s")), "backbone_sha256": s.get("backbone_sha256")}


# ----------------------------------------------------------------------------------------------
# Conclusions: sentences generated from the numbers, claiming nothing they do not show


def _verdict(diff: float, lower_is_better: bool, tol: float) -> str:
    """'pretrained', 'scratch' or 'equal' for a pretrained-minus-scratch difference."""
    if abs(diff) <= tol:
        return "equal"
    return "pretrained" if (diff < 0) == lower_is_better else "scratch"


def fraction_conclusions(cmp: dict[str, dict[str, Any]], arm: str) -> list[str]:
    """Which arm's loss fell faster, whose macro-F1 rose faster, which plateaued first, which peaked higher."""
    name = {"pretrained": arm, "scratch": "scratch"}
    n_scratch, n_pre = cmp["f1_macro"]["n_seeds"]
    seeds = ("" if n_scratch == n_pre == 1 else f" (means over {n_scratch} seeds)" if n_scratch == n_pre
             else f" (means over {n_pre} {arm} and {n_scratch} scratch seeds)")
    out = []

    first, mean = cmp["train_loss_first_epoch"], cmp["train_loss_mean"]
    verdicts = {_verdict(first["pretrained_minus_scratch"], True, EQUAL_WITHIN),
                _verdict(mean["pretrained_minus_scratch"], True, EQUAL_WITHIN)} - {"equal"}
    numbers = (f"after epoch 1: {first['pretrained']:.3f} ({arm}) vs {first['scratch']:.3f} (scratch); "
               f"mean over the epochs (area under the curve per epoch): {mean['pretrained']:.3f} vs "
               f"{mean['scratch']:.3f}")
    if not verdicts:
        out.append(f"Training loss fell about equally fast: {numbers}{seeds}.")
    elif len(verdicts) == 1:
        out.append(f"Training loss fell faster for {name[verdicts.pop()]}: {numbers}{seeds}.")
    else:
        out.append(f"Training loss: mixed, neither arm fell faster on both measures: {numbers}{seeds}.")

    f1 = cmp["f1_macro"]
    higher = _verdict(f1["pretrained_minus_scratch"], False, EQUAL_WITHIN)

    def lower_best(v: str) -> str:
        """A caveat when the faster arm got there with less far to go."""
        if v == "equal" or higher in ("equal", v):
            return ""
        return (f"; but {name[v]}'s own best is lower ({f1[v]:.4f} vs {f1[higher]:.4f}), so it had less far "
                "to go")

    e, t = cmp["time_to_95_epoch"], cmp["time_to_95_wall_time_s"]
    v = _verdict(e["pretrained_minus_scratch"], True, 0.5)
    numbers = (f"{FRACTION_OF_BEST:.0%} of its own best at epoch {_num(e['pretrained'], 'epoch')} "
               f"({t['pretrained']:.0f} s) for {arm} vs epoch {_num(e['scratch'], 'epoch')} ({t['scratch']:.0f} s) "
               "for scratch")
    out.append(f"Validation macro-F1 rose {'equally fast' if v == 'equal' else 'faster for ' + name[v]}: "
               f"{numbers}{seeds}{lower_best(v)}.")

    p = cmp["plateau_epoch"]
    v = _verdict(p["pretrained_minus_scratch"], True, 0.5)
    numbers = f"plateau at epoch {_num(p['pretrained'], 'epoch')} for {arm} vs {_num(p['scratch'], 'epoch')} for scratch"
    out.append(_sentence(f"{'both plateaued at about the same epoch' if v == 'equal' else name[v] + ' plateaued first'}"
                         f": {numbers}{seeds}{lower_best(v)}."))

    d, v = f1["pretrained_minus_scratch"], higher
    numbers = f"best validation macro-F1 {f1['pretrained']:.4f} ({arm}) vs {f1['scratch']:.4f} (scratch), {d:+.4f}"
    sentence = (f"The maximum was about equal (|difference| <= {EQUAL_WITHIN}): {numbers}" if v == "equal"
                else f"{name[v]} reached the higher maximum: {numbers}")
    if f1.get("paired_ci95") is not None:
        sentence += (f"{seeds}; paired 95% CI of the difference {_interval(f1['paired_ci95'], True)}, "
                     + ("significant" if f1["significant"] else "so not significant"))
    else:
        sentence += "; one seed, so no confidence interval can be computed and the difference is not tested"
    out.append(_sentence(sentence + "."))
    return out


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def overall_conclusions(summary: dict[str, Any], arms: list[str], fractions: list[float]) -> list[str]:
    """At which fractions pretraining helped (best validation macro-F1) and by how much."""
    out = []
    for arm in arms:
        diffs = {float(f): c[arm]["f1_macro"]["pretrained_minus_scratch"]
                 for f, c in summary["comparison"].items() if arm in c and "f1_macro" in c[arm]}
        if not diffs:
            out.append(f"{arm}: no fraction has finished runs of both scratch and {arm} yet, so no answer.")
            continue
        pending = [f"{f:g}" for f in fractions if f not in diffs]
        groups = {"helped": [], "hurt": [], "equal": []}
        for f in sorted(diffs, reverse=True):
            v = _verdict(diffs[f], False, EQUAL_WITHIN)
            groups["equal" if v == "equal" else "helped" if v == "pretrained" else "hurt"].append(
                f"{f:g} ({diffs[f]:+.4f})")
        parts = [f"helped at fraction {', '.join(groups['helped'])}" if groups["helped"]
                 else "helped at no fraction"]
        if groups["hurt"]:
            parts.append(f"hurt at {', '.join(groups['hurt'])}")
        if groups["equal"]:
            parts.append(f"made about no difference at {', '.join(groups['equal'])}")
        text = (f"**Pretraining with {arm}** " + "; ".join(parts) + " (best validation macro-F1, pretrained minus "
                f"scratch; differences within {EQUAL_WITHIN} count as no difference).")
        if pending:
            text += f" Not comparable yet at fraction {', '.join(pending)} (runs missing or unfinished)."
        ordered = [diffs[f] for f in sorted(diffs, reverse=True)]  # most labels first
        steps = [b - a for a, b in zip(ordered, ordered[1:])]
        if steps and all(d > EQUAL_WITHIN for d in steps):
            text += " The gain grows as the label budget shrinks."
        elif steps and all(d < -EQUAL_WITHIN for d in steps):
            text += " The gain shrinks as the label budget shrinks."
        text += _significance_note(summary, arm)
        cost = summary["stage_times_s"].get(f"pretrain-{arm}") or (summary["pretext"].get(arm) or {}).get("wall_time_s")
        if cost:
            text += f" Pretraining cost {_duration(cost)} once, shared by all fractions."
        out.append(text)
    return out


def baseline_name(protocol: str) -> str:
    """What a pretrained backbone is compared with: scratch fine-tuning, or the frozen random init."""
    return "scratch" if protocol == "finetune" else "random init"


def _interval(ci: list[float], sign: bool = False) -> str:
    return f"[{_num(ci[0], 'metric', sign)}, {_num(ci[1], 'metric', sign)}]"


def evaluation_conclusions(evaluation: dict[str, Any], metric: str = "f1_macro") -> list[str]:
    """Per protocol and pretext: where the paired 95% interval says better or worse, where it does
    not, and where one seed leaves the difference untested."""
    out = []
    for protocol, by_f in evaluation["vs_baseline"].items():
        for method in dict.fromkeys(m for d in by_f.values() for m in d):
            groups: dict[str, list[str]] = {"higher": [], "lower": [], "not": [], "untested": []}
            for f, d in by_f.items():
                c = d.get(method, {}).get(metric)
                if c is None:
                    continue
                diff = _num(c["difference"], "metric", sign=True)
                if c["significant"] is None:
                    groups["untested"].append(f"{f} ({diff})")
                else:
                    key = "not" if not c["significant"] else "higher" if c["difference"] > 0 else "lower"
                    groups[key].append(f"{f} ({diff}, 95% CI {_interval(c['ci95'], True)}, {c['n']} seeds)")
            parts = [f"significantly higher at fraction {', '.join(groups['higher'])}" if groups["higher"] else "",
                     f"significantly lower at fraction {', '.join(groups['lower'])}" if groups["lower"] else "",
                     f"no significant difference at fraction {', '.join(groups['not'])}" if groups["not"] else "",
                     f"differences at fraction {', '.join(groups['untested'])} come from one seed, so no confidence "
                     "interval can be computed and none is called significant" if groups["untested"] else ""]
            out.append(f"**{PROTOCOLS[protocol]}, {method} vs {baseline_name(protocol)}** ({NAMES[metric]}): "
                       + "; ".join(p for p in parts if p) + ".")
    return out


def _significance_note(summary: dict[str, Any], arm: str) -> str:
    """Which best-macro-F1 differences of `arm` the paired interval supports, or that none was tested."""
    cmp = {f: c[arm]["f1_macro"] for f, c in summary["comparison"].items() if arm in c and "f1_macro" in c[arm]}
    verdicts = {v: [f for f, c in cmp.items() if c.get("significant") is v] for v in (True, False, None)}
    if not verdicts[True] and not verdicts[False]:
        return " One seed per arm: no confidence interval can be computed, so no difference is called significant."
    parts = [f"significant at fraction {', '.join(verdicts[True])}" if verdicts[True] else "significant at no fraction"]
    if verdicts[False]:
        parts.append(f"not significant at {', '.join(verdicts[False])}")
    if verdicts[None]:
        parts.append(f"not tested at {', '.join(verdicts[None])} (one seed)")
    return " Paired over seeds (95% t interval), the difference is " + "; ".join(parts) + "."


# ----------------------------------------------------------------------------------------------
# Figures (matplotlib's Agg canvas directly: no pyplot state, no display)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path, tight: bool = False) -> None:
    """PNG at DPI; tight=True grows the canvas to hold text placed outside the axes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight" if tight else None)


def _colors(arms: list[str]) -> dict[str, str]:
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    return {a: palette[i % len(palette)] for i, a in enumerate(arms)}


def _mean_curve(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Epochs, and mean/min/max over seeds, over the epochs every seed has reached.

    Finished seeds only when there are any, so a seed still training does not cut the curve short.
    """
    runs = [r for r in runs if r.finished] or runs
    curves = [_column(r.history, key) for r in runs]
    n = min((len(c) for c in curves), default=0)
    if n == 0:
        return None
    a = np.array([c[:n] for c in curves])
    return np.arange(1, n + 1), a.mean(0), a.min(0), a.max(0)


def _plot_curve(ax: Axes, runs: list[Run], key: str, color: str, label: str, style: str = "-") -> None:
    curve = _mean_curve(runs, key)
    if curve is None:
        return
    x, mean, lo, hi = curve
    ax.plot(x, mean, style, color=color, label=label, marker="o" if len(x) < 4 else None, ms=3)
    if len(runs) > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)


def _epoch_axis(ax: Axes) -> None:
    """Whole-epoch ticks (call after plotting); a one-epoch run still gets a readable axis."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    lo, hi = ax.get_xlim()
    if hi - lo < 2:
        ax.set_xlim(min(lo, 0.5), max(hi, 1.5))
    ax.grid(alpha=0.3)


def _fraction_title(study: Study, summary: dict[str, Any], fraction: float) -> str:
    n = next((s["n_train"] for s in summary["runs"].values() if s["fraction"] == fraction and s["n_train"]), None)
    return f"fraction {fraction:g}" + (f" ({n} labels)" if n else "")


def loss_figure(study: Study, summary: dict[str, Any], path: Path) -> None:
    """Training (dashed) and validation (solid) loss per epoch, scratch vs pretrained, one panel per fraction."""
    fractions, colors = study.fractions, _colors(study.arms)
    fig = _figure(4.2 * len(fractions), 3.4)
    axes = fig.subplots(1, len(fractions), squeeze=False)[0]
    for ax, f in zip(axes, fractions):
        for arm in study.arms:
            runs = [r for r in study.runs if r.fraction == f and r.arm == arm]
            _plot_curve(ax, runs, "train_loss", colors[arm], f"{arm} train", "--")
            _plot_curve(ax, runs, "val_loss", colors[arm], f"{arm} val")
        ax.set(title=_fraction_title(study, summary, f), ylabel="loss")
        _epoch_axis(ax)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no runs yet", ha="center", transform=ax.transAxes)
    _save(fig, path)


def metrics_figure(study: Study, summary: dict[str, Any], path: Path) -> None:
    """Validation macro-F1, precision, recall and accuracy per epoch: rows = metric, columns = fraction."""
    fractions, colors = study.fractions, _colors(study.arms)
    fig = _figure(4.2 * len(fractions), 2.6 * len(METRICS))
    axes = fig.subplots(len(METRICS), len(fractions), squeeze=False, sharex="col")
    for j, f in enumerate(fractions):
        for i, m in enumerate(METRICS):
            ax = axes[i, j]
            for arm in study.arms:
                _plot_curve(ax, [r for r in study.runs if r.fraction == f and r.arm == arm], f"val_{m}",
                            colors[arm], arm)
            _epoch_axis(ax)
            ax.set_ylabel(f"val {NAMES[m]}")
            if i == 0:
                ax.set_title(_fraction_title(study, summary, f))
                if ax.lines:
                    ax.legend(fontsize=8)
            if i < len(METRICS) - 1:
                ax.set_xlabel("")
    _save(fig, path)


def fraction_figure(evaluation: dict[str, Any], methods: list[str], path: Path, metric: str = "f1_macro") -> None:
    """Validation metric vs label fraction (log axis), a line per method, a panel per protocol; error
    bars are 95% t intervals over seeds (none for a single seed). Methods are nudged sideways a
    little so their bars do not hide each other."""
    cells = evaluation["cells"]
    colors = _colors(methods)
    fractions = sorted({float(f) for by_f in cells.values() for f in by_f})
    fig = _figure(4.2 * len(cells), 3.4)
    axes = fig.subplots(1, len(cells), squeeze=False, sharey=True)[0]
    for ax, (protocol, by_f) in zip(axes, cells.items()):
        for i, m in enumerate(methods):
            pts = [(float(f), c[m][metric]) for f, c in by_f.items() if metric in c.get(m, {})]
            if not pts:
                continue
            pts.sort()
            x = np.array([f for f, _ in pts]) * 1.04 ** (i - (len(methods) - 1) / 2)
            mean = np.array([c["mean"] for _, c in pts])
            err = np.array([[c["mean"] - c["ci95"][0], c["ci95"][1] - c["mean"]] if c["ci95"] else [0.0, 0.0]
                            for _, c in pts]).T
            label = baseline_name(protocol) if m == "scratch" else m
            ax.errorbar(x, mean, yerr=err, color=colors[m], marker="o", ms=4, capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlim(fractions[0] / 1.4, fractions[-1] * 1.4)  # the same axis in every panel
        ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set(title=PROTOCOLS[protocol], xlabel="label fraction (log scale)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"validation {NAMES[metric]}")
    _save(fig, path)


def run_figure(run_dir: Path, path: Path | None = None) -> Path:
    """One training run's curves (loss; validation macro-F1, precision, recall, accuracy) as a PNG."""
    from .train import read_csv

    h = read_csv(Path(run_dir) / "metrics.csv")
    path = path or Path(run_dir) / "curves.png"
    fig = _figure(9, 3.4)
    ax_loss, ax_m = fig.subplots(1, 2)
    x = [r["epoch"] for r in h]
    ax_loss.plot(x, _column(h, "train_loss"), "--", label="train")
    ax_loss.plot(x, _column(h, "val_loss"), label="val")
    ax_loss.set(title="loss", ylabel="loss")
    for m in METRICS:
        ax_m.plot(x, _column(h, f"val_{m}"), label=f"val {NAMES[m]}")
    ax_m.set(title=f"{Path(run_dir).name}: validation metrics")
    for ax in (ax_loss, ax_m):
        _epoch_axis(ax)
        ax.legend(fontsize=8)
    _save(fig, path)
    return path


def pretext_figure(run: PretextRun, chance: float | None, path: Path) -> None:
    """Pretext loss and accuracy (train and held-out), the chance line, and any extra val_* column."""
    h = run.history
    extras = [k for k in dict.fromkeys(k for row in h for k in row)
              if k.startswith("val_") and k not in ("val_loss", "val_accuracy")]
    panels = 2 + bool(extras)
    fig = _figure(4.2 * panels, 3.3)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, kind in zip(axes, ("loss", "accuracy")):
        for split, style in (("train", "--"), ("val", "-")):
            ys = _column(h, f"{split}_{kind}")
            if ys:
                ax.plot(range(1, len(ys) + 1), ys, style, color="tab:orange", label=f"{split} {kind}",
                        marker="o" if len(ys) < 4 else None, ms=3)
        ax.set(title=f"pretext {run.task}: {kind}", ylabel=kind)
    if chance is not None:
        axes[1].axhline(chance, color="grey", ls=":", label=f"chance ({chance:.3f})")
    for k in extras:
        ys = _column(h, k)
        axes[2].plot(range(1, len(ys) + 1), ys, label=k, marker="o" if len(ys) < 4 else None, ms=3)
        axes[2].set(title="other held-out metrics")
    for ax in axes:
        _epoch_axis(ax)
        if ax.lines:
            ax.legend(fontsize=8)
    _save(fig, path)


def _to_display(img: Tensor, min_px: int = 96) -> np.ndarray:
    """uint8 (C, H, W) -> float (H', W', 3) in [0, 1], enlarged by an integer factor (nearest)."""
    a = img.float().div(255).permute(1, 2, 0).numpy()
    a = np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]
    k = max(1, math.ceil(min_px / a.shape[0]))
    return a.repeat(k, 0).repeat(k, 1)


def _class_name(classes: list[str], i: int) -> str:
    return classes[i] if 0 <= i < len(classes) else str(i)


def examples_figure(images: Tensor, examples: dict[str, list[dict[str, Any]]], classes: list[str],
                    path: Path) -> None:
    """Validation images with the true label and each arm's prediction (green right, red wrong)."""
    n = min(len(images), 10, *(len(e) for e in examples.values()))
    lines = 1 + len(examples)
    fig = Figure(figsize=(1.75 * n, 1.9 + 0.22 * lines))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for i, ax in enumerate(axes):
        ax.imshow(_to_display(images[i]), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        truth = next(iter(examples.values()))[i]["label"]
        ax.text(0.5, -0.04, f"true: {_class_name(classes, truth)}", transform=ax.transAxes, ha="center",
                va="top", fontsize=8, weight="bold")
        for j, (arm, ex) in enumerate(examples.items()):
            e = ex[i]
            ax.text(0.5, -0.04 - 0.13 * (j + 1), f"{arm}: {_class_name(classes, e['pred'])} {e['confidence']:.2f}",
                    transform=ax.transAxes, ha="center", va="top", fontsize=8,
                    color="tab:green" if e["pred"] == e["label"] else "tab:red")
    _save(fig, path, tight=True)


def confusion_figure(matrices: dict[str, np.ndarray], classes: list[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix per arm: row = true class, column = predicted class."""
    k = len(classes)
    side = max(3.6, 0.38 * k + 1.8)
    fig = _figure(side * len(matrices), side)
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (arm, m) in zip(axes, matrices.items()):
        norm = m / np.maximum(m.sum(1, keepdims=True), 1)
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ticks = range(k)
        labels = classes if k <= 40 else [""] * k
        ax.set_xticks(ticks, labels, rotation=90, fontsize=8)
        ax.set_yticks(ticks, labels, fontsize=8)
        ax.set(title=f"{arm}: {title}", xlabel="predicted", ylabel="true")
        if k <= 12:
            for r in range(k):
                for c in range(k):
                    ax.text(c, r, f"{norm[r, c]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[r, c] > 0.6 else "black")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="share of the true class")
    _save(fig, path)


def filter_mosaic(weight: Tensor) -> np.ndarray:
    """Conv filters (O, C, k, k) tiled on a white grid, each min-max scaled on its own; RGB if C == 3."""
    w = weight.detach().float()
    if w.shape[1] != 3:
        w = w.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    lo, hi = w.amin((1, 2, 3), keepdim=True), w.amax((1, 2, 3), keepdim=True)
    w = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()
    o, kh, kw = w.shape[:3]
    cols = math.ceil(math.sqrt(o))
    rows = math.ceil(o / cols)
    mosaic = np.ones((rows * (kh + 1) + 1, cols * (kw + 1) + 1, 3))
    for i in range(o):
        r, c = divmod(i, cols)
        mosaic[1 + r * (kh + 1):1 + r * (kh + 1) + kh, 1 + c * (kw + 1):1 + c * (kw + 1) + kw] = w[i]
    return mosaic


def first_conv(net: nn.Module) -> nn.Conv2d:
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"{type(net).__name__} has no Conv2d layer")
    return conv


ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish)


@torch.no_grad()
def early_features(net: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Feature maps of the first conv stage and of the first block, captured with forward hooks.

    First conv stage: the first activation module after the first Conv2d (conv -> norm -> act).
    First block: the first module holding two or more (but not all) convolutions to finish its
    forward pass, e.g. FastNet's first ResBlock or ResNet's first BasicBlock. Works for any backbone
    built from standard modules, without naming its layers.
    """
    mods = list(net.named_modules())
    n_convs = {name: sum(isinstance(m, nn.Conv2d) for m in mod.modules()) for name, mod in mods}
    i_conv = next(i for i, (_, m) in enumerate(mods) if isinstance(m, nn.Conv2d))
    stage = next(((n, m) for n, m in mods[i_conv + 1:] if isinstance(m, ACTIVATIONS)), mods[i_conv])
    blocks = [(n, m) for n, m in mods if 2 <= n_convs[n] < n_convs[""]]
    captured: dict[str, Tensor] = {}

    def hook(label: str) -> Callable:
        def keep(_module: nn.Module, _inputs: Any, out: Any) -> None:
            if isinstance(out, Tensor) and out.ndim == 4 and not any(k.startswith(label) for k in captured):
                captured[f"{label} {out.shape[1]}x{out.shape[2]}x{out.shape[3]}"] = out.detach().clone()
        return keep

    handles = [stage[1].register_forward_hook(hook(f"first conv stage ({stage[0]})"))]
    handles += [m.register_forward_hook(hook(f"first block ({n})")) for n, m in blocks]
    was = net.training
    try:
        net.eval()
        net(x)
    finally:
        net.train(was)
        for h in handles:
            h.remove()
    first_block = next((k for k in captured if k.startswith("first block")), None)
    return {k: v for k, v in captured.items() if k.startswith("first conv stage") or k == first_block}


def load_pretext_backbone(run: PretextRun) -> tuple[nn.Module, dict[str, Any], str]:
    """A pretext run's pretrained backbone, the checkpoint's meta, and which file the weights came from.

    backbone.safetensors is preferred: it is what fine-tuning starts from (BatchNorm statistics
    recalibrated on whole images); otherwise the "backbone."-prefixed weights of checkpoint.pt.
    """
    state = torch.load(run.path / "checkpoint.pt", map_location="cpu", weights_only=False)
    meta = state["meta"]
    net = make_backbone(meta["backbone"], meta["channels"])
    if (run.path / "backbone.safetensors").exists():
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(run.path / "backbone.safetensors")))
        return net.eval(), meta, "backbone.safetensors"
    net.load_state_dict({k.removeprefix("backbone."): v for k, v in state["model"].items()
                         if k.startswith("backbone.")})
    return net.eval(), meta, "checkpoint.pt"


def filters_figure(nets: dict[str, nn.Module], path: Path) -> None:
    fig = _figure(3.6 * len(nets), 3.9)
    axes = fig.subplots(1, len(nets), squeeze=False)[0]
    for ax, (label, net) in zip(axes, nets.items()):
        w = first_conv(net).weight
        ax.imshow(filter_mosaic(w), interpolation="nearest")
        ax.set_title(f"{label}\n{w.shape[0]} filters {w.shape[1]}x{w.shape[2]}x{w.shape[3]}", fontsize=9)
        ax.axis("off")
    _save(fig, path, tight=True)


def maps_mosaic(maps: Tensor, n: int = 16, height: int = 64) -> np.ndarray:
    """The first n channels of (C, H, W) side by side as viridis RGB, each min-max scaled on its own,
    enlarged (nearest) to about `height` px so stages of different resolution line up."""
    t = maps[:n].float()
    lo, hi = t.amin((1, 2), keepdim=True), t.amax((1, 2), keepdim=True)
    t = ((t - lo) / (hi - lo).clamp_min(1e-12)).numpy()
    k = max(1, round(height / t.shape[1]))
    t = t.repeat(k, 1).repeat(k, 2)
    gap = np.full((t.shape[1], 3), np.nan)
    gray = np.concatenate([np.concatenate([m, gap], 1) for m in t], 1)[:, :-gap.shape[1]]
    rgb = colormaps["viridis"](np.nan_to_num(gray))[..., :3]
    rgb[np.isnan(gray)] = 1.0  # white gaps between channels
    return rgb


def feature_maps_figure(image: Tensor, maps: dict[str, dict[str, Tensor]], path: Path, n: int = 16) -> None:
    """The input image, then the first n channels of each captured stage, one row per (network, stage)."""
    rows = [(net, stage, t[0]) for net, stages in maps.items() for stage, t in stages.items()]
    n = min(n, *(t.shape[0] for *_, t in rows))
    fig = _figure(13, 0.68 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), 2, squeeze=False, width_ratios=[1, n])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    axes[0, 0].imshow(_to_display(image, 64), interpolation="nearest")
    axes[0, 0].set_title("input", fontsize=8)
    axes[0, 1].set_title(f"channels 0-{n - 1}, left to right", fontsize=8)
    for i, (net, stage, t) in enumerate(rows):
        axes[i, 1].imshow(maps_mosaic(t, n), interpolation="nearest")
        axes[i, 1].set_ylabel(f"{net}\n" + stage.replace(" (", "\n("), fontsize=7, rotation=0, ha="right",
                              va="center")
    _save(fig, path)


def _load_samples(path: Path) -> dict[str, Any] | None:
    f = path / "samples.pt"
    if not f.exists():
        return None
    try:
        return torch.load(f, map_location="cpu", weights_only=False)
    except Exception as e:  # a torch.load failure can be any of several types; the report just skips it
        log.warning("could not read %s: %s", f, e)
        return None


SAMPLE_CAPTIONS = {  # what each task's sample figure shows
    "context": "each pair shows the first patch (left) and the second (right), with the true and the predicted "
               "position of the second relative to the first (green right, red wrong)",
    "rotation": "held-out images as the network saw them, with the true and the predicted rotation "
                "(green right, red wrong)",
    "reconstruction": "held-out images: original | masked input | reconstruction, with the PSNR of the hidden pixels",
    "simclr": "two augmented views of each held-out image; the title says which image's view the first one found "
              "most similar among the batch (green: its own partner)",
}


def samples_figure(samples: dict[str, Any], task: str, path: Path, n: int = 8) -> None:
    """Pretext examples as a task's samples() describes them: per example, the images under the keys in
    samples["panels"] side by side (default: "first", and "second" if any, e.g. a patch pair), titled with samples["titles"]
    or with the true and predicted label names in samples["positions"]; green right, red wrong, when the
    samples hold "true" and "pred"."""
    panels = samples.get("panels") or [p for p in ("first", "second") if p in samples]
    k = min(n, len(samples["first"]))
    cols = min(4, k)
    rows = math.ceil(k / cols)
    fig = _figure(max(2.0, 1.3 * len(panels)) * cols, 1.7 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(k):
        axes.flat[i].imshow(_sample_strip([samples[p][i] for p in panels]), interpolation="nearest")
        title, right = _sample_title(samples, i)
        axes.flat[i].set_title(title, fontsize=8,
                               color="black" if right is None else "tab:green" if right else "tab:red")
    if "panel_names" in samples:
        fig.suptitle(" | ".join(samples["panel_names"]), fontsize=9)
    _save(fig, path)


def _sample_strip(images: list[Tensor]) -> np.ndarray:
    """uint8 images side by side, enlarged to at least 64 px, with a white gap between them."""
    shown = [_to_display(img, 64) for img in images]
    gap = np.ones((shown[0].shape[0], max(2, shown[0].shape[1] // 12), 3))
    return np.concatenate([part for a in shown for part in (gap, a)][1:], 1)


def _sample_title(samples: dict[str, Any], i: int) -> tuple[str, bool | None]:
    """Example i's title, and whether the prediction was right (None: nothing to be right about)."""
    right = bool(samples["true"][i] == samples["pred"][i]) if "true" in samples and "pred" in samples else None
    if "titles" in samples:
        return samples["titles"][i], right
    names = samples.get("positions") or []
    t, p = int(samples["true"][i]), int(samples["pred"][i])
    return f"true: {_class_name(names, t)}\npred: {_class_name(names, p)}", right


# ----------------------------------------------------------------------------------------------
# One document, rendered as markdown and as self-contained HTML


class Doc:
    """Report content as blocks, so report.md and report.html come from one source."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def bullets(self, items: Iterable[str]) -> None:
        self.blocks.append(("bullets", list(items)))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def figure(self, name: str, caption: str) -> None:
        self.blocks.append(("figure", (name, caption)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def markdown(self) -> str:
        out = []
        for kind, b in self.blocks:
            if kind == "heading":
                out.append("#" * b[0] + " " + b[1])
            elif kind == "para":
                out.append(b)
            elif kind == "bullets":
                out.append("\n".join(f"- {item}" for item in b))
            elif kind == "table":
                header, rows = b
                cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
                out.append("\n".join(["| " + " | ".join(map(cell, header)) + " |",
                                      "|" + "|".join(["---"] * len(header)) + "|",
                                      *("| " + " | ".join(map(cell, r)) + " |" for r in rows)]))
            elif kind == "figure":
                out.append(f"![{b[1]}](figures/{b[0]})\n\n*{b[1]}*")
            elif kind == "code":
                out.append(f"```\n{b}\n```")
        return "\n\n".join(out) + "\n"

    def html(self, figures: Path, title: str) -> str:
        out = []
        for kind, b in self.blocks:
            if kind == "heading":
                out.append(f"<h{b[0]}>{_inline(b[1])}</h{b[0]}>")
            elif kind == "para":
                out.append(f"<p>{_inline(b)}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b) + "</ul>")
            elif kind == "table":
                header, rows = b
                out.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header)
                           + "</tr></thead><tbody>"
                           + "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in r) + "</tr>" for r in rows)
                           + "</tbody></table>")
            elif kind == "figure":
                data = base64.b64encode((figures / b[0]).read_bytes()).decode()
                out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[1])}">'
                           f"<figcaption>{_inline(b[1])}</figcaption></figure>")
            elif kind == "code":
                out.append(f"<pre><code>{html.escape(b)}</code></pre>")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
                f"</title><style>{CSS}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}"
       "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;"
       "text-align:left}th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}figcaption{font-style:italic;"
       "color:#555}pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:0.85em}code{background:#f6f6f6}")


def _inline(text: str) -> str:
    """The little inline markdown the report uses (**bold**, `code`) as HTML."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


# ----------------------------------------------------------------------------------------------
# The report


TABLE_ROWS = (  # label, quantity, epoch quantity (shown in brackets), kind
    ("best val macro-F1 (epoch)", "f1_macro", "f1_macro_epoch", "metric"),
    ("best val macro precision (epoch)", "precision_macro", "precision_macro_epoch", "metric"),
    ("best val macro recall (epoch)", "recall_macro", "recall_macro_epoch", "metric"),
    ("best val accuracy (epoch)", "accuracy", "accuracy_epoch", "metric"),
    ("lowest val loss (epoch)", "loss", "loss_epoch", "metric"),
    ("final val macro-F1", "final_f1_macro", None, "metric"),
    ("test macro-F1", "test_f1_macro", None, "metric"),
    ("test accuracy", "test_accuracy", None, "metric"),
    (f"epochs to {FRACTION_OF_BEST:.0%} of best macro-F1", "time_to_95_epoch", None, "epoch"),
    (f"wall time to {FRACTION_OF_BEST:.0%} of best macro-F1 (s)", "time_to_95_wall_time_s", None, "seconds"),
    ("plateau epoch", "plateau_epoch", None, "epoch"),
    ("train − val accuracy, last epoch", "gap_accuracy", None, "metric"),
    ("val − train loss, last epoch", "gap_loss", None, "metric"),
    ("train loss after epoch 1", "train_loss_first_epoch", None, "metric"),
    ("mean train loss over epochs", "train_loss_mean", None, "metric"),
    ("epochs", "epochs", None, "epoch"),
    ("wall time (s)", "wall_time_s", None, "seconds"),
    ("mean images/s", "images_per_s", None, "rate"),
)
DIGITS = {"metric": 4, "epoch": 1, "seconds": 1, "rate": 0}


def _num(v: float, kind: str, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    digits = 0 if kind == "epoch" and float(v).is_integer() else DIGITS[kind]
    v = round(v, digits) + 0.0  # + 0.0: no "-0.0" for a difference that rounds to zero
    return f"{v:{'+' if sign else ''}.{digits}f}"


def _cell(agg: dict[str, Any] | None, kind: str) -> str:
    """mean ± std over seeds (just the value for one seed)."""
    if agg is None:
        return "–"
    return _num(agg["mean"], kind) + (f" ± {_num(agg['std'], kind)}" if agg["std"] is not None else "")


def _duration(seconds: float) -> str:
    """14 s, 13 min 32 s, 2 h 05 min: readable at every scale a study runs at."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s // 60 % 60:02d} min"


def fraction_table(summary: dict[str, Any], fraction: float, arms: list[str]) -> tuple[list[str], list[list[str]]]:
    """Rows = quantities; columns = arms, then pretrained minus scratch for each pretext arm."""
    f = fraction_key(fraction)
    agg, cmp = summary["aggregate"].get(f, {}), summary["comparison"].get(f, {})
    arms = [a for a in arms if a in agg]
    diff_arms = [a for a in arms if a in cmp]
    header = ["quantity", *(f"{a} (n={agg[a]['f1_macro']['n']})" for a in arms),
              *(f"{a} − scratch" for a in diff_arms)]
    rows = []
    for label, q, q_epoch, kind in TABLE_ROWS:
        if not any(q in agg[a] for a in arms):
            continue
        row = [label]
        for a in arms:
            cell = _cell(agg[a].get(q), kind)
            if q_epoch and q_epoch in agg[a]:
                cell += f" (ep {_cell(agg[a][q_epoch], 'epoch')})"
            row.append(cell)
        for a in diff_arms:
            c = cmp[a].get(q)
            cell = _num(c["pretrained_minus_scratch"], kind, sign=True) if c else "–"
            if c and q_epoch and q_epoch in cmp[a]:
                cell += f" (ep {_num(cmp[a][q_epoch]['pretrained_minus_scratch'], 'epoch', sign=True)})"
            row.append(cell)
        rows.append(row)
    return header, rows


def _evaluation_cell(c: dict[str, Any] | None) -> str:
    """mean ± std [95% CI] over seeds; just the value for one seed."""
    if c is None:
        return "–"
    if c["ci95"] is None:
        return _num(c["mean"], "metric")
    return f"{_num(c['mean'], 'metric')} ± {_num(c['std'], 'metric')} {_interval(c['ci95'])}"


def _difference_cell(d: dict[str, Any] | None) -> str:
    """Paired difference with its interval and verdict, or why there is no verdict."""
    if d is None:
        return "–"
    if d["ci95"] is None:
        return f"{_num(d['difference'], 'metric', True)} (1 seed: no CI)"
    verdict = "**significant**" if d["significant"] else "not significant"
    return f"{_num(d['difference'], 'metric', True)} {_interval(d['ci95'], True)} {verdict}"


def evaluation_table(evaluation: dict[str, Any], metric: str, methods: list[str]) -> tuple[list[str], list[list[str]]]:
    """Rows = protocol x fraction; columns = methods, then each pretext minus the baseline."""
    cells, vs = evaluation["cells"], evaluation["vs_baseline"]
    present = {m for by_f in cells.values() for c in by_f.values() for m in c}
    methods = [m for m in methods if m in present]
    pretexts = [m for m in methods if m != "scratch"]
    header = ["protocol", "fraction", *("scratch / random init" if m == "scratch" else m for m in methods),
              *(f"{m} − baseline" for m in pretexts)]
    rows = []
    for protocol, by_f in cells.items():
        for f, c in by_f.items():
            d = vs.get(protocol, {}).get(f, {})
            rows.append([PROTOCOLS[protocol], f, *(_evaluation_cell(c.get(m, {}).get(metric)) for m in methods),
                         *(_difference_cell(d.get(m, {}).get(metric)) for m in pretexts)])
    return header, rows


def _examples_for(study: Study, fraction: float) -> tuple[Tensor | None, dict[str, list[dict[str, Any]]]]:
    """examples.pt of the fraction, and each arm's predictions on them (its lowest finished seed)."""
    images, examples = None, {}
    for arm in study.arms:
        runs = sorted(study.finished(fraction, arm), key=lambda r: r.seed)
        if runs and runs[0].summary.get("examples"):
            examples[f"{arm} s{runs[0].seed}" if len({r.seed for r in study.runs}) > 1 else arm] = \
                runs[0].summary["examples"]
        for r in runs:
            if images is None and (r.path / "examples.pt").exists():
                try:
                    images = torch.load(r.path / "examples.pt", map_location="cpu", weights_only=False)
                except Exception as e:  # unreadable file: the figure is skipped, the report goes on
                    study.problems.append(f"{r.name}/examples.pt: {e}")
    return images, examples


def _classes(study: Study) -> list[str]:
    ds = study.config.get("dataset") or {}
    if ds.get("classes"):
        return list(ds["classes"])
    return next((r.summary["classes"] for r in study.runs if r.finished and r.summary.get("classes")), [])


def write_report(study_dir: Path) -> Path:
    """Write report.md, report.html, figures/*.png and summary.json into the study folder; return report.md."""
    study = load_study(Path(study_dir))
    if not study.runs and not study.pretexts:
        raise UserError(f"{study_dir} holds no run with a finished epoch yet (no f*-*-s*/metrics.csv or "
                        "pretrain-*/metrics.csv); run the study first, or pass the study's folder")
    summary = summarize_study(study)
    fig_dir = study.path / "figures"
    doc = Doc()
    doc.heading(1, f"Does pretraining help? Study `{summary['study']}`")
    cfg, ds = study.config, study.config.get("dataset") or {}
    doc.para(f"Dataset **{ds.get('name', (cfg.get('data') or {}).get('source', 'unknown'))}**, backbone "
             f"**{cfg.get('backbone', '?')}**, label fractions {', '.join(f'{f:g}' for f in study.fractions)}, "
             f"seeds {', '.join(map(str, cfg.get('seeds', sorted({r.seed for r in study.runs}))))}, "
             f"pretext tasks {', '.join(a for a in study.arms if a != 'scratch') or 'none'}. Each fraction is "
             "fine-tuned from scratch and from the pretrained backbone with the same recipe"
             + ("; frozen backbones (pretrained and random init) are also read out by a linear probe and k-NN."
                if study.probes else "."))
    _status(doc, study, summary)
    _answer_section(doc, study, summary)
    _evaluation_section(doc, study, summary, fig_dir)
    _curves_section(doc, study, summary, fig_dir)
    _results_section(doc, study, summary)
    _examples_section(doc, study, fig_dir)
    _confusion_section(doc, study, fig_dir)
    _pretext_section(doc, study, summary, fig_dir)
    _setup_section(doc, study, summary)

    save_json(_finite(summary), study.path / "summary.json")
    markdown = doc.markdown()
    save_text(markdown, study.path / "report.md")
    save_text(doc.html(fig_dir, f"pretextlab report: {summary['study']}"), study.path / "report.html")
    log.info("wrote %s, %s and %s", study.path / "report.md", study.path / "report.html", fig_dir)
    return study.path / "report.md"


def _answer_section(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    pretext_arms = [a for a in study.arms if a != "scratch"]
    doc.heading(2, "Answer")
    doc.bullets(overall_conclusions(summary, pretext_arms, study.fractions))
    header = ["fraction", "labelled images", *(f"{a} best val macro-F1" for a in study.arms),
              *(f"{a} − scratch" for a in pretext_arms)]
    rows = []
    for f in study.fractions:
        fk = fraction_key(f)
        agg, cmp = summary["aggregate"].get(fk, {}), summary["comparison"].get(fk, {})
        n = next((s["n_train"] for s in summary["runs"].values() if s["fraction"] == f and s["n_train"]), None)
        rows.append([f"{f:g}", str(n or "–"), *(_cell(agg.get(a, {}).get("f1_macro"), "metric") for a in study.arms),
                     *(_num(cmp[a]["f1_macro"]["pretrained_minus_scratch"], "metric", True) if a in cmp else "–"
                       for a in pretext_arms)])
    doc.table(header, rows)


def _evaluation_section(doc: Doc, study: Study, summary: dict[str, Any], fig_dir: Path) -> None:
    ev = summary["evaluation"]
    doc.heading(2, "Every method under every evaluation protocol")
    if not ev["cells"]:
        doc.para("No finished fine-tuning run or probe yet.")
        return
    doc.para("Three ways to read out a backbone at each label fraction, all on the validation split and all "
             "with the labelled subset of that fraction and seed: **fine-tune** (the whole network trained; the "
             "baseline is training from scratch; numbers are the end-of-training metrics, no epoch picked on the "
             "validation split), **linear probe** (frozen backbone, BatchNorm statistics re-estimated on whole "
             "images; L2-regularised logistic regression fit by L-BFGS on cached features) and **k-NN** (k = 200, "
             "cosine similarity, temperature 0.07, Wu et al. 2018; the labelled subset is the memory bank). For "
             "the probes the baseline is the frozen random initialisation each seed's scratch run starts from. "
             "Pretrained backbones are pretrained once (first seed); seeds vary the label subset and the "
             f"initialisation, so intervals describe those, not pretraining. Rule: {ev['rule']}.")
    if max(c["n"] for by_f in ev["cells"].values() for cs in by_f.values() for m in cs.values()
           for c in m.values()) < 2:
        doc.para("Every cell comes from a single seed, so no confidence interval can be computed and no difference "
                 "is called significant; run the study with several seeds (e.g. --seeds 0,1,2) for intervals.")
    if not study.probes:
        doc.para("No probe results (probes.json) in this study yet: it predates the probe stages or has not reached "
                 "them. Re-running the study command adds them; finished runs are reused.")
    doc.bullets(evaluation_conclusions(ev))
    methods = study.arms
    for metric in ev["metrics"]:
        doc.para(f"Validation {NAMES[metric]}: mean ± std [95% CI] over seeds; differences are paired by seed.")
        doc.table(*evaluation_table(ev, metric, methods))
    fraction_figure(ev, methods, fig_dir / "f1_vs_fraction.png")
    doc.figure("f1_vs_fraction.png", "Validation macro-F1 vs label fraction (log scale), one panel per protocol; "
                                     "error bars are 95% t confidence intervals over seeds (none with one seed)")


def _curves_section(doc: Doc, study: Study, summary: dict[str, Any], fig_dir: Path) -> None:
    doc.heading(2, "Fine-tuning curves")
    if not study.runs:
        doc.para("No fine-tuning run has finished an epoch yet.")
        return
    loss_figure(study, summary, fig_dir / "loss.png")
    doc.figure("loss.png", "Training (dashed) and validation (solid) loss per epoch, scratch vs pretrained, "
                           "one panel per label fraction")
    eps = (study.config.get("train") or {}).get("label_smoothing")
    doc.para("The training loss is the mean over an epoch's augmented batches"
             + (f" and includes label smoothing ({eps})" if eps else "")
             + "; the validation loss is plain cross-entropy after the epoch, so their levels differ by "
               "construction and the loss gap in the tables is a relative measure. With several seeds, lines are "
               "means and bands span min to max.")
    metrics_figure(study, summary, fig_dir / "val_metrics.png")
    doc.figure("val_metrics.png", "Validation macro-F1, precision, recall and accuracy per epoch "
                                  "(rows: metric, columns: label fraction)")


def _results_section(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    doc.heading(2, "Results per label fraction")
    doc.para(f"Best = highest value over the epochs (lowest for the loss), with its epoch. Rules: {T95_RULE}; "
             f"{PLATEAU_RULE}. Gaps are taken at the last epoch. With several seeds cells show mean ± sample std "
             f"over seeds (n per arm in the header) and differences are differences of the means. Differences "
             f"within {EQUAL_WITHIN} are called about equal. Only finished runs count.")
    for f in study.fractions:
        doc.heading(3, _fraction_title(study, summary, f))
        header, rows = fraction_table(summary, f, study.arms)
        if rows:
            doc.table(header, rows)
        cmp = summary["comparison"].get(fraction_key(f), {})
        waiting = [n for n in [*study.missing, *(r.name for r in study.runs if not r.finished)]
                   if (m := RUN_NAME.match(n)) and float(m["fraction"]) == f]
        notes = [s for a in study.arms if a in cmp for s in fraction_conclusions(cmp[a], a)]
        if waiting:
            notes.append(f"Waiting for {', '.join(waiting)} (missing or still training).")
        if not cmp:
            notes.append("No comparison yet: it needs finished scratch and pretrained runs.")
        doc.bullets(notes)


def _finite(obj: Any) -> Any:
    """NaN/inf (a column a run did not log) as null: summary.json stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _status(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    st = summary["status"]
    if not st["in_progress"] and not st["missing"] and not st["missing_probes"] and not study.problems:
        doc.para(f"All runs finished ({len(st['finished'])} fine-tuning, {len(study.pretexts)} pretext).")
        return
    doc.para("**This study is incomplete**; the report shows what exists.")
    items = []
    if st["missing"]:
        items.append("Missing (no finished epoch): " + ", ".join(f"`{n}`" for n in st["missing"]))
    if st["in_progress"]:
        items.append("In progress (curves only): " + ", ".join(
            f"`{r['run']}` (epoch {r['epochs']}" + (f" of {r['planned_epochs']})" if r.get("planned_epochs") else ")")
            for r in st["in_progress"]))
    if st["missing_probes"]:
        items.append("Probes not run yet: " + ", ".join(f"`{n}`" for n in st["missing_probes"]))
    items += [f"Note: {p}" for p in study.problems]
    doc.bullets(items)


def _examples_section(doc: Doc, study: Study, fig_dir: Path) -> None:
    doc.heading(2, "Predictions on validation examples")
    classes = _classes(study)
    drawn = False
    for f in study.fractions:
        images, examples = _examples_for(study, f)
        if images is None or not examples:
            continue
        name = f"examples_f{f:g}.png"
        examples_figure(images, examples, classes, fig_dir / name)
        doc.figure(name, f"Fraction {f:g}: validation images (the same in every run) with the true label and each "
                         "arm's prediction and confidence (green right, red wrong)")
        drawn = True
    if not drawn:
        doc.para("No finished run has example predictions (examples.pt and summary.json) yet.")


def _confusion_section(doc: Doc, study: Study, fig_dir: Path) -> None:
    finished_fractions = sorted({r.fraction for r in study.runs if r.finished and r.summary.get("confusion_val")})
    doc.heading(2, "Confusion matrices at the smallest label fraction")
    if not finished_fractions:
        doc.para("No finished run has a confusion matrix yet.")
        return
    f = finished_fractions[0]
    matrices = {}
    for arm in study.arms:
        ms = [np.array(r.summary["confusion_val"], dtype=float) for r in study.finished(f, arm)
              if r.summary.get("confusion_val")]
        if ms:
            matrices[arm] = sum(ms)
    name = f"confusion_f{f:g}.png"
    confusion_figure(matrices, _classes(study), f"fraction {f:g}", fig_dir / name)
    doc.figure(name, f"Validation confusion matrices at fraction {f:g}, each row normalised to 1 (rows: true "
                     "class, columns: predicted)" + (", summed over seeds" if len(study.finished(f)) > len(matrices)
                                                     else ""))


def _pretext_section(doc: Doc, study: Study, summary: dict[str, Any], fig_dir: Path) -> None:
    doc.heading(2, "What the pretext task taught the backbone")
    if not study.pretexts:
        doc.para("No pretext run has finished an epoch yet.")
        return
    ps = summary["pretext"]
    tasks = list(ps)
    extras = sorted({k for t in tasks for k in ps[t]["best"] if k not in ("loss", "accuracy")})
    rows = [["status", *(ps[t]["status"] for t in tasks)],
            ["epochs", *(str(ps[t]["epochs"]) for t in tasks)],
            ["chance accuracy", *(_num(ps[t]["chance"], "metric") for t in tasks)]]
    for k in ("accuracy", *extras):
        rows.append([f"best held-out {k} (epoch)", *(
            f"{_num(ps[t]['best'][k]['value'], 'metric')} (ep {ps[t]['best'][k]['epoch']})" if k in ps[t]["best"]
            else "–" for t in tasks)])
    for col in ("train_accuracy", "val_accuracy", "train_loss", "val_loss"):
        rows.append([f"last-epoch {col.replace('_', ' ')}", *(_num(ps[t]["last"].get(col), "metric") for t in tasks)])
    for key in sorted({k for t in tasks for k in ps[t]["knn_accuracy"]}):
        rows.append([f"k-NN accuracy of frozen features, {key} backbone",
                     *(_num(ps[t]["knn_accuracy"].get(key), "metric") for t in tasks)])
    rows.append(["wall time (s)", *(_num(ps[t]["wall_time_s"], "seconds") for t in tasks)])
    rows.append(["mean images/s", *(_num(ps[t]["images_per_s"], "rate") for t in tasks)])
    doc.table(["quantity", *tasks], rows)
    for task in tasks:
        if ps[task].get("remade"):
            doc.para(ps[task]["remade"])

    for task, run in study.pretexts.items():
        doc.heading(3, f"Pretext: {task}")
        pretext_figure(run, ps[task]["chance"], fig_dir / f"pretext_{task}.png")
        doc.figure(f"pretext_{task}.png", f"{task}: pretext loss and accuracy, train (dashed) and held-out images "
                                          "(solid), with the chance level")
        samples = _load_samples(run.path)
        if samples is not None and len(samples.get("first", [])):
            samples_figure(samples, task, fig_dir / f"pretext_samples_{task}.png")
            doc.figure(f"pretext_samples_{task}.png", f"{task} inputs: {SAMPLE_CAPTIONS.get(task, 'held-out examples')}")
        else:
            doc.para(f"No pretext samples (samples.pt) in `pretrain-{task}/`.")
        _backbone_views(doc, study, run, fig_dir)


def remade_note(study: Study, run: PretextRun) -> str | None:
    """Say when a pretrained backbone was re-made (a study resumed from `pretextlab export`, which keeps
    no weights) and how many finished fine-tuning runs started from the earlier one."""
    task, summary = run.task, run.summary or {}
    if "earlier_backbone_sha256" not in summary:
        return None
    new, old = summary.get("backbone_sha256"), summary["earlier_backbone_sha256"]
    earlier = sum(1 for r in study.runs if r.arm == task and r.summary and r.summary.get("init_sha256") != new)
    bits = ("bit-identical to the earlier one" if old == new else
            "not bit-identical to the earlier one (same recipe and seed; another machine or library build)"
            if old else "of unknown likeness: the earlier one's SHA-256 was not kept")
    return (f"`pretrain-{task}` was pretrained again when the study resumed without its weights; the re-made "
            f"backbone is {bits}. {earlier} finished fine-tuning run(s) of this arm started from the earlier one.")


def _backbone_views(doc: Doc, study: Study, run: PretextRun, fig_dir: Path) -> None:
    """First-layer filters and early feature maps: pretrained vs randomly initialised (seed 0)."""
    task = run.task
    if not (run.path / "checkpoint.pt").exists():
        doc.para(f"No checkpoint in `pretrain-{task}/`, so no filters or feature maps.")
        return
    try:
        pretrained, meta, source = load_pretext_backbone(run)
    except Exception as e:  # an unreadable or mismatched checkpoint is noted, not fatal
        doc.para(f"Could not load the backbone of `pretrain-{task}/` ({type(e).__name__}: {e}).")
        return
    doc.para(f"Pretrained weights: `pretrain-{task}/{source}`; the reference is the same architecture freshly "
             "initialised with seed 0. Feature maps are computed in eval mode (running BatchNorm statistics).")
    nets = {f"pretrained ({task})": pretrained, "random init (seed 0)": random_backbone(meta["backbone"],
                                                                                       meta["channels"])}
    filters_figure(nets, fig_dir / f"filters_{task}.png")
    doc.figure(f"filters_{task}.png", "First convolution's filters, each min-max scaled on its own"
               + (" (RGB)" if meta["channels"] == 3 else " (mean over input channels)"))
    images = (_load_examples(r) for r in study.runs if (r.path / "examples.pt").exists())
    image = next((im for im in images if im is not None), None)
    if image is None:
        doc.para("No example image (examples.pt) yet, so no feature maps.")
        return
    x = normalize(image[None], torch.tensor(meta["mean"]), torch.tensor(meta["std"]))
    maps = {label: early_features(net, x) for label, net in nets.items()}
    feature_maps_figure(image, maps, fig_dir / f"feature_maps_{task}.png")
    doc.figure(f"feature_maps_{task}.png", "Feature maps of one validation image (first 16 channels, each "
                                           "min-max scaled) after the first conv stage and the first block")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return load_json(path)
    except (OSError, ValueError):
        return {}


def _load_examples(run: Run) -> Tensor | None:
    try:
        return torch.load(run.path / "examples.pt", map_location="cpu", weights_only=False)[0]
    except Exception:  # unreadable file: try the next run
        return None


def _setup_section(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    cfg = study.config
    doc.heading(2, "Setup")
    data, ds = cfg.get("data") or {}, cfg.get("dataset") or {}
    finished = [r.summary for r in study.runs if r.finished]
    pre_cfg = next((_read_json(p.path / "config.json") for p in study.pretexts.values()), {})
    n_train = {s["fraction"]: s["n_train"] for s in summary["runs"].values() if s["n_train"]}
    n_val = ds.get("n_val") or pre_cfg.get("n_val") or next((s.get("n_val") for s in finished), None)
    n_pool = ds.get("n_pool") or pre_cfg.get("n_pool")
    classes = _classes(study)
    rows = [
        ["data source", str(data.get("source", "–"))],
        ["dataset", str(ds.get("name", "–"))],
        ["classes", f"{len(classes)}: {', '.join(classes)}" if classes else "–"],
        ["image size, channels", f"{ds.get('image_size', '–')}, {ds.get('channels', '–')}"],
        ["training pool (what pretext tasks see, without labels)", str(n_pool or "–")],
        ["validation images", f"{n_val or '–'} (val_fraction {data.get('val_fraction', '–')}, "
                              f"split_seed {data.get('split_seed', '–')})"],
        ["labelled images per fraction", ", ".join(f"{f:g}: {n}" for f, n in sorted(n_train.items(), reverse=True))
         or "–"],
        ["seeds", ", ".join(map(str, cfg.get("seeds", []))) or "–"],
        ["preset, backbone", f"{cfg.get('preset', '–')}, {cfg.get('backbone', '–')}"],
    ]
    rows += [[k.replace("_", " "), str(ds[k])] for k in ("n_train_total", "n_test", "skipped_files") if k in ds]
    if cfg.get("epochs_per_fraction"):
        rows.append(["fine-tuning epochs per fraction",
                     ", ".join(f"{f}: {e}" for f, e in cfg["epochs_per_fraction"].items())])
    if cfg.get("budget_rule"):
        rows.append(["budget rule", str(cfg["budget_rule"])])
    if cfg.get("pretrain_epochs"):
        rows.append(["pretraining epochs per pretext task",
                     ", ".join(f"{t}: {e}" for t, e in cfg["pretrain_epochs"].items())])
    doc.table(["item", "value"], rows)
    machine = cfg.get("machine") or {}
    if machine:
        doc.para("Machine and library versions:")
        doc.table(["item", "value"], [[k, "none" if v is None else str(v)] for k, v in machine.items()])
    for m in cfg.get("earlier_machines") or []:
        doc.para("Parts of the study ran earlier on another machine or setup: "
                 + ", ".join(f"{k} {v}" for k, v in m.items() if k in ("cpu", "cpu_capability", "threads", "torch", "cuda")))
    times = summary["stage_times_s"]
    runs = {r.name: r.history for r in study.runs} | {f"pretrain-{t}": p.history for t, p in study.pretexts.items()}
    rows = []
    for stage in dict.fromkeys([*times, *runs]):
        h = runs.get(stage, [])
        ips = _column(h, "images_per_s")
        rows.append([stage, _num(times.get(stage), "seconds"),
                     _duration(times[stage]) if stage in times else "–", str(len(h) or "–"),
                     _num(h[-1].get("wall_time_s") if h else None, "seconds"),
                     _num(statistics.fmean(ips) if ips else None, "rate")])
    doc.para("Run time per stage (stage time from study.json, including evaluation and start-up; training time "
             "and images/s from each run's metrics.csv):")
    doc.table(["stage", "stage time (s)", "stage time", "epochs", "training time (s)", "mean images/s"], rows)
    total = sum(times.values())
    if total:
        doc.para(f"Total: {_duration(total)}.")
    doc.para("Full configuration (study.json):")
    doc.code(json.dumps(cfg, indent=2, default=str) if cfg else "(no study.json)")

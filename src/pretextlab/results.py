"""A study's numbers: reading its run folders, the rules (plateau, time to 95%), statistics over seeds.

`load_study(study_dir)` only reads (it never trains) a study folder: study.json,
pretrain-<task>/ and f<fraction>-<arm>-s<seed>/ run folders, and the frozen-backbone probes in
pretrain-<task>/probes.json and random-init/probes.json. `summarize_study` turns it into the numbers behind the report, which `report.write_report` saves
as summary.json (schema below) and renders as text; `figures` draws them.

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
      "pretrained_minus_scratch": float,         # mean per-seed difference over the shared seeds (the
                                                 # centre of paired_ci95); difference of the means if none
      "paired_std": float | null,                # std of per-seed differences (>= 2 shared seeds)
      "paired_ci95": [float, float] | null,      # t interval of the mean per-seed difference
      "significant": bool | null,                # paired_ci95 excludes 0; null: one shared seed
      "n_seeds": [int, int],                     # [scratch, pretrained]
      "paired_n": int}}}},                       # seeds both arms have (the paired interval's n)
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

import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .errors import UserError
from .io import load_json
from .layout import RANDOM_INIT_DIR, RUN_NAME, probe_key, run_name
from .probe import PROTOCOLS as PROBE_PROTOCOLS
from .runs import read_csv, summarize
from .stats import RULE as CI_RULE
from .stats import describe, paired_difference

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
QUANTITIES = (*METRICS, "loss", *(f"{m}_epoch" for m in (*METRICS, "loss")), "final_f1_macro", "final_accuracy",
              "test_f1_macro",
              "test_accuracy", "time_to_95_epoch", "time_to_95_wall_time_s", "plateau_epoch", "gap_accuracy",
              "gap_loss", "train_loss_first_epoch", "train_loss_mean", "epochs", "wall_time_s", "images_per_s")
PROTOCOLS = {"finetune": "fine-tune", "linear": "linear probe", "knn": "k-NN"}
EVAL_METRICS = ("f1_macro", "accuracy")


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
        planned = (read_json(study_dir / name / "config.json").get("train") or {}).get("epochs")
        runs.append(Run(name, study_dir / name, float(m["fraction"]), m["arm"], int(m["seed"]), history, summary,
                        planned))

    tasks = [*config.get("pretexts", []),
             *(p.name.removeprefix("pretrain-") for p in sorted(study_dir.glob("pretrain-*")) if p.is_dir())]
    pretexts = {}
    for task in dict.fromkeys(tasks):
        history, summary = _read_run_files(study_dir / f"pretrain-{task}", problems)
        if history:
            path = study_dir / f"pretrain-{task}"
            planned = (read_json(path / "config.json").get("train") or {}).get("epochs")
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


def read_json(path: Path) -> dict[str, Any]:
    try:
        return load_json(path)
    except (OSError, ValueError):
        return {}


def load_samples(path: Path) -> dict[str, Any] | None:
    f = path / "samples.pt"
    if not f.exists():
        return None
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # a torch.load failure can be any of several types; the report just skips it
        log.warning("could not read %s: %s", f, e)
        return None


# ----------------------------------------------------------------------------------------------
# Numbers


def column(history: list[dict[str, float]], key: str) -> list[float]:
    return [row[key] for row in history if key in row]


def run_stats(run: Run) -> dict[str, Any]:
    """The per-run entry of summary.json (see the module docstring)."""
    h, s = run.history, run.summary or {}
    f1 = column(h, "val_f1_macro")
    t95_epoch, t95_time = time_to_fraction_of_best(f1, column(h, "wall_time_s"))
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
        "train_loss": {"first_epoch": h[0]["train_loss"], "mean": statistics.fmean(column(h, "train_loss"))},
        "images_per_s": statistics.fmean(column(h, "images_per_s") or [math.nan]),
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
    """Pretrained minus scratch for one quantity, given {seed: value} of each arm.

    The difference is paired over the seeds both arms have, so it is the centre of its interval even
    while one arm has more finished seeds than the other (the means then cover different seeds).
    """
    a, b = statistics.fmean(scratch.values()), statistics.fmean(pretrained.values())
    paired = (paired_difference(scratch, pretrained) if set(scratch) & set(pretrained)
              else {"difference": b - a, "std": None, "n": 0, "ci95": None, "significant": None})
    return {"scratch": a, "pretrained": b, "pretrained_minus_scratch": paired["difference"],
            "paired_std": paired["std"], "paired_ci95": paired["ci95"], "significant": paired["significant"],
            "n_seeds": [len(scratch), len(pretrained)], "paired_n": paired["n"]}


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


def baseline_name(protocol: str) -> str:
    """What a pretrained backbone is compared with: scratch fine-tuning, or the frozen random init."""
    return "scratch" if protocol == "finetune" else "random init"


def pretext_stats(run: PretextRun) -> dict[str, Any]:
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


def remade_note(study: Study, run: PretextRun) -> str | None:
    """Say when a pretrained backbone was re-made (a study resumed from `pretextlab export`, which keeps
    no weights) and how many finished fine-tuning runs started from the earlier one."""
    task, summary = run.task, run.summary or {}
    if "earlier_backbone_sha256" not in summary:
        return None
    new, old = summary.get("backbone_sha256"), summary["earlier_backbone_sha256"]
    head = f"`pretrain-{task}` was pretrained again when the study resumed without its weights; the re-made backbone is"
    if old == new:
        return f"{head} bit-identical to the earlier one, so every run of this arm started from the same weights."
    earlier = sum(1 for r in study.runs if r.arm == task and r.summary and r.summary.get("init_sha256") != new)
    bits = ("not bit-identical to the earlier one (same recipe and seed; another machine or library build)" if old
            else "of unknown likeness: the earlier one's SHA-256 was not kept")
    return (f"{head} {bits}. {earlier} finished fine-tuning run(s) of this arm started from the earlier one, the "
            "runs still to come start from the re-made one.")

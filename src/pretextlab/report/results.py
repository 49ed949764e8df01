"""Reading what a study's runs wrote, without training anything: the report's only way into a study folder.

`load_study(study_dir)` reads study.json, the pretraining folders (pretrain-<task>-s<seed>/ per seed, or
one pretrain-<task>/ shared by every seed: study.json "pretraining"), the f<fraction>-<arm>-s<seed>/ run
folders, and the frozen-backbone probes in each pretraining folder's probes.json and random-init/probes.json.
Each file is read once, here, into typed records (records.py): a versioned file through schema.upgrade (an
older version brought to the current shape, a newer one refused in one line) and checked against its schema;
a value a run's summary.json does not hold is taken from the run's other files, once, in Run's properties.
A study still in progress loads too: runs without a finished epoch are listed as missing. A file that is there
but malformed (truncated, not JSON or CSV, a value of another type than its schema's) is refused in one line
naming it (files.py), before anything is drawn; an unreadable or malformed image file (examples.pt,
samples.pt: image_files.py) only leaves its figure out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import schema
from ..errors import UserError
from ..layout import (
    CONFIG,
    PROBES,
    RANDOM_INIT_DIR,
    SCRATCH,
    STEPS,
    STUDY,
    SUMMARY,
    RunKey,
    parse_pretrain_dir,
    parse_run_name,
    pretrain_dir,
    probe_key,
    run_name,
)
from ..layout import METRICS as METRICS_CSV
from ..runs import summarize
from ..schema import PER_SEED, SHARED
from .files import as_record, bad_file, check_of, read_json, read_record, read_table
from .records import Best, PretextSummary, ProbeEntry, RunConfig, RunSummary, StudyConfig
from .rules import centred_mean, loss_window
from .scoring import Scoring

__all__ = ["PER_SEED", "PROBE_PROTOCOLS", "PROTOCOLS", "SHARED", "PretextRun", "Run", "Study", "class_names",
           "column", "fraction_key", "load_study", "read_config", "study_config"]

# The evaluation protocols a study holds results of, with their names in the report. The probes' keys in
# probes.json are probe.PROTOCOLS, spelled again here so that reading a study needs nothing from the probes.
PROTOCOLS = {"finetune": "fine-tune", "linear": "linear probe", "knn": "k-NN"}
PROBE_PROTOCOLS = tuple(p for p in PROTOCOLS if p != "finetune")


class _Configured:
    """What a run folder's config.json says of how it trained (shared by fine-tuning and pretraining runs)."""

    config: RunConfig

    @property
    def planned_epochs(self) -> int | None:
        return self.config.epochs

    @property
    def precision(self) -> str | None:
        """What the run actually trained in (config.json "resolved")."""
        return self.config.precision

    @property
    def steps_per_epoch(self) -> int | None:
        return self.config.steps_per_epoch


@dataclass
class Run(_Configured):
    """A fine-tuning run folder: its per-evaluation metrics, its config.json and, once finished, its summary.
    The properties hold what a summary.json from before a field was recorded leaves to the folder's other files."""

    name: str
    path: Path
    fraction: float
    arm: str
    seed: int
    history: list[dict[str, float]]
    summary: RunSummary | None
    config: RunConfig = field(default_factory=RunConfig)

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def scoring(self) -> Scoring:
        """Its task's metrics, as its config.json recorded them."""
        return Scoring.parse(self.config.scoring)

    @property
    def schedule(self) -> str | None:
        """onecycle | cosine | constant | plateau: the summary's, else config.json's."""
        return (self.summary and self.summary.schedule) or self.config.schedule

    @property
    def patience(self) -> int | None:
        """The plateau schedule's patience (None: not that schedule): the summary's, else config.json's."""
        return (self.summary and self.summary.patience) or self.config.patience or None

    @property
    def budget(self) -> float | None:
        """Planned optimizer steps: summary.json's planned_steps, else config.json's epochs x steps per epoch."""
        planned = self.summary.planned_steps if self.summary else None
        if planned is None and self.planned_epochs and self.steps_per_epoch:
            planned = self.planned_epochs * self.steps_per_epoch
        return planned

    @property
    def steps(self) -> float:
        """Optimizer steps trained: the summary's, else the last metrics.csv row's."""
        steps = self.summary.steps if self.summary else None
        return self.step(self.history[-1]) if steps is None else steps

    @property
    def stopped_early(self) -> bool:
        """Stopped before its budget (the plateau schedule): the summary's, else fewer steps than planned."""
        stopped = self.summary.stopped_early if self.summary else None
        return self.steps < (self.budget or self.steps) if stopped is None else stopped

    @property
    def wall_time_s(self) -> float | None:
        """Training time: the summary's, else the last metrics.csv row's (None where neither has it)."""
        wall = self.summary.wall_time_s if self.summary else None
        return self.history[-1].get("wall_time_s") if wall is None else wall

    @property
    def best(self) -> dict[str, Best]:
        """Each metric's best evaluation, with its optimizer step: the summary's, else metrics.csv's."""
        best = (self.summary and self.summary.best) or {k: Best.parse(b) for k, b in summarize(self.history)["best"]
                                                        .items()}
        return {k: b if b.step is not None else Best(b.value, b.epoch, self.step({"epoch": b.epoch}))
                for k, b in best.items()}

    def step(self, row: dict[str, float]) -> float:
        """A metrics.csv row's optimizer steps so far: its step column, or (a run from before the column)
        epoch x steps per epoch; epochs where neither is known."""
        if "step" in row:
            return row["step"]
        return row["epoch"] * (self.steps_per_epoch or 1)

    def curve(self, key: str) -> list[tuple[float, float]]:
        """One metrics.csv column as (optimizer step, value) points, over the rows that have it."""
        return [(self.step(row), row[key]) for row in self.history if key in row]

    def loss_curve(self) -> list[tuple[float, float]]:
        """The training loss as the figures draw it: steps.csv smoothed (smoothed_losses), else metrics.csv's
        mean over each evaluation interval (a run from before steps.csv)."""
        return smoothed_losses(self.path) or self.curve("train_loss")


@dataclass
class PretextRun(_Configured):
    """A pretraining folder (pretrain-<task>-s<seed>, or pretrain-<task> shared by every seed): pretext
    curves, its config.json and, once finished, its summary."""

    task: str
    path: Path
    history: list[dict[str, float]]
    summary: PretextSummary | None
    config: RunConfig = field(default_factory=RunConfig)
    seed: int | None = None  # None: one pretraining shared by every seed

    @property
    def status(self) -> str:
        return "finished" if self.summary is not None else "in progress"

    @property
    def folder(self) -> str:
        return pretrain_dir(self.task, self.seed)

    @property
    def wall_time_s(self) -> float | None:
        """Training time: the summary's, else the last metrics.csv row's."""
        wall = self.summary.wall_time_s if self.summary else None
        return self.history[-1].get("wall_time_s") if wall is None else wall


@dataclass
class Study:
    path: Path
    config: StudyConfig
    runs: list[Run]
    pretexts: dict[str, PretextRun]  # task -> the pretraining the report shows (the first seed's, or the shared one)
    probes: dict[str, dict[str, ProbeEntry]] = field(default_factory=dict)  # method -> probe_key -> its entry
    missing: list[str] = field(default_factory=list)  # expected runs without a finished epoch
    missing_probes: list[str] = field(default_factory=list)  # expected probe entries not in probes.json
    problems: list[str] = field(default_factory=list)  # files that exist but could not be read
    pretrainings: dict[str, list[PretextRun]] = field(default_factory=dict)  # task -> every pretraining found

    def __post_init__(self) -> None:
        for task, run in self.pretexts.items():  # a Study built by hand (tests) lists its shown runs only
            self.pretrainings.setdefault(task, [run])

    @property
    def pretraining(self) -> str:
        """"per-seed" (each seed pretrains its own backbone) or "shared" (one per task for every seed)."""
        return self.config.pretraining

    @property
    def scoring(self) -> Scoring:
        """The downstream task's metrics, as study.json recorded them (else its first run's config.json)."""
        if self.config.scoring:
            return Scoring.parse(self.config.scoring)
        return self.runs[0].scoring if self.runs else Scoring.parse(None)

    @property
    def seeds(self) -> list[int]:
        """From study.json, else the seeds of the runs found."""
        return list(self.config.seeds) or sorted({r.seed for r in self.runs})

    @property
    def fractions(self) -> list[float]:
        """Largest first, from study.json and the folders found."""
        return sorted({*self.config.fractions, *(r.fraction for r in self.runs)}, reverse=True)

    @property
    def arms(self) -> list[str]:
        """scratch first, then the pretext arms in study order."""
        found = {r.arm for r in self.runs}
        order = [SCRATCH, *self.config.pretexts, *sorted(found)]
        return list(dict.fromkeys(a for a in order if a in found or a in self.expected_arms))

    @property
    def expected_arms(self) -> list[str]:
        return [SCRATCH, *self.config.pretexts] if self.config.recorded else []

    def finished(self, fraction: float | None = None, arm: str | None = None) -> list[Run]:
        return [r for r in self.runs if r.finished and (fraction is None or r.fraction == fraction)
                and (arm is None or r.arm == arm)]


def study_config(obj: Any, path: Path = Path(STUDY)) -> StudyConfig:
    """study.json's record from its parsed JSON (as written: any version up to schema.SCHEMA_VERSION)."""
    return StudyConfig.parse(as_record(path, schema.STUDY, obj), raw=obj)


def load_study(study_dir: Path) -> Study:
    """Every run the study planned or holds; absent ones become notes, files that are there but malformed (not
    JSON or CSV, or a value of another type than its schema's) a UserError naming the file."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise UserError(f"{study_dir} is not a folder; pass a study folder (holding {STUDY} and run folders)")
    problems: list[str] = []
    if (study_dir / STUDY).exists():
        config = study_config(read_json(study_dir / STUDY), study_dir / STUDY)
    else:
        config = study_config({})
        problems.append(f"{STUDY} is missing: fractions, arms and seeds are taken from the folders found")

    folders = [p.name for p in sorted(study_dir.iterdir()) if p.is_dir()]
    expected = [run_name(f, arm, s) for f in config.fractions for arm in [SCRATCH, *config.pretexts]
                for s in config.seeds]
    runs, missing = [], []
    for name in dict.fromkeys([*expected, *(n for n in folders if _run_key(n))]):
        key = _run_key(name)
        history, summary = _read_run_files(study_dir / name, schema.FINETUNE)
        if history:
            runs.append(Run(name, study_dir / name, key.fraction, key.arm, key.seed, history,
                            None if summary is None else RunSummary.parse(summary), read_config(study_dir / name)))
        else:
            missing.append(name)
    _check_confusions(config, runs)

    pretrainings = _pretrain_folders(config, folders)
    found: dict[str, list[PretextRun]] = {}
    for task, names in pretrainings.items():
        for name in names:
            history, summary = _read_run_files(study_dir / name, schema.PRETRAIN)
            if history:
                found.setdefault(task, []).append(PretextRun(
                    task, study_dir / name, history, None if summary is None else PretextSummary.parse(summary),
                    read_config(study_dir / name), parse_pretrain_dir(name)[1]))
            else:
                missing.append(name)
    probes, missing_probes = _read_probes(study_dir, config, pretrainings)
    return Study(study_dir, config, runs, {t: ps[0] for t, ps in found.items()}, probes, missing, missing_probes,
                 problems, found)


def _run_key(name: str) -> RunKey | None:
    """A fine-tuning run folder's (fraction, arm, seed); None for any other folder, or a fraction no study has."""
    key = parse_run_name(name)
    return key if key and 0 < key.fraction <= 1 else None


def _check_confusions(config: StudyConfig, runs: list[Run]) -> None:
    """Every run's confusion matrix has one row per class of the study (or, without a class list, as many as
    the first's): the report sums them over seeds and labels their rows with the class names."""
    classes = config.dataset.classes if config.dataset else None
    for r in runs:
        k = len((r.summary and r.summary.confusion_val) or [])
        classes = classes or (r.summary and r.summary.classes) or ([""] * k if k else None)
        if k and k != len(classes):
            raise bad_file(r.path / SUMMARY, f'holds invalid data: "confusion_val" has {k} rows, where the study has '
                                             f"{len(classes)} classes")


def _pretrain_folders(config: StudyConfig, folders: list[str]) -> dict[str, list[str]]:
    """task -> its pretraining folders: the ones study.json plans (one per seed, or one shared), then any
    other found on disk; the shared folder or the lowest seed's comes first (the one the report shows)."""
    planned_seeds = config.seeds if config.pretraining == PER_SEED else [None]
    out: dict[str, list[str]] = {t: [pretrain_dir(t, s) for s in planned_seeds] for t in config.pretexts}
    for name in folders:
        if (parsed := parse_pretrain_dir(name)) is not None:
            out.setdefault(parsed[0], []).append(name)

    def order(name: str) -> tuple[int, int]:
        seed = parse_pretrain_dir(name)[1]
        return (0, 0) if seed is None else (1, seed)

    return {t: sorted(dict.fromkeys(names), key=order) for t, names in out.items()}


def _read_probes(study_dir: Path, config: StudyConfig,
                 pretrainings: dict[str, list[str]]) -> tuple[dict[str, dict[str, ProbeEntry]], list[str]]:
    """Each method's probes.json entries (scratch: the random-init folder; a task: every pretraining
    folder's, merged: per-seed folders hold their own seed's entries, keyed by seed), and the planned
    entries not there yet (planned: study.json lists the linear or k-NN protocol)."""
    probes: dict[str, dict[str, ProbeEntry]] = {}
    sources = [(SCRATCH, RANDOM_INIT_DIR), *((t, name) for t, names in pretrainings.items() for name in names)]
    for method, folder in sources:
        path = study_dir / folder / PROBES
        if path.exists():
            results = read_record(path, schema.PROBES)["results"]
            probes.setdefault(method, {}).update({k: ProbeEntry.parse(e) for k, e in results.items()})
    planned = set(config.protocols) & set(PROBE_PROTOCOLS)
    missing = [f"{method} {probe_key(f, s)}" for method in (SCRATCH, *config.pretexts)
               for s in config.seeds for f in config.fractions if planned
               and probe_key(f, s) not in probes.get(method, {})]
    return probes, missing


def _read_run_files(path: Path, kind: str) -> tuple[list[dict[str, float]], dict[str, Any] | None]:
    """A run folder's metrics.csv rows and summary.json, in the current shape ([] and None where absent: a run
    not started or not finished); UserError where one is there but malformed."""
    history = read_table(path / METRICS_CSV, needs=("epoch",)) if (path / METRICS_CSV).exists() else []
    summary = read_record(path / SUMMARY, kind) if (path / SUMMARY).exists() else None
    return history, summary


def read_config(folder: Path) -> RunConfig:
    """A run's config.json record; empty where it has none (runs from before it); UserError where malformed."""
    path = Path(folder) / CONFIG
    return RunConfig.parse(read_json(path, check_of(schema.RunConfig))) if path.exists() else RunConfig()


def class_names(study: Study) -> list[str]:
    """The dataset's class names, from study.json or else from a finished run's summary."""
    if study.config.dataset and study.config.dataset.classes:
        return list(study.config.dataset.classes)
    return next((r.summary.classes for r in study.runs if r.finished and r.summary.classes), [])


def fraction_key(fraction: float) -> str:
    """A label fraction as summary.json's keys write it ("1", "0.5", "0.1")."""
    return f"{fraction:g}"


def smoothed_losses(path: Path) -> list[tuple[float, float]] | None:
    """A run folder's steps.csv training loss (every few steps), smoothed by rules.centred_mean: what the loss
    figures draw and the answers read. None where it has none (a run from before the file) or one point."""
    if not (Path(path) / STEPS).exists():
        return None
    rows = [r for r in read_table(Path(path) / STEPS) if "step" in r and "train_loss" in r]
    if len(rows) < 2:
        return None
    values = centred_mean([r["train_loss"] for r in rows], loss_window(len(rows)))
    return [(r["step"], v) for r, v in zip(rows, values)]


def column(history: list[dict[str, float]], key: str) -> list[float]:
    """One metrics.csv column, over the rows that have it."""
    return [row[key] for row in history if key in row]

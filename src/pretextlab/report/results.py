"""Reading what a study's runs wrote, without training anything: the report's only way into a study folder.

`load_study(study_dir)` reads study.json, the pretraining folders (pretrain-<task>-s<seed>/ per seed, or
one pretrain-<task>/ shared by every seed: study.json "pretraining"), the f<fraction>-<arm>-s<seed>/ run
folders, and the frozen-backbone probes in each pretraining folder's probes.json and random-init/probes.json.
A study still in progress loads too: runs without a finished epoch are listed as missing, unreadable files
as problems.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import UserError
from ..io import load_json, load_torch
from ..layout import (
    CONFIG,
    EXAMPLES,
    PROBES,
    RANDOM_INIT_DIR,
    SAMPLES,
    SCRATCH,
    STUDY,
    SUMMARY,
    parse_pretrain_dir,
    parse_run_name,
    pretrain_dir,
    probe_key,
    run_name,
)
from ..layout import METRICS as METRICS_CSV
from ..runs import read_csv

log = logging.getLogger(__name__)

# The evaluation protocols a study holds results of, with their names in the report. The probes' keys in
# probes.json are probe.PROTOCOLS, spelled again here so that reading a study needs nothing from the probes.
PROTOCOLS = {"finetune": "fine-tune", "linear": "linear probe", "knn": "k-NN"}
PROBE_PROTOCOLS = tuple(p for p in PROTOCOLS if p != "finetune")
SHARED, PER_SEED = "shared", "per-seed"  # study.json "pretraining"; studies from before the key shared it


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
    precision: str | None = None  # config.json "resolved": what the run actually trained in
    steps_per_epoch: int | None = None  # config.json "resolved"
    schedule: str | None = None  # config.json "train": onecycle | cosine | constant | plateau
    patience: int | None = None  # config.json "train": the plateau schedule's patience (None: not that schedule)

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def budget(self) -> float | None:
        """Planned optimizer steps: summary.json's planned_steps, else config.json's epochs x steps per epoch."""
        planned = (self.summary or {}).get("planned_steps")
        if planned is None and self.planned_epochs and self.steps_per_epoch:
            planned = self.planned_epochs * self.steps_per_epoch
        return planned

    def step(self, row: dict[str, float]) -> float:
        """A metrics.csv row's optimizer steps so far: its step column, or (a run from before the column)
        epoch x steps per epoch; epochs where neither is known."""
        if "step" in row:
            return row["step"]
        return row["epoch"] * (self.steps_per_epoch or 1)

    def curve(self, key: str) -> list[tuple[float, float]]:
        """One metrics.csv column as (optimizer step, value) points, over the rows that have it."""
        return [(self.step(row), row[key]) for row in self.history if key in row]


@dataclass
class PretextRun:
    """A pretraining folder (pretrain-<task>-s<seed>, or pretrain-<task> shared by every seed): pretext
    curves and, once finished, its summary."""

    task: str
    path: Path
    history: list[dict[str, float]]
    summary: dict[str, Any] | None
    planned_epochs: int | None = None
    seed: int | None = None  # None: one pretraining shared by every seed
    precision: str | None = None

    @property
    def status(self) -> str:
        return "finished" if self.summary is not None else "in progress"

    @property
    def folder(self) -> str:
        return pretrain_dir(self.task, self.seed)


@dataclass
class Study:
    path: Path
    config: dict[str, Any]
    runs: list[Run]
    pretexts: dict[str, PretextRun]  # task -> the pretraining the report shows (the first seed's, or the shared one)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> probes.json "results"
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
        return self.config.get("pretraining", SHARED)

    @property
    def seeds(self) -> list[int]:
        """From study.json, else the seeds of the runs found."""
        return [int(s) for s in self.config.get("seeds", [])] or sorted({r.seed for r in self.runs})

    @property
    def fractions(self) -> list[float]:
        """Largest first, from study.json and the folders found."""
        return sorted({float(f) for f in self.config.get("fractions", [])} | {r.fraction for r in self.runs},
                      reverse=True)

    @property
    def arms(self) -> list[str]:
        """scratch first, then the pretext arms in study order."""
        found = {r.arm for r in self.runs}
        order = [SCRATCH, *self.config.get("pretexts", []), *sorted(found)]
        return list(dict.fromkeys(a for a in order if a in found or a in self.expected_arms))

    @property
    def expected_arms(self) -> list[str]:
        return [SCRATCH, *self.config.get("pretexts", [])] if self.config else []

    def finished(self, fraction: float | None = None, arm: str | None = None) -> list[Run]:
        return [r for r in self.runs if r.finished and (fraction is None or r.fraction == fraction)
                and (arm is None or r.arm == arm)]


def load_study(study_dir: Path) -> Study:
    """Every run the study planned or holds; unreadable or absent ones become notes, not errors."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise UserError(f"{study_dir} is not a folder; pass a study folder (holding {STUDY} and run folders)")
    problems: list[str] = []
    config: dict[str, Any] = {}
    if (study_dir / STUDY).exists():
        try:
            config = load_json(study_dir / STUDY)
        except (OSError, ValueError) as e:
            problems.append(f"{STUDY} could not be read ({e})")
    else:
        problems.append(f"{STUDY} is missing: fractions, arms and seeds are taken from the folders found")

    folders = [p.name for p in sorted(study_dir.iterdir()) if p.is_dir()]
    expected = [run_name(float(f), arm, int(s)) for f in config.get("fractions", [])
                for arm in [SCRATCH, *config.get("pretexts", [])] for s in config.get("seeds", [])]
    runs, missing = [], []
    for name in dict.fromkeys([*expected, *(n for n in folders if parse_run_name(n))]):
        key = parse_run_name(name)
        history, summary = _read_run_files(study_dir / name, problems)
        if not history:
            missing.append(name)
            continue
        cfg = read_json(study_dir / name / CONFIG)
        runs.append(Run(name, study_dir / name, key.fraction, key.arm, key.seed, history, summary, *_run_config(cfg),
                        (cfg.get("resolved") or {}).get("steps_per_epoch"),
                        (summary or {}).get("schedule") or (cfg.get("train") or {}).get("schedule"),
                        (summary or {}).get("patience") or (cfg.get("train") or {}).get("patience") or None))

    pretrainings = _pretrain_folders(config, folders)
    found: dict[str, list[PretextRun]] = {}
    for task, names in pretrainings.items():
        for name in names:
            history, summary = _read_run_files(study_dir / name, problems)
            if history:
                planned, precision = _run_config(read_json(study_dir / name / CONFIG))
                found.setdefault(task, []).append(PretextRun(task, study_dir / name, history, summary, planned,
                                                             parse_pretrain_dir(name)[1], precision))
            else:
                missing.append(name)
    probes, missing_probes = _read_probes(study_dir, config, pretrainings, problems)
    return Study(study_dir, config, runs, {t: ps[0] for t, ps in found.items()}, probes, missing, missing_probes,
                 problems, found)


def _pretrain_folders(config: dict[str, Any], folders: list[str]) -> dict[str, list[str]]:
    """task -> its pretraining folders: the ones study.json plans (one per seed, or one shared), then any
    other found on disk; the shared folder or the lowest seed's comes first (the one the report shows)."""
    planned_seeds = [int(s) for s in config.get("seeds", [])] if config.get("pretraining") == PER_SEED else [None]
    out: dict[str, list[str]] = {t: [pretrain_dir(t, s) for s in planned_seeds] for t in config.get("pretexts", [])}
    for name in folders:
        if (parsed := parse_pretrain_dir(name)) is not None:
            out.setdefault(parsed[0], []).append(name)

    def order(name: str) -> tuple[int, int]:
        seed = parse_pretrain_dir(name)[1]
        return (0, 0) if seed is None else (1, seed)

    return {t: sorted(dict.fromkeys(names), key=order) for t, names in out.items()}


def _run_config(cfg: dict[str, Any]) -> tuple[int | None, str | None]:
    """A run's planned epochs and the precision it resolved to, from its config.json (None when absent)."""
    return (cfg.get("train") or {}).get("epochs"), (cfg.get("resolved") or {}).get("precision")


def _read_probes(study_dir: Path, config: dict[str, Any], pretrainings: dict[str, list[str]],
                 problems: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each method's probes.json results (scratch: the random-init folder; a task: every pretraining
    folder's, merged: per-seed folders hold their own seed's entries, keyed by seed), and the planned
    entries not there yet (planned: study.json lists the linear or k-NN protocol)."""
    probes: dict[str, dict[str, Any]] = {}
    sources = [(SCRATCH, RANDOM_INIT_DIR), *((t, name) for t, names in pretrainings.items() for name in names)]
    for method, folder in sources:
        path = study_dir / folder / PROBES
        if path.exists():
            try:
                probes.setdefault(method, {}).update(load_json(path)["results"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                problems.append(f"{folder}/{PROBES} could not be read ({e})")
    planned = set(config.get("protocols", [])) & set(PROBE_PROTOCOLS)
    missing = [f"{method} {probe_key(float(f), int(s))}" for method in (SCRATCH, *config.get("pretexts", []))
               for s in config.get("seeds", []) for f in config.get("fractions", []) if planned
               and probe_key(float(f), int(s)) not in probes.get(method, {})]
    return probes, missing


def _read_run_files(path: Path, problems: list[str]) -> tuple[list[dict[str, float]], dict[str, Any] | None]:
    history: list[dict[str, float]] = []
    summary = None
    try:
        if (path / METRICS_CSV).exists():
            history = read_csv(path / METRICS_CSV)
        if (path / SUMMARY).exists():
            summary = load_json(path / SUMMARY)
    except (OSError, ValueError) as e:
        problems.append(f"{path.name}: could not read its files ({e})")
    return history, summary


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file, or {} when it is absent or unreadable (an optional file such as a run's config.json)."""
    try:
        return load_json(path)
    except (OSError, ValueError):
        return {}


def load_samples(path: Path) -> dict[str, Any] | None:
    """A pretext run's samples.pt, or None: a missing or unreadable one only leaves a figure out."""
    f = path / SAMPLES
    if not f.exists():
        return None
    try:
        return load_torch(f)
    except Exception as e:  # a torch.load failure can be any of several types; the report just skips it
        log.warning("could not read %s: %s", f, e)
        return None


def read_examples(study: Study) -> dict[str, Tensor]:
    """Each run's examples.pt (uint8 validation images), read once, in the study's run order; an unreadable
    file becomes a note in the report's status and the figures use the next run's."""
    images_of: dict[str, Tensor] = {}
    for run in study.runs:
        path = run.path / EXAMPLES
        if not path.exists():
            continue
        try:
            images_of[run.name] = load_torch(path)
        except Exception as e:  # unreadable file: noted, the report goes on
            study.problems.append(f"{run.name}/{EXAMPLES}: {e}")
    return images_of


def class_names(study: Study) -> list[str]:
    """The dataset's class names, from study.json or else from a finished run's summary."""
    ds = study.config.get("dataset") or {}
    if ds.get("classes"):
        return list(ds["classes"])
    return next((r.summary["classes"] for r in study.runs if r.finished and r.summary.get("classes")), [])


def fraction_key(fraction: float) -> str:
    """A label fraction as summary.json's keys write it ("1", "0.5", "0.1")."""
    return f"{fraction:g}"


def column(history: list[dict[str, float]], key: str) -> list[float]:
    """One metrics.csv column, over the rows that have it."""
    return [row[key] for row in history if key in row]

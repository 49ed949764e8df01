"""Reading what a study's runs wrote, without training anything: the report's only way into a study folder.

`load_study(study_dir)` reads study.json, the pretrain-<task>/ and f<fraction>-<arm>-s<seed>/ run folders,
and the frozen-backbone probes in pretrain-<task>/probes.json and random-init/probes.json. A study still
in progress loads too: runs without a finished epoch are listed as missing, unreadable files as problems.
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
    parse_run_name,
    pretrain_dir,
    pretrain_task,
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
        runs.append(Run(name, study_dir / name, key.fraction, key.arm, key.seed, history, summary,
                        _planned_epochs(study_dir / name)))

    tasks = list(dict.fromkeys([*config.get("pretexts", []),
                                *(t for t in map(pretrain_task, folders) if t is not None)]))
    pretexts = {}
    for task in tasks:
        path = study_dir / pretrain_dir(task)
        history, summary = _read_run_files(path, problems)
        if history:
            pretexts[task] = PretextRun(task, path, history, summary, _planned_epochs(path))
        else:
            missing.append(pretrain_dir(task))
    probes, missing_probes = _read_probes(study_dir, config, tasks, problems)
    return Study(study_dir, config, runs, pretexts, probes, missing, missing_probes, problems)


def _planned_epochs(path: Path) -> int | None:
    return (read_json(path / CONFIG).get("train") or {}).get("epochs")


def _read_probes(study_dir: Path, config: dict[str, Any], tasks: list[str],
                 problems: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each method's probes.json results (scratch: the random-init folder), and the planned entries
    not there yet (planned: study.json lists the linear or k-NN protocol)."""
    probes = {}
    for method, folder in ((SCRATCH, RANDOM_INIT_DIR), *((t, pretrain_dir(t)) for t in tasks)):
        path = study_dir / folder / PROBES
        if path.exists():
            try:
                probes[method] = load_json(path)["results"]
            except (OSError, ValueError, KeyError, TypeError) as e:
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


def column(history: list[dict[str, float]], key: str) -> list[float]:
    """One metrics.csv column, over the rows that have it."""
    return [row[key] for row in history if key in row]

"""Reading what a study's runs wrote, without training anything: the report's only way into a study folder.

`load_study(study_dir)` reads study.json, the pretraining folders (pretrain-<task>-s<seed>/ per seed, or
one pretrain-<task>/ shared by every seed: study.json "pretraining"), the f<fraction>-<arm>-s<seed>/ run
folders, and the frozen-backbone probes in each pretraining folder's probes.json and random-init/probes.json.
A study still in progress loads too: runs without a finished epoch are listed as missing. A file that is there
but malformed (truncated, not JSON or CSV, a value of the wrong type where the report computes with it) is
refused in one line naming it (files.py), before anything is drawn; an unreadable or malformed image file
(examples.pt, samples.pt) only leaves its figure out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..io import load_torch
from ..layout import (
    CONFIG,
    EXAMPLES,
    PROBES,
    RANDOM_INIT_DIR,
    SAMPLES,
    SCRATCH,
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
from .files import (
    COUNT,
    FLAG,
    FRACTION,
    LOSS,
    NAME,
    NUMBER,
    OBJECT,
    POSITIVE,
    TEXT,
    Check,
    bad_file,
    check_size,
    dict_of,
    fields,
    kind,
    list_of,
    optional,
    read_json,
    read_table,
)

log = logging.getLogger(__name__)

# The evaluation protocols a study holds results of, with their names in the report. The probes' keys in
# probes.json are probe.PROTOCOLS, spelled again here so that reading a study needs nothing from the probes.
PROTOCOLS = {"finetune": "fine-tune", "linear": "linear probe", "knn": "k-NN"}
PROBE_PROTOCOLS = tuple(p for p in PROTOCOLS if p != "finetune")
SHARED, PER_SEED = "shared", "per-seed"  # study.json "pretraining"; studies from before the key shared it
MAX_CLASSES = 10_000

# What the report needs of each file it reads, checked where it is read (files.py): the fields it computes with
# must have these types; the fields it only prints are shown as text whatever they hold (render.md).
SCORES = fields(f1_macro=NUMBER, precision_macro=NUMBER, recall_macro=NUMBER, accuracy=NUMBER, loss=LOSS)
BEST = fields(("value", "epoch"), value=NUMBER, epoch=NUMBER, step=NUMBER)
MATRIX = kind(lambda v: isinstance(v, list) and 0 < len(v) <= MAX_CLASSES and all(
    isinstance(row, list) and len(row) == len(v) and not any(NUMBER(x) or x < 0 for x in row) for row in v),
    "a square matrix of counts")
CLASSES = list_of(TEXT, "a list of class names")
STUDY_FILE = fields(
    fractions=list_of(FRACTION, "a list of label fractions"), seeds=list_of(COUNT, "a list of seeds"),
    pretexts=list_of(NAME, "a list of task names"), protocols=list_of(TEXT, "a list of protocol names"),
    pretraining=optional(TEXT), precision=optional(TEXT), data=optional(OBJECT), train=optional(OBJECT),
    dataset=optional(fields(classes=optional(CLASSES), n_test=optional(COUNT))), machine=optional(OBJECT),
    earlier_machines=optional(list_of(OBJECT, "a list of objects")), stage_times_s=dict_of(NUMBER),
    estimate=optional(fields(estimated_s=optional(NUMBER))), total_time_s=optional(NUMBER),
    epochs_per_fraction=optional(OBJECT), pretrain_epochs=optional(OBJECT), replicate_of=optional(OBJECT))
RUN_SUMMARY = fields(  # a fine-tuning run's summary.json
    best=optional(fields(f1_macro=BEST, precision_macro=BEST, recall_macro=BEST, accuracy=BEST,
                         loss=fields(("value", "epoch"), value=LOSS, epoch=NUMBER, step=NUMBER))),
    final=optional(SCORES), test=optional(SCORES), planned_steps=optional(POSITIVE), steps=POSITIVE,
    stopped_early=FLAG, schedule=optional(TEXT), patience=optional(COUNT), wall_time_s=optional(NUMBER),
    n_train=optional(COUNT), n_val=optional(COUNT), classes=optional(CLASSES), init_sha256=optional(TEXT),
    examples=optional(list_of(fields(("label", "pred"), label=COUNT, pred=COUNT, confidence=optional(NUMBER)),
                              "a list of {label, pred} objects")),
    confusion_val=optional(MATRIX))
PRETEXT_SUMMARY = fields(chance=optional(NUMBER), wall_time_s=optional(NUMBER), backbone_sha256=optional(TEXT),
                         earlier_backbone_sha256=optional(TEXT),
                         knn_accuracy=lambda v: dict_of(NUMBER)(v) if isinstance(v, dict) else None)
CONFIG_FILE = fields(
    train=optional(fields(epochs=optional(COUNT), schedule=optional(TEXT), patience=optional(COUNT))),
    resolved=optional(fields(precision=optional(TEXT), steps_per_epoch=optional(POSITIVE),
                             batch_size=optional(POSITIVE), world_size=optional(POSITIVE))))
PROBES_FILE = fields(("results",), results=dict_of(fields(
    ("fraction", "seed"), fraction=FRACTION, seed=COUNT, linear=optional(SCORES), knn=optional(SCORES),
    test=optional(fields(linear=optional(SCORES), knn=optional(SCORES))))))


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
    """Every run the study planned or holds; absent ones become notes, files that are there but malformed (not
    JSON or CSV, or a value of the wrong type where the report computes with it) a UserError naming the file."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise UserError(f"{study_dir} is not a folder; pass a study folder (holding {STUDY} and run folders)")
    problems: list[str] = []
    config: dict[str, Any] = {}
    if (study_dir / STUDY).exists():
        config = read_json(study_dir / STUDY, STUDY_FILE)
    else:
        problems.append(f"{STUDY} is missing: fractions, arms and seeds are taken from the folders found")

    folders = [p.name for p in sorted(study_dir.iterdir()) if p.is_dir()]
    expected = [run_name(float(f), arm, int(s)) for f in config.get("fractions", [])
                for arm in [SCRATCH, *config.get("pretexts", [])] for s in config.get("seeds", [])]
    runs, missing = [], []
    for name in dict.fromkeys([*expected, *(n for n in folders if _run_key(n))]):
        key = _run_key(name)
        history, summary = _read_run_files(study_dir / name, RUN_SUMMARY)
        if not history:
            missing.append(name)
            continue
        cfg = read_config(study_dir / name)
        runs.append(Run(name, study_dir / name, key.fraction, key.arm, key.seed, history, summary, *_run_config(cfg),
                        (cfg.get("resolved") or {}).get("steps_per_epoch"),
                        (summary or {}).get("schedule") or (cfg.get("train") or {}).get("schedule"),
                        (summary or {}).get("patience") or (cfg.get("train") or {}).get("patience") or None))
    _check_confusions(config, runs)

    pretrainings = _pretrain_folders(config, folders)
    found: dict[str, list[PretextRun]] = {}
    for task, names in pretrainings.items():
        for name in names:
            history, summary = _read_run_files(study_dir / name, PRETEXT_SUMMARY)
            if history:
                planned, precision = _run_config(read_config(study_dir / name))
                found.setdefault(task, []).append(PretextRun(task, study_dir / name, history, summary, planned,
                                                             parse_pretrain_dir(name)[1], precision))
            else:
                missing.append(name)
    probes, missing_probes = _read_probes(study_dir, config, pretrainings)
    return Study(study_dir, config, runs, {t: ps[0] for t, ps in found.items()}, probes, missing, missing_probes,
                 problems, found)


def _run_key(name: str) -> RunKey | None:
    """A fine-tuning run folder's (fraction, arm, seed); None for any other folder, or a fraction no study has."""
    key = parse_run_name(name)
    return key if key and 0 < key.fraction <= 1 else None


def _check_confusions(config: dict[str, Any], runs: list[Run]) -> None:
    """Every run's confusion matrix has one row per class of the study (or, without a class list, as many as
    the first's): the report sums them over seeds and labels their rows with the class names."""
    classes = (config.get("dataset") or {}).get("classes")
    for r in runs:
        k = len((r.summary or {}).get("confusion_val") or [])
        classes = classes or (r.summary or {}).get("classes") or ([""] * k if k else None)
        if k and k != len(classes):
            raise bad_file(r.path / SUMMARY, f'holds invalid data: "confusion_val" has {k} rows, where the study has '
                                             f"{len(classes)} classes")


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


def _read_probes(study_dir: Path, config: dict[str, Any],
                 pretrainings: dict[str, list[str]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each method's probes.json results (scratch: the random-init folder; a task: every pretraining
    folder's, merged: per-seed folders hold their own seed's entries, keyed by seed), and the planned
    entries not there yet (planned: study.json lists the linear or k-NN protocol)."""
    probes: dict[str, dict[str, Any]] = {}
    sources = [(SCRATCH, RANDOM_INIT_DIR), *((t, name) for t, names in pretrainings.items() for name in names)]
    for method, folder in sources:
        path = study_dir / folder / PROBES
        if path.exists():
            probes.setdefault(method, {}).update(read_json(path, PROBES_FILE)["results"])
    planned = set(config.get("protocols", [])) & set(PROBE_PROTOCOLS)
    missing = [f"{method} {probe_key(float(f), int(s))}" for method in (SCRATCH, *config.get("pretexts", []))
               for s in config.get("seeds", []) for f in config.get("fractions", []) if planned
               and probe_key(float(f), int(s)) not in probes.get(method, {})]
    return probes, missing


def _read_run_files(path: Path, check: Check) -> tuple[list[dict[str, float]], dict[str, Any] | None]:
    """A run folder's metrics.csv rows and summary.json ([] and None where absent: a run not started or not
    finished); UserError where one is there but malformed."""
    history = read_table(path / METRICS_CSV, needs=("epoch",)) if (path / METRICS_CSV).exists() else []
    summary = read_json(path / SUMMARY, check) if (path / SUMMARY).exists() else None
    return history, summary


def read_config(folder: Path) -> dict[str, Any]:
    """A run's config.json, or {} where it has none (runs from before it); UserError where it is malformed."""
    path = Path(folder) / CONFIG
    return read_json(path, CONFIG_FILE) if path.exists() else {}


def images_problem(images: Any) -> str | None:
    """What keeps a tensor from being drawn as a batch of images (uint8, N x C x H x W, C 1 or 3), or None."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        what = f"a {images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, Tensor) \
            else type(images).__name__
        return f"{what}, not a uint8 batch of images (N x C x H x W)"
    n, c, h, w = images.shape
    if n < 1 or c not in (1, 3) or not (1 <= h <= 1024 and 1 <= w <= 1024):
        return f"a batch of shape {tuple(images.shape)}: no images, not 1 or 3 channels, or larger than 1024 px"
    return None


def _samples_problem(samples: Any) -> str | None:
    """What keeps a samples.pt from being drawn as images.samples_figure reads it, or None."""
    if not isinstance(samples, dict):
        return f"a {type(samples).__name__}, not a dict"
    if problem := images_problem(samples.get("first")):
        return f'"first" is {problem}'
    k = min(8, len(samples["first"]))  # the examples the figure shows
    panels = samples.get("panels") or [p for p in ("first", "second") if p in samples]
    if not isinstance(panels, list) or not all(isinstance(p, str) for p in panels):
        return '"panels" is not a list of names'
    for p in panels:
        t = samples.get(p)
        problem = images_problem(t)
        if problem is None and (len(t) < k or t.shape[2:] != samples["first"].shape[2:]):
            problem = f"{len(t)} images of {tuple(t.shape[2:])} px, where the figure needs {k} the first's size"
        if problem:
            return f'"{p}" is {problem}'

    def texts(v: Any, n: int = 0) -> bool:
        return isinstance(v, list) and len(v) >= n and all(isinstance(x, str) for x in v)

    def labels(v: Any) -> bool:
        return isinstance(v, Tensor) and v.ndim == 1 and len(v) >= k and not v.is_floating_point() \
            and not v.is_complex()

    if "titles" in samples and not texts(samples["titles"], k):
        return '"titles" is not a list of a title per example'
    if "titles" not in samples and not (labels(samples.get("true")) and labels(samples.get("pred"))):
        return 'it has neither "titles" nor "true" and "pred" labels per example'
    if not all(texts(samples[key]) for key in ("positions", "panel_names") if key in samples):
        return '"positions" or "panel_names" is not a list of names'
    return None


def load_samples(path: Path) -> dict[str, Any] | None:
    """A pretext run's samples.pt, or None: a missing, unreadable or malformed one only leaves a figure out."""
    f = path / SAMPLES
    if not f.exists():
        return None
    try:
        check_size(f)
        samples = load_torch(f)  # weights_only: tensors and plain values, never objects
    except Exception as e:  # a torch.load failure can be any of several types; the report just skips it
        log.warning("could not read %s: %s", f, e)
        return None
    if problem := _samples_problem(samples):
        log.warning("%s is left out of the report: %s", f, problem)
        return None
    return samples


def read_examples(study: Study) -> dict[str, Tensor]:
    """Each run's examples.pt (uint8 validation images), read once, in the study's run order; an unreadable or
    malformed file is logged, becomes a note in the report's status, and the figures use the next run's."""
    images_of: dict[str, Tensor] = {}
    for run in study.runs:
        path = run.path / EXAMPLES
        if not path.exists():
            continue
        try:
            check_size(path)
            images = load_torch(path)
        except Exception as e:  # unreadable file: noted, the report goes on
            images, problem = None, str(e)
        else:
            problem = images_problem(images)
        if problem:
            log.warning("%s is left out of the report: %s", path, problem)
            study.problems.append(f"{run.name}/{EXAMPLES}: {problem}")
        else:
            images_of[run.name] = images
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

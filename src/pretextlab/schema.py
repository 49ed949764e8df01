"""The JSON files pretextlab writes, field by field: the one description the writers annotate their dicts with
and the report reads (and checks) through. docs/schema.md says what every field is, with its unit.

Files: a fine-tuning run's summary.json (FinetuneSummary), a pretraining run's summary.json (PretrainSummary),
a study's study.json (StudyFile), a backbone folder's probes.json (ProbesFile) and the study report's own
summary.json (ReportSummary). A run's config.json (RunConfig) is described too, but carries no version: it is
compared key by key when a run resumes, so its shape is fixed by the settings it holds.

Versions. Each of those files holds "schema": SCHEMA_VERSION, the version of this module it was written
with; a file without the key is version 0 (written before versions were kept). `upgrade` brings a record
of any version up to SCHEMA_VERSION to the current shape, one step per version (UPGRADES: the values an older
file meant without writing them), and refuses a newer one in one line. Readers only ever see the current
shape. When a field is added, removed, renamed, or changes meaning, type or unit, bump SCHEMA_VERSION, add
the step from the previous version to UPGRADES, and say what changed in docs/schema.md.

Types. TypedDicts say which fields a file holds (total=False: a field may be absent, in an older version
or where it does not apply); the few without which a file is malformed in every version are in a required
base class (_Best, _Example, _ProbeKey, _ProbeResults, _Compared). Numbers are finite unless typed Real;
every int is a count, an index or a seed, never negative; the Annotated types below narrow a value further.
X | None: the writer may write null. A reader checks a file against its TypedDict (report/files.check_of).

This module sits below everything: it imports nothing of pretextlab but errors.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, TypedDict

from .errors import UserError

SCHEMA_VERSION = 1
SCHEMA_KEY = "schema"

# What a value must be besides its Python type (the tag names the check a reader applies).
Real = Annotated[float, "real"]  # any number, NaN and infinities included: a diverged run's loss
PositiveInt = Annotated[int, "positive"]  # a whole number > 0
Fraction = Annotated[float, "fraction"]  # a label fraction: 0 < f <= 1
Name = Annotated[str, "name"]  # a name that is also a folder name: not empty, no / or \
Interval = Annotated[list[float], "interval"]  # [low, high]
Matrix = Annotated[list[list[int]], "matrix"]  # a square matrix of counts, row = true class

SHARED, PER_SEED = "shared", "per-seed"  # study.json "pretraining"
CLASSIFICATION = "classification"  # study.json "task": the downstream task of every study before tasks
FEATURES_FP32 = "fp32"  # probes.json settings "features_precision" before it was recorded


# --- a run's summary.json ------------------------------------------------------------------------------


class _Best(TypedDict):
    value: float
    epoch: float


class Best(_Best, total=False):
    """The best evaluation of one metric over a run's metrics.csv rows (runs.summarize; loss: the lowest)."""

    step: float


class _BestReal(TypedDict):
    value: Real
    epoch: float


class BestReal(_BestReal, total=False):
    """Best, of a metric that may be NaN (a diverged run's loss)."""

    step: float


class BestScores(TypedDict, total=False):
    """A fine-tuning run's summary.json "best"."""

    f1_macro: Best
    precision_macro: Best
    recall_macro: Best
    accuracy: Best
    loss: BestReal


class Scores(TypedDict, total=False):
    """One split's metrics of one model (metrics.classification_metrics)."""

    f1_macro: float
    precision_macro: float
    recall_macro: float
    accuracy: float
    loss: Real
    n: int


class _Example(TypedDict):
    label: int
    pred: int


class Example(_Example, total=False):
    """One validation image's prediction, shown in the report (its image is examples.pt's row)."""

    val_index: int
    confidence: float | None


class FinetuneSummary(TypedDict, total=False):
    """A fine-tuning run's summary.json: runs.summarize(history), finetune.Finetuning.finish (train.run_length,
    the task's final()) and driver.execute's times."""

    schema: int
    best: BestScores | None
    last: dict[str, Real]
    epochs: int
    run: str
    backbone: str
    init: str | None
    init_sha256: str | None
    fraction: Fraction
    seed: int
    n_train: int | None
    n_val: int | None
    steps: PositiveInt
    planned_steps: PositiveInt | None
    stopped_early: bool
    schedule: str | None
    patience: int | None
    classes: list[str] | None
    final: Scores | None
    confusion_val: Matrix | None
    examples: list[Example] | None
    test: Scores | None
    wall_time_s: float | None
    process_time_s: float


class PretrainSummary(TypedDict, total=False):
    """A pretraining run's summary.json: runs.summarize(history), pretext.Pretraining.finish and
    driver.execute's times."""

    schema: int
    best: dict[str, BestReal]
    last: dict[str, Real]
    epochs: int
    pretext: Name
    chance: float | None
    backbone: str
    options: dict[str, Any]
    knn_accuracy: dict[str, float]
    knn_images: int
    backbone_sha256: str | None
    earlier_backbone_sha256: str | None
    wall_time_s: float | None
    process_time_s: float


# --- a run's config.json (no version: see the module docstring) --------------------------------------


class TrainSettings(TypedDict, total=False):
    """The part of config.json "train" (train.TrainConfig, as train_settings writes it) a reader computes with."""

    epochs: int | None
    schedule: str | None
    patience: int | None


class Resolved(TypedDict, total=False):
    """config.json "resolved": what the run's process decided, recorded but not compared on resume."""

    precision: str | None
    channels_last: bool
    device: str
    steps_per_epoch: PositiveInt | None
    world_size: PositiveInt | None
    batch_size: PositiveInt | None
    storage: str
    cache: str | None
    data_fingerprint: dict[str, Any] | None


class RunConfig(TypedDict, total=False):
    """A run's config.json (train.fit): the settings it must resume with, what it was built from, "resolved"."""

    kind: str
    pretext: str
    task: str
    backbone: str
    init: str | None
    data: dict[str, Any]
    train: TrainSettings | None
    options: dict[str, Any]
    dataset: str
    classes: list[str]
    n_train: int
    n_val: int
    n_pool: int
    crop_pad: int
    resolved: Resolved | None


# --- study.json ----------------------------------------------------------------------------------------


class Dataset(TypedDict, total=False):
    """study.json "dataset": what the data turned out to be."""

    name: str
    classes: list[str] | None
    n_train_total: int
    n_test: int | None
    n_val: int
    n_pool: int
    image_size: int
    channels: int
    skipped_files: int
    fingerprint: dict[str, Any] | None


class Estimate(TypedDict, total=False):
    """study.json "estimate": the time the study planned when it began (plan.estimate_s)."""

    rate: float
    estimated_s: float | None
    stages: int


class ReplicateOf(TypedDict, total=False):
    """study.json "replicate_of": the study a replicate repeats, with the settings it ran under."""

    study: str
    seeds: list[int] | None
    precision: str | None
    pretraining: str | None


class StudyFile(TypedDict, total=False):
    """study.json: study.run_study's plan and record of a study."""

    schema: int
    data: dict[str, Any] | None
    fractions: list[Fraction]
    seeds: list[int]
    task: str
    pretexts: list[Name]
    preset: str
    backbone: str
    pretrain: dict[str, Any]
    train: dict[str, Any] | None
    pretext_options: dict[str, Any]
    budget_rule: str
    pretrain_epochs: dict[str, Any] | None
    pretraining: str
    epochs_per_fraction: dict[str, Any] | None
    overrides: dict[str, Any]
    protocols: list[str]
    probes: dict[str, Any]
    dataset: Dataset | None
    machine: dict[str, Any] | None
    stage_times_s: dict[str, float]
    replicate_of: ReplicateOf | None
    precision: str | None
    earlier_machines: list[dict[str, Any]] | None
    estimate: Estimate | None
    total_time_s: float | None
    peak_rss_mib: float


# --- probes.json ---------------------------------------------------------------------------------------


class ProbeScores(TypedDict, total=False):
    f1_macro: float
    precision_macro: float
    recall_macro: float
    accuracy: float


class HeldOutProbes(TypedDict, total=False):
    linear: ProbeScores | None
    knn: ProbeScores | None


class _ProbeKey(TypedDict):
    fraction: Fraction
    seed: int


class ProbeEntry(_ProbeKey, HeldOutProbes, total=False):
    """One (label fraction, seed) of a frozen backbone: both probes on validation, and on test if any."""

    n_train: int
    test: HeldOutProbes | None
    time_s: float


class ProbeSettings(TypedDict, total=False):
    backbone: str
    init: str
    data: dict[str, Any]
    linear: dict[str, Any]
    knn: dict[str, Any]
    features_precision: str


class _ProbeResults(TypedDict):
    results: dict[str, ProbeEntry]  # probe_key(fraction, seed) -> its entry


class ProbesFile(_ProbeResults, total=False):
    """A backbone folder's probes.json (pretrain-<task>[-s<seed>]/ or random-init/): study.probes.run_probes."""

    schema: int
    settings: ProbeSettings


# --- the report's summary.json -------------------------------------------------------------------------


class _Compared(TypedDict):
    pretrained_minus_scratch: float | None


class Compared(_Compared, total=False):
    """Pretrained minus scratch for one quantity over seeds (report/dynamics.compare)."""

    scratch: float | None
    pretrained: float | None
    paired_std: float | None
    paired_ci95: Interval | None
    significant: bool | None
    n_seeds: list[int]
    paired_n: int


class Cell(TypedDict, total=False):
    """One method's metric at one fraction and protocol, over seeds (stats.describe and the seeds' values)."""

    mean: float | None
    std: float | None
    n: int
    ci95: Interval | None
    by_seed: dict[str, float | None]


class Difference(TypedDict, total=False):
    """A method minus the baseline, paired by seed (stats.paired_difference)."""

    difference: float | None
    std: float | None
    n: int
    ci95: Interval | None
    significant: bool | None
    seeds: list[int]


class SplitEvaluation(TypedDict, total=False):
    """Every method under every protocol on one split: summary.json "evaluation" and its "test"."""

    split: str
    protocols: dict[str, str]
    metrics: list[str]
    baseline: str
    rule: str
    cells: dict[str, dict[str, dict[str, dict[str, Cell]]]]  # protocol -> fraction -> method -> metric
    # protocol -> fraction -> method -> metric
    vs_baseline: dict[str, dict[str, dict[str, dict[str, Difference]]]] | None


class Evaluation(SplitEvaluation, total=False):
    test: SplitEvaluation | None


class ReportVerdicts(TypedDict, total=False):
    """The part of a report's summary.json that a replicate reads of the study it repeats."""

    comparison: dict[str, dict[str, dict[str, Compared]]] | None  # fraction -> pretrained arm -> quantity
    evaluation: Evaluation | None


class Headline(TypedDict, total=False):
    split: str
    quantity: str
    metric: str
    protocol: str
    text: str


class Precision(TypedDict, total=False):
    study: str | None
    runs: dict[str, str]
    differing: dict[str, str]


class InProgress(TypedDict, total=False):
    run: str
    epochs: float
    planned_epochs: int | None


class Status(TypedDict, total=False):
    finished: list[str]
    in_progress: list[InProgress]
    missing: list[str]
    missing_probes: list[str]


class Aggregate(TypedDict, total=False):
    mean: float | None
    std: float | None
    n: int
    ci95: Interval | None


class RunStats(TypedDict, total=False):
    """summary.json "runs": one finished fine-tuning run's numbers (report/summary.run_stats)."""

    fraction: float
    arm: str
    seed: int
    epochs: float | None
    n_train: int | None
    best: dict[str, dict[str, float | None]]
    final: dict[str, float | None] | None
    test: dict[str, float | None]
    curves: dict[str, Any]
    gap: dict[str, float | None]
    images_per_s: float | None
    wall_time_s: float | None


class PretextFolder(TypedDict, total=False):
    seed: int | None
    status: str
    epochs: int
    cost_s: float | None
    backbone_sha256: str | None
    remade: str | None


class PretextStats(TypedDict, total=False):
    """summary.json "pretext": one task's shown pretraining and the cost of all of them."""

    shown: str
    seed: int | None
    status: str
    epochs: int
    chance: float | None
    best: dict[str, dict[str, float | None]]
    last: dict[str, float | None]
    knn_accuracy: dict[str, float]
    images_per_s: float | None
    wall_time_s: float | None
    backbone_sha256: str | None
    remade: str | None
    pretrainings: int
    planned_pretrainings: int
    total_cost_s: float | None
    backbone_sha256_by_seed: dict[str, str | None]
    folders: dict[str, PretextFolder]


class Timing(TypedDict, total=False):
    estimated_s: float | None
    estimate: dict[str, Any] | None
    total_s: float | None
    finished: bool


class ReportSummary(ReportVerdicts, total=False):
    """The study report's summary.json (report/summary.summarize_study): every number the report shows."""

    schema: int
    study: str
    dataset: dict[str, Any] | None
    seeds: list[int]
    pretraining: str
    headline: Headline
    precision: Precision
    status: Status
    rules: dict[str, Any]
    runs: dict[str, RunStats]
    aggregate: dict[str, dict[str, dict[str, Aggregate]]]  # fraction -> arm -> quantity
    dynamics: dict[str, dict[str, dict[str, Any]]]  # fraction -> pretrained arm -> the four questions
    trend: dict[str, dict[str, Any]]  # pretrained arm -> the gain's change across fractions
    pretext: dict[str, PretextStats]
    machine: dict[str, Any] | None
    earlier_machines: list[dict[str, Any]]
    stage_times_s: dict[str, float]
    timing: Timing
    replication: dict[str, Any] | None


# --- versions ------------------------------------------------------------------------------------------

STUDY, FINETUNE, PRETRAIN, PROBES, REPORT = "study", "finetune", "pretrain", "probes", "report"
FILES: dict[str, type] = {STUDY: StudyFile, FINETUNE: FinetuneSummary, PRETRAIN: PretrainSummary,
                          PROBES: ProbesFile, REPORT: ReportSummary}


def version(record: Any, where: object) -> int:
    """The schema version a file's record was written with (0: no "schema" key); UserError, in one line, for
    a version newer than this pretextlab reads or a "schema" that is no version."""
    if not isinstance(record, dict) or SCHEMA_KEY not in record:
        return 0
    v = record[SCHEMA_KEY]
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise UserError(f'{where} holds invalid data: "{SCHEMA_KEY}" is {str(v)[:40]!r}, not a schema version (a '
                        "whole number); restore it from a copy, or re-run what wrote it")
    if v > SCHEMA_VERSION:
        raise UserError(f"{where} was written by a newer pretextlab (schema {v}; this one reads up to "
                        f"{SCHEMA_VERSION}); upgrade pretextlab to read it")
    return v


def _from_0(kind: str, r: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (no "schema" key) to 1: what files written before versions meant without saying it."""
    if kind == STUDY:
        # studies from before per-seed pretraining shared one; from before tasks, classified; from before the
        # probes, ran fine-tuning only
        r = {"pretraining": SHARED, "task": CLASSIFICATION, "protocols": ["finetune"], **r}
    elif kind == PRETRAIN:
        # pretrainings from before the hash did not keep it; the k-NN diagnostic may be absent
        r = {"backbone_sha256": None, "knn_accuracy": {}, **r}
    elif kind == PROBES and isinstance(r.get("settings"), dict):
        # probes from before their features' precision was recorded extracted them in fp32
        r = {**r, "settings": {"features_precision": FEATURES_FP32, **r["settings"]}}
    return r


# UPGRADES[v] brings a record of version v to version v + 1 (it may assume nothing of the values' types:
# the reader checks the upgraded record).
UPGRADES: list[Callable[[str, dict[str, Any]], dict[str, Any]]] = [_from_0]
assert len(UPGRADES) == SCHEMA_VERSION


def upgrade(kind: str, record: Any, where: object) -> Any:
    """A file's record (kind: STUDY, FINETUNE, PRETRAIN, PROBES or REPORT) in the current version's shape, as
    a new dict; UserError (`version`) for a newer one. Anything but a dict is returned as it is: the reader's
    check refuses it."""
    if kind not in FILES:
        raise ValueError(f"unknown file kind {kind!r}; one of {', '.join(FILES)}")
    v = version(record, where)
    if not isinstance(record, dict):
        return record
    for step in UPGRADES[v:]:
        record = step(kind, record)
    return {**record, SCHEMA_KEY: SCHEMA_VERSION}

"""The files runs and studies write, field by field (see the package docstring)."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

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
    miou: Best  # segmentation
    pixel_accuracy: Best
    dice: Best


class Scores(TypedDict, total=False):
    """One split's metrics of one model (metrics.classification_metrics)."""

    f1_macro: float
    precision_macro: float
    recall_macro: float
    accuracy: float
    loss: Real
    n: int
    miou: Real  # segmentation (metrics.SegmentationMeter): NaN where no pixel is labelled
    pixel_accuracy: Real
    dice: Real


class Example(TypedDict, total=False):
    """One validation image shown in the report (its image, and for segmentation its masks, are examples.pt's
    row): classification's true and predicted class with the confidence; segmentation's index only."""

    val_index: int
    label: int
    pred: int
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
    kept: str | None
    classes: list[str] | None
    final: Scores | None
    confusion_val: Matrix | None
    examples: list[Example] | None
    test: Scores | None
    ignore_index: int | None  # segmentation: the mask value left out
    per_class_iou: dict[str, Real] | None  # segmentation: IoU per class on validation (NaN: class never seen)
    per_class_iou_test: dict[str, Real] | None
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
    knn_accuracy: dict[str, float] | None  # None: the task's labels are not one per image (segmentation)
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
    cooldown: float | None


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
    arms: list[Name] | None  # the pretrained arms (absent: the pretexts); task-e<epochs> where length is an axis
    pretrain_lengths: list[int] | None  # the pretraining lengths compared (absent: one)
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

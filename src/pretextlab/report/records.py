"""The records the report reads a study's files into, once, where it reads them (results.py): typed fields in
place of chains of keys. Each is built by `parse` from a file already in the current version's shape and checked
(files.read_record: schema.upgrade, then the schema's check), so a field absent from the file is None (or empty)
here and the defaults an older version meant are schema.upgrade's alone.

Maps whose keys are data (a metric, a class, a stage, a setting) stay maps: final["f1_macro"], stage_times_s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .. import schema

WSD_COOLDOWN = 0.2  # config.json leaves train.TrainConfig's default cooldown out (spelled again: no training import)


@dataclass(frozen=True)
class Best:
    """The best evaluation of one metric (summary.json "best"): its value, epoch and optimizer step (None: a
    run from before the step column)."""

    value: float
    epoch: float
    step: float | None = None

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> Best:
        return cls(d["value"], d["epoch"], d.get("step"))


@dataclass(frozen=True)
class Example:
    """One validation image's true and predicted class, and the prediction's confidence (classification); a
    segmentation example has only its index (its masks are examples.pt's)."""

    label: int | None = None
    pred: int | None = None
    confidence: float | None = None

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> Example:
        return cls(d.get("label"), d.get("pred"), d.get("confidence"))


@dataclass(frozen=True)
class RunSummary:
    """A finished fine-tuning run's summary.json (schema.FinetuneSummary)."""

    best: dict[str, Best] | None = None  # metric -> its best evaluation
    final: dict[str, float] | None = None  # metric -> the final model on the validation split
    test: dict[str, float] | None = None  # metric -> the final model on the test split (None: no test split)
    steps: float | None = None  # optimizer steps trained (None: a run from before the run length was recorded)
    planned_steps: float | None = None
    stopped_early: bool | None = None
    schedule: str | None = None
    patience: int | None = None
    kept: str | None = None  # "best": early stopping kept the best evaluation's weights (final = that model)
    wall_time_s: float | None = None
    n_train: int | None = None
    n_val: int | None = None
    classes: list[str] | None = None
    init_sha256: str | None = None
    examples: list[Example] | None = None
    confusion_val: list[list[int]] | None = None
    per_class_iou: dict[str, float] | None = None  # segmentation: class -> validation IoU (NaN: never seen)
    per_class_iou_test: dict[str, float] | None = None
    ignore_index: int | None = None

    @classmethod
    def parse(cls, d: schema.FinetuneSummary) -> RunSummary:
        best, examples = d.get("best"), d.get("examples")
        return cls(best={k: Best.parse(b) for k, b in best.items()} if best else None, final=d.get("final"),
                   test=d.get("test"), steps=d.get("steps"), planned_steps=d.get("planned_steps"),
                   stopped_early=d.get("stopped_early"), schedule=d.get("schedule"), patience=d.get("patience"),
                   kept=d.get("kept"), wall_time_s=d.get("wall_time_s"), n_train=d.get("n_train"), n_val=d.get("n_val"),
                   classes=d.get("classes"), init_sha256=d.get("init_sha256"),
                   examples=[Example.parse(e) for e in examples] if examples is not None else None,
                   confusion_val=d.get("confusion_val"), per_class_iou=d.get("per_class_iou"),
                   per_class_iou_test=d.get("per_class_iou_test"), ignore_index=d.get("ignore_index"))


@dataclass(frozen=True)
class PretextSummary:
    """A finished pretraining run's summary.json (schema.PretrainSummary)."""

    chance: float | None = None  # the pretext task's chance accuracy
    wall_time_s: float | None = None
    knn_accuracy: dict[str, float] = field(default_factory=dict)  # backbone ("pretrained", "random") -> accuracy
    backbone_sha256: str | None = None
    remade: bool = False  # pretrained again when the study resumed without its weights
    earlier_backbone_sha256: str | None = None  # then: the earlier weights' (None: not kept)

    @classmethod
    def parse(cls, d: schema.PretrainSummary) -> PretextSummary:
        return cls(chance=d.get("chance"), wall_time_s=d.get("wall_time_s"), knn_accuracy=d.get("knn_accuracy") or {},
                   backbone_sha256=d.get("backbone_sha256"), remade="earlier_backbone_sha256" in d,
                   earlier_backbone_sha256=d.get("earlier_backbone_sha256"))


@dataclass(frozen=True)
class RunConfig:
    """What the report reads of a run's config.json (schema.RunConfig); all None for a run without one."""

    epochs: int | None = None  # planned epochs ("train")
    schedule: str | None = None
    patience: int | None = None
    cooldown: float | None = None  # wsd: the share of the steps over which the rate falls at the end
    precision: str | None = None  # "resolved": what the run actually trained in
    steps_per_epoch: int | None = None
    batch_size: int | None = None  # all ranks together
    world_size: int | None = None
    n_val: int | None = None
    n_pool: int | None = None  # a pretraining's unlabelled pool
    scoring: dict[str, Any] | None = None  # a fine-tuning run's task metrics (report/scoring.py); None: before

    @classmethod
    def parse(cls, d: schema.RunConfig) -> RunConfig:
        train, resolved = d.get("train") or {}, d.get("resolved") or {}
        cooldown = train.get("cooldown", WSD_COOLDOWN) if train.get("schedule") == "wsd" else None
        return cls(epochs=train.get("epochs"), schedule=train.get("schedule"), patience=train.get("patience"),
                   cooldown=cooldown,
                   precision=resolved.get("precision"), steps_per_epoch=resolved.get("steps_per_epoch"),
                   batch_size=resolved.get("batch_size"), world_size=resolved.get("world_size"),
                   n_val=d.get("n_val"), n_pool=d.get("n_pool"), scoring=d.get("scoring"))


@dataclass(frozen=True)
class ProbeEntry:
    """One (label fraction, seed) entry of a probes.json: each protocol's metrics per split."""

    fraction: float
    seed: int
    validation: dict[str, dict[str, float] | None]  # protocol (linear, knn) -> metric -> value
    test: dict[str, dict[str, float] | None] | None = None  # the same on the test split (None: none)

    def on(self, split: str, protocol: str) -> dict[str, float] | None:
        """The protocol's metrics on `split` ("validation" or "test"), None where the entry has none."""
        scores = self.validation if split == "validation" else self.test or {}
        return scores.get(protocol)

    @classmethod
    def parse(cls, d: schema.ProbeEntry) -> ProbeEntry:
        test = d.get("test")
        return cls(float(d["fraction"]), int(d["seed"]), {p: d.get(p) for p in ("linear", "knn")},
                   {p: test.get(p) for p in ("linear", "knn")} if test else None)


@dataclass(frozen=True)
class DataSettings:
    """study.json "data": where the images came from and how they were split (shown, never computed with)."""

    source: Any = None
    test_source: Any = None
    val_fraction: Any = None
    split_seed: Any = None

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> DataSettings:
        return cls(d.get("source"), d.get("test_source"), d.get("val_fraction"), d.get("split_seed"))


@dataclass(frozen=True)
class Dataset:
    """study.json "dataset": what the data turned out to be."""

    name: Any = None
    classes: list[str] | None = None
    n_test: int | None = None  # test images (0: no test split; None: a study.json from before it was recorded)
    n_val: Any = None  # n_val, n_pool: in studies from before they moved to the pretraining's config.json
    n_pool: Any = None
    image_size: Any = None
    channels: Any = None
    n_train_total: Any = None
    skipped_files: Any = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)  # as written, into the report's summary.json

    @classmethod
    def parse(cls, d: schema.Dataset) -> Dataset:
        return cls(d.get("name"), d.get("classes"), d.get("n_test"), d.get("n_val"), d.get("n_pool"),
                   d.get("image_size"), d.get("channels"), d.get("n_train_total"), d.get("skipped_files"), dict(d))


@dataclass(frozen=True)
class ReplicateOf:
    """study.json "replicate_of": the study a replicate repeats and the settings that one ran under."""

    study: str | None = None
    seeds: list[int] | None = None
    precision: str | None = None
    pretraining: str | None = None

    @classmethod
    def parse(cls, d: schema.ReplicateOf) -> ReplicateOf:
        return cls(d.get("study"), d.get("seeds"), d.get("precision"), d.get("pretraining"))


@dataclass(frozen=True)
class StudyConfig:
    """study.json (schema.StudyFile); a study without one reads as an empty version-0 file (recorded False)."""

    fractions: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    pretexts: list[str] = field(default_factory=list)  # the pretrained arms: study.json "arms" (a pretext task,
    # or a task at one pretraining length, context-e8, where the length is an axis), else its "pretexts"
    pretrain_lengths: list[int] = field(default_factory=list)  # the pretraining lengths compared (empty: one)
    protocols: list[str] = field(default_factory=list)
    pretraining: str | None = None  # "per-seed" or "shared"
    task: str | None = None
    scoring: dict[str, Any] | None = None  # the task's metrics (report/scoring.py); None: a study from before
    precision: str | None = None  # decided once for the study (None: a study.json from before it was recorded)
    preset: str | None = None
    backbone: str | None = None
    budget_rule: str | None = None
    data: DataSettings = field(default_factory=DataSettings)
    dataset: Dataset | None = None
    label_smoothing: Any = None  # "train": the fine-tuning recipe's
    epochs_per_fraction: dict[str, Any] = field(default_factory=dict)
    pretrain_epochs: dict[str, Any] = field(default_factory=dict)
    stage_times_s: dict[str, float] = field(default_factory=dict)  # stage (a run folder) -> seconds
    total_time_s: float | None = None  # once the study finished
    estimate: dict[str, Any] | None = None  # the plan at the start: rate, estimated_s, stages
    machine: dict[str, Any] | None = None  # setting -> value, shown as written
    earlier_machines: list[dict[str, Any]] = field(default_factory=list)
    replicate_of: ReplicateOf | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)  # study.json as written, shown in the report

    @property
    def recorded(self) -> bool:
        """Whether the study has a study.json (with anything in it)."""
        return bool(self.raw)

    @property
    def estimated_s(self) -> float | None:
        return (self.estimate or {}).get("estimated_s")

    @classmethod
    def parse(cls, d: schema.StudyFile, raw: dict[str, Any] | None = None) -> StudyConfig:
        """From study.json in the current shape; raw: the file as written (default: d)."""
        dataset, replicate = d.get("dataset"), d.get("replicate_of")
        return cls(
            fractions=[float(f) for f in d.get("fractions", [])], seeds=[int(s) for s in d.get("seeds", [])],
            pretexts=list(d.get("arms") or d.get("pretexts", [])), protocols=list(d.get("protocols", [])),
            pretrain_lengths=list(d.get("pretrain_lengths") or []),
            pretraining=d.get("pretraining"), task=d.get("task"), scoring=d.get("scoring"),
            precision=d.get("precision"),
            preset=d.get("preset"), backbone=d.get("backbone"), budget_rule=d.get("budget_rule"),
            data=DataSettings.parse(d.get("data") or {}),
            dataset=Dataset.parse(dataset) if dataset is not None else None,
            label_smoothing=(d.get("train") or {}).get("label_smoothing"),
            epochs_per_fraction=d.get("epochs_per_fraction") or {}, pretrain_epochs=d.get("pretrain_epochs") or {},
            stage_times_s=d.get("stage_times_s") or {}, total_time_s=d.get("total_time_s"),
            estimate=d.get("estimate") or None, machine=d.get("machine"),
            earlier_machines=d.get("earlier_machines") or [],
            replicate_of=ReplicateOf.parse(replicate) if replicate else None,
            raw=dict(d if raw is None else raw))

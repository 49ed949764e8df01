"""The study report's own summary.json, field by field (see the package docstring)."""

from __future__ import annotations

from typing import Any, TypedDict

from .files import Interval

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
    answers: dict[str, dict[str, dict[str, Any]]]  # fraction -> pretrained arm -> the four questions
    trend: dict[str, dict[str, Any]]  # pretrained arm -> the gain's change across fractions
    pretext: dict[str, PretextStats]
    machine: dict[str, Any] | None
    earlier_machines: list[dict[str, Any]]
    stage_times_s: dict[str, float]
    timing: Timing
    replication: dict[str, Any] | None

"""Which metric a study's answers, tables and figures are about: its downstream task's primary metric (macro-F1
for classification, mean IoU for segmentation), its secondary one, and every metric its runs log. Read from
study.json's task, so the report never imports a task."""

from __future__ import annotations

from dataclasses import dataclass

from ..metrics import METRIC_NAMES


@dataclass(frozen=True)
class Scoring:
    task: str
    primary: str  # the metric the answers use: a key of summary.json "final", "best", "test"
    secondary: str  # shown beside it in tables
    metrics: tuple[str, ...]  # every validation metric the task logs (metrics.csv: val_<metric>), primary first

    @property
    def name(self) -> str:
        """The primary metric as a reader reads it: macro-F1, mean IoU."""
        return METRIC_NAMES[self.primary]

    @property
    def secondary_name(self) -> str:
        return METRIC_NAMES[self.secondary]

    @property
    def column(self) -> str:
        """Its column in metrics.csv."""
        return f"val_{self.primary}"


SCORINGS = {
    "classification": Scoring("classification", "f1_macro", "accuracy",
                              ("f1_macro", "precision_macro", "recall_macro", "accuracy")),
    "segmentation": Scoring("segmentation", "miou", "pixel_accuracy", ("miou", "pixel_accuracy", "dice")),
}
ALL_METRICS = tuple(dict.fromkeys(m for s in SCORINGS.values() for m in s.metrics))


def scoring_of(task: str | None) -> Scoring:
    """A task's scoring; a study from before tasks were recorded is a classification study."""
    return SCORINGS.get(task or "classification", SCORINGS["classification"])

"""Which metric a study's answers, tables and figures are about, as its runs recorded it (config.json and
study.json "scoring", from the downstream task): the primary metric, the secondary one shown beside it, and
every validation metric the runs log. Files from before it was recorded are classification's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..metrics import METRIC_NAMES


@dataclass(frozen=True)
class Scoring:
    primary: str  # the metric the answers use: a key of summary.json "final", "best", "test"
    secondary: str  # shown beside it in tables
    metrics: tuple[str, ...]  # every validation metric the task logs (metrics.csv: val_<metric>), primary first

    @classmethod
    def parse(cls, d: Mapping[str, Any] | None) -> Scoring:
        if not d:
            return BEFORE_SCORING
        return cls(str(d["primary"]), str(d["secondary"]), tuple(str(m) for m in d["metrics"]))

    @property
    def name(self) -> str:
        """The primary metric as a reader reads it: macro-F1, mean IoU."""
        return METRIC_NAMES.get(self.primary, self.primary)

    @property
    def secondary_name(self) -> str:
        return METRIC_NAMES.get(self.secondary, self.secondary)

    @property
    def column(self) -> str:
        """Its column in metrics.csv."""
        return f"val_{self.primary}"


# runs and studies written before the scoring was recorded were classification's
BEFORE_SCORING = Scoring("f1_macro", "accuracy", ("f1_macro", "precision_macro", "recall_macro", "accuracy"))
ALL_METRICS = tuple(dict.fromkeys((*BEFORE_SCORING.metrics, *(m for m in METRIC_NAMES if m != "loss"))))

"""Classification metrics from torchmetrics, macro-averaged, combined over torchrun ranks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from . import dist


def metric_collection(num_classes: int):
    """Macro-averaged F1, precision and recall (every class counts alike) and plain accuracy."""
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision, MulticlassRecall

    return MetricCollection({
        "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        "precision_macro": MulticlassPrecision(num_classes, average="macro"),
        "recall_macro": MulticlassRecall(num_classes, average="macro"),
        "accuracy": MulticlassAccuracy(num_classes, average="micro"),
    })


def classification_metrics(logits: Tensor, y: Tensor, num_classes: int) -> dict[str, float]:
    """Metrics of the whole evaluation set from this rank's part of it (under torchrun torchmetrics
    sums the ranks' counts in compute(); on one process the part is the whole)."""
    m = metric_collection(num_classes).to(logits.device)
    m.update(logits, y)
    out = {k: float(v) for k, v in m.compute().items()}
    out["loss"], out["n"] = dist.mean(F.cross_entropy(logits, y), len(y))
    return out


def confusion(logits: Tensor, y: Tensor, num_classes: int) -> list[list[int]]:
    """Confusion matrix of the whole evaluation set from this rank's part of it, as classification_metrics."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    m = MulticlassConfusionMatrix(num_classes).to(logits.device)
    m.update(logits.argmax(1), y)
    return m.compute().tolist()

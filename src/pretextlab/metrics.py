"""Classification metrics from torchmetrics, macro-averaged, combined over torchrun ranks; segmentation metrics
from one dataset-level confusion matrix (SegmentationMeter)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import dist

# How every metric a task logs is named in print: the CLI's lines and the report's tables and figures.
METRIC_NAMES = {"f1_macro": "macro-F1", "precision_macro": "macro precision", "recall_macro": "macro recall",
                "accuracy": "accuracy", "loss": "loss", "miou": "mean IoU", "pixel_accuracy": "pixel accuracy",
                "dice": "mean Dice"}


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


# ----------------------------------------------------------------------------------------------
# Semantic segmentation


class SegmentationMeter:
    """Segmentation metrics of a whole split from ONE dataset-level confusion matrix, fed batch by batch.

    Why dataset-level: the standard protocol of Pascal VOC (Everingham et al., IJCV 2010) and of the FCN paper
    (Long et al., CVPR 2015) sums one confusion matrix over every labelled pixel of the split and takes
    IoU_c = TP_c / (TP_c + FP_c + FN_c) from it; the mean of per-image IoUs is a different, noisier number
    (a class covering 10 pixels of one image weighs as much as one covering a whole image) and is never used.

    Metrics (torchmetrics, whose counts are that confusion matrix):
    - "miou": MulticlassJaccardIndex(average="macro"), the mean IoU over the scored classes;
    - per_class(): MulticlassJaccardIndex(average="none"), the IoU of every class;
    - "pixel_accuracy": MulticlassAccuracy(average="micro"), correct / labelled pixels;
    - "dice": the mean over the scored classes of MulticlassF1Score(average="none"); F1 over pixels is the Dice
      coefficient 2 TP / (2 TP + FP + FN) (Dice 1945; Milletari et al. 2016 for segmentation);
    - "loss": cross-entropy summed over labelled pixels / their number (= F.cross_entropy(..., ignore_index)
      on the whole split), "n": images.

    Rules:
    - A pixel whose mask is `ignore_index` counts nowhere, whatever is predicted there (torchmetrics drops it
      before counting; the loss ignores it).
    - A class scored in a mean is one that occurs in the truth or in the prediction of some labelled pixel:
      a class absent from both has 0 / 0 IoU, which torchmetrics (1.9) leaves out of its macro mean; per_class()
      gives NaN for it. A class predicted but never true scores 0 and counts.
    - An `ignore_index` inside 0..num_classes - 1 (a void class with a class index) is never scored: NaN in
      per_class(), out of "miou" (as torchmetrics' macro Jaccard does) and out of "dice" (torchmetrics' macro
      F1 would count it as 0 wherever it is predicted, hence the per-class F1 and the mean taken here).
      Predicting it on a labelled pixel is an error for the pixel's true class.
    - No labelled pixel at all: every metric and the loss are NaN.

    Under torchrun each rank feeds its own share; compute() and per_class() are collective (every rank calls
    them): torchmetrics sums the ranks' counts, and the loss and count sums are all-reduced with dist.all_sum,
    so every rank gets the numbers of the whole split, equal to one process scoring all of it.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None, device: torch.device | str = "cpu"):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import (
            MulticlassAccuracy,
            MulticlassConfusionMatrix,
            MulticlassF1Score,
            MulticlassJaccardIndex,
        )

        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes, self.ignore_index, self.device = num_classes, ignore_index, torch.device(device)
        # Jaccard (macro, none) and the confusion matrix share one `confmat` state: one compute group, one update.
        self.metrics = MetricCollection({
            "miou": MulticlassJaccardIndex(num_classes, ignore_index=ignore_index, average="macro"),
            "iou": MulticlassJaccardIndex(num_classes, ignore_index=ignore_index, average="none"),
            "confmat": MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index),
            "pixel_accuracy": MulticlassAccuracy(num_classes, ignore_index=ignore_index, average="micro"),
            "f1": MulticlassF1Score(num_classes, ignore_index=ignore_index, average="none"),
        }).to(self.device)
        self.reset()

    def reset(self) -> None:
        self.metrics.reset()
        self._sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, labelled pixels, images
        self._result: tuple[dict[str, float], list[float]] | None = None

    @torch.no_grad()
    def update(self, logits: Tensor, masks: Tensor) -> None:
        """Add a batch: logits (B, C, H, W) of any float dtype, masks (B, H, W) uint8 (or any integer dtype)."""
        if logits.ndim != 4 or logits.shape[1] != self.num_classes or masks.shape != (logits.shape[0],
                                                                                      *logits.shape[2:]):
            raise ValueError(f"expected logits (B, {self.num_classes}, H, W) and masks (B, H, W), got "
                             f"{tuple(logits.shape)} and {tuple(masks.shape)}")
        target = masks.to(self.device, torch.int64)
        logits = logits.to(self.device)
        self.metrics.update(logits.argmax(1), target)
        ignore = -100 if self.ignore_index is None else self.ignore_index  # -100: no uint8 mask holds it
        loss = F.cross_entropy(logits.float(), target, ignore_index=ignore, reduction="sum")
        labelled = (target != ignore).sum()
        self._sums += torch.stack([loss.double(), labelled.double(), torch.tensor(len(target), dtype=torch.float64,
                                                                                 device=self.device)])
        self._result = None

    def _compute(self) -> tuple[dict[str, float], list[float]]:
        if self._result is None:
            loss, pixels, images = dist.all_sum(self._sums).tolist()
            nan = float("nan")
            if pixels == 0:
                out = {"miou": nan, "pixel_accuracy": nan, "dice": nan, "loss": nan, "n": int(images)}
                self._result = out, [nan] * self.num_classes
                return self._result
            m = self.metrics.compute()
            confmat = m["confmat"]
            scored = (confmat.sum(0) + confmat.sum(1)) > 0
            if self.ignore_index is not None and 0 <= self.ignore_index < self.num_classes:
                scored[self.ignore_index] = False
            iou = torch.where(scored, m["iou"].double(), nan)
            dice = m["f1"].double()[scored].mean()
            out = {"miou": float(m["miou"]), "pixel_accuracy": float(m["pixel_accuracy"]), "dice": float(dice),
                   "loss": loss / pixels, "n": int(images)}
            self._result = out, iou.tolist()
        return self._result

    def compute(self) -> dict[str, float]:
        """{"miou", "pixel_accuracy", "dice", "loss", "n"} of everything fed since the last reset (all ranks)."""
        return dict(self._compute()[0])

    def per_class(self) -> list[float]:
        """IoU of each class, NaN for a class that is not scored (absent from truth and prediction, or the
        ignore index); the mean of the numbers is "miou"."""
        return list(self._compute()[1])

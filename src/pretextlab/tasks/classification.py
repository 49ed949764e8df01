"""Image classification: a class per image, macro-F1 primary (torchmetrics, macro averaging spelled out).

Labelled data is an image folder with one sub-folder per class (and the other sources of data.py); a
label fraction is stratified per class, seeded and nested; the head is one linear layer on the
backbone's pooled features; the loss is label-smoothed cross-entropy on augmented batches (random
crop and flip, as in airbench).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist, hw
from ..data import DataConfig, Splits, load_data, make_splits, stratified_split
from ..data.augment import augment, normalize, take
from ..data.sources import Dataset, ImageSet, rows
from ..errors import UserError
from ..io import save_torch
from ..layout import EXAMPLES
from ..metrics import classification_metrics, confusion
from ..models import Classifier, evaluating
from ..train import TrainConfig

N_EXAMPLES = 10  # validation images shown with predictions in the report: one per class where there are <= 10
TTA = ("none", "flip", "flip-translate")


def example_indices(labels: Tensor, n: int = N_EXAMPLES) -> Tensor:
    """Which validation images the report shows: the first of each class (every class once, up to n
    classes), topped up with images spread over the split; the same for every run of a study."""
    firsts = [int((labels == c).nonzero()[0]) for c in labels.unique().tolist()][:n]
    spread = [int(i) for i in torch.linspace(0, len(labels) - 1, n).long() if int(i) not in firsts]
    return torch.tensor(sorted(firsts + spread[: n - len(firsts)]))


def check_tta(tta: str) -> None:
    if tta not in TTA:
        raise UserError(f"--tta {tta} is unknown; use {', '.join(TTA)}")


def tta_views(x: Tensor, tta: str) -> list[tuple[float, Tensor]]:
    """(weight, view) pairs of a uint8 batch whose weighted logits make the prediction (Jordan 2024, airbench,
    arXiv 2404.00498): none; flip: the image and its mirror, 1/2 each; flip-translate: those, 1/4 each, and
    both shifted by one pixel up-left and down-right (reflect-padded), 1/8 each."""
    check_tta(tta)
    if tta == "none":
        return [(1.0, x)]
    if tta == "flip":
        return [(0.5, x), (0.5, x.flip(3))]
    padded = F.pad(x.float(), (1, 1, 1, 1), mode="reflect").to(x.dtype)
    up_left, down_right = padded[:, :, :-2, :-2], padded[:, :, 2:, 2:]
    return [(0.25, x), (0.25, x.flip(3)), (0.125, up_left), (0.125, up_left.flip(3)), (0.125, down_right),
            (0.125, down_right.flip(3))]


def predict_logits(model: nn.Module, x: Tensor, mean: Tensor, std: Tensor, batch_size: int = 1000,
                   precision: str = "fp32", channels_last: bool = True, tta: str = "none") -> Tensor:
    """Logits for uint8 images, in batches, without gradients (eval-mode BatchNorm); with test-time
    augmentation, the weighted mean of the logits of each view (tta_views)."""
    device = next(model.parameters()).device
    outs = []
    with evaluating(model):
        for chunk in x.split(batch_size):
            chunk = chunk.to(device)
            total = None
            for weight, view in tta_views(chunk, tta):
                with hw.autocast(device, precision):
                    logits = model(normalize(view, mean, std, channels_last)).float() * weight
                total = logits if total is None else total + logits
            outs.append(total)
    return torch.cat(outs)


def predict_part(model: nn.Module, x: Tensor, y: Tensor, mean: Tensor, std: Tensor,
                 precision: str = "fp32", tta: str = "none") -> tuple[Tensor, Tensor, slice]:
    """Logits and labels of this rank's part of (x, y), and which part it is (all of it on one process)."""
    part = dist.shard_slice(len(y))
    logits = predict_logits(model, x[part], mean, std, precision=precision, tta=tta)
    return logits, y[part].to(logits.device), part


class Classification:
    """Supervised classification: augmented, normalised batches of the labelled subset; cross-entropy loss."""

    name = "classification"
    primary = "f1_macro"
    secondary = "accuracy"  # shown beside the primary metric in the report's tables
    metrics = ("f1_macro", "precision_macro", "recall_macro", "accuracy")  # every validation metric, primary first
    monitor = ("f1_macro", "max")  # what the plateau schedule watches
    probes = True  # the study probes frozen backbones (linear, k-NN) on a label per image
    checkpoint_kind = "classifier"

    def __init__(self, splits: Splits, data: DataConfig, cfg: TrainConfig, precision: str = "fp32"):
        check_tta(cfg.tta)
        size = int(splits.x_train.shape[-1])
        self.pad = data.crop_pad(size)
        if self.pad >= size:
            raise UserError(f"--pad {self.pad} is not smaller than the {size} px images; use e.g. {size // 8}")
        self.splits, self.flip, self.smoothing, self.precision = splits, data.flip, cfg.label_smoothing, precision
        self.tta = cfg.tta  # every evaluation scores the weighted views of tta_views
        self.n_train = len(splits.y_train)
        self.num_classes = len(splits.classes)

    # the driver's part --------------------------------------------------------------------------------

    @staticmethod
    def load(data: DataConfig) -> Dataset:
        return load_data(data)

    @staticmethod
    def splits(ds: Dataset, fraction: float, seed: int, data: DataConfig) -> Splits:
        return make_splits(ds, fraction, seed, data.val_fraction, data.split_seed)

    def make_model(self, backbone: nn.Module) -> nn.Module:
        return Classifier(backbone, self.num_classes)

    def meta(self) -> dict[str, Any]:
        s = self.splits
        return {"classes": s.classes, "channels": int(s.x_train.shape[1]), "image_size": int(s.x_train.shape[-1]),
                "mean": s.mean.tolist(), "std": s.std.tolist()}

    def run_facts(self) -> dict[str, Any]:
        """config.json's task part: what the run trained on."""
        return {"classes": self.splits.classes, "n_train": self.n_train, "n_val": len(self.splits.y_val),
                "crop_pad": self.pad}

    # the loop's part ----------------------------------------------------------------------------------

    def batch(self, idx: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        x = augment(take(self.splits.x_train, idx), g, self.pad, self.flip)
        return normalize(x, self.splits.mean, self.splits.std), take(self.splits.y_train, idx)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.float(), y, label_smoothing=self.smoothing)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        s = self.splits
        logits, y, _ = predict_part(model, s.x_val, s.y_val, s.mean, s.std, self.precision, self.tta)
        m = classification_metrics(logits, y, self.num_classes)
        m.pop("n")
        return m

    def final(self, model: nn.Module, folder: Path, batch_size: int) -> dict[str, Any]:
        """Final metrics, the confusion matrix, the report's example predictions and the test split's scores
        (each rank scores its part)."""
        s = self.splits
        logits, y, part = predict_part(model, s.x_val, s.y_val, s.mean, s.std, self.precision, self.tta)
        pick = example_indices(s.y_val.cpu()).to(s.y_val.device)
        probs = dist.gather_rows(logits.softmax(1), part, pick)
        out = {"classes": s.classes, "final": classification_metrics(logits, y, self.num_classes),
               "confusion_val": confusion(logits, y, self.num_classes),
               "examples": [{"val_index": int(i), "label": int(s.y_val[i]), "pred": int(p.argmax()),
                             "confidence": float(p.max())} for i, p in zip(pick, probs)]}
        if s.test is not None:
            tl, ty, _ = predict_part(model, s.test.images, s.test.labels, s.mean, s.std, self.precision)
            out["test"] = classification_metrics(tl, ty, self.num_classes)
        if dist.is_main():
            save_torch(s.x_val[pick].cpu(), folder / EXAMPLES)
        return out

    # a saved model's part -----------------------------------------------------------------------------

    @staticmethod
    def check_meta(meta: dict[str, Any]) -> str | None:
        for key, kind in (("classes", list), ("channels", int), ("image_size", int), ("mean", list), ("std", list)):
            if key not in meta:
                return f"its meta misses '{key}'"
            if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
                return f"its meta's '{key}' is not a {kind.__name__}"
        if not (meta["classes"] and all(isinstance(c, str) for c in meta["classes"]) and meta["channels"] in (1, 3)
                and 0 < meta["image_size"] <= 8192  # a bound: predict resizes every image to this side
                and all(len(meta[k]) == meta["channels"] and all(isinstance(v, (int, float)) for v in meta[k])
                        for k in ("mean", "std"))):
            return "its meta's classes, channels, image size, mean or std are not a classifier's"
        return None

    @staticmethod
    def held_out(ds: Dataset, data: dict[str, Any]) -> tuple[Tensor, ImageSet]:
        """The training pool and the validation split a run was scored on (evaluate), by its recorded split."""
        pool, va = stratified_split(ds.train.labels, data["val_fraction"], data["split_seed"])
        return rows(ds.train.images, pool), ImageSet(rows(ds.train.images, va), ds.train.labels[va])

    @staticmethod
    def rebuild(backbone: nn.Module, meta: dict[str, Any]) -> nn.Module:
        return Classifier(backbone, len(meta["classes"]))

    @staticmethod
    def score(model: nn.Module, images: Tensor, labels: Tensor, meta: dict[str, Any], tta: str) -> dict[str, float]:
        logits = predict_logits(model, images, torch.tensor(meta["mean"]), torch.tensor(meta["std"]),
                                precision=meta.get("precision", "fp32"), tta=tta)
        return classification_metrics(logits, labels, len(meta["classes"]))

    @staticmethod
    def predict(model: nn.Module, images: Tensor, meta: dict[str, Any]) -> list[dict[str, Any]]:
        probs = predict_logits(model, images, torch.tensor(meta["mean"]), torch.tensor(meta["std"]),
                               precision=meta.get("precision", "fp32")).softmax(1)
        conf, pred = probs.max(1)
        return [{"class": meta["classes"][p], "confidence": float(c)} for p, c in zip(pred.tolist(), conf.tolist())]

"""Semantic segmentation: a class per pixel, mean IoU primary (one dataset-level confusion matrix, ignore value
left out: metrics.SegmentationMeter).

Labelled data is a folder of images and index masks (data.masks: images/ + masks/, SegNet's pairs of folders,
Pascal VOC); a label fraction is a seeded, nested subset of the labelled images; the network is the user's
backbone under a small FPN decoder over its multi-scale maps (models.heads.Segmenter); the loss is the
pixel-wise cross-entropy without the ignored pixels, on random scaled crops with flips that cut the image and
its mask alike (augment.joint_random_resized_crop). Training sees crops resized to the stored image size;
evaluation sees every whole image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist, hw
from ..data import DataConfig, Splits, channel_stats
from ..data.augment import joint_random_resized_crop, normalize, take
from ..data.masks import load_segmentation
from ..data.sources import Dataset, ImageSet
from ..errors import UserError
from ..io import save_torch
from ..layout import EXAMPLES
from ..metrics import SegmentationMeter
from ..models import evaluating
from ..models.heads import Segmenter, pyramid_taps
from ..train import TrainConfig

N_EXAMPLES = 8  # validation images the report shows as image | truth | prediction
CROP_SCALE = (0.3, 1.0)  # share of the image's area a training crop covers
EVAL_BATCH = 16  # whole validation images per forward pass
DECODER_WIDTH = 64


def image_split(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train, val) image indices when the source has no validation split: a seeded random share."""
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction {val_fraction} must be between 0 and 1 (exclusive)")
    if n < 2:
        raise UserError(f"{n} labelled image: carving a validation split needs at least 2; add images or a val/ split")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = min(max(1, int(round(n * val_fraction))), n - 1)
    return order[k:].sort().values, order[:k].sort().values


def image_fraction(n: int, fraction: float, seed: int) -> Tensor:
    """Indices (into n labelled images) of a seeded subset holding `fraction` of them, at least one. Nested: one
    seeded order, a fraction takes its prefix, so 10% lies inside 50% for the same seed (as label_fraction)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(10_000 + seed))
    return order[: max(1, int(round(n * fraction)))].sort().values


def spread(n: int, k: int = N_EXAMPLES) -> Tensor:
    """k image indices spread evenly over n: the report's examples, the same for every run of a study."""
    return torch.linspace(0, n - 1, min(k, n)).round().long().unique()


def predict_masks(model: nn.Module, x: Tensor, mean: Tensor, std: Tensor, precision: str = "fp32",
                  batch_size: int = EVAL_BATCH, channels_last: bool = True) -> Tensor:
    """float logits (N, K, H, W) of uint8 images, in batches, without gradients (eval-mode BatchNorm)."""
    device = next(model.parameters()).device
    outs = []
    with evaluating(model):
        for chunk in x.split(batch_size):
            with hw.autocast(device, precision):
                outs.append(model(normalize(chunk.to(device), mean, std, channels_last)).float())
    return torch.cat(outs) if outs else torch.empty(0)


def score_masks(model: nn.Module, x: Tensor, y: Tensor, mean: Tensor, std: Tensor, num_classes: int,
                ignore: int | None, precision: str = "fp32", shard: bool = False) -> SegmentationMeter:
    """A meter fed with the model's logits on (x, y), batch by batch (never all logits at once: a split's
    logits are K floats per pixel); with shard, this rank feeds its part only (compute() sums the ranks)."""
    part = dist.shard_slice(len(y)) if shard else slice(None)
    meter = SegmentationMeter(num_classes, ignore, next(model.parameters()).device)
    for xs, ys in zip(x[part].split(EVAL_BATCH), y[part].split(EVAL_BATCH)):
        meter.update(predict_masks(model, xs, mean, std, precision), ys)
    return meter


class Segmentation:
    """Supervised segmentation: jointly cropped and flipped, normalised batches; pixel-wise cross-entropy."""

    name = "segmentation"
    primary = "miou"
    secondary = "pixel_accuracy"  # shown beside the primary metric in the report's tables
    metrics = ("miou", "pixel_accuracy", "dice")  # every validation metric it logs, primary first
    monitor = ("miou", "max")  # what the plateau schedule watches
    probes = False  # the study probes frozen backbones (linear, k-NN): they need a label per image
    checkpoint_kind = "segmenter"

    def __init__(self, splits: Splits, data: DataConfig, cfg: TrainConfig, precision: str = "fp32"):
        self.splits, self.flip, self.smoothing, self.precision = splits, data.flip, cfg.label_smoothing, precision
        self.ignore = splits.ignore_index
        self.n_train = len(splits.y_train)
        self.num_classes = len(splits.classes)
        self.hw = tuple(int(v) for v in splits.x_train.shape[-2:])

    # the driver's part --------------------------------------------------------------------------------

    @staticmethod
    def load(data: DataConfig) -> Dataset:
        ds = load_segmentation(data.source, data.image_size, data.layout, data.ignore_index, data.cache_dir)
        if data.test_source:
            if ds.test is not None:
                raise UserError(f"--data {data.source} has a test split already; drop --test-data")
            test = load_segmentation(data.test_source, data.image_size, data.layout, data.ignore_index, data.cache_dir)
            if test.classes != ds.classes or test.train.images.shape[-2:] != ds.train.images.shape[-2:]:
                raise UserError(f"--test-data {data.test_source} has classes {test.classes} at "
                                f"{tuple(test.train.images.shape[-2:])}, --data has {ds.classes} at "
                                f"{tuple(ds.train.images.shape[-2:])}; give a test set of the same classes and size")
            ds.test = test.train
            ds.fingerprint = {**ds.fingerprint, "test": test.fingerprint}
        return ds

    @staticmethod
    def splits(ds: Dataset, fraction: float, seed: int, data: DataConfig) -> Splits:
        """The source's val split where it has one (else a seeded share of the training images, by split_seed),
        then a seeded, nested `fraction` of the training images."""
        n = len(ds.train)
        if ds.val is not None:
            tr, va, x_val, y_val = torch.arange(n), None, ds.val.images, ds.val.labels
        else:
            tr, va = image_split(n, data.val_fraction, data.split_seed)
            x_val, y_val = ds.train.images[va], ds.train.labels[va]
        sub = tr[image_fraction(len(tr), fraction, seed)]
        pool = ds.train.images[tr]
        mean, std = channel_stats(pool)
        return Splits(classes=ds.classes, x_train=ds.train.images[sub], y_train=ds.train.labels[sub], x_val=x_val,
                      y_val=y_val, x_pool=pool, mean=mean, std=std,
                      indices={"train": sub.tolist(), "val": "the source's val split" if va is None else va.tolist()},
                      test=ds.test, ignore_index=ds.ignore_index)

    def make_model(self, backbone: nn.Module) -> nn.Module:
        return Segmenter(backbone, self.num_classes, int(self.splits.x_train.shape[1]), DECODER_WIDTH)

    def meta(self) -> dict[str, Any]:
        s = self.splits
        channels = int(s.x_train.shape[1])
        return {"classes": s.classes, "channels": channels, "image_size": min(self.hw), "hw": list(self.hw),
                "ignore_index": self.ignore, "mean": s.mean.tolist(), "std": s.std.tolist(), "width": DECODER_WIDTH}

    def run_facts(self) -> dict[str, Any]:
        """config.json's task part: what the run trained on."""
        return {"classes": self.splits.classes, "n_train": self.n_train, "n_val": len(self.splits.y_val),
                "image_hw": list(self.hw), "ignore_index": self.ignore, "crop_scale": list(CROP_SCALE)}

    # the loop's part ----------------------------------------------------------------------------------

    def batch(self, idx: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y = joint_random_resized_crop(take(self.splits.x_train, idx), take(self.splits.y_train, idx), self.hw, g,
                                         CROP_SCALE, self.flip)
        return normalize(x, self.splits.mean, self.splits.std), y.long()

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.float(), y, ignore_index=-100 if self.ignore is None else self.ignore,
                               label_smoothing=self.smoothing)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        s = self.splits
        m = score_masks(model, s.x_val, s.y_val, s.mean, s.std, self.num_classes, self.ignore, self.precision,
                        shard=True).compute()
        m.pop("n")
        return m

    def final(self, model: nn.Module, folder: Path, batch_size: int) -> dict[str, Any]:
        """Final metrics with the IoU of every class, the report's examples (image, truth, prediction) and the
        test split's scores."""
        s = self.splits
        meter = score_masks(model, s.x_val, s.y_val, s.mean, s.std, self.num_classes, self.ignore, self.precision,
                            shard=True)
        pick = spread(len(s.y_val))
        out = {"classes": s.classes, "ignore_index": self.ignore, "final": meter.compute(),
               "per_class_iou": dict(zip(s.classes, meter.per_class())),
               "examples": [{"val_index": int(i)} for i in pick]}
        if s.test is not None:
            tm = score_masks(model, s.test.images, s.test.labels, s.mean, s.std, self.num_classes, self.ignore,
                             self.precision, shard=True)
            out["test"], out["per_class_iou_test"] = tm.compute(), dict(zip(s.classes, tm.per_class()))
        if dist.is_main():
            x = s.x_val[pick.to(s.x_val.device)]
            pred = predict_masks(model, x, s.mean, s.std, self.precision).argmax(1).to(torch.uint8)
            save_torch({"images": x.cpu(), "truth": s.y_val[pick.to(s.y_val.device)].cpu(), "pred": pred.cpu(),
                        "classes": s.classes, "ignore_index": self.ignore}, folder / EXAMPLES)
        return out

    # a saved model's part -----------------------------------------------------------------------------

    @staticmethod
    def check_meta(meta: dict[str, Any]) -> str | None:
        for key, kind in (("classes", list), ("channels", int), ("image_size", int), ("hw", list), ("mean", list),
                          ("std", list), ("width", int)):
            if key not in meta:
                return f"its meta misses '{key}'"
            if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
                return f"its meta's '{key}' is not a {kind.__name__}"
        ignore = meta.get("ignore_index")
        if not (meta["classes"] and all(isinstance(c, str) for c in meta["classes"]) and meta["channels"] in (1, 3)
                and len(meta["hw"]) == 2 and all(isinstance(v, int) and 0 < v <= 8192 for v in meta["hw"])
                and 0 < meta["width"] <= 4096 and (ignore is None or isinstance(ignore, int) and 0 <= ignore <= 255)
                and all(len(meta[k]) == meta["channels"] and all(isinstance(v, (int, float)) for v in meta[k])
                        for k in ("mean", "std"))):
            return "its meta's classes, channels, size, ignore value, mean or std are not a segmenter's"
        return None

    @staticmethod
    def rebuild(backbone: nn.Module, meta: dict[str, Any]) -> nn.Module:
        taps = pyramid_taps(backbone, meta["channels"])  # found again on the same architecture: the same taps
        return Segmenter(backbone, len(meta["classes"]), meta["channels"], meta["width"], taps)

    @staticmethod
    def held_out(ds: Dataset, data: dict[str, Any]) -> tuple[Tensor, ImageSet]:
        """The training pool and the validation images and masks a run was scored on (evaluate)."""
        if ds.val is not None:
            return ds.train.images, ds.val
        tr, va = image_split(len(ds.train), data["val_fraction"], data["split_seed"])
        return ds.train.images[tr], ImageSet(ds.train.images[va], ds.train.labels[va])

    @staticmethod
    def score(model: nn.Module, images: Tensor, labels: Tensor, meta: dict[str, Any], tta: str) -> dict[str, float]:
        if tta != "none":
            raise UserError(f"--tta {tta} is for classifiers; a segmenter is scored without it (--tta none)")
        meter = score_masks(model, images, labels, torch.tensor(meta["mean"]), torch.tensor(meta["std"]),
                            len(meta["classes"]), meta.get("ignore_index"), meta.get("precision", "fp32"))
        out = meter.compute()
        out.update({f"iou_{c}": v for c, v in zip(meta["classes"], meter.per_class())})
        return out

    @staticmethod
    def predict(model: nn.Module, images: Tensor, meta: dict[str, Any]) -> list[dict[str, Any]]:
        """Per image: the index mask (uint8 H x W at the model's size) and the classes covering most of it."""
        logits = predict_masks(model, images, torch.tensor(meta["mean"]), torch.tensor(meta["std"]),
                               meta.get("precision", "fp32"))
        out = []
        for mask in logits.argmax(1).to(torch.uint8):
            share = torch.bincount(mask.flatten().long(), minlength=len(meta["classes"])).float() / mask.numel()
            top = share.argsort(descending=True)[:3]
            out.append({"mask": mask, "classes": ", ".join(f"{meta['classes'][i]} {share[i]:.0%}" for i in top
                                                          if share[i] > 0)})
        return out

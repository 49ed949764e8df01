"""Stratified validation splits, nested label fractions and the Splits a run sees: the same validation
images for every run of a study (split_seed), a labelled subset per seed that a smaller fraction lies
inside, and the training images' channel statistics for normalisation."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import UserError
from .sources import Dataset, ImageSet, rows

log = logging.getLogger(__name__)


def stratified_split(labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Carve a validation split with the same class proportions as the whole, reproducible by seed."""
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction {val_fraction} must be between 0 and 1 (exclusive)")
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    n_val = sum(len(v) for v in val)
    _say_if_val_grew(val_fraction, n_val / len(labels))
    return torch.cat(train).sort().values, torch.cat(val).sort().values


_told_val: set[tuple[float, float]] = set()


def _say_if_val_grew(asked: float, got: float) -> None:
    """Every class keeps at least one validation image, so many small classes make the split larger than
    asked: said once per process, since a study splits the same way for every run."""
    if got > 1.5 * asked and got - asked > 0.02 and (asked, got) not in _told_val:
        _told_val.add((asked, got))
        log.warning("--val-fraction %g holds out %.0f%% of the images: every class keeps at least one validation "
                    "image, and classes this small give it more than %g of their images", asked, 100 * got, asked)


def check_fraction(fraction: float, flag: str = "--fraction") -> None:
    """A label fraction must lie in (0, 1]; checked before any work starts, wherever one is given."""
    if not 0 < fraction <= 1:
        raise UserError(f"{flag} {fraction} is outside (0, 1]; use e.g. 1.0, 0.5 or 0.1")


def label_fraction(labels: Tensor, fraction: float, seed: int, classes: list[str] | None = None) -> Tensor:
    """Indices (into `labels`) of a stratified, seeded subset holding `fraction` of each class.

    Nested by construction: every class is shuffled once with the seed and a fraction takes a prefix
    of that order, so the 10% subset lies inside the 50% subset for the same seed.
    """
    check_fraction(fraction, "fraction")
    g = torch.Generator().manual_seed(10_000 + seed)
    chosen = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * fraction))
        if k < 1:
            name = classes[c] if classes else str(c)
            need = 1 / len(idx)
            raise UserError(
                f"fraction {fraction} leaves class '{name}' ({len(idx)} images) with no labelled example; "
                f"use a fraction of at least {need:.4g}"
            )
        chosen.append(idx[:k])
    return torch.cat(chosen).sort().values


@dataclass
class Splits:
    """The data a run sees, all on one device: labelled train subset, full train pool, validation."""

    classes: list[str]
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_pool: Tensor  # every training image (labels unused): what pretext tasks learn from
    mean: Tensor
    std: Tensor
    indices: dict[str, list[int]] = field(default_factory=dict)
    test: ImageSet | None = None
    ignore_index: int | None = None  # segmentation: the mask value left out of loss and metrics

    def to(self, device: torch.device) -> "Splits":
        for k in ("x_train", "y_train", "x_val", "y_val", "x_pool", "mean", "std"):
            setattr(self, k, getattr(self, k).to(device))
        return self


def make_splits(ds: Dataset, fraction: float = 1.0, seed: int = 0, val_fraction: float = 0.1,
                split_seed: int = 0) -> Splits:
    """Validation split (fixed by split_seed, shared by all runs) then a label fraction (by seed)."""
    if len(ds.classes) < 2:
        raise UserError(f"{ds.name} has {len(ds.classes)} class ({', '.join(ds.classes)}); a classifier needs at "
                        "least two: give a folder with one sub-folder per class")
    tr, va = stratified_split(ds.train.labels, val_fraction, split_seed)
    sub = tr[label_fraction(ds.train.labels[tr], fraction, seed, ds.classes)]
    pool = rows(ds.train.images, tr)
    mean, std = channel_stats(pool)
    return Splits(
        classes=ds.classes, x_train=rows(ds.train.images, sub), y_train=ds.train.labels[sub],
        x_val=rows(ds.train.images, va), y_val=ds.train.labels[va], x_pool=pool, mean=mean, std=std,
        indices={"train": sub.tolist(), "val": va.tolist()}, test=ds.test,
    )


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std in [0, 1] units, from the training images (chunked: no float copy)."""
    s = torch.zeros(x.shape[1], dtype=torch.float64)
    s2 = torch.zeros_like(s)
    for chunk in x.split(4096):
        c = chunk.double().div_(255)
        s += c.sum((0, 2, 3))
        s2 += (c * c).sum((0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    std = (s2 / n - mean**2).clamp_min(1e-12).sqrt()
    return mean.float(), std.float().clamp_min(1e-3)



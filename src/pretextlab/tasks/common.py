"""What every downstream task (labels: a class, a mask, a set of boxes) declares, so that the run driver,
the study, the CLI and the report work with any of them without naming one.

A task is one file behind `DownstreamTask` and a line in tasks.TASKS. The driver asks it how to read
labelled data, how to draw a label fraction, which head sits on the backbone, and what a finished run
adds to its summary; train.fit asks it, once built on a run's splits, for batches, the loss and the
validation metrics (its `Task` part); `evaluate` and `predict` ask it to rebuild and score a saved model.

Segmentation (a mask per image: mean IoU primary) and detection (boxes: mAP primary) follow the same
shape: their `load` reads their folder layouts into images and targets, `splits` draws a seeded, nested
subset of the labelled images, `make_model` puts a decoder or a detector on the backbone's feature maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

from torch import Tensor, nn

from ..data import DataConfig, Splits
from ..data.sources import Dataset, ImageSet
from ..train import Task


class DownstreamTask(Task, Protocol):
    """A supervised task on a backbone. Built per run as `Task(splits, data, cfg, precision)`."""

    name: ClassVar[str]  # as in tasks.TASKS, recorded in checkpoints and config.json
    primary: ClassVar[str]  # the metric the report's answers use (and the plateau schedule watches)
    secondary: ClassVar[str]  # shown beside the primary metric in the report's tables
    metrics: ClassVar[tuple[str, ...]]  # every validation metric it logs (metrics.csv val_<metric>), primary first
    monitor: ClassVar[tuple[str, str]]  # (primary, "max" | "min")
    checkpoint_kind: ClassVar[str]  # meta["kind"] of its checkpoints
    probes: ClassVar[bool]  # whether a study also probes frozen backbones (linear, k-NN: a label per image)

    @staticmethod
    def load(data: DataConfig) -> Dataset:
        """The labelled examples of data.source (and data.test_source), decoded once into tensors."""

    @staticmethod
    def splits(ds: Dataset, fraction: float, seed: int, data: DataConfig) -> Splits:
        """Validation split (fixed by data.split_seed, shared by every run) and the labelled subset: `fraction`
        of the labelled examples, seeded by `seed` and nested (a smaller fraction lies inside a larger one)."""

    def make_model(self, backbone: nn.Module) -> nn.Module:
        """The backbone with this task's head on it (the head initialised by the current torch seed); the
        backbone stays reachable as `.backbone`, so pretrained weights load into it and only it."""

    def meta(self) -> dict[str, Any]:
        """What a checkpoint must carry so that `rebuild` and `score` need nothing else (classes, sizes, ...)."""

    def final(self, model: nn.Module, folder: Path, batch_size: int) -> dict[str, Any]:
        """The summary's task part after training: final metrics (test split too, where there is one), the
        report's examples (written into folder by rank 0)."""

    @staticmethod
    def check_meta(meta: dict[str, Any]) -> str | None:
        """Why a checkpoint's meta cannot be this task's (None: it can)."""

    @staticmethod
    def held_out(ds: Dataset, data: dict[str, Any]) -> tuple[Tensor, ImageSet]:
        """A saved run's training pool (unlabelled use only) and its validation split, from its recorded data
        settings (val_fraction, split_seed): what `evaluate --split val` scores."""

    @staticmethod
    def rebuild(backbone: nn.Module, meta: dict[str, Any]) -> nn.Module:
        """The model of a saved run, with its head, before its weights are loaded."""

    @staticmethod
    def score(model: nn.Module, images: Tensor, labels: Tensor, meta: dict[str, Any], tta: str) -> dict[str, float]:
        """Metrics of a saved model on labelled images (evaluate)."""

    @staticmethod
    def predict(model: nn.Module, images: Tensor, meta: dict[str, Any]) -> list[dict[str, Any]]:
        """The model's output for uint8 images (predict): one dict per image."""


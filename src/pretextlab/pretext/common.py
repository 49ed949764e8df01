"""What the pretext tasks share: the interface every task meets, held-out loss and accuracy combined
over ranks, and images as the report stores them."""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..data import Splits
from ..train import Task


class PretextTask(Task, Protocol):
    """A label-free objective: what `pretrain` and the report need on top of the loop's `Task`.

    A task is built as `Task(splits, options, precision)`, draws its inputs from `splits.x_pool`
    (labels are never read) and scores held-out inputs made from `splits.x_val`.
    """

    name: str  # as in pretext.TASKS and the study's pretrain-<name> folder
    chance: float | None  # held-out accuracy of guessing (None: not a classification), drawn beside its curve
    splits: Splits
    options: Any  # the task's options dataclass; stored in config.json and summary.json

    @staticmethod
    def work_per_image(options: dict) -> float:
        """Training inputs per pool image, in whole-image forward-and-backward passes (the plan's ETA)."""

    def make_model(self, backbone: nn.Module) -> nn.Module:
        """The backbone with this task's head on it; the backbone stays reachable as `.backbone`."""

    def samples(self, model: nn.Module, k: int = 8) -> dict[str, Any]:
        """A few held-out inputs with targets and predictions, as uint8 images, for the report's figure."""


def loss_and_accuracy(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Cross-entropy and accuracy of this rank's part of the held-out examples, combined over ranks
    (each part weighted by its size), so under torchrun every rank scores only its share."""
    loss, _ = dist.mean(F.cross_entropy(logits, labels), len(labels))
    accuracy, _ = dist.mean((logits.argmax(1) == labels).float().mean(), len(labels))
    return {"loss": loss, "accuracy": accuracy}


def to_uint8(x: Tensor) -> Tensor:
    """Float images in [0, 1] -> uint8 on the CPU, as samples.pt stores them for the report."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()

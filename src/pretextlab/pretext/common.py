"""What the pretext tasks share: held-out loss and accuracy combined over ranks, and images as the
report stores them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import dist


def loss_and_accuracy(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Cross-entropy and accuracy of this rank's part of the held-out examples, combined over ranks
    (each part weighted by its size), so under torchrun every rank scores only its share."""
    loss, _ = dist.mean(F.cross_entropy(logits, labels), len(labels))
    accuracy, _ = dist.mean((logits.argmax(1) == labels).float().mean(), len(labels))
    return {"loss": loss, "accuracy": accuracy}


def to_uint8(x: Tensor) -> Tensor:
    """Float images in [0, 1] -> uint8 on the CPU, as samples.pt stores them for the report."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()

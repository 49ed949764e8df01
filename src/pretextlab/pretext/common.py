"""What the pretext tasks share: evaluating a model without disturbing its training mode, and images
as the report stores them."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BatchNorm on its running statistics) and no gradients, then the model's own mode back:
    evaluate() runs in the middle of training."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was)


def to_uint8(x: Tensor) -> Tensor:
    """Float images in [0, 1] -> uint8 on the CPU, as samples.pt stores them for the report."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()

"""Heads that downstream tasks put on a backbone."""

from __future__ import annotations

from torch import Tensor, nn


class Classifier(nn.Module):
    """backbone -> linear head. The backbone's state dict is what pretraining hands to fine-tuning."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

"""Backbones by spec behind one interface (image -> feature vector, a feature map, a list of stages): built-in
(builtin.py), timm, torchvision or the user's own file (external.py); heads (heads.py); weights (weights.py).

Every backbone maps (B, C, H, W) to (B, out_dim) for any input size (global pooling at the end),
so the same object serves small pretext patches and whole images alike. Every backbone also lists
its `stages` (module-name prefixes, input to output): fine-tuning can take only the first stages
of a pretrained backbone, since early layers transfer across tasks and late ones specialise
(Yosinski et al. 2014, arXiv 1411.1792).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from ..errors import UserError
from .builtin import BACKBONES, FastNet
from .heads import Classifier
from .weights import load_backbone_weights, read_weights


def check_backbone(name: str) -> None:
    """Refuse an unknown backbone spec before any work starts (built-in names, timm:, torchvision:, a file)."""
    from .external import check_external, parse_spec

    if parse_spec(name)[0] != "builtin":
        check_external(name)
    elif name not in BACKBONES:
        raise UserError(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}, or timm:<name>, "
                        "torchvision:<name>, path/to/file.py:<name>")


def make_backbone(name: str, in_channels: int = 3) -> nn.Module:
    """A backbone by spec (see external.py): a built-in name, timm:<name>, torchvision:<name> or file.py:<name>."""
    from .external import make_external, parse_spec

    check_backbone(name)
    return BACKBONES[name](in_channels) if parse_spec(name)[0] == "builtin" else make_external(name, in_channels)


def feature_map(backbone: nn.Module, x: Tensor) -> Tensor:
    """The backbone's last spatial feature map (B, out_dim, h, w), i.e. its forward without the global
    pooling: what a decoder needs to reconstruct an image where the pooled vector has lost the layout."""
    from torchvision.models import ResNet

    if hasattr(backbone, "feature_map"):  # timm, torchvision and user backbones (external.Backbone)
        return backbone.feature_map(x)
    if isinstance(backbone, FastNet):
        return backbone.blocks(backbone.stem(x))
    if isinstance(backbone, ResNet):
        x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
        return backbone.layer4(backbone.layer3(backbone.layer2(backbone.layer1(x))))
    if isinstance(backbone, nn.Sequential):  # MobileNetV3 body: features, avgpool, flatten
        return backbone[0](x)
    raise TypeError(f"no feature map for a {type(backbone).__name__}; add it to models.feature_map")


def count_flops(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Forward FLOPs (2 x multiply-adds) of one input of `shape`, via torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with evaluating(model), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, *shape))
    return int(fc.get_total_flops())


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


def random_backbone(name: str, channels: int, seed: int = 0) -> nn.Module:
    """The backbone a from-scratch run of this seed starts from (seed, then build), without
    touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_backbone(name, channels).eval()


__all__ = ["BACKBONES", "Classifier", "check_backbone", "count_flops", "evaluating", "feature_map",
           "load_backbone_weights", "make_backbone", "random_backbone", "read_weights"]

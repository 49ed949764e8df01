"""Heads that downstream tasks put on a backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Classifier(nn.Module):
    """backbone -> linear head. The backbone's state dict is what pretraining hands to fine-tuning."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def pyramid_taps(backbone: nn.Module, channels: int, probe: int = 128, levels: int = 4) -> list[tuple[str, int]]:
    """(module name, channels) of the backbone's multi-scale feature maps, finest first: what a dense decoder
    reads, for any backbone (built-in, timm, torchvision, the user's file), found by running it once.

    Why by probing rather than by a list per architecture: the user's own network has no list. Every
    sub-module's 4-D output on a probe image is recorded by its spatial size; the module that completes LAST
    at a size is that resolution's output (a block or stage container finishes after its layers, so its
    output, residual additions included, is the one kept). Sizes are taken in the order they first appear
    while they keep shrinking (a squeeze-and-excitation 1 x 1 map, or a size met again later, is skipped);
    the input resolution (stride 1) is left out, since a decoder there would cost more than the backbone; the
    last `levels` of them (the deepest) are the taps. A ViT has one map (its patch embedding): one tap."""
    sizes: dict[tuple[int, int], tuple[str, int]] = {}
    order: list[tuple[int, int]] = []

    def record(name: str):
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, Tensor) and out.ndim == 4 and min(out.shape[-2:]) > 1:
                key = (int(out.shape[-2]), int(out.shape[-1]))
                sizes[key] = (name, int(out.shape[1]))
                if key not in order:
                    order.append(key)
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in backbone.named_modules() if n]
    was = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(torch.zeros(1, channels, probe, probe))
    finally:
        backbone.train(was)
        for h in hooks:
            h.remove()
    kept: list[tuple[int, int]] = []
    for key in order:
        if key[0] * key[1] < probe * probe and (not kept or key[0] * key[1] < kept[-1][0] * kept[-1][1]):
            kept.append(key)
    if not kept:
        raise ValueError("no spatial feature map below the input's resolution")
    return [sizes[k] for k in kept[-levels:]]


class Segmenter(nn.Module):
    """backbone -> a small FPN decoder over its multi-scale maps -> per-pixel class logits at the input size.

    The decoder is the semantic branch of Panoptic FPN (Kirillov et al. 2019, arXiv 1901.02446) cut down for a
    CPU: each tap gets a 1x1 lateral convolution to `width` channels, coarser levels are upsampled and added
    top-down (Lin et al. 2017, arXiv 1612.03144), one 3x3 convolution smooths the finest sum and a 1x1
    convolution gives the logits, upsampled bilinearly to the input. Everything but `.backbone` is initialised
    by the torch seed at construction, so scratch and pretrained runs of a seed get the same decoder."""

    def __init__(self, backbone: nn.Module, num_classes: int, channels: int = 3, width: int = 64,
                 taps: list[tuple[str, int]] | None = None):
        super().__init__()
        self.backbone = backbone
        taps = taps or pyramid_taps(backbone, channels)
        self.taps = [name for name, _ in taps]
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for _, c in taps)
        self.smooth = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                    nn.ReLU(inplace=True))
        self.head = nn.Conv2d(width, num_classes, 1)

    def features(self, x: Tensor) -> list[Tensor]:
        """The backbone's maps at the taps, finest first (hooks live only for this call, so copies of the model,
        such as the weight average, each read their own)."""
        got: dict[str, Tensor] = {}
        hooks = [self.backbone.get_submodule(n).register_forward_hook(
            lambda _m, _i, out, n=n: got.__setitem__(n, out)) for n in self.taps]
        try:
            self.backbone(x)
        finally:
            for h in hooks:
                h.remove()
        return [got[n] for n in self.taps]

    def forward(self, x: Tensor) -> Tensor:
        maps = self.features(x)
        p = self.lateral[-1](maps[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(maps[:-1])):
            p = lat(f) + F.interpolate(p, size=f.shape[-2:], mode="nearest")
        logits = self.head(self.smooth(p))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

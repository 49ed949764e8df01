"""Backbones (image -> feature vector) and the classifier built on them, by name.

Every backbone maps (B, C, H, W) to (B, out_dim) for any input size (global pooling at the end),
so the same object serves small pretext patches and whole images alike. Every backbone also lists
its `stages` (module-name prefixes, input to output): fine-tuning can take only the first stages
of a pretrained backbone, since early layers transfer across tasks and late ones specialise
(Yosinski et al. 2014, arXiv 1411.1792).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from .errors import UserError
from .io import load_torch


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU())


class ResBlock(nn.Module):
    """conv -> 2x2 max-pool -> residual conv: the ResNet-9 pattern of Page's DAWNBench entry, thinned."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = conv_bn(c_in, c_out)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)  # ceil: odd and tiny inputs (patches) work too
        self.res = conv_bn(c_out, c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.conv(x))
        return x + self.res(x)


class FastNet(nn.Module):
    """A small residual CNN for 32x32 images on a CPU (~0.1 GFLOP per image forward at 32x32).

    Why this shape: most of a CPU's time goes to the first full-resolution convolutions, so the stem
    is narrow and the width doubles at each halving of resolution; a global max+avg pool makes the
    network accept any input size (pretext patches of 12-16 px included).
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (24, 48, 96, 192)):
        super().__init__()
        self.stem = conv_bn(in_channels, widths[0])
        self.blocks = nn.Sequential(*[ResBlock(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.out_dim = widths[-1]
        self.stages = [("stem",)] + [(f"blocks.{i}",) for i in range(len(self.blocks))]

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        # max+mean pooling, scaled down as in Page's ResNet-9 (x0.125): without it the first SGD
        # steps blow the logits up and training diverges at the usual learning rates.
        return (x.amax((2, 3)) + x.mean((2, 3))) * 0.125


def _resnet(depth: int, in_channels: int) -> nn.Module:
    """torchvision ResNet with the CIFAR stem (3x3 conv, stride 1, no max-pool; He et al. 2016)."""
    from torchvision.models import resnet18, resnet34, resnet50

    net = {18: resnet18, 34: resnet34, 50: resnet50}[depth](weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    net.stages = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]
    return net


def _mobilenet_v3_large(in_channels: int) -> nn.Module:
    """MobileNetV3-Large (Howard et al. 2019), the homework's choice; features after global pooling."""
    from torchvision.models import mobilenet_v3_large

    net = mobilenet_v3_large(weights=None)
    if in_channels != 3:
        first = net.features[0][0]
        net.features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, 2, 1, bias=False)
    body = nn.Sequential(net.features, net.avgpool, nn.Flatten())
    body.out_dim = net.classifier[0].in_features
    body.stages = [(f"0.{i}",) for i in range(len(net.features))]
    return body


BACKBONES: dict[str, Callable[[int], nn.Module]] = {
    "fast": lambda c: FastNet(c),
    "fast-wide": lambda c: FastNet(c, (32, 64, 128, 256)),
    "resnet18": lambda c: _resnet(18, c),
    "resnet34": lambda c: _resnet(34, c),
    "resnet50": lambda c: _resnet(50, c),  # bottleneck blocks, 2048-d features: for GPUs
    "mobilenet_v3_large": _mobilenet_v3_large,
}


def check_backbone(name: str) -> None:
    """Refuse an unknown backbone spec before any work starts (built-in names, timm:, torchvision:, a file)."""
    from .backbones import check_external, parse_spec

    if parse_spec(name)[0] != "builtin":
        check_external(name)
    elif name not in BACKBONES:
        raise UserError(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}, or timm:<name>, "
                        "torchvision:<name>, path/to/file.py:<name>")


def make_backbone(name: str, in_channels: int = 3) -> nn.Module:
    """A backbone by spec (see backbones.py): a built-in name, timm:<name>, torchvision:<name> or file.py:<name>."""
    from .backbones import make_external, parse_spec

    check_backbone(name)
    return BACKBONES[name](in_channels) if parse_spec(name)[0] == "builtin" else make_external(name, in_channels)


def feature_map(backbone: nn.Module, x: Tensor) -> Tensor:
    """The backbone's last spatial feature map (B, out_dim, h, w), i.e. its forward without the global
    pooling: what a decoder needs to reconstruct an image where the pooled vector has lost the layout."""
    from torchvision.models import ResNet

    if hasattr(backbone, "feature_map"):  # timm, torchvision and user backbones (backbones.Backbone)
        return backbone.feature_map(x)
    if isinstance(backbone, FastNet):
        return backbone.blocks(backbone.stem(x))
    if isinstance(backbone, ResNet):
        x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
        return backbone.layer4(backbone.layer3(backbone.layer2(backbone.layer1(x))))
    if isinstance(backbone, nn.Sequential):  # MobileNetV3 body: features, avgpool, flatten
        return backbone[0](x)
    raise TypeError(f"no feature map for a {type(backbone).__name__}; add it to models.feature_map")


class Classifier(nn.Module):
    """backbone -> linear head. The backbone's state dict is what pretraining hands to fine-tuning."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def load_backbone_weights(backbone: nn.Module, state: dict[str, Tensor], source: str, stages: int = 0) -> None:
    """Load pretrained weights strictly: a checkpoint of another backbone is a user error, not a warning.

    stages > 0 takes only the first `stages` stages from `state`; the later ones keep the backbone's
    own (fresh) initialisation.
    """
    state = {k.removeprefix("backbone."): v for k, v in state.items() if not k.startswith("head.")}
    own = backbone.state_dict()
    bad = [k for k in own if not isinstance(state.get(k), Tensor) or state[k].shape != own[k].shape]
    if bad or set(state) - set(own):
        example = (bad or list(set(state) - set(own)))[0]
        raise UserError(f"{source} holds weights of another backbone or input shape (e.g. '{example}'); "
                        "pass --backbone matching the checkpoint")
    if stages:
        if not 0 < stages <= len(backbone.stages):
            raise UserError(f"--transfer-stages {stages}: this backbone has {len(backbone.stages)} stages; "
                            f"use 1 to {len(backbone.stages)}, or 0 for all")
        keep = [prefix for stage in backbone.stages[:stages] for prefix in stage]
        taken = lambda k: any(k == p or k.startswith(f"{p}.") for p in keep)  # noqa: E731
        state = {k: v if taken(k) else own[k] for k, v in state.items()}
    broken = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken is not None:  # training from NaN/inf weights only produces NaN losses
        raise UserError(f"{source} holds non-finite weights (NaN or inf, e.g. in '{broken}'); refused before training: "
                        "pass weights from a run that did not diverge")
    backbone.load_state_dict(state)


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


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a .safetensors file or from a pretextlab checkpoint.pt."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--init {path}: no such file; pass a checkpoint.pt or a backbone .safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = load_torch(path)
    except UserError:
        raise
    except Exception:
        raise UserError(f"{path} is not a readable checkpoint; pass a checkpoint.pt or .safetensors file") from None
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state dict; pass a checkpoint.pt or .safetensors file")
    odd = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)), None)
    if odd is not None:  # ints, strings, nested dicts: not weights, and load_state_dict would fail on them later
        raise UserError(f"{path} holds {type(state[odd]).__name__} values, not only tensors (e.g. '{odd}'); pass a "
                        "checkpoint.pt or .safetensors file of weights")
    return state

"""The built-in backbones: the fast CNN (the ResNet-9 pattern of Page's DAWNBench entry, thinned), ResNets
with the CIFAR stem, MobileNetV3-Large; each maps (B, C, H, W) to (B, out_dim) and lists its stages."""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn


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

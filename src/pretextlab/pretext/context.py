"""Context prediction / relative patch location (Doersch, Gupta, Efros 2015, arXiv 1505.05192).

Cut a 3x3 grid of patches from an image; show a shared ("siamese") backbone the centre patch and
one of its 8 neighbours; a small head on the concatenated features (late fusion) predicts which
neighbour it is. To solve it the network must recognise objects and their parts.

The paper's defences against trivial shortcuts, scaled to small images (all on whole batches):
- a gap between patches and a random jitter of each patch, so that lines and textures cannot be
  continued across the border;
- colour projection (remove the green-magenta axis) or colour dropping (keep one channel, replace
  the others with faint noise), so that chromatic aberration cannot give away the position;
- random down-and-up sampling of some patches, so that features survive pixelation;
- per-patch mean subtraction, so that low-frequency brightness gradients (vignetting) do not help.

Why upscaling: a 32x32 image cannot hold three patches and two gaps of useful size. By default
images smaller than 64 px are upscaled to a 64 px canvas (x2 for CIFAR) and cut into patches of
14/64 of the canvas (14 px) with gaps of half a patch (7 px, the paper's ratio) and a jitter of
1/32 of the canvas (+-2 px), so each CIFAR patch shows about a 7x7 px region of the original image.
Every size can be set explicitly; 0 means "derive from the image size" as just described.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..augment import crop_at, flip_mask, flip_where, take, unit
from ..data import Splits
from ..models import evaluating
from .common import loss_and_accuracy, to_uint8

POSITIONS = ["top-left", "top", "top-right", "left", "right", "bottom-left", "bottom", "bottom-right"]
# (row, col) of the 8 neighbours in the 3x3 grid, in label order; the centre is (1, 1).
NEIGHBOURS = torch.tensor([(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)])
GREEN_MAGENTA = torch.tensor([-1.0, 2.0, -1.0]) / 6**0.5


@dataclass
class ContextOptions:
    scale: float = 0.0  # image upscaling before cutting patches (0: up to a 64 px canvas, never down)
    patch: int = 0  # patch side in upscaled pixels (0: 14/64 of the canvas)
    gap: int = -1  # gap between neighbouring grid cells (-1: half a patch)
    jitter: int = -1  # max shift of each patch in each direction (-1: 1/32 of the canvas, at least 1)
    colour: str = "project"  # project | drop | none
    downsample: float = 0.5  # share of patches randomly down-and-up sampled (to as little as half size)
    patch_norm: bool = True  # subtract each patch's mean
    flip: bool = True  # mirror the whole image first (positions are taken after flipping)

    def resolved(self, image_size: int) -> "ContextOptions":
        """Concrete sizes for this image size (the 0 / -1 defaults filled in)."""
        scale = self.scale or max(1.0, 64 / image_size)
        canvas = int(round(image_size * scale))
        patch = self.patch or max(4, round(canvas * 14 / 64))
        gap = self.gap if self.gap >= 0 else patch // 2
        jitter = self.jitter if self.jitter >= 0 else max(1, canvas // 32)
        return dataclasses.replace(self, scale=scale, patch=patch, gap=gap, jitter=jitter)


def geometry_margin(image_size: int, o: ContextOptions) -> int:
    """Free pixels on each side of the grid; must leave room for the jitter."""
    canvas = int(round(image_size * o.scale))
    return (canvas - (3 * o.patch + 2 * o.gap)) // 2


def sample_positions(b: int, canvas: int, o: ContextOptions, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Top-left corners of the centre patch and a random neighbour, and the neighbour's label.

    The grid itself is shifted at random inside the canvas, then each patch is jittered; every patch
    stays inside the canvas by construction.
    """
    span = 3 * o.patch + 2 * o.gap
    free = canvas - span - 2 * o.jitter  # room to shift the whole grid
    if free < 0:
        raise ValueError(f"patch {o.patch}, gap {o.gap}, jitter {o.jitter} do not fit a {canvas} px canvas")
    origin = torch.randint(0, free + 1, (b, 2), generator=g) + o.jitter
    label = torch.randint(0, 8, (b,), generator=g)
    step = o.patch + o.gap

    def corner(cell: Tensor) -> Tensor:
        jit = torch.randint(-o.jitter, o.jitter + 1, (b, 2), generator=g)
        return origin + cell * step + jit

    first = corner(torch.ones(b, 2, dtype=torch.long))
    second = corner(NEIGHBOURS[label])
    return first, second, label


class ContextNet(nn.Module):
    """Shared backbone on both patches, late fusion by concatenation, a small MLP over 8 positions."""

    def __init__(self, backbone: nn.Module, hidden: int = 512):
        super().__init__()
        self.backbone = backbone
        d = backbone.out_dim
        self.head = nn.Sequential(nn.Linear(2 * d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 8))

    def forward(self, x: Tensor) -> Tensor:
        """x holds the centre patches then the neighbour patches: (2B, C, p, p) -> (B, 8) logits."""
        f = self.backbone(x)
        first, second = f.chunk(2)
        return self.head(torch.cat([first, second], 1))


class ContextPrediction:
    """The pretext task as the training loop sees it: batches of patch pairs and 8-way targets."""

    name = "context"
    chance = 1 / 8

    def __init__(self, splits: Splits, options: ContextOptions | None = None, precision: str = "fp32"):
        self.splits, self.precision = splits, precision
        self.n_train = len(splits.x_pool)
        self.image_size = splits.x_pool.shape[-1]
        self.options = (options or ContextOptions()).resolved(self.image_size)
        self.canvas = int(round(self.image_size * self.options.scale))
        k = self.canvas // self.image_size  # patches cut from upscaled windows where that gives the same bits
        self.window_scale = k if self.canvas == k * self.image_size and not k & (k - 1) else 1
        if geometry_margin(self.image_size, self.options) < self.options.jitter:
            raise ValueError("context geometry does not fit the image: lower --patch/--gap or raise --scale")

    def make_model(self, backbone: nn.Module) -> nn.Module:
        return ContextNet(backbone)

    def pairs(self, x: Tensor, g: torch.Generator, train: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """uint8 images -> (first, second) float patches in [0, 1] before normalisation, and labels."""
        both, label = self.cut(x, g, train)
        return both[: len(x)], both[len(x):], label

    def cut(self, x: Tensor, g: torch.Generator, train: bool = True) -> tuple[Tensor, Tensor]:
        """uint8 images (B) -> the centre patches then the neighbour patches (2B, float in [0, 1] before
        normalisation), and the labels: the model's input as one tensor."""
        o = self.options
        flip = flip_mask(len(x), g, x.device) if o.flip and train else None  # the whole image is mirrored first
        k = self.window_scale
        if k == 1 and self.canvas != self.image_size:  # a scale not a power of two: mirror, upscale all, then cut
            x = F.interpolate(unit(x if flip is None else flip_where(x, flip)), size=(self.canvas, self.canvas),
                              mode="bilinear", align_corners=False)
            flip = None
        p1, p2, label = sample_positions(len(x), self.canvas, o, g)
        both = unit(upscaled_crop(torch.cat([x, x]), torch.cat([p1, p2]), o.patch, k,  # centres, then neighbours
                                  None if flip is None else torch.cat([flip, flip])))
        both = colour_defence(both, o.colour, g)
        if o.downsample > 0:
            both = random_downsample(both, o.downsample, g, inplace=True)  # `both` is this call's own
        return both, label.to(x.device)

    def normalise(self, patches: Tensor) -> Tensor:
        mean, std = self.splits.mean.view(1, -1, 1, 1), self.splits.std.view(1, -1, 1, 1)
        centre = patches.mean((2, 3), keepdim=True) if self.options.patch_norm else mean
        return (patches - centre).div_(std)

    def batch(self, idx: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        both, label = self.cut(take(self.splits.x_pool, idx), g)
        return self.normalise(both), label

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(out.float(), target)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: Tensor, seed: int = 0, batch_size: int = 1000, shard: bool = False):
        """Patch pairs, labels and predictions for images x, with a fixed seed (comparable across epochs).

        With shard, this rank scores only its part of every chunk. Each rank still cuts the pairs of
        the whole chunk: they come from one seeded stream, so the numbers do not depend on the number
        of processes (cutting is cheap next to the forward pass).
        """
        g = torch.Generator().manual_seed(seed)
        outs, labels = [], []
        with evaluating(model):
            for chunk in x.split(batch_size):
                first, second, label = self.pairs(chunk, g, train=False)
                part = dist.shard_slice(len(label)) if shard else slice(None)
                outs.append(model(self.normalise(torch.cat([first[part], second[part]]))).float())
                labels.append(label[part])
        return torch.cat(outs), torch.cat(labels)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out loss and accuracy; under torchrun over every rank's part of the validation images."""
        return loss_and_accuracy(*self.predict(model, self.splits.x_val, shard=True))

    @torch.no_grad()
    def samples(self, model: nn.Module, k: int = 8) -> dict:
        """A few held-out patch pairs (as uint8) with true and predicted positions, for the report."""
        g = torch.Generator().manual_seed(1)
        spread = torch.linspace(0, len(self.splits.x_val) - 1, k).long()  # data is often class-sorted
        x = self.splits.x_val[spread]
        first, second, label = self.pairs(x, g, train=False)
        with evaluating(model):
            pred = model(self.normalise(torch.cat([first, second]))).argmax(1)
        return {"first": to_uint8(first), "second": to_uint8(second), "true": label.cpu(), "pred": pred.cpu(),
                "positions": POSITIONS}


def upscaled_crop(x: Tensor, corner: Tensor, patch: int, k: int, flip: Tensor | None = None) -> Tensor:
    """The (patch x patch) window at canvas `corner` (B, 2) of x upscaled k times (bilinear), cut per image;
    with `flip`, of x mirrored left to right where flip is true.

    Only a small source window around each patch is upscaled (a pixel of margin on each side): with k a
    power of two (1/k exact in binary) each canvas pixel's bilinear neighbours and weights are those of the
    whole-image upscale, so the patch is the same, bit for bit, for a fraction of the work (on 32 px images,
    k = 2 and 14 px patches: two 9 x 9 windows instead of the 32 x 32 image). A mirrored image's window is
    read from the image in reverse: nothing else is flipped.
    """
    if k == 1:
        return crop_at(x, corner[:, 0], corner[:, 1], patch, patch, flip)
    h, w = x.shape[-2:]
    # the source pixels a patch reads, from one left of corner // k, over every corner modulo k: 9 for 14 px at k = 2
    side = max(math.floor((r + patch - 0.5) / k - 0.5) for r in range(k)) + 3
    side_h, side_w = min(h, side), min(w, side)
    top = (corner[:, 0] // k - 1).clamp(0, h - side_h)
    left = (corner[:, 1] // k - 1).clamp(0, w - side_w)
    window = unit(crop_at(x, top, left, side_h, side_w, flip))  # channels-last: the faster upscale, the same bits
    up = F.interpolate(window, size=(k * side_h, k * side_w), mode="bilinear", align_corners=False)
    return crop_at(up, corner[:, 0] - k * top, corner[:, 1] - k * left, patch, patch)


def colour_defence(x: Tensor, mode: str, g: torch.Generator) -> Tensor:
    """Against chromatic aberration: project out green-magenta, or drop two of three channels."""
    if x.shape[1] != 3 or mode == "none":
        return x
    if mode == "project":
        a = GREEN_MAGENTA.to(x.device)
        # x . a per pixel, added in the order (x * a).sum(1) adds: the same bits, without a 3-channel product
        along = x[:, 0:1] * a[0] + x[:, 1:2] * a[1] + x[:, 2:3] * a[2]
        return x - along * a.view(1, 3, 1, 1)
    if mode == "drop":
        keep = torch.randint(0, 3, (x.shape[0],), generator=g).to(x.device)
        mask = F.one_hot(keep, 3).to(x.dtype)[:, :, None, None]
        kept = (x * mask).sum(1, keepdim=True)
        noise = torch.randn(x.shape, generator=g).to(x.device) * kept.std((2, 3), keepdim=True) / 100
        return mask * x + (1 - mask) * (kept.mean((2, 3), keepdim=True) + noise)
    raise ValueError(f"unknown colour defence {mode}; use project, drop or none")


def random_downsample(x: Tensor, share: float, g: torch.Generator, inplace: bool = False) -> Tensor:
    """Down-and-up sample a random share of patches to a random size in [p/2, p) (one size a batch);
    inplace: into x itself (a fresh batch of the caller's), without a copy."""
    p = x.shape[-1]
    size = int(torch.randint(max(2, p // 2), p, (1,), generator=g))
    pick = (torch.rand(x.shape[0], generator=g) < share).nonzero().flatten().to(x.device)
    if len(pick) == 0:
        return x
    # down in NCHW, up in channels-last: each layout's faster kernel, the same bits
    low = F.interpolate(x.index_select(0, pick).contiguous(), size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    x = x if inplace else x.clone()
    x[pick] = F.interpolate(low.contiguous(memory_format=torch.channels_last), size=(p, p), mode="bilinear",
                            align_corners=False)
    return x

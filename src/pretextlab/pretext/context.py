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
The canvas is never materialised: each patch is sampled from the image at canvas resolution.

Large photographs (a shorter side of PAPER_MIN px or more) and non-square images (segmentation's) get the
paper's own geometry (section 3), `geometry="paper"`: no upscaling; 96 px patches with 48 px gaps and up to 7 px
of jitter on images of 150,000 pixels or more (the paper resized its images to 150K-450K pixels), every length
scaled by sqrt(pixels / 150,000) on smaller images (160 x 120: 34 px patches, 17 px gaps, 3 px jitter); and,
as in the paper, only the two patches of a pair must lie inside the image, not the whole 3 x 3 grid: the pair's
box is placed uniformly at random where it fits.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..data import Splits
from ..data.augment import crop_at, flip_mask, take, unit
from ..models import evaluating
from .common import loss_and_accuracy, to_uint8

POSITIONS = ["top-left", "top", "top-right", "left", "right", "bottom-left", "bottom", "bottom-right"]
# (row, col) of the 8 neighbours in the 3x3 grid, in label order; the centre is (1, 1).
NEIGHBOURS = torch.tensor([(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)])
GREEN_MAGENTA = torch.tensor([-1.0, 2.0, -1.0]) / 6**0.5
PAPER_MIN = 64  # shorter side (px) from which the paper's geometry is used
PAPER_PIXELS, PAPER_PATCH, PAPER_JITTER = 150_000, 96, 7  # Doersch et al. 2015, section 3


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
    geometry: str = "auto"  # canvas (small images: upscaled, whole grid inside) | paper | auto (by image size)

    def resolved(self, image_size: int, hw: tuple[int, int] | None = None) -> "ContextOptions":
        """Concrete sizes for this image size (the 0 / -1 defaults filled in); hw: (H, W) of the images, which
        decides the geometry under auto (a shorter side of PAPER_MIN px or more, or any non-square image: the
        paper's; small square images: the upscaled canvas)."""
        hw = hw or (image_size, image_size)
        paper = min(hw) >= PAPER_MIN or hw[0] != hw[1]  # the canvas is square: other aspects take the paper's
        geometry = self.geometry if self.geometry != "auto" else "paper" if paper else "canvas"
        if geometry not in ("canvas", "paper"):
            raise ValueError(f"geometry {self.geometry!r} is unknown; use auto, canvas or paper")
        if geometry == "paper":
            k = min(1.0, (hw[0] * hw[1] / PAPER_PIXELS) ** 0.5)
            patch = self.patch or max(8, round(PAPER_PATCH * k))
            return dataclasses.replace(self, geometry="paper", scale=1.0, patch=patch,
                                       gap=self.gap if self.gap >= 0 else patch // 2,
                                       jitter=self.jitter if self.jitter >= 0 else max(1, round(PAPER_JITTER * k)))
        scale = self.scale or max(1.0, 64 / image_size)
        canvas = int(round(image_size * scale))
        patch = self.patch or max(4, round(canvas * 14 / 64))
        gap = self.gap if self.gap >= 0 else patch // 2
        jitter = self.jitter if self.jitter >= 0 else max(1, canvas // 32)
        return dataclasses.replace(self, scale=scale, patch=patch, gap=gap, jitter=jitter, geometry="canvas")


def geometry_margin(image_size: int, o: ContextOptions) -> int:
    """Free pixels on each side of the grid; must leave room for the jitter."""
    canvas = int(round(image_size * o.scale))
    return (canvas - (3 * o.patch + 2 * o.gap)) // 2


def sample_pairs(b: int, hw: tuple[int, int], o: ContextOptions, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """The paper's placement: top-left corners of the centre patch and a random neighbour, and its label, with
    only the pair (not the whole grid) inside the (H, W) image. The pair's box, jitter room included, is put at a
    uniformly random place where it fits; then each patch is jittered inside that room."""
    step = o.patch + o.gap
    label = torch.randint(0, 8, (b,), generator=g)
    d = NEIGHBOURS[label] - 1  # (dr, dc) of the neighbour from the centre, each in {-1, 0, 1}
    box = o.patch + d.abs() * step + 2 * o.jitter  # (B, 2): the pair's height and width with jitter room
    room = torch.tensor(hw) - box + 1
    if (room < 1).any():
        raise ValueError(f"patch {o.patch}, gap {o.gap}, jitter {o.jitter} do not fit a {hw[1]} x {hw[0]} image")
    origin = (torch.rand(b, 2, generator=g, dtype=torch.float64) * room).long() + o.jitter

    def corner(cell: Tensor) -> Tensor:
        return origin + cell * step + torch.randint(-o.jitter, o.jitter + 1, (b, 2), generator=g)

    return corner((-d).clamp_min(0)), corner(d.clamp_min(0)), label


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

    @staticmethod
    def work_per_image(options: dict) -> float:
        return 0.4  # a pair of small patches: about 0.4 of a whole image's forward and backward pass

    def __init__(self, splits: Splits, options: ContextOptions | None = None, precision: str = "fp32"):
        self.splits, self.precision = splits, precision
        self.n_train = len(splits.x_pool)
        self.image_size = splits.x_pool.shape[-1]
        self.hw = tuple(int(v) for v in splits.x_pool.shape[-2:])
        self.options = (options or ContextOptions()).resolved(self.image_size, self.hw)
        self.canvas = int(round(self.image_size * self.options.scale))
        o = self.options
        if o.geometry == "paper" and min(self.hw) < 2 * o.patch + o.gap + 2 * o.jitter:
            raise ValueError(f"context geometry (patch {o.patch}, gap {o.gap}, jitter {o.jitter}) does not fit "
                             f"{self.hw[1]} x {self.hw[0]} images: lower patch or gap")
        if o.geometry == "canvas" and geometry_margin(self.image_size, o) < o.jitter:
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
        if o.geometry == "paper":  # the pixels themselves, any aspect: one gather
            p1, p2, label = sample_pairs(len(x), self.hw, o, g)
            c = torch.cat([p1, p2])
            both = unit(crop_at(x.repeat(2, 1, 1, 1), c[:, 0], c[:, 1], o.patch, o.patch,
                                None if flip is None else flip.repeat(2)))
        else:
            p1, p2, label = sample_positions(len(x), self.canvas, o, g)
            both = sample_patches(x, torch.stack([p1, p2], 1), o.patch, self.canvas, flip)
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


def sample_patches(x: Tensor, corners: Tensor, patch: int, canvas: int, flip: Tensor | None = None) -> Tensor:
    """The (patch x patch) windows at canvas `corners` (B, n, 2) of the images x (B) upscaled to a
    canvas x canvas image (bilinear), in one grid_sample: (n * B) float patches in [0, 1], the images'
    first patches, then their second ones, ...; with `flip`, of each image mirrored left to right where
    flip is true.

    Canvas pixel r lies at (2r + 1) / canvas - 1 in grid_sample's [-1, 1] coordinates, at any image
    size: sampling there is what F.interpolate(x, size=canvas) and cutting would give (to float
    rounding; exactly the same positions and weights for a power-of-two canvas), without making the
    canvas or a window of it. Mirroring negates the x coordinate. Border padding repeats the edge
    pixel, as interpolate's clamping does. Without upscaling (canvas = image size) the patches are cut
    as they are.
    """
    b, n = corners.shape[:2]
    if canvas == x.shape[-1]:  # no upscaling: the pixels themselves, by one gather (exact at any size)
        c = corners.transpose(0, 1).reshape(n * b, 2)
        return unit(crop_at(x.repeat(n, 1, 1, 1), c[:, 0], c[:, 1], patch, patch,
                            None if flip is None else flip.repeat(n)))
    pixel = corners.to(x.device)[..., None] + torch.arange(patch, device=x.device)  # (B, n, 2, patch) canvas px
    at = (2 * pixel + 1) / canvas - 1
    rows, cols = at[:, :, 0], at[:, :, 1]
    if flip is not None:
        cols = torch.where(flip.to(x.device)[:, None, None], -cols, cols)
    grid = torch.stack([cols[:, :, None, :].expand(b, n, patch, patch),  # (x, y) per output pixel
                        rows[:, :, :, None].expand(b, n, patch, patch)], -1)
    out = F.grid_sample(unit(x), grid.view(b, n * patch, patch, 2), mode="bilinear", padding_mode="border",
                        align_corners=False)  # (B, C, n * patch, patch): an image's patches one below the other
    return torch.cat(out.split(patch, 2))


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
    inplace: into x itself (a fresh batch of the caller's), without a copy.

    Antialiased bilinear down- and bilinear up-sampling are both linear and separable, so the round trip
    is one p x p matrix per axis (`blur_matrix`): two small matrix products instead of two resampling
    passes, several times cheaper on a CPU and equal to F.interpolate down then up to float rounding.
    """
    p = x.shape[-1]
    size = int(torch.randint(max(2, p // 2), p, (1,), generator=g))
    pick = (torch.rand(x.shape[0], generator=g) < share).nonzero().flatten().to(x.device)
    if len(pick) == 0:
        return x
    blur = blur_matrix(p, size).to(x.device)
    x = x if inplace else x.clone()
    return x.index_copy_(0, pick, blur @ x.index_select(0, pick) @ blur.t())


@functools.lru_cache(maxsize=None)
def blur_matrix(p: int, size: int) -> Tensor:
    """R (p x p) with R @ v = v resampled to `size` (bilinear, antialiased) and back to p (bilinear),
    for any vector v along one axis: F.interpolate applied to the basis vectors."""
    basis = torch.eye(p).view(p, 1, 1, p)  # p images of 1 x p pixels
    low = F.interpolate(basis, size=(1, size), mode="bilinear", antialias=True, align_corners=False)
    back = F.interpolate(low, size=(1, p), mode="bilinear", align_corners=False)
    return back.view(p, p).t().contiguous()  # column i: where basis vector i goes

"""SimCLR: contrastive learning of two augmented views (Chen, Kornblith, Norouzi, Hinton 2020, arXiv 2002.05709).

Every image of a batch is augmented twice; a projection head maps the backbone's features to a
small vector, and the NT-Xent loss asks each view to pick its partner among the other 2B - 1
views of the batch (cosine similarity / temperature, softmax cross-entropy). What survives all
the augmentations (object identity, not position, colour or scale) is what the features keep.

Choices, after the paper's CIFAR-10 setup (in its appendix):
- augmentations: random resized crop (area 8-100 %, aspect 3/4-4/3), horizontal flip, colour
  jitter of strength 0.5 applied with probability 0.8, random grayscale with probability 0.2,
  and no Gaussian blur, which the paper leaves out at CIFAR's 32 px. The paper shows
  crop plus colour is the pair that matters: crops alone can be solved by colour histograms;
- temperature 0.5, the value the paper found best on CIFAR-10;
- projection head: Linear-BN-ReLU-Linear to 128 dimensions; the backbone's pooled features,
  before the head, are what fine-tuning gets (the paper: they transfer better than the head's).

The augmentations run on a whole batch of tensors at once with one generator (no per-image
loop): one grid_sample for all crops, per-image factors broadcast for the colour changes. Colour
jitter applies brightness, contrast, saturation, hue in that fixed order (torchvision shuffles the
order per image) and shifts hue by rotating the chroma plane of YIQ, a linear stand-in for HSV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..data import Splits
from ..data.augment import flip_mask, take, unit
from ..models import evaluating
from ..probe import spread_subset
from .common import to_uint8

LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601 grayscale, as torchvision
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@dataclass
class SimCLROptions:
    temperature: float = 0.5
    proj_dim: int = 128  # output size of the projection head
    min_scale: float = 0.08  # smallest crop area, as a share of the image
    jitter: float = 0.5  # colour jitter strength s: brightness, contrast, saturation +-0.8s, hue +-0.2s
    jitter_p: float = 0.8  # share of views colour-jittered
    gray_p: float = 0.2  # share of views turned grayscale
    flip: bool = True
    eval_batch: int = 256  # held-out views are retrieved among 2 x this many (chance 1 / (2b - 1))

    def __post_init__(self) -> None:
        if self.temperature <= 0 or self.proj_dim < 1 or self.eval_batch < 2:
            raise ValueError("temperature must be > 0, proj_dim >= 1 and eval_batch >= 2")
        if not (0 < self.min_scale <= 1 and self.jitter >= 0 and 0 <= self.jitter_p <= 1 and 0 <= self.gray_p <= 1):
            raise ValueError("min_scale must be in (0, 1], jitter >= 0, jitter_p and gray_p in [0, 1]")


# ----------------------------------------------------------------------------------------------
# Batched augmentations on float images in [0, 1]


def gray(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 1, H, W) luma; single-channel images are their own gray."""
    return x if x.shape[1] != 3 else (x * LUMA.to(x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


def resized_crop(x: Tensor, min_scale: float, g: torch.Generator, flip: bool = False) -> Tensor:
    """Random resized crop of every image, back to its size, in one grid_sample; with flip, a random half
    of the crops mirrored left to right by the same sampling grid (no pass of its own).

    Area share uniform in [min_scale, 1], aspect ratio log-uniform in [3/4, 4/3], as torchvision;
    a side that would exceed the image is clipped to it (torchvision re-draws instead).
    """
    b = len(x)
    area = torch.empty(b).uniform_(min_scale, 1.0, generator=g)
    ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g).exp()
    w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # sides, shares of the image
    cx = (torch.rand(b, generator=g) * 2 - 1) * (1 - w)  # crop centre in [-1, 1] image coordinates
    cy = (torch.rand(b, generator=g) * 2 - 1) * (1 - h)
    sx = torch.where(flip_mask(b, g), -w, w) if flip else w  # a mirrored crop reads its columns right to left
    zero = torch.zeros(b)
    theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1).to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(x: Tensor, strength: float, p: float, g: torch.Generator) -> Tensor:
    """Brightness, contrast, saturation and hue changes with per-image random amounts, on a share p of images."""
    b = len(x)
    on = torch.rand(b, generator=g) < p

    def amount(spread: float) -> Tensor:  # uniform in [-spread, spread]; 0 for images left alone
        a = (torch.rand(b, generator=g) * 2 - 1) * spread
        return torch.where(on, a, 0.0).to(x.device).view(b, 1, 1, 1)

    # in place after the first product: the same operations in the same order (the same bits), without a
    # new batch-sized tensor per operation, which is most of this function's cost on a CPU
    x = (x * (1 + amount(0.8 * strength))).clamp_(0, 1)  # brightness
    m = gray(x).mean((1, 2, 3), keepdim=True)
    x.sub_(m).mul_(1 + amount(0.8 * strength)).add_(m).clamp_(0, 1)  # contrast: m + (x - m) * k
    if x.shape[1] != 3:
        return x
    y = gray(x)
    x.sub_(y).mul_(1 + amount(0.8 * strength)).add_(y).clamp_(0, 1)  # saturation: y + (x - y) * k
    return hue_rotate(x, amount(0.2 * strength).flatten() * 2 * math.pi)


def hue_rotate(x: Tensor, angle: Tensor) -> Tensor:
    """Turn each RGB image's hue by angle[i] radians: rotate the (I, Q) chroma plane of YIQ, keep luma Y."""
    c, s = angle.cos(), angle.sin()
    rot = torch.zeros(len(x), 3, 3, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    yiq = RGB_TO_YIQ.to(x.device)
    m = torch.linalg.inv(yiq) @ rot @ yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x).clamp_(0, 1)


def random_grayscale(x: Tensor, p: float, g: torch.Generator, inplace: bool = False) -> Tensor:
    """A share p of the images turned gray (only those are read and written); inplace: into x itself."""
    on = (torch.rand(len(x), generator=g) < p).nonzero().flatten().to(x.device)
    x = x if inplace else x.clone()
    x[on] = gray(x[on]).expand(-1, x.shape[1], -1, -1)  # the same calls for any batch (no branch on the draw)
    return x


def simclr_augment(x: Tensor, o: SimCLROptions, g: torch.Generator) -> Tensor:
    """One random view of every uint8 image of a batch: float in [0, 1], same shape."""
    x = resized_crop(unit(x), o.min_scale, g, flip=o.flip)
    return random_grayscale(colour_jitter(x, o.jitter, o.jitter_p, g), o.gray_p, g, inplace=True)  # a fresh batch


# ----------------------------------------------------------------------------------------------
# Loss and model


def similarity_logits(z: Tensor, temperature: float) -> Tensor:
    """Cosine similarities of all 2B projections / temperature, each with itself excluded: (2B, 2B)."""
    z = F.normalize(z.float(), dim=1)
    sim = z @ z.T / temperature
    return sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))


def positives(b: int, device: torch.device | str | None = None) -> Tensor:
    """Index of each view's partner when the batch holds views 1 of B images, then views 2."""
    i = torch.arange(b, device=device)
    return torch.cat([i + b, i])


class SimCLRNet(nn.Module):
    """Backbone -> projection head; the output is the similarity logits, so that cross-entropy against
    `positives` is NT-Xent and argmax is the retrieved view."""

    def __init__(self, backbone: nn.Module, proj_dim: int, temperature: float):
        super().__init__()
        self.backbone = backbone
        d = backbone.out_dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(inplace=True), nn.Linear(d, proj_dim))
        self.temperature = temperature

    def forward(self, x: Tensor) -> Tensor:
        """x holds views 1 then views 2 of B images: (2B, C, H, W) -> (2B, 2B) logits."""
        return similarity_logits(self.head(self.backbone(x)), self.temperature)


class SimCLR:
    """The pretext task as the training loop sees it: two views per image, the partner's index as target."""

    name = "simclr"

    @staticmethod
    def work_per_image(options: dict) -> float:
        return 2.0  # two views of every image

    def __init__(self, splits: Splits, options: SimCLROptions | None = None, precision: str = "fp32"):
        self.splits, self.options, self.precision = splits, options or SimCLROptions(), precision
        self.n_train = len(splits.x_pool)
        self.eval_batch = min(self.options.eval_batch, len(splits.x_val))
        if self.eval_batch < 2:
            raise ValueError("simclr needs at least 2 validation images; raise --val-fraction")
        self.chance = 1 / (2 * self.eval_batch - 1)

    def make_model(self, backbone: nn.Module) -> nn.Module:
        return SimCLRNet(backbone, self.options.proj_dim, self.options.temperature)

    def views(self, x: Tensor, g: torch.Generator) -> Tensor:
        """uint8 images (B) -> their two views (2B), float in [0, 1] before normalisation."""
        u = unit(x)  # converted once, for both views
        return simclr_augment(torch.cat([u, u]), self.options, g)

    def normalise(self, v: Tensor) -> Tensor:
        return (v - self.splits.mean.view(1, -1, 1, 1)).div_(self.splits.std.view(1, -1, 1, 1))

    def batch(self, idx: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        x = take(self.splits.x_pool, idx)
        return self.normalise(self.views(x, g)), positives(len(x), x.device)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(out.float(), target)

    def evaluate(self, model: nn.Module, seed: int = 0) -> dict[str, float]:
        """Held-out NT-Xent and top-1 retrieval of the partner view, in whole batches of eval_batch
        images with seeded views (comparable across epochs); a remainder smaller than a batch is left out.
        Under torchrun each rank scores every world_size-th batch; every rank draws every batch's views,
        from one seeded stream, so the numbers do not depend on the number of ranks."""
        g = torch.Generator().manual_seed(seed)
        b = self.eval_batch
        losses, hits = [], []
        with evaluating(model):
            for i, chunk in enumerate(self.splits.x_val[: len(self.splits.x_val) // b * b].split(b)):
                views = self.views(chunk, g)
                if i % dist.world_size() != dist.rank():
                    continue
                logits = model(self.normalise(views)).float()
                target = positives(b, logits.device)
                losses.append(F.cross_entropy(logits, target))
                hits.append((logits.argmax(1) == target).float().mean())
        none = torch.zeros((), device=self.splits.x_val.device)  # a rank with no batch adds nothing
        loss, _ = dist.mean(torch.stack(losses).mean() if losses else none, len(losses))
        accuracy, _ = dist.mean(torch.stack(hits).mean() if hits else none, len(hits))
        return {"loss": loss, "accuracy": accuracy}

    def samples(self, model: nn.Module, k: int = 8) -> dict:
        """View pairs of a few held-out images, and which image each first view finds nearest among all 2k views."""
        x = spread_subset(self.splits.x_val, k)
        k = len(x)
        v = self.views(x, torch.Generator().manual_seed(1))
        with evaluating(model):
            nearest = model(self.normalise(v))[:k].argmax(1).cpu() % k  # the image whose view was retrieved
        titles = [f"#{i}: finds its pair" if j == i else f"#{i}: finds #{j}" for i, j in enumerate(nearest.tolist())]
        return {"first": to_uint8(v[:k]), "second": to_uint8(v[k:]), "true": torch.arange(k), "pred": nearest,
                "titles": titles, "panel_names": ["view 1", "view 2"]}

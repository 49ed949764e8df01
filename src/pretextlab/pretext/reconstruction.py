"""Masked-image reconstruction: the backbone encodes an image with hidden patches, a light decoder paints them back.

The task of context encoders (Pathak et al. 2016, arXiv 1604.07379: inpaint hidden regions filled
with the mean colour, L2 loss on them) with the masking of masked autoencoders (He et al. 2021,
arXiv 2111.06377: many small random patches hidden, the loss on hidden pixels only, a decoder much
lighter than the encoder so that the encoder has to do the understanding). To fill a hole the
network must know what usually surrounds what: shapes continue, objects have parts.

Details, for a CNN backbone on small images:
- the image (after the supervised runs' translation and flip) is cut into a grid of square patches
  (default 1/8 of the side: 4 px at 32x32, 64 patches; where the patch does not divide the side, the
  last row and column are cut at the border) and a random 60 % of them are hidden, the
  ratio masked-image modelling uses for CNNs (ConvNeXt V2, Woo et al. 2023, arXiv 2301.00808);
  hidden pixels are set to 0 after normalisation, i.e. the dataset's mean colour;
- the decoder reads the backbone's last spatial feature map (models.feature_map): one 3x3 conv,
  then a 1x1 conv giving every cell's stride x stride block of pixels (pixel shuffle), so the
  decoder cannot do more than locally decode what the encoder put in each cell;
- loss: mean squared error over the hidden pixels of the normalised image; reconstructing visible
  pixels would only teach copying. Predicting the mean colour scores about 1 (unit variance).

Held-out metrics: that loss, and the PSNR of hidden pixels in [0, 1] units (no accuracy: there is
no class to be right about).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .. import dist
from ..data import Splits
from ..data.augment import augment, normalize, square_crop, take
from ..models import evaluating, feature_map
from ..probe import spread_subset
from .common import to_uint8


@dataclass
class ReconstructionOptions:
    mask_ratio: float = 0.6  # share of patches hidden
    patch: int = 0  # side of a hidden square in px (0: image size / 8, at least 2)
    hidden: int = 256  # width of the decoder's 3x3 conv
    pad: int = -1  # random translation in px (-1: image size / 8, 4 px at 32x32)
    flip: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1 or self.hidden < 1:
            raise ValueError("mask_ratio must be between 0 and 1 (exclusive) and hidden >= 1")


def random_mask(b: int, cells: int, ratio: float, patch: int, g: torch.Generator) -> Tensor:
    """(B, 1, cells * patch, cells * patch) bool: round(ratio * cells^2) random patches per image are True (hidden)."""
    n = cells * cells
    k = min(n - 1, max(1, round(ratio * n)))
    order = torch.rand(b, n, generator=g).argsort(1)
    hidden = torch.zeros(b, n, dtype=torch.bool).scatter_(1, order[:, :k], True).view(b, 1, cells, cells)
    return hidden.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


class Hidden(NamedTuple):
    """A reconstruction target: the clean (normalised) image and where it was hidden (1.0 = hidden)."""

    image: Tensor
    mask: Tensor  # (B, 1, H, W), in the image's dtype


def masked_mse(out: Tensor, target: Hidden) -> Tensor:
    """Mean squared error over the hidden pixels."""
    x, m = target
    return ((out.float() - x) ** 2 * m).sum() / (m.sum() * x.shape[1]).clamp_min(1)


class ReconstructionNet(nn.Module):
    """Backbone's feature map -> 3x3 conv -> 1x1 conv to stride^2 pixels per cell -> pixel shuffle."""

    def __init__(self, backbone: nn.Module, channels: int, image_size: int, hidden: int = 256):
        super().__init__()
        self.backbone, self.image_size = backbone, image_size
        with evaluating(backbone):  # the map's size decides how many pixels each cell must paint
            width, _, cells = feature_map(backbone, torch.zeros(1, channels, image_size, image_size)).shape[1:]
        stride = math.ceil(image_size / cells)  # ceil-mode pooling can leave a partial last cell: cropped below
        self.decoder = nn.Sequential(  # the map's width: a pooled vector can be wider (a head after pooling)
            nn.Conv2d(width, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.GELU(),
            nn.Conv2d(hidden, channels * stride * stride, 1), nn.PixelShuffle(stride))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(feature_map(self.backbone, x))[..., : self.image_size, : self.image_size]


class Reconstruction:
    """The pretext task as the training loop sees it: masked images in, the clean image and its mask as target."""

    name = "reconstruction"
    chance = None  # not a classification

    @staticmethod
    def work_per_image(options: dict) -> float:
        return 1.2  # the image and a small decoder

    def __init__(self, splits: Splits, options: ReconstructionOptions | None = None, precision: str = "fp32"):
        self.splits, self.options, self.precision = splits, options or ReconstructionOptions(), precision
        self.n_train = len(splits.x_pool)
        self.image_size = size = min(splits.x_pool.shape[-2:])  # non-square images: a square of this side is cut
        self.patch = self.options.patch or max(2, size // 8)
        if self.patch >= size:
            raise ValueError(f"patch {self.patch} must be smaller than the {size} px side of the images "
                             f"(e.g. {max(2, size // 8)})")
        # A side the patch does not divide (28 px Fashion-MNIST, 3 px patches): the grid overhangs and
        # its last row and column of patches are cut at the border.
        self.cells = math.ceil(size / self.patch)
        self.pad = self.options.pad if self.options.pad >= 0 else max(1, size // 8)

    def make_model(self, backbone: nn.Module) -> nn.Module:
        return ReconstructionNet(backbone, self.splits.x_pool.shape[1], self.image_size, self.options.hidden)

    def masked(self, x: Tensor, g: torch.Generator, train: bool = True) -> tuple[Tensor, Hidden]:
        """uint8 images -> (normalised images with hidden patches at 0, the clean image and its mask); a non-square
        image is first cut to a square of its shorter side (at random when training, in the centre otherwise)."""
        x = square_crop(x, g if train else None)
        if train:
            x = augment(x, g, self.pad, self.options.flip)
        x = normalize(x, self.splits.mean, self.splits.std)
        size = self.image_size
        m = random_mask(len(x), self.cells, self.options.mask_ratio, self.patch, g)[..., :size, :size].to(x.device)
        return x.masked_fill(m, 0.0), Hidden(x, m.to(x.dtype))

    def batch(self, idx: Tensor, g: torch.Generator) -> tuple[Tensor, Hidden]:
        return self.masked(take(self.splits.x_pool, idx), g)

    def loss(self, out: Tensor, target: Hidden) -> Tensor:
        return masked_mse(out, target)

    def evaluate(self, model: nn.Module, seed: int = 0, batch_size: int = 500) -> dict[str, float]:
        """Masked MSE (normalised units) and PSNR (dB, pixels in [0, 1]) over the hidden pixels of
        the validation images, with seeded masks (comparable across epochs). Under torchrun each rank
        scores its part of every chunk; every rank draws the whole chunk's masks, from one seeded stream,
        so the numbers do not depend on the number of ranks."""
        g = torch.Generator().manual_seed(seed)
        std = self.splits.std.view(1, -1, 1, 1)
        se = se01 = hidden = 0.0
        with evaluating(model):
            for chunk in self.splits.x_val.split(batch_size):
                inp, target = self.masked(chunk, g, train=False)
                part = dist.shard_slice(len(chunk))
                if part.start == part.stop:
                    continue
                inp, clean, m = inp[part], target.image[part], target.mask[part]
                diff = (model(inp).float() - clean) * m
                se += float((diff**2).sum())
                se01 += float(((diff * std) ** 2).sum())
                hidden += float(m.sum()) * diff.shape[1]
        totals = torch.tensor([se, se01, hidden], dtype=torch.float64, device=self.splits.x_val.device)
        se, se01, hidden = dist.all_sum(totals).tolist()
        return {"loss": se / hidden, "psnr": psnr(se01 / hidden)}

    def samples(self, model: nn.Module, k: int = 8) -> dict:
        """A few held-out images: original, masked input, and the reconstruction (hidden patches
        predicted, visible ones pasted from the input, as MAE shows them), with each image's PSNR."""
        x = spread_subset(self.splits.x_val, k)
        inp, target = self.masked(x, torch.Generator().manual_seed(1), train=False)
        with evaluating(model):
            pred = model(inp).float()
        clean, m = target.image, target.mask.bool()
        mean, std = self.splits.mean.view(1, -1, 1, 1), self.splits.std.view(1, -1, 1, 1)
        recon = torch.where(m, pred, clean) * std + mean
        mse = ((recon - (clean * std + mean)) ** 2).sum((1, 2, 3)) / (m.sum((1, 2, 3)) * clean.shape[1])
        return {"first": to_uint8(inp * std + mean), "original": square_crop(x).cpu(),
                "reconstruction": to_uint8(recon), "panels": ["original", "first", "reconstruction"],
                "panel_names": ["original", "masked input", "reconstruction"],
                "titles": [f"PSNR {psnr(float(e)):.1f} dB" for e in mse]}


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error on pixels in [0, 1]."""
    return 10 * math.log10(1 / max(mse, 1e-12))

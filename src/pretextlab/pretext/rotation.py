"""Rotation prediction (Gidaris, Singh, Komodakis 2018, arXiv 1803.07728).

Rotate an image by 0, 90, 180 or 270 degrees and have the backbone plus a linear head say which.
To tell which way is up the network has to find the objects and their orientation (heads above
feet, sky above ground), and unlike hand-made patch tasks the rotations leave no low-level trace
(no borders, no interpolation) a shortcut could use.

Scheme: by default every image of a batch appears in all four rotations in the same batch, as the
paper trains (its implementation details report this works better than one random rotation per
image): each image is its own control for the other three, and the labels are exactly balanced. The
price is four forward passes per image, so `all_rotations=False` (one random rotation each, the
same cost per image as fine-tuning) is there for short budgets.

Images are first augmented like the supervised runs (random translation, horizontal flip): a
mirrored image is still upright, so the label stays well defined. A non-square image (segmentation's)
is first cut to a square of its shorter side, at a random place (in the centre when evaluating), since
a quarter turn of a landscape image would give away its angle by its shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..data import Splits
from ..data.augment import augment, normalize, square_crop, take
from ..models import Classifier, evaluating
from ..probe import spread_subset
from .common import loss_and_accuracy

ANGLES = ["0°", "90°", "180°", "270°"]  # label k: rotated k quarter turns counter-clockwise


@dataclass
class RotationOptions:
    all_rotations: bool = True  # all 4 rotations of each image per batch (paper) | one random rotation each
    flip: bool = True  # random horizontal flip before rotating
    pad: int = -1  # random translation in px before rotating (-1: image size / 8, 4 px at 32x32)


def rotate(x: Tensor, k: Tensor) -> Tensor:
    """Rotate each image x[i] by k[i] quarter turns counter-clockwise (a whole batch, no loop over images)."""
    turns = torch.stack([x.rot90(q, (2, 3)) for q in range(4)])  # (4, B, C, H, W)
    return turns[k.to(x.device), torch.arange(len(x), device=x.device)]


def rotations(x: Tensor, all_rotations: bool, g: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Rotated copies of square images x and their labels: all four per image (4B, grouped by angle)
    or one random rotation per image (B)."""
    if all_rotations:
        k = torch.arange(4).repeat_interleave(len(x))
        return torch.cat([x.rot90(q, (2, 3)) for q in range(4)]), k.to(x.device)
    k = torch.randint(0, 4, (len(x),), generator=g)
    return rotate(x, k), k.to(x.device)


class Rotation:
    """The pretext task as the training loop sees it: rotated images and 4-way targets."""

    name = "rotation"
    chance = 1 / 4

    @staticmethod
    def work_per_image(options: dict) -> float:
        return 4.0 if options.get("all_rotations", True) else 1.0  # every rotation of an image, or one

    def __init__(self, splits: Splits, options: RotationOptions | None = None, precision: str = "fp32"):
        h = min(splits.x_pool.shape[-2:])  # the side of the square cut from each image
        self.splits, self.options, self.precision = splits, options or RotationOptions(), precision
        self.n_train = len(splits.x_pool)
        self.pad = self.options.pad if self.options.pad >= 0 else max(1, h // 8)
        if self.pad >= h:
            raise ValueError(f"pad {self.pad} is not smaller than the {h} px images; use e.g. {h // 8}")

    def make_model(self, backbone: nn.Module) -> nn.Module:
        return Classifier(backbone, 4)  # a linear head: the features must carry the answer

    def batch(self, idx: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        x = augment(square_crop(take(self.splits.x_pool, idx), g), g, self.pad, self.options.flip)
        x, k = rotations(x, self.options.all_rotations, g)
        return normalize(x, self.splits.mean, self.splits.std), k

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(out.float(), target)

    def predict(self, model: nn.Module, x: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
        """Logits and labels for all four rotations of every image x (un-augmented): no sampling noise."""
        rotated = [rotations(square_crop(chunk), True) for chunk in x.split(batch_size)]
        with evaluating(model):
            logits = torch.cat([model(normalize(r, self.splits.mean, self.splits.std)).float() for r, _ in rotated])
        return logits, torch.cat([k for _, k in rotated])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out loss and accuracy over all four rotations; under torchrun each rank scores its share
        of the validation images (no sampling, so the numbers do not depend on the number of ranks)."""
        return loss_and_accuracy(*self.predict(model, self.splits.x_val[dist.shard_slice(len(self.splits.x_val))]))

    def samples(self, model: nn.Module, k: int = 8) -> dict:
        """A few held-out images, each in another rotation, with true and predicted angles (for the report)."""
        x = square_crop(spread_subset(self.splits.x_val, k))
        angle = torch.arange(len(x)) % 4
        shown = rotate(x, angle)
        with evaluating(model):
            pred = model(normalize(shown, self.splits.mean, self.splits.std)).argmax(1)
        return {"first": shown.cpu(), "true": angle, "pred": pred.cpu(), "positions": ANGLES}

"""The naive reference pipeline: what a tutorial user would write, for `pretextlab bench` to race against.

torchvision's `ImageFolder` decodes every JPEG again at every epoch, per-sample PIL transforms crop,
flip and normalise one image at a time, and a `DataLoader(num_workers=2)` collates the results into
fp32 NCHW batches; the training and evaluation loops are the textbook ones, with the same optimizer
and loss as pretextlab's. None of this is used by pretextlab's own training: it lives apart from
the bench's driver (run.py) so that the baseline reads as the code it stands for, and can be checked as such.

`write_synthetic_folder` is the data bench measures on when it is given none: real JPEGs on disk,
so the baseline pays the decoding it would pay on real images. torchvision and PIL are imported
only when a baseline is built.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Splits
from ..data.sources import Dataset
from ..errors import UserError
from ..train import TrainConfig, make_optimizer

if TYPE_CHECKING:
    from torch.utils.data import DataLoader


@dataclass
class NaiveSets:
    """The baseline's datasets: the same image folder read twice, with training and evaluation transforms."""

    train: Any  # torchvision ImageFolder with the training transform
    val: Any  # the same images with the evaluation transform
    val_indices: list[int]

    def train_batches(self, bs: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled batches forever; each new epoch starts new workers, as a tutorial's loop does."""
        from torch.utils.data import DataLoader

        loader = DataLoader(self.train, batch_size=bs, shuffle=True, num_workers=2)
        return itertools.chain.from_iterable(itertools.repeat(loader))

    def eval_loader(self, n: int, bs: int) -> DataLoader:
        """The first n validation images in order, as a tutorial's evaluation loader serves them."""
        from torch.utils.data import DataLoader, Subset

        return DataLoader(Subset(self.val, self.val_indices[:n]), batch_size=bs, shuffle=False, num_workers=2)


def class_folder(root: Path) -> Path:
    """The folder ImageFolder reads: root/train where there is one, else root itself."""
    return root / "train" if (root / "train").is_dir() else root


def check_image_folder(root: Path) -> Path:
    """`root` if the naive baseline can read it with ImageFolder (directly or its train/), else a UserError."""
    folder = class_folder(root)
    if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
        raise UserError(f"--data {root}: bench needs an image folder (one sub-folder per class, or a root with "
                        "train/) so the naive baseline can read it with torchvision's ImageFolder")
    return root


def image_folder_sets(root: Path, ds: Dataset, splits: Splits) -> NaiveSets:
    """ImageFolder datasets of the same folder, with the textbook CIFAR transforms."""
    from PIL import Image
    from torchvision import datasets
    from torchvision import transforms as T

    folder = class_folder(root)
    size = ds.image_size
    train = datasets.ImageFolder(str(folder))
    with Image.open(train.samples[0][0]) as im:
        resize = [T.Resize(size), T.CenterCrop(size)] if im.size != (size, size) else []
    gray = [T.Grayscale(1)] if ds.channels == 1 else []
    norm = [T.ToTensor(), T.Normalize(splits.mean.tolist(), splits.std.tolist())]
    train.transform = T.Compose(gray + resize + [T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()]
                                + norm)
    val = datasets.ImageFolder(str(folder), transform=T.Compose(gray + resize + norm))
    val_indices = [i for i in splits.indices["val"] if i < len(val)]
    return NaiveSets(train, val, val_indices)


def train_step(model: nn.Module, batches: Iterator[tuple[Tensor, Tensor]]) -> Callable[[], int]:
    """The tutorial loop body: next DataLoader batch (to the model's device), forward, loss, backward, step
    (fp32, NCHW)."""
    cfg = TrainConfig()
    opt = make_optimizer(model.train(), cfg)
    device = next(model.parameters()).device

    def step() -> int:
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return len(y)

    return step


def eval_pass(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]]) -> int:
    """The tutorial evaluation loop (accuracy accumulated batch by batch); returns the images seen."""
    seen = correct = 0
    device = next(model.parameters()).device
    for x, y in loader:
        correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
        seen += len(y)
    return seen


def write_synthetic_folder(root: Path, classes: int = 10, per_class: int = 300, size: int = 32,
                           seed: int = 0) -> Path:
    """An ImageFolder of JPEGs: random, but each class has its own colour and stripe orientation.

    Real JPEGs on disk, so the naive baseline pays the decoding it would pay on real data.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for k in range(classes):
        d = root / f"class_{k:02d}"
        d.mkdir(parents=True, exist_ok=True)
        colour = rng.uniform(50, 205, 3).astype(np.float32)
        angle, period = np.pi * k / classes, 4 + k % 5
        phase = rng.uniform(0, 2 * np.pi, (per_class, 1, 1))
        stripes = 40 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + phase)
        noise = rng.normal(0, 25, (per_class, size, size, 3))
        images = np.clip(colour + stripes[..., None] + noise, 0, 255).astype(np.uint8)
        for i, im in enumerate(images):
            Image.fromarray(im).save(d / f"{i:05d}.jpg", quality=90)
    return root

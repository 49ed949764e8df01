"""Another library's SimCLR, written the way its documentation teaches it, for `pretextlab bench --peer`.

The peer is lightly (https://github.com/lightly-ai/lightly). Its standard SimCLR recipe for small
images: torchvision's `ImageFolder` (every JPEG decoded again at every epoch),
`lightly.transforms.SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)` (two views of
each image, one image at a time, in PIL), a `DataLoader` collating them, the backbone with lightly's
`SimCLRProjectionHead`, called once per view, and lightly's `NTXentLoss(temperature=0.5)`.

What is not lightly's to choose is pretextlab's, so that a race measures the two pipelines and nothing
else: the same backbone and initial weights, batch size, projection head shape (d -> d -> 128),
temperature, colour-jitter strength and crop scale (SimCLROptions), normalisation (the data's channel
statistics rather than ImageNet's), optimizer (SGD, as pretextlab's SimCLR pretraining), precision and
memory layout (channels_last). The images are the training pool of the bench's split, so both
libraries learn from the same images and are scored on the same held-out ones.

lightly is an optional extra (`pip install 'pretextlab[peers]'`): it is imported only here, and only
when a peer is asked for. The timing itself is the bench's (race.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import hw
from ..data import Splits
from ..data.sources import Dataset
from ..pretext.simclr import SimCLROptions
from ..train import TrainConfig, lr_factor, make_optimizer
from .naive import class_folder

PEERS = ("lightly",)
LIGHTLY = "lightly==1.6.0"  # as pinned by pyproject.toml's `peers` extra


def unavailable(name: str, ds: Dataset | None = None) -> str | None:
    """Why peer `name` (one of PEERS) cannot race here, in one line (how to install it, where it is missing),
    or None."""
    try:
        import lightly.loss  # noqa: F401
        import lightly.models.modules  # noqa: F401
        import lightly.transforms  # noqa: F401
    except ImportError:
        return (f"--peer {name}: lightly is not installed; `pip install 'pretextlab[peers]'` (or {LIGHTLY}) "
                "adds it. The rest of the bench runs without it")
    if ds is not None and ds.channels != 3:
        return f"--peer {name}: lightly's SimCLRTransform needs RGB images, these have {ds.channels} channel(s)"
    return None


def version(name: str) -> str:
    return __import__(name).__version__


def worker_counts() -> tuple[int, ...]:
    """The DataLoader worker counts to try: 0, 1, 2, and up to 8 (lightly's examples use 8) where there are
    more cores."""
    return tuple(sorted({0, 1, 2, min(8, hw.available_cores())}))


class LightlySimCLR(nn.Module):
    """lightly's SimCLR model as its examples write it: backbone -> flatten -> SimCLRProjectionHead."""

    def __init__(self, backbone: nn.Module, proj_dim: int):
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__()
        self.backbone = backbone
        d = backbone.out_dim
        self.projection_head = SimCLRProjectionHead(d, d, proj_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))


@dataclass
class Lightly:
    """lightly's SimCLR pipeline on the training pool of an image folder: data, model, loss, optimizer."""

    dataset: Any  # a Subset of an ImageFolder whose transform is lightly's SimCLRTransform
    model: LightlySimCLR
    criterion: nn.Module
    opt: torch.optim.Optimizer
    batch_size: int
    device: torch.device
    precision: str

    def loader(self, workers: int) -> Any:
        """lightly's examples' DataLoader: shuffled, whole batches only."""
        from torch.utils.data import DataLoader

        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=workers)

    def batches(self, workers: int) -> Iterator[Any]:
        """Batches of two views forever, from a DataLoader started now (each new epoch starts new workers)."""
        return itertools.chain.from_iterable(itertools.repeat(self.loader(workers)))

    def train_on(self, x0: Tensor, x1: Tensor) -> Tensor:
        """lightly's training step: each view through the model on its own, then NT-Xent of the two outputs."""
        x0, x1 = (v.to(self.device).contiguous(memory_format=torch.channels_last) for v in (x0, x1))
        with hw.autocast(self.device, self.precision):
            loss = self.criterion(self.model(x0), self.model(x1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def step(self, batches: Iterator[Any]) -> Callable[[], int]:
        """One training step on the next batch; returns the images (not views) it trained on."""

        def step() -> int:
            (x0, x1), _ = next(batches)
            self.train_on(x0, x1)
            return len(x0)

        return step

    def train_epochs(self, epochs: int, workers: int, cfg: TrainConfig) -> tuple[float, int]:
        """Whole epochs under the learning-rate schedule pretextlab's fit uses; (last batch's loss, images seen)."""
        loader = self.loader(workers)
        total = epochs * len(loader)
        sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda i: lr_factor(i, total, cfg.schedule, cfg.warmup))
        self.model.train()
        loss, seen = torch.zeros(()), 0
        for _ in range(epochs):
            for (x0, x1), _ in loader:
                loss = self.train_on(x0, x1)
                sched.step()
                seen += len(x0)
        return float(loss), seen  # float() waits for the last step


def simclr_pool(root: Path, ds: Dataset, splits: Splits, options: SimCLROptions | None = None) -> Any:
    """The pool images of `splits` as lightly reads them: an ImageFolder of `root` with lightly's SimCLRTransform."""
    from lightly.transforms import SimCLRTransform
    from torch.utils.data import Subset
    from torchvision import datasets

    o = options or SimCLROptions()
    transform = SimCLRTransform(input_size=ds.image_size, cj_strength=o.jitter, cj_prob=o.jitter_p,
                                min_scale=o.min_scale, random_gray_scale=o.gray_p, gaussian_blur=0.0,
                                hf_prob=0.5 if o.flip else 0.0,
                                normalize={"mean": splits.mean.tolist(), "std": splits.std.tolist()})
    folder = datasets.ImageFolder(str(class_folder(root)), transform=transform)
    return Subset(folder, splits.indices["train"])  # the bench's splits take every label: this is the whole pool


def lightly_simclr(pool: Any, backbone: nn.Module, cfg: TrainConfig, device: torch.device, precision: str,
                   options: SimCLROptions | None = None) -> Lightly:
    """lightly's SimCLR of `backbone` (moved to `device`) on `pool` (from `simclr_pool`)."""
    from lightly.loss import NTXentLoss

    o = options or SimCLROptions()
    model = LightlySimCLR(backbone, o.proj_dim).to(device, memory_format=torch.channels_last)
    opt = make_optimizer(model.train(), cfg)
    return Lightly(pool, model, NTXentLoss(temperature=o.temperature), opt, min(cfg.batch_size, len(pool)), device,
                   precision)


# ----------------------------------------------------------------------------------------------
# The augmentation alone, image by image (what every DataLoader worker spends its time on)


def pool_files(pool: Any, n: int) -> list[str]:
    """The first n files of the pool (cycling where it holds fewer)."""
    folder, rows = pool.dataset, pool.indices
    return [folder.samples[rows[i % len(rows)]][0] for i in range(n)]


def decode_step(pool: Any, files: list[str]) -> Callable[[], int]:
    """ImageFolder's loader on the next file (open, decode, convert to RGB); returns 1 image."""
    load, turn = pool.dataset.loader, itertools.cycle(files)

    def step() -> int:
        load(next(turn))
        return 1

    return step


def transform_step(pool: Any, files: list[str]) -> Callable[[], int]:
    """lightly's SimCLRTransform (both views) of the next image, decoded beforehand; returns 1 image."""
    images = [pool.dataset.loader(f) for f in files]
    transform, turn = pool.dataset.transform, itertools.cycle(images)

    def step() -> int:
        transform(next(turn))
        return 1

    return step

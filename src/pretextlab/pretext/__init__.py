"""Pretext tasks (label-free training objectives) and the driver that pretrains a backbone with one.

A task is one file behind common.PretextTask: how to make a batch of inputs and targets from
unlabelled images (`batch`), which head sits on the backbone (`make_model`), its loss, held-out
metrics, and how much work an image is (`work_per_image`, for the plan). Adding a task is that file
plus a line in TASKS; the study, plan, CLI and report take it from there.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import dist
from ..data import DataConfig, data_settings
from ..data.sources import Dataset
from ..driver import Built, Context, execute
from ..errors import UserError
from ..io import save_torch, sha256_file
from ..layout import BACKBONE, SAMPLES
from ..models import make_backbone
from ..models.external import backbone_facts
from ..probe import knn_accuracy, recalibrate_bn
from ..train import TrainConfig, train_settings
from .context import ContextOptions, ContextPrediction
from .reconstruction import Reconstruction, ReconstructionOptions
from .rotation import Rotation, RotationOptions
from .simclr import SimCLR, SimCLROptions

log = logging.getLogger(__name__)

TASKS: dict[str, tuple[type, type]] = {
    "context": (ContextPrediction, ContextOptions),
    "rotation": (Rotation, RotationOptions),
    "reconstruction": (Reconstruction, ReconstructionOptions),
    "simclr": (SimCLR, SimCLROptions),
}


def make_task(name: str, splits, options: dict | None, precision: str):
    if name not in TASKS:
        raise UserError(f"unknown pretext task '{name}'; choose one of: {', '.join(TASKS)}")
    cls, opt_cls = TASKS[name]
    typed = typed_options(name, opt_cls, options or {})
    try:
        return cls(splits, opt_cls(**typed), precision)
    except (TypeError, ValueError) as e:
        raise UserError(f"pretext '{name}' options {options}: {e}") from None


def typed_options(task: str, opt_cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """options checked against the task's declared fields and types, so that `--option temperature=abc` says
    which option takes what, instead of failing inside the task (ints are taken where a float is declared)."""
    import math
    import typing

    hints = typing.get_type_hints(opt_cls)
    out = {}
    for key, value in options.items():
        if key not in hints:
            raise UserError(f"--option {key}: pretext '{task}' has no such option; it has {', '.join(hints)}")
        kind = hints[key]
        ok = (isinstance(value, bool) if kind is bool else
              isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              if kind is float else
              isinstance(value, int) and not isinstance(value, bool) if kind is int else isinstance(value, kind))
        if not ok:
            example = {bool: "true or false", float: "a number", int: "a whole number", str: "a word"}.get(kind, kind)
            raise UserError(f"--option {key}={value}: pretext '{task}' takes {example} for {key} "
                            f"(default {getattr(opt_cls(), key)!r})")
        out[key] = float(value) if kind is float else value
    return out


@dataclass
class Pretraining:
    """A label-free run: `task` on the training pool of `data`, handing over backbone.safetensors."""

    task: str
    data: DataConfig
    cfg: TrainConfig
    backbone: str
    options: dict | None = None
    knn_images: int = 10000
    downstream: str = "classification"  # whose images and splits: the downstream task's reader and validation split

    def settings(self) -> dict[str, Any]:
        return {"pretext": self.task, "backbone": self.backbone, "data": data_settings(self.data),
                "train": train_settings(self.cfg)}

    def load(self, data: DataConfig) -> Dataset:
        from ..tasks import get_task

        return get_task(self.downstream).load(data)

    def complete(self, folder: Path) -> bool:
        if (folder / BACKBONE).exists():
            return True
        # a kept study (`pretextlab export`) has the results, not the weights: re-make them
        log.info("%s holds a finished pretraining without backbone.safetensors: pretraining again", folder)
        return False

    def build(self, ctx: Context) -> Built:
        from ..tasks import get_task

        splits = get_task(self.downstream).splits(ctx.ds, 1.0, self.cfg.seed, self.data).to(ctx.device)
        task = make_task(self.task, splits, self.options, ctx.precision)
        model = task.make_model(make_backbone(self.backbone, ctx.ds.channels))
        config = {"kind": "pretrain", "options": dataclasses.asdict(task.options), "dataset": ctx.ds.name,
                  "n_pool": len(splits.x_pool), "n_val": len(splits.x_val)}
        meta = {"kind": "pretext", "pretext": self.task, "backbone": self.backbone, **backbone_facts(self.backbone),
                "channels": ctx.ds.channels, "image_size": ctx.ds.image_size, "mean": splits.mean.tolist(),
                "std": splits.std.tolist()}
        return Built(model, task, config, meta)

    def finish(self, ctx: Context, built: Built, history: list[dict[str, float]]) -> dict[str, Any] | None:
        """Hand over a backbone whose BatchNorm statistics describe whole images, not patches; then the k-NN
        diagnostic, pretrained vs random (rank 0 alone: cheap next to training)."""
        if not dist.is_main():
            return None
        task, splits, folder = built.task, built.task.splits, ctx.folder
        trained = copy.deepcopy(built.model.backbone)
        recalibrate_bn(trained, splits.x_pool, splits.mean, splits.std)
        from safetensors.torch import save_file

        save_file({k: v.contiguous().cpu() for k, v in trained.state_dict().items()}, str(folder / BACKBONE))
        save_torch(task.samples(built.model), folder / SAMPLES)
        knn, n = None, 0
        if ctx.ds.train.labels.ndim == 1:  # a label per image: the k-NN diagnostic applies (not to masks)
            knn, n = knn_diagnostic(trained, self.backbone, ctx.ds, self.data, splits, self.cfg.seed,
                                    self.knn_images, ctx.device)
        out = {"pretext": self.task, "chance": task.chance, "backbone": self.backbone,
               "options": dataclasses.asdict(task.options), "knn_accuracy": knn, "knn_images": n,
               "backbone_sha256": sha256_file(folder / BACKBONE)}
        if ctx.finished is not None:  # fine-tuning runs finished before started from the earlier weights
            out["earlier_backbone_sha256"] = ctx.finished.get("backbone_sha256")
        return out


def pretrain(task_name: str, data: DataConfig, cfg: TrainConfig, backbone: str, out_dir: Path,
             options: dict | None = None, dataset: Dataset | None = None, device: str = "auto", quiet: bool = False,
             knn_images: int = 10000, on_epoch_end: Callable[[int, dict], None] | None = None,
             precision: str | None = None, downstream: str = "classification") -> dict[str, Any]:
    """Pretrain `backbone` without labels on the training pool; write backbone.safetensors. Labels are used only
    afterwards, for the k-NN diagnostic (pretrained vs random backbone)."""
    if task_name not in TASKS:
        raise UserError(f"unknown pretext task '{task_name}'; choose one of: {', '.join(TASKS)}")
    job = Pretraining(task_name, data, cfg, backbone, options, knn_images, downstream)
    return execute(job, out_dir, dataset, device, quiet, precision, on_epoch_end)


def knn_diagnostic(trained: torch.nn.Module, backbone: str, ds: Dataset, data: DataConfig, splits, seed: int,
                   knn_images: int, device: torch.device) -> tuple[dict[str, float], int]:
    """k-NN accuracy on the validation split with a random subset of the pool as memory bank, for
    the pretrained backbone and for a randomly initialised one (the baseline it must beat)."""
    g = torch.Generator().manual_seed(seed)
    n = min(knn_images, len(splits.x_pool))
    bank = torch.randperm(len(splits.x_pool), generator=g)[:n]
    labels = _pool_labels(ds, data)
    torch.manual_seed(seed)
    random_net = make_backbone(backbone, ds.channels).to(device)
    return {name: knn_accuracy(net, splits.x_pool[bank.to(splits.x_pool.device)], labels[bank], splits.x_val,
                               splits.y_val, splits.mean, splits.std, len(ds.classes))
            for name, net in (("pretrained", trained), ("random", random_net))}, n


def _pool_labels(ds: Dataset, data: DataConfig) -> torch.Tensor:
    """Labels of the training pool in make_splits' order (used only by the k-NN diagnostic)."""
    from ..data import stratified_split

    tr, _ = stratified_split(ds.train.labels, data.val_fraction, data.split_seed)
    return ds.train.labels[tr]

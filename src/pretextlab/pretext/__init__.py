"""Pretext tasks (label-free training objectives) and the driver that pretrains a backbone with one.

A task is a small object: how to make a batch of inputs and targets from unlabeled images
(`batch`), which head sits on the backbone (`make_model`), its loss and held-out metrics.
Adding a task is one file plus a line in TASKS.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import dist
from ..backbones import backbone_facts
from ..data import DataConfig, check_out_outside_data, data_facts, data_settings, make_splits, open_data
from ..errors import UserError
from ..io import save_json, save_torch, sha256_file
from ..layout import BACKBONE, SAMPLES, SUMMARY
from ..models import make_backbone
from ..probe import knn_accuracy, recalibrate_bn
from ..runs import check_same_run_data, finished_summary, run_precision, summarize, writer_lock
from ..sources import Dataset
from ..train import TrainConfig, fit, train_settings
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


def pretrain(
    task_name: str,
    data: DataConfig,
    cfg: TrainConfig,
    backbone: str,
    out_dir: Path,
    options: dict | None = None,
    dataset: Dataset | None = None,
    device: str = "auto",
    quiet: bool = False,
    knn_images: int = 10000,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Pretrain `backbone` without labels on the training pool; write backbone.safetensors.

    Labels are used only afterwards, for the k-NN diagnostic (pretrained vs random backbone).
    precision is the caller's decision for `--precision auto` (a study decides once for all its runs).
    """
    check_out_outside_data(data, out_dir)
    with writer_lock(out_dir):
        return _pretrain(task_name, data, cfg, backbone, Path(out_dir), options, dataset, device, quiet, knn_images,
                         on_epoch_end, precision)


def _pretrain(task_name: str, data: DataConfig, cfg: TrainConfig, backbone: str, out_dir: Path, options: dict | None,
              dataset: Dataset | None, device: str, quiet: bool, knn_images: int,
              on_epoch_end: Callable[[int, dict], None] | None, decided: str | None) -> dict[str, Any]:
    settings = {"pretext": task_name, "backbone": backbone, "data": data_settings(data),
                "train": train_settings(cfg)}
    done = finished_summary(out_dir, settings)
    if done is not None and (out_dir / BACKBONE).exists():
        return done
    if done is not None:  # a kept study (`pretextlab export`) has the results, not the weights: re-make them
        log.info("%s holds a finished pretraining without backbone.safetensors: pretraining again", out_dir)
    dev, ds = open_data(data, device, dataset)
    check_same_run_data(out_dir, ds.fingerprint)
    splits = make_splits(ds, 1.0, cfg.seed, data.val_fraction, data.split_seed).to(dev)
    precision = run_precision(cfg.precision, dev, out_dir, decided)
    task = make_task(task_name, splits, options, precision)
    torch.manual_seed(cfg.seed)  # --seed decides the initial weights
    net = make_backbone(backbone, ds.channels)
    model = task.make_model(net)
    run_config = {"kind": "pretrain", **settings, "options": dataclasses.asdict(task.options), "dataset": ds.name,
                  "n_pool": len(splits.x_pool), "n_val": len(splits.x_val)}
    meta = {"kind": "pretext", "pretext": task_name, "backbone": backbone, **backbone_facts(backbone),
            "channels": ds.channels,
            "image_size": ds.image_size, "mean": splits.mean.tolist(), "std": splits.std.tolist()}
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    history = fit(model, task, cfg, out_dir, run_config, meta, dev, quiet, on_epoch_end, data_facts(ds),
                  precision)
    if not dist.is_main():  # the hand-over and diagnostics are cheap next to training: rank 0 does them
        return dist.from_main(None)

    # Hand over a backbone whose BatchNorm statistics describe whole images, not patches.
    trained = copy.deepcopy(model.backbone)
    recalibrate_bn(trained, splits.x_pool, splits.mean, splits.std)
    from safetensors.torch import save_file

    save_file({k: v.contiguous().cpu() for k, v in trained.state_dict().items()}, str(out_dir / BACKBONE))
    save_torch(task.samples(model), out_dir / SAMPLES)

    # Diagnostic: k-NN accuracy of frozen features, pretrained vs randomly initialised (same seed).
    knn, n = knn_diagnostic(trained, backbone, ds, data, splits, cfg.seed, knn_images, dev)
    summary = summarize(history)
    summary.update({"pretext": task_name, "chance": task.chance, "backbone": backbone,
                    "options": dataclasses.asdict(task.options), "knn_accuracy": knn, "knn_images": n,
                    "wall_time_s": history[-1]["wall_time_s"], "process_time_s": time.perf_counter() - t0,
                    "backbone_sha256": sha256_file(out_dir / BACKBONE)})
    if done is not None:  # fine-tuning runs finished before started from this one
        summary["earlier_backbone_sha256"] = done.get("backbone_sha256")
    save_json(summary, out_dir / SUMMARY)
    return dist.from_main(summary)  # the other ranks get it once the files are complete


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

"""The race against lightly's standard SimCLR pipeline (peers.py): the same backbone, batch, head,
temperature and optimizer, timed in the same rounds, and both trained and scored by the same k-NN."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import nn

from ..data import DataConfig, Splits, channel_stats
from ..models import make_backbone
from ..pretext import make_task
from ..pretext.simclr import SimCLR
from ..probe import knn_hits
from ..stats import mean_ci
from . import peers
from .timing import PRETRAIN, interleaved, measure, timed, warm_up
from .workloads import Setup, batch_ms, fit_path, fit_quietly, pretext_net, train_step, training_seconds

# ----------------------------------------------------------------------------------------------
# 7. The peer: lightly's SimCLR pipeline


class LightlyRace:
    """lightly's SimCLR pipeline on one backbone, timed as bench times pretextlab's.

    Every turn starts a fresh DataLoader and times its start-up: a DataLoader kept across turns would
    go on preparing batches in its workers while the other paths are timed, slowing them and handing
    lightly ready batches. Before the race, every count of `peers.worker_counts()` is tried for one
    turn; the fastest races.
    """

    def __init__(self, name: str, s: Setup, steps: int):
        torch.manual_seed(0)  # the initial backbone weights of pretextlab's paths
        cfg = dataclasses.replace(PRETRAIN, batch_size=s.bs)
        self.run = peers.lightly_simclr(s.peer_pool, make_backbone(name, s.ds.channels), cfg, s.device, s.precision)
        self.steps = steps
        warm_up(self.run.step(self.run.batches(0)), s.plan.warmup)
        self.by_workers = {}
        for workers in peers.worker_counts():
            n, seconds = self.timed(workers)
            self.by_workers[str(workers)] = n / seconds
        self.workers = int(max(self.by_workers, key=self.by_workers.get))

    def timed(self, workers: int) -> tuple[int, float]:
        """(images, seconds) of `steps` training steps from a DataLoader with `workers` workers started now
        (it starts them at its first batch, inside the timed part; they stop when it is dropped, after it)."""
        return timed(self.run.step(self.run.batches(workers)), self.steps)

    def turn(self) -> tuple[int, float]:
        return self.timed(self.workers)

    def report(self, rates: dict[str, float]) -> dict[str, Any]:
        return {"name": "lightly", "img_s": rates["lightly"], "workers": self.workers,
                "img_s_by_workers": self.by_workers, "speedup_vs_lightly": rates["pipeline"] / rates["lightly"],
                "ceiling_vs_lightly": rates["model"] / rates["lightly"]}


def peer_summary(name: str, race: dict[str, Any], s: Setup, epochs: int) -> dict[str, Any]:
    """The peer's headline (the first backbone's race), each side's augmentation cost and, with epochs,
    both SimCLRs trained that long and scored by the same k-NN probe."""
    out = {"name": race["name"], "version": peers.version(race["name"]), "backbone": name, **race,
           **augment_ms_per_image(s), "epochs": epochs, "knn_pretextlab": None, "knn_lightly": None}
    if epochs:
        out.update(train_both(name, s, epochs, race["workers"]))
    return out


def augment_ms_per_image(s: Setup) -> dict[str, Any]:
    """Milliseconds per image of making its two SimCLR views, on one CPU thread: pretextlab's whole batch
    preparation (cut, augment, normalise; on the bench's device) and lightly's SimCLRTransform alone, on
    images already decoded; lightly's JPEG decoding (ImageFolder's loader) beside it."""
    files = peers.pool_files(s.peer_pool, 256)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ours = batch_ms(SimCLR(s.splits, precision=s.precision), s) / s.bs
        transform, _ = measure(peers.transform_step(s.peer_pool, files), s.plan.warmup, len(files))
        decode, _ = measure(peers.decode_step(s.peer_pool, files), s.plan.warmup, len(files))
    finally:
        torch.set_num_threads(threads)
    return {"augment_ms_per_image": {"pretextlab": ours, "lightly": 1000 / transform},
            "decode_ms_per_image": {"lightly": 1000 / decode}, "augment_device": str(s.device)}


def train_both(name: str, s: Setup, epochs: int, workers: int) -> dict[str, Any]:
    """pretextlab's SimCLR (train.fit) and lightly's trained `epochs` epochs from the same initial weights, with
    the same optimizer and schedule; k-NN accuracy of both backbones (and of the untrained one) on the
    validation split, with the labelled pool as memory bank."""
    cfg = dataclasses.replace(PRETRAIN, epochs=epochs, batch_size=s.bs, precision="auto")
    task = SimCLR(s.splits, precision=s.precision)
    ours = pretext_net(name, task, s)
    history = fit_quietly(ours, task, cfg, s.tmp / f"{name}-simclr-epochs", f"{name}-simclr", s)
    ours_seen = history[-1]["images_seen"]
    ours_s = training_seconds(history, ours_seen / len(history))

    torch.manual_seed(0)
    theirs = peers.lightly_simclr(s.peer_pool, make_backbone(name, s.ds.channels), cfg, s.device, s.precision)
    t0 = time.perf_counter()
    theirs_loss, theirs_seen = theirs.train_epochs(epochs, workers, cfg)
    theirs_s = time.perf_counter() - t0

    torch.manual_seed(0)
    untrained = make_backbone(name, s.ds.channels).to(s.device)
    sp = s.splits

    def hits(backbone: nn.Module) -> torch.Tensor:
        return knn_hits(backbone, sp.x_train, sp.y_train, sp.x_val, sp.y_val, sp.mean, sp.std, len(sp.classes))

    h_ours, h_theirs = hits(ours.backbone), hits(theirs.model.backbone)
    # paired over the same held-out images: the interval of the mean per-image difference (normal approximation)
    diff, _, ci = mean_ci((h_ours - h_theirs).tolist())
    return {"knn_pretextlab": float(h_ours.mean()), "knn_lightly": float(h_theirs.mean()),
            "knn_untrained": float(hits(untrained).mean()),
            "knn_difference": {"value": diff, "ci95": list(ci) if ci else None},
            "knn_images": {"bank": len(sp.x_train), "val": len(sp.x_val)},
            "train_img_s": {"pretextlab": ours_seen / ours_s, "lightly": theirs_seen / theirs_s},
            "final_train_loss": {"pretextlab": history[-1]["train_loss"], "lightly": theirs_loss}}


def task_rates(name: str, task_name: str, s: Setup) -> dict[str, Any]:
    """One pretext task (its default options, as `pretextlab pretrain` uses them): the model alone vs train.fit.

    The model alone trains on one ready batch, the task's own first batch (its exact inputs and targets,
    cut and augmented once), so it does all that fit's step does except making batches; both train with
    pretextlab's pretraining optimizer. For simclr with a peer, the peer's pipeline runs in the same turns.
    """
    task = make_task(task_name, s.splits, None, s.precision)
    x, y = task.batch(torch.arange(s.bs) % task.n_train, torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)  # as fit lays its inputs out
    model = pretext_net(name, task, s).to(s.device, memory_format=torch.channels_last)
    model_step = train_step(model, x, y, task.loss, s.device, s.precision, PRETRAIN, images=s.bs)
    steps = s.plan.steps_for(warm_up(model_step, s.plan.warmup))
    paths = {"model": lambda: timed(model_step, steps),
             "pipeline": fit_path(pretext_net(name, task, s), lambda sp: make_task(task_name, sp, None, s.precision),
                                   "pool", steps, s, f"{name}-{task_name}", PRETRAIN)}
    race = LightlyRace(name, s, steps) if task_name == "simclr" and s.peer else None
    if race is not None:
        paths["lightly"] = race.turn
    rates = interleaved(paths, s.plan.rounds)
    out: dict[str, Any] = {"model_img_s": rates["model"], "pipeline_img_s": rates["pipeline"],
                           "overhead": 1 - rates["pipeline"] / rates["model"], "steps": steps}
    if race is not None:
        out["peer"] = race.report(rates)
    return out


SEG_HW, SEG_IMAGES, SEG_CLASSES = (96, 128), 64, 5  # the segmentation path's generated scenes (CamVid's aspect)


def segmentation_splits(s: Setup) -> Splits:
    """Generated scenes for the segmentation path: noise with rectangles of random classes, their masks."""
    g = torch.Generator().manual_seed(0)
    h, w = SEG_HW
    x = torch.randint(0, 256, (SEG_IMAGES, 3, h, w), generator=g, dtype=torch.uint8)
    y = torch.zeros(SEG_IMAGES, h, w, dtype=torch.uint8)
    for i in range(SEG_IMAGES):
        for _ in range(3):
            top, left = (int(v) for v in torch.randint(0, h // 2, (2,), generator=g))
            y[i, top:top + h // 3, left:left + w // 3] = int(torch.randint(1, SEG_CLASSES, (1,), generator=g))
    mean, std = channel_stats(x)
    return Splits([f"c{k}" for k in range(SEG_CLASSES)], x, y, x[:8], y[:8], x, mean, std).to(s.device)


def segmentation_rates(name: str, s: Setup) -> dict[str, Any]:
    """The segmentation training step (the segmentation preset's batch size and optimizer): the model alone on the
    task's own first batch vs train.fit, whose difference is batch preparation (joint crop and flip of images and
    masks, normalisation)."""
    from ..study.presets import TASK_PRESETS
    from ..tasks.segmentation import Segmentation

    # one evaluation per epoch: fit_path counts a row's images as an epoch's (the evaluations are not timed)
    cfg = dataclasses.replace(TASK_PRESETS["segmentation"]["fast"].finetune, precision=s.precision, evals=0)
    splits = segmentation_splits(s)
    seg = dataclasses.replace(s, splits=splits, bs=max(2, min(cfg.batch_size, s.plan.max_batch)))

    def make(sp: Splits) -> Segmentation:
        return Segmentation(sp, DataConfig(), cfg, s.precision)

    def net() -> nn.Module:
        torch.manual_seed(0)
        return make(splits).make_model(make_backbone(name, 3))

    task = make(splits)
    x, y = task.batch(torch.arange(seg.bs), torch.Generator().manual_seed(0))
    model = net().to(s.device, memory_format=torch.channels_last)
    model_step = train_step(model, x.contiguous(memory_format=torch.channels_last), y, task.loss, s.device,
                            s.precision, cfg)
    steps = s.plan.steps_for(warm_up(model_step, s.plan.warmup))
    rates = interleaved({"model": lambda: timed(model_step, steps),
                         "pipeline": fit_path(net(), make, "train", steps, seg, f"{name}-segment", cfg)},
                        s.plan.rounds)
    return {"model_img_s": rates["model"], "pipeline_img_s": rates["pipeline"],
            "overhead": 1 - rates["pipeline"] / rates["model"], "steps": steps, "batch_size": seg.bs,
            "image_hw": list(SEG_HW)}

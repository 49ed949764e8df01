"""What the bench times (timing.py says how): peak matmul, and per backbone the model step alone, the pipeline
(train.fit) and the naive tutorial, evaluation, batch preparation, and the training step with and without
torch.compile."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import hw
from ..data import DataConfig, Splits
from ..data.sources import Dataset
from ..models import Classifier, make_backbone
from ..pretext import TASKS, make_task
from ..study.presets import PRESETS
from ..tasks.classification import Classification, predict_logits
from ..train import TrainConfig, fit, make_optimizer
from . import naive
from .timing import Plan, measure, warm_up


@dataclass
class Setup:
    """What every backbone's measurements share."""

    plan: Plan
    bs: int
    precision: str
    ds: Dataset
    splits: Splits
    naive: naive.NaiveSets
    tmp: Path
    peak_flops: float  # FLOP/s of the precision `auto` picks: the MFU denominator
    device: torch.device
    peer: str | None  # the library raced, where it is installed
    peer_pool: Any  # the peer's dataset: the pool images of `splits`, read from the image folder



# ----------------------------------------------------------------------------------------------
# 1. Peak matmul


def peak_gflops(plan: Plan, device: torch.device) -> tuple[dict[str, float | None], list[str]]:
    """Dense n x n matmul GFLOP/s in fp32 (TF32 on CUDA, as pick_device allows), and in bf16 on a GPU
    that has it or a CPU with native bf16."""
    n = 8192 if device.type == "cuda" else 2048

    def rate(dtype: torch.dtype) -> float:
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        c = torch.empty(n, n, dtype=dtype, device=device)

        def matmul() -> int:
            torch.mm(a, b, out=c)
            return 2 * n**3  # FLOPs

        flops, _ = measure(matmul, 1, plan.matmul_reps)
        return flops / 1e9

    peaks: dict[str, float | None] = {"fp32": rate(torch.float32), "bf16": None}
    notes = []
    if device.type == "cuda":
        peaks["bf16"] = rate(torch.bfloat16) if torch.cuda.is_bf16_supported() else None
    elif hw.cpu_bf16_speedup() > 0:
        peaks["bf16"] = rate(torch.bfloat16)
    else:
        notes.append(f"bf16 peak not measured: no native bf16 on this CPU ({hw.cpu_capability()}); it would be "
                     "emulated and slower than fp32, so precision auto trains in fp32")
    return peaks, notes



# ----------------------------------------------------------------------------------------------
# Per backbone


def classifier(name: str, s: Setup) -> Classifier:
    """The same initial weights for every path, so no path is timed on a different network."""
    torch.manual_seed(0)
    return Classifier(make_backbone(name, s.ds.channels), len(s.ds.classes))


def pretext_net(name: str, task: Any, s: Setup) -> nn.Module:
    """A pretext task's network, seeded like `classifier` so the model and fit paths start from the same weights."""
    torch.manual_seed(0)
    return task.make_model(make_backbone(name, s.ds.channels))


def classification(splits: Splits, s: Setup) -> Classification:
    """The supervised task exactly as `pretextlab train` builds it with its default options."""
    return Classification(splits, DataConfig(), TrainConfig(), s.precision)


def smoothed_cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    """The classification loss, with fit's default label smoothing."""
    return F.cross_entropy(out.float(), y, label_smoothing=TrainConfig().label_smoothing)


def train_step(model: nn.Module, x: Any, y: Any, loss_fn: Callable[[Tensor, Any], Tensor], device: torch.device,
                precision: str, cfg: TrainConfig | None = None, images: int | None = None) -> Callable[[], int]:
    """Forward, loss, backward and optimizer step on a fixed batch: the model's cost and nothing else.

    Returns a step giving `images` (default: the batch's length), the source images the batch stands for.
    """
    opt = make_optimizer(model.train(), cfg or TrainConfig(precision=precision))
    n = images or len(x)

    def step() -> int:
        with hw.autocast(device, precision):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return n

    return step


def fit_quietly(model: nn.Module, task: Any, cfg: TrainConfig, out_dir: Path, name: str,
                 s: Setup) -> list[dict[str, float]]:
    """train.fit as the bench runs it: in a temp folder, without its epoch lines cluttering the bench's output."""
    train_log = logging.getLogger("pretextlab.train")
    level = train_log.level
    train_log.setLevel(logging.WARNING)
    try:
        return fit(model, task, cfg, out_dir, {"kind": "bench", "run": name}, device=s.device, quiet=True,
                   precision=s.precision)
    finally:
        train_log.setLevel(level)


def training_seconds(history: list[dict[str, float]], images_per_row: float) -> float:
    """fit's training time (validation excluded) from its history: each row's images / its images_per_s."""
    return sum(images_per_row / row["images_per_s"] for row in history)


def fit_path(model: nn.Module, make_task: Callable[[Splits], Any], part: str, steps: int, s: Setup,
              name: str, base: TrainConfig | None = None) -> Callable[[], tuple[int, float]]:
    """A measurement of train.fit's training steps: each call fits one epoch of `steps` batches.

    fit's `images_per_s` covers batch cutting, augmentation, forward, backward, step and the in-loop
    logging of each epoch, not the validation pass: exactly the part comparable with the model alone.
    `part` is the split the task draws from ("train" for classification, "pool" for pretext tasks);
    `base` the optimizer settings (default: fit's). A 1-step fit warms up first. Returns a callable
    giving (examples, seconds) like `timed`.
    """
    calls = iter(range(10**9))

    def run(n_steps: int) -> tuple[int, float]:
        sub, epochs = subset(s.splits, part, n_steps * s.bs, s.bs)
        cfg = dataclasses.replace(base or TrainConfig(), epochs=epochs, batch_size=s.bs, precision="auto")
        history = fit_quietly(model, make_task(sub), cfg, s.tmp / name / f"fit{next(calls)}", name, s)
        return n_steps * s.bs, training_seconds(history, n_steps * s.bs / epochs)

    run(1)
    return lambda: run(steps)


def subset(splits: Splits, part: str, n: int, n_val: int) -> tuple[Splits, int]:
    """Splits whose `part` holds n examples (or all it has, repeated over epochs) and a small val set."""
    g = torch.Generator().manual_seed(0)
    available = len(splits.x_pool if part == "pool" else splits.y_train)
    take = torch.randperm(available, generator=g)[:n].to(splits.x_pool.device)
    val = slice(0, n_val)  # fit validates after every epoch: keep that cheap, it is not timed anyway
    sub = dataclasses.replace(splits, x_val=splits.x_val[val], y_val=splits.y_val[val])
    if part == "pool":
        sub.x_pool = splits.x_pool[take]
    else:
        sub.x_train, sub.y_train = splits.x_train[take], splits.y_train[take]
    return sub, math.ceil(n / len(take))


def eval_rates(model: nn.Module, naive_model: nn.Module, s: Setup) -> tuple[float, float, int]:
    """Images/s of one evaluation pass each way, over the same number of validation images.

    The count is chosen from a one-batch warm-up so a pass lasts about plan.eval_s. The naive pass
    includes its DataLoader worker start-up: a tutorial loop pays it at every evaluation.
    """
    x_val, mean, std = s.splits.x_val, s.splits.mean, s.splits.std

    def predict(n: int) -> Callable[[], int]:
        return lambda: len(predict_logits(model, x_val[:n], mean, std, precision=s.precision))

    warm_img_s, _ = measure(predict(s.bs), 1, 1)  # sets the count
    n = min(len(x_val), s.plan.eval_images, max(s.bs, round(s.plan.eval_s * warm_img_s / s.bs) * s.bs))
    eval_img_s, _ = measure(predict(n), 0, 1)

    naive_model.eval()
    with torch.no_grad():
        naive_model(torch.randn(s.bs, *x_val.shape[1:], device=s.device))  # kernel warm-up, as for the pipeline
        naive_eval_img_s, _ = measure(lambda: naive.eval_pass(naive_model, s.naive.eval_loader(n, s.bs)), 0, 1)
    naive_model.train()
    return eval_img_s, naive_eval_img_s, n



# ----------------------------------------------------------------------------------------------
# Batch preparation alone (where the pipeline's overhead comes from)


def batch_ms(task: Any, s: Setup) -> float:
    """Milliseconds per batch of a task's `batch` (cut, augment, normalise) plus fit's layout change."""
    g = torch.Generator().manual_seed(0)

    def step() -> int:
        idx = torch.randint(0, task.n_train, (s.bs,), generator=g)
        x, _ = task.batch(idx, g)
        x.contiguous(memory_format=torch.channels_last)
        return 1

    rate, _ = measure(step, s.plan.warmup, lambda dt: s.plan.steps_for(dt, target_s=min(2.0, s.plan.target_s)))
    return 1000 / rate


def batch_prep_ms(s: Setup) -> dict[str, float]:
    """`batch_ms` of classification and of every pretext task (default options)."""
    tasks = {"classification": classification(s.splits, s),
             **{name: make_task(name, s.splits, None, s.precision) for name in TASKS}}
    return {name: batch_ms(task, s) for name, task in tasks.items()}



# ----------------------------------------------------------------------------------------------
# The training step with and without torch.compile (for scripts/gpu_check.sh)


def compile_check(device: str = "cuda", preset: str = "gpu", steps: int = 20, image_size: int = 32,
                  classes: int = 10) -> dict[str, Any]:
    """Images/s of a preset's fine-tuning step (its backbone, batch size, optimizer; the model alone on a
    ready batch), eager and under torch.compile, with the precision and layout `auto` picks on `device`;
    the compiled warm-up (compilation included) and peak GPU memory beside them."""
    threads = hw.setup_threads()  # as the bench and training do: torch's default oversubscribes a busy machine
    dev = hw.pick_device(device)
    p = PRESETS[preset]
    cfg = dataclasses.replace(p.finetune, precision="auto")
    precision = hw.pick_precision(cfg.precision, dev)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    x = torch.randn(cfg.batch_size, 3, image_size, image_size, device=dev).contiguous(memory_format=layout)
    y = torch.randint(0, classes, (cfg.batch_size,), device=dev)
    out: dict[str, Any] = {"device": str(dev), "threads": threads, "preset": preset, "backbone": p.backbone,
                           "batch_size": cfg.batch_size, "precision": precision,
                           "channels_last": cfg.channels_last}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = Classifier(make_backbone(p.backbone, 3), classes).to(dev, memory_format=layout)
        net = torch.compile(model) if compiled else model
        step = train_step(net, x, y, smoothed_cross_entropy, dev, precision, cfg)
        first = warm_up(step, 1)  # compiles, where compiled
        warm_up(step, 2)
        rate, _ = measure(step, 0, steps)
        out["compiled" if compiled else "eager"] = {"img_s": rate, "first_step_s": first}
    out["compile_speedup"] = out["compiled"]["img_s"] / out["eager"]["img_s"]
    if dev.type == "cuda":
        out["cuda_max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out

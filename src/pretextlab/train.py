"""The one training loop, shared by pretext pretraining and supervised fine-tuning.

A run is a folder: config.json, metrics.csv, TensorBoard events, checkpoint.pt (every epoch,
atomic) and, when finished, summary.json. Re-running the same command resumes from the last
checkpoint; every random draw of epoch e comes from a generator seeded by (seed, e), so a resumed
run ends with exactly the metrics of an uninterrupted one.

Under torchrun (see dist.py) every rank runs this same loop on its slice of each batch; rank 0
alone writes the run folder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import dist, hw
from .errors import UserError
from .layout import CHECKPOINT
from .recorder import Progress, Recorder
from .runs import check_resumable

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that decides a run's numbers (and so must match when a run resumes)."""

    epochs: int = 15
    batch_size: int = 256
    optimizer: str = "sgd"  # sgd (Nesterov) | adamw
    lr: float = 0.2  # peak learning rate, per batch of `batch_size`
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    # onecycle: linear warm-up then linear decay to 0 | cosine | constant | plateau: constant until the
    # monitored validation metric stops improving for `patience` evaluations (epochs is then the maximum) |
    # wsd: warm-up, stable (constant), then a linear decay to 0 over the last `cooldown` of the steps
    schedule: str = "onecycle"
    warmup: float = 0.2  # fraction of all steps spent warming up
    cooldown: float = 0.2  # wsd: fraction of all steps, at the end, over which the rate falls to 0
    label_smoothing: float = 0.1
    backbone_lr_scale: float = 1.0  # < 1 keeps pretrained features from being washed out early
    transfer_stages: int = 0  # with pretrained weights: take only the first N backbone stages (0: all)
    freeze_backbone: bool = False  # linear probe
    seed: int = 0
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: bool = True
    compile: bool = False  # torch.compile the training forward/backward (pays off on long runs)
    evals: int = 0  # at least this many validation evaluations per run, spaced evenly in each epoch (0: per epoch)
    patience: int = 0  # plateau schedule: stop after this many evaluations without improvement
    tta: str = "none"  # classification: test-time augmentation at every evaluation (none | flip | flip-translate)
    ema: float = 0.0  # > 0: evaluate and keep an exponential moving average of the weights, this decay per step

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        check_finite({"--lr": self.lr, "--momentum": self.momentum, "--betas": self.betas,
                      "--weight-decay": self.weight_decay, "--warmup": self.warmup,
                      "--label-smoothing": self.label_smoothing, "--backbone-lr-scale": self.backbone_lr_scale,
                      "--ema": self.ema})
        check_precision(self.precision)
        check_seed(self.seed)
        if self.optimizer not in ("sgd", "adamw"):
            raise UserError(f"--optimizer {self.optimizer} is unknown; use sgd or adamw")
        if self.schedule not in SCHEDULES:
            raise UserError(f"--schedule {self.schedule} is unknown; use {', '.join(SCHEDULES)}")
        if (self.schedule == "plateau") != (self.patience > 0):
            raise UserError("--schedule plateau needs --patience N (evaluations without improvement before stopping), "
                            "and --patience needs --schedule plateau")
        if self.evals < 0:
            raise UserError("--evals must be >= 0 (0: one evaluation per epoch)")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise UserError("--epochs must be >= 1, --batch-size >= 2 and --lr > 0")
        if not 0 <= self.ema < 1:
            raise UserError("--ema must be in [0, 1): the weight average's decay per step (0: no average)")
        if self.transfer_stages < 0:
            raise UserError("--transfer-stages must be >= 0 (0: all stages)")
        if not 0 <= self.warmup < 1:
            raise UserError(f"--warmup {self.warmup:g} is the share of the steps spent warming up, in [0, 1); "
                            "e.g. 0.2 warms up over the first 20% of the steps")
        if not 0 < self.cooldown <= 1 or (self.schedule == "wsd" and self.warmup + self.cooldown > 1):
            raise UserError(f"--cooldown {self.cooldown:g} is the share of the steps at the end over which the rate "
                            "falls to 0, in (0, 1], and with --warmup at most 1 in all; e.g. 0.2")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"--label-smoothing {self.label_smoothing:g} must be in [0, 1); e.g. 0.1 (0: none)")
        if not 0 <= self.momentum < 1 or not all(0 <= b < 1 for b in self.betas):
            raise UserError("--momentum and --betas must be in [0, 1); e.g. --momentum 0.9, --betas 0.9,0.999")
        if self.weight_decay < 0 or self.backbone_lr_scale < 0:
            raise UserError("--weight-decay and --backbone-lr-scale must be >= 0")


SCHEDULES = ("onecycle", "cosine", "constant", "plateau", "wsd")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAX_SEED = 2**32 - 1  # seeds are mixed with epochs and ranks into 64-bit generator seeds (epoch_generator, dist)


def check_precision(precision: str, flag: str = "--precision") -> None:
    """Refuse a precision the loop cannot train in, rather than train in fp32 while every record says otherwise."""
    if precision not in PRECISIONS:
        raise UserError(f"{flag} {precision} is unknown; use {', '.join(PRECISIONS)}")


def check_seed(seed: int, flag: str = "--seed") -> None:
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"{flag} {seed} is out of range; use a seed between 0 and {MAX_SEED}, e.g. 0")


def check_finite(values: dict[str, float | tuple[float, ...]]) -> None:
    """NaN or infinity in a setting trains to the end on NaN losses: refused up front, naming the flag."""
    for flag, value in values.items():
        if not all(math.isfinite(v) for v in (value if isinstance(value, tuple) else (value,))):
            raise UserError(f"{flag} {value} is not a finite number; give an ordinary number")
# Fields added after runs were first stored, left out of config.json at their default so that those runs
# still compare equal (and resume) under the same settings.
LATER_FIELDS = {"evals": 0, "patience": 0, "tta": "none", "ema": 0.0, "cooldown": 0.2}
MIN_DELTA = 1e-3  # plateau schedule: an evaluation improves on the best when it beats it by more than this
LOG_EVERY = 10  # at most this many optimizer steps between training-loss points in steps.csv and TensorBoard
LOG_POINTS = 100  # short runs log more often: at least this many points where the run has the steps


def train_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The config as stored in config.json (JSON types)."""
    settings = {**dataclasses.asdict(cfg), "betas": list(cfg.betas)}
    return {k: v for k, v in settings.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


def eval_steps(total: int, steps_per_epoch: int, evals: int) -> list[int]:
    """The global optimizer steps (1-based) after which the loop evaluates: at least `evals` over the run
    (0: one per epoch), as k evenly spaced points in every epoch, the last at its end. Fine spacing
    makes two arms' curves comparable step by step whatever the epoch count; ending each epoch on an
    evaluation means an interval never spans a checkpoint, so a resumed run logs exactly what an
    uninterrupted one does, and no evaluation is spent only to align with epochs."""
    epochs = total // steps_per_epoch
    k = min(steps_per_epoch, max(1, math.ceil(evals / epochs))) if evals > 0 else 1
    return sorted({e * steps_per_epoch + max(1, round(steps_per_epoch * j / k))
                   for e in range(epochs) for j in range(1, k + 1)})


def best_index(history: list[dict[str, float]], monitor: tuple[str, str]) -> int:
    """The evaluation that set the best of the monitored validation metric: the last one that beat the best
    before it by more than MIN_DELTA. monitor = (metric, "max" | "min")."""
    key, mode = f"val_{monitor[0]}", monitor[1]
    values = [r[key] if mode == "max" else -r[key] for r in history if key in r]
    best_at = 0
    for i, v in enumerate(values):
        if v > values[best_at] + MIN_DELTA:
            best_at = i
    return best_at


def plateaued(history: list[dict[str, float]], monitor: tuple[str, str], patience: int) -> bool:
    """The plateau rule: the monitored validation metric has not beaten its best by more than
    MIN_DELTA for `patience` evaluations."""
    return len(history) - 1 - best_index(history, monitor) >= patience


class Task(Protocol):
    """What the loop needs from a task (supervised classification or a pretext task)."""

    n_train: int  # examples per epoch

    def batch(self, idx: Tensor, g: torch.Generator) -> tuple[Tensor, Any]:
        """Model inputs and targets (a tensor, or what the task's loss takes) for the training examples
        `idx`, augmented with generator g."""

    def loss(self, out: Tensor, target: Any) -> Tensor: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics; must include 'loss'."""


def run_length(history: list[dict[str, float]], cfg: TrainConfig, steps_per_epoch: int) -> dict[str, Any]:
    """How long a finished run trained against its budget, for its summary: the plateau schedule may stop
    it early, and the report says which arm stopped first."""
    planned = cfg.epochs * steps_per_epoch
    steps = int(history[-1].get("step", len(history) * steps_per_epoch))
    return {"steps": steps, "planned_steps": planned, "stopped_early": steps < planned, "schedule": cfg.schedule,
            **({"patience": cfg.patience, "kept": "best"} if cfg.schedule == "plateau" else {})}


def monitor_of(task: Task) -> tuple[str, str]:
    """What the plateau schedule watches: a task's `monitor` (classification: macro-F1, higher is better),
    else its validation loss."""
    return getattr(task, "monitor", ("loss", "min"))


def log_every(total: int) -> int:
    """Steps between training-loss points: every LOG_EVERY steps, or finer so a short run still draws a curve."""
    return max(1, min(LOG_EVERY, total // LOG_POINTS))


def stable_end(total: int, schedule: str, cooldown: float) -> int:
    """The step at which a wsd schedule's rate starts to fall (the whole run for the other constant ones);
    the plateau a report reads off such a run is the one reached before it (Hagele et al. 2024, WSD)."""
    return total - int(total * cooldown) if schedule == "wsd" else total


def lr_factor(step: int, total: int, schedule: str, warmup: float, cooldown: float = 0.2) -> float:
    """Multiplier of the peak learning rate at `step` (0-based) of `total`."""
    w = int(total * warmup)
    if step < w:
        return (step + 1) / w
    if schedule in ("constant", "plateau"):
        return 1.0
    if schedule == "wsd":
        decay_from = stable_end(total, schedule, cooldown)
        return 1.0 if step < decay_from else (total - step) / max(1, total - decay_from)
    p = (step - w) / max(1, total - w)
    return 1.0 - p if schedule == "onecycle" else 0.5 * (1 + math.cos(math.pi * p))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    if cfg.freeze_backbone:
        for p in backbone:
            p.requires_grad_(False)
        groups = [{"params": rest, "lr": cfg.lr}]
    else:
        groups = [{"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale}, {"params": rest, "lr": cfg.lr}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


def weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights and BatchNorm statistics (Polyak averaging, as in
    airbench, Jordan 2024): evaluated and kept instead of the last step's weights. None when decay is 0."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_order(n: int, batch_size: int, g: torch.Generator) -> tuple[Tensor, int, int]:
    """A shuffled order padded (by wrapping) to whole batches: every batch has the same size."""
    bs = min(batch_size, n)
    steps = math.ceil(n / bs)
    order = torch.randperm(n, generator=g)
    if steps * bs > n:
        order = torch.cat([order, order[: steps * bs - n]])
    return order, steps, bs


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / min(batch_size, n))


def fit(model: nn.Module, task: Task, cfg: TrainConfig, out_dir: Path, run_config: dict[str, Any],
        meta: dict[str, Any] | None = None, device: torch.device | None = None, quiet: bool = False,
        on_epoch_end: Callable[[int, dict], None] | None = None, resolved: dict[str, Any] | None = None,
        precision: str = "fp32") -> list[dict[str, float]]:
    """Train `model` on `task` for cfg.epochs, resuming from out_dir's checkpoint if there is one; returns the
    history (one row per evaluation, as in metrics.csv). run_config is written to config.json and must equal
    the stored one on resume; resolved (facts of this process that never change the numbers) is recorded but
    not compared; meta travels inside the checkpoint; precision is the one the driver decided for the run."""
    device = device or torch.device("cpu")
    config = {**run_config, "train": train_settings(cfg)}
    check_resumable(Path(out_dir), config, Path(out_dir) / CHECKPOINT)
    torch.manual_seed(cfg.seed)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    ema = weight_average(model, cfg.ema)
    kept = model if ema is None else ema.module  # the weights evaluated and kept (with --ema: the average)
    step_model = dist.wrap(model, device)  # under torchrun: DistributedDataParallel averages gradients
    step_model = torch.compile(step_model) if cfg.compile else step_model  # same parameters, fused kernels
    batch = dist.global_batch(min(cfg.batch_size, task.n_train))  # all ranks together
    steps = steps_per_epoch(task.n_train, batch)
    total = cfg.epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg.schedule, cfg.warmup,
                                                                          cfg.cooldown))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    rec = Recorder(out_dir, config, meta, quiet)
    run = rec.restore(model, kept, ema, opt, sched, scaler, device)
    rec.start({"precision": precision, "channels_last": cfg.channels_last, "device": str(device),
               "steps_per_epoch": steps, "world_size": dist.world_size(), "batch_size": batch, **(resolved or {})},
              total, run)
    evaluate_after = set(eval_steps(total, steps, cfg.evals))
    every = log_every(total)
    try:
        epoch = None  # the last epoch this process trained
        for epoch in range(run.epoch, cfg.epochs if not run.stopped else run.epoch):
            g = epoch_generator(cfg.seed, epoch)
            order, steps, bs = epoch_order(task.n_train, batch, g)
            order, bs, g = dist.shard(order, steps, bs, g)  # this rank's slice of every batch
            _training_mode(model, cfg)
            since = Interval(device)
            for step in range(steps):
                x, y = task.batch(order[step * bs:(step + 1) * bs], g)  # cut, augment, normalise
                if cfg.channels_last and isinstance(x, Tensor) and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with hw.autocast(device, precision):
                    out = step_model(x)  # forward
                    loss = task.loss(out, y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()  # backward
                scaler.step(opt)  # step
                scaler.update()
                sched.step()
                if ema is not None:
                    ema.update_parameters(model)
                since.add(loss, out, y)
                done = epoch * steps + step + 1  # optimizer steps so far
                if done % every == 0 or step == steps - 1:  # log (.item() syncs: not every step)
                    value = loss.item()
                    if dist.world_size() == 1:  # under torchrun: checked on the all-summed loss, at evaluations
                        rec.diverged(value, done)
                    rec.loss(done, value, run, logged=done % every == 0)
                rec.bar.update(1)
                if done in evaluate_after:  # evaluate
                    at = epoch + 1 if step == steps - 1 else round(done / steps, 4)  # epochs so far
                    row = since.row(task, kept, done, at, bs, opt, run, rec)
                    rec.evaluation(row, run)
                    if cfg.schedule == "plateau":  # early stopping keeps the best evaluation's weights
                        if best_index(run.history, monitor_of(task)) == len(run.history) - 1:
                            run.best = {k: v.detach().to("cpu", copy=True) for k, v in kept.state_dict().items()}
                        run.stopped = plateaued(run.history, monitor_of(task), cfg.patience)
                    _training_mode(model, cfg)  # evaluating() restored train mode on the whole model
                    since = Interval(device)
                    if run.stopped:
                        log.info("%s: validation %s has not improved for %d evaluations: stopping at step %d",
                                 Path(out_dir).name, monitor_of(task)[0], cfg.patience, done)
                        break
            rec.checkpoint(epoch, run, model, kept, ema, opt, sched, scaler)  # at every epoch's end
            if on_epoch_end and run.history:
                on_epoch_end(epoch, run.history[-1])
            if run.stopped:
                break
        if run.best is not None:  # early stopping keeps the best; training that ended here checkpoints it
            kept.load_state_dict(run.best)
            if epoch is not None:
                rec.checkpoint(epoch, run, model, kept, ema, opt, sched, scaler)
    finally:
        rec.close()
    if kept is not model:  # the caller gets the weights that were evaluated
        model.load_state_dict(kept.state_dict())
    return run.history


class Interval:
    """The training loss (and, for classification-shaped outputs, accuracy) summed over the steps since the
    last evaluation, on the device (no sync per step), and the evaluation row that closes the interval."""

    def __init__(self, device: torch.device):
        self.device, self.t0 = device, time.perf_counter()
        self.loss, self.correct = torch.zeros((), device=device), torch.zeros((), device=device)
        self.scored, self.steps = 0, 0  # examples scored (a pretext batch may hold several per image), steps

    def add(self, loss: Tensor, out: Tensor, y: Any) -> None:
        self.loss += loss.detach()
        self.steps += 1
        if out.ndim == 2 and isinstance(y, Tensor) and y.ndim == 1:  # a class per example: training accuracy
            self.correct += (out.detach().argmax(1) == y).sum()
            self.scored += len(y)

    def row(self, task: Task, kept: nn.Module, done: int, epoch: int | float, bs: int, opt: torch.optim.Optimizer,
            run: Progress, rec: Recorder) -> dict[str, float]:
        """Validation metrics (each rank its part; the task combines them) and this interval's training numbers."""
        interval = time.perf_counter() - self.t0
        run.trained += interval
        counts = dist.all_sum(torch.stack([self.loss, self.correct, torch.tensor(float(self.scored),
                                                                                  device=self.device)]))
        rec.diverged(counts[0].item(), done)  # any step since the last evaluation, on every rank alike
        dist.sync_buffers(kept)  # rank 0's BatchNorm statistics on every rank
        metrics = task.evaluate(kept)
        run.elapsed += time.perf_counter() - self.t0
        world = dist.world_size()
        return {"epoch": epoch, "step": done, "images_seen": done * bs * world,
                "train_loss": counts[0].item() / (self.steps * world),
                **({"train_accuracy": counts[1].item() / counts[2].item()} if counts[2] else {}),
                **{f"val_{k}": v for k, v in metrics.items()}, "lr": opt.param_groups[-1]["lr"],
                "images_per_s": self.steps * bs * world / interval,
                "epoch_time_s": time.perf_counter() - self.t0,  # since the last evaluation: training and evaluation
                "wall_time_s": run.elapsed,
                "train_time_s": run.trained}  # wall time less the evaluations: what time to accuracy counts


def _training_mode(model: nn.Module, cfg: TrainConfig) -> None:
    """Train mode; a linear probe (frozen backbone) keeps the backbone's BatchNorm statistics too."""
    model.train()
    if cfg.freeze_backbone:
        model.backbone.eval()



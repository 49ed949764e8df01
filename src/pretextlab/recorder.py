"""Everything train.fit writes and reads back, so that its loop stays a loop: config.json, the checkpoint
(saved atomically at every epoch's end, restored on resume), metrics.csv and steps.csv, TensorBoard events,
the progress bar and the log lines. Under torchrun only rank 0 writes; every rank restores.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import dist
from .errors import UserError
from .io import UnreadableFile, load_torch, save_json, save_torch
from .layout import CHECKPOINT, CONFIG, METRICS, STEPS, TENSORBOARD
from .runs import write_csv

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where a run stands: what a checkpoint holds besides the weights, optimizer and generator states."""

    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation, as in metrics.csv
    losses: list[dict[str, float]] = field(default_factory=list)  # the training loss every few steps (steps.csv)
    epoch: int = 0  # the next epoch to train
    elapsed: float = 0.0  # wall seconds of training and evaluation
    trained: float = 0.0  # seconds of training steps only (nan: a run from before it was counted)
    stopped: bool = False  # the plateau schedule ended the run before its maximum budget
    best: dict[str, Tensor] | None = None  # the plateau schedule: the best evaluation's kept weights (on the CPU)


def upgrade_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """The one compatibility step for checkpoints of older versions, which lacked the steps.csv losses, the
    plateau flag, the training-only time (unknown: nan) and the averaged weights' own entry."""
    return {"losses": [], "stopped": False, "trained": math.nan, "world_size": 1, "best_model": None, **state}


class Recorder:
    """The run folder's writer for one fit: rank 0 writes, everything is atomic."""

    def __init__(self, folder: Path, config: dict[str, Any], meta: dict[str, Any] | None, quiet: bool):
        self.folder, self.config, self.meta, self.quiet = Path(folder), config, meta or {}, quiet
        self.ckpt = self.folder / CHECKPOINT
        self.main = dist.is_main()
        self.writer = self.bar = None
        self.shown: dict[str, str] = {}  # the last validation metrics, kept in the progress bar

    def restore(self, model: nn.Module, kept: nn.Module, ema: Any, opt: torch.optim.Optimizer, sched: Any,
                scaler: Any, device: torch.device) -> Progress:
        """The state of an interrupted run (its checkpoint), loaded into the given objects; a fresh Progress
        where there is none. A damaged or edited checkpoint is refused in one line."""
        if not self.ckpt.exists():
            return Progress()
        try:
            state = load_torch(self.ckpt, device)
        except UnreadableFile:
            raise self._unresumable("it is truncated or damaged") from None
        if not isinstance(state, dict):
            raise self._unresumable("it holds no checkpoint dict")
        state = upgrade_checkpoint(state)
        _check_world_size(self.folder, state["world_size"])
        try:  # a missing key, another shape, a value of another type
            model.load_state_dict(state.get("training_model", state["model"]))  # "model": what was kept
            if ema is not None:
                kept.load_state_dict(state["model"])
                ema.n_averaged.fill_(state["ema_steps"])
            opt.load_state_dict(state["optimizer"])
            if any(isinstance(v, Tensor) and v.ndim and v.shape != p.shape for p, s in opt.state.items()
                   for v in s.values()):  # load_state_dict does not compare them: the first step would fail
                raise ValueError("the optimizer's state has other shapes than the weights")
            sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"])
            progress = Progress(state["history"], state["losses"], int(state["epoch"]) + 1, float(state["elapsed"]),
                                float(state["trained"]), bool(state["stopped"]), state["best_model"])
            if progress.best is not None and {k: v.shape for k, v in progress.best.items()} != {
                    k: v.shape for k, v in kept.state_dict().items()}:  # loaded at the end: it must fit now
                raise ValueError("the best evaluation's weights have other shapes than the model")
        except KeyError as e:
            raise self._unresumable(f"it lacks '{e.args[0]}'") from None
        except (RuntimeError, TypeError, ValueError, AttributeError, IndexError) as e:
            why = " ".join(str(e).split())[:200]  # torch's message, on one line
            raise self._unresumable(f"its contents do not fit this run ({why})") from None
        log.info("resuming %s from epoch %d", self.folder, progress.epoch + 1)
        return progress

    def start(self, resolved: dict[str, Any], total: int, progress: Progress) -> None:
        """config.json with what this process resolved, TensorBoard and the progress bar."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm.auto import tqdm

        if self.main:
            save_json({**self.config, "resolved": resolved}, self.folder / CONFIG)
            self.writer = SummaryWriter(str(self.folder / TENSORBOARD))
        self.total = total
        steps = resolved["steps_per_epoch"]
        self.bar = tqdm(total=total, initial=progress.epoch * steps, unit="step", dynamic_ncols=True, leave=False,
                        disable=self.quiet or not self.main or progress.stopped, desc=self.folder.name)

    def loss(self, step: int, value: float, progress: Progress, logged: bool) -> None:
        """The training loss as read at `step`: in the bar, and every few steps in steps.csv and TensorBoard."""
        self.bar.set_postfix(loss=f"{value:.3f}", **self.shown, refresh=False)
        if logged:
            progress.losses.append({"step": step, "train_loss": value})
            if self.writer:
                self.writer.add_scalar("train_loss_step", value, step)

    def evaluation(self, row: dict[str, float], progress: Progress) -> None:
        """One evaluation: its row in metrics.csv (and steps.csv so far), TensorBoard and a log line."""
        progress.history.append(row)
        self.shown = {k: f"{row[k]:.3f}" for k in ("val_f1_macro", "val_accuracy", "val_miou", "val_pixel_accuracy")
                      if k in row}
        if not self.main:
            return
        for k, v in row.items():
            if k not in ("epoch", "step"):
                self.writer.add_scalar(k, v, row["step"])
        self.writer.flush()
        write_csv(progress.history, self.folder / METRICS)
        write_csv(progress.losses, self.folder / STEPS)
        keys = [k for k in row if k.startswith("val_") or k in ("train_loss", "train_accuracy")]
        msg = f"{self.folder.name} step {row['step']:g}/{self.total} (epoch {row['epoch']:g}) " + " ".join(
            f"{k}={row[k]:.4g}" for k in keys)
        (log.info if self.quiet else self.bar.write)(msg)

    def checkpoint(self, epoch: int, progress: Progress, model: nn.Module, kept: nn.Module, ema: Any,
                   opt: torch.optim.Optimizer, sched: Any, scaler: Any) -> None:
        """Everything an exact resume needs, at an epoch's end (or where the plateau schedule stopped)."""
        if not self.main:
            return
        averaged = {} if ema is None else {"training_model": model.state_dict(), "ema_steps": int(ema.n_averaged)}
        save_torch({"model": kept.state_dict(), **averaged, "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "rng": torch.get_rng_state(),
                    "epoch": epoch, "elapsed": progress.elapsed, "trained": progress.trained,
                    "history": progress.history, "losses": progress.losses, "stopped": progress.stopped,
                    "best_model": progress.best,
                    "world_size": dist.world_size(), "config": self.config, "meta": self.meta}, self.ckpt)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer:
            self.writer.close()

    def diverged(self, loss: float, step: int) -> None:
        """Stop a diverged run at once: NaN/inf losses would train on to the end and be scored as if they meant
        something. Raised before the epoch's checkpoint is written, so the last good one stays."""
        if not math.isfinite(loss):
            kept = f"; {self.ckpt} holds the last good epoch" if self.ckpt.exists() else ""
            raise UserError(f"the training loss became {loss} at step {step}; lower --lr or check the data{kept}")

    def _unresumable(self, why: str) -> UserError:
        return UserError(f"cannot resume from {self.ckpt}: {why}; delete it to start this run afresh, or restore it "
                         "from a copy")


def _check_world_size(out_dir: Path, stored: int) -> None:
    """Refuse to resume on another number of processes: batches would be cut and augmented otherwise."""
    if stored != dist.world_size():
        how = "without torchrun" if stored == 1 else f"with torchrun and {stored} processes in all"
        raise UserError(f"{out_dir} was trained by {stored} process(es), this is {dist.world_size()}; resume it "
                        f"{how} (--nnodes x --nproc_per_node), or use another --out to start afresh")

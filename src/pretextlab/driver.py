"""The one run driver: every run, a pretraining or a fine-tuning, goes through `execute`.

It takes the folder's lock, returns a finished run's summary as it is, opens the data once, decides the
device and the precision once (recorded in config.json), lets the job build its model and loop task
under the run's seed, calls train.fit and writes the summary. A job says only what differs between
runs: the settings a resumed folder must match, its model and task, and its summary's own part.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from . import dist
from .data import DataConfig, check_out_outside_data, data_facts, open_data
from .data.sources import Dataset
from .io import save_json
from .layout import SUMMARY
from .runs import check_same_run_data, decide_precision, finished_summary, stored_precision, summarize, writer_lock
from .schema import SCHEMA_KEY, SCHEMA_VERSION
from .train import Task, TrainConfig, fit


@dataclass
class Context:
    """What a job builds its run from: the folder, the opened data, and the device and precision decided once."""

    folder: Path
    ds: Dataset
    device: torch.device
    precision: str
    finished: dict[str, Any] | None  # the summary of a finished run that is run again (see Job.complete)


@dataclass
class Built:
    """A job's run, ready for train.fit."""

    model: nn.Module
    task: Task
    config: dict[str, Any]  # config.json besides the settings: what the run was built from
    meta: dict[str, Any]  # carried inside the checkpoint: what evaluate and predict need


class Job(Protocol):
    """A run's recipe: pretext.Pretraining or finetune.Finetuning."""

    data: DataConfig
    cfg: TrainConfig

    def settings(self) -> dict[str, Any]:
        """What decides the run's numbers: a folder with other settings is never resumed or reused."""

    def load(self, data: DataConfig) -> Dataset:
        """The data this run reads (the downstream task's layout)."""

    def complete(self, folder: Path) -> bool:
        """Whether a finished folder still holds what callers need (a kept study has no weights)."""

    def build(self, ctx: Context) -> Built:
        """Model and loop task, built after torch.manual_seed(cfg.seed), so --seed decides the initial weights."""

    def finish(self, ctx: Context, built: Built, history: list[dict[str, float]]) -> dict[str, Any] | None:
        """The summary's own part, on every rank (collective evaluations); rank 0's result is written."""


def execute(job: Job, folder: Path, dataset: Dataset | None = None, device: str = "auto", quiet: bool = False,
            precision: str | None = None, on_epoch_end: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Run (or resume, or just return) the run of `job` in `folder` and return its summary. precision is the
    caller's decision for `--precision auto` (a study decides once for all its runs)."""
    folder = Path(folder)
    check_out_outside_data(job.data, folder)
    with writer_lock(folder):
        settings = job.settings()
        done = finished_summary(folder, settings)
        if done is not None and job.complete(folder):
            return done
        dev, ds = open_data(job.data, device, dataset, job.load)
        check_same_run_data(folder, ds.fingerprint)
        chosen = decide_precision(job.cfg.precision, stored_precision(folder), dev, f"{folder} was trained in",
                                  precision)
        ctx = Context(folder, ds, dev, chosen, done)
        torch.manual_seed(job.cfg.seed)  # --seed decides the initial weights
        built = job.build(ctx)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        history = fit(built.model, built.task, job.cfg, folder, {**built.config, **settings}, built.meta, dev, quiet,
                      on_epoch_end, data_facts(ds), ctx.precision)
        summary = job.finish(ctx, built, history)
        if dist.is_main():
            summary = {SCHEMA_KEY: SCHEMA_VERSION, **summarize(history), **summary,
                       "wall_time_s": history[-1]["wall_time_s"],
                       "process_time_s": time.perf_counter() - t0}
            save_json(summary, folder / SUMMARY)
        return dist.from_main(summary)  # every rank moves on once the run's files are complete

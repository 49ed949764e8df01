"""Measuring throughput fairly: warm-up, timed steps sized to the machine, interleaved rounds."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..study.presets import PRESETS

# The pretext tasks train with pretextlab's pretraining optimizer (SGD, Nesterov momentum): the fast preset's.
PRETRAIN = PRESETS["fast"].pretrain


@dataclass(frozen=True)
class Plan:
    """How long to measure. Step counts adapt to the machine: a slow backbone gets fewer steps."""

    max_batch: int  # the batch size is capped at this
    target_s: float  # aim for this many timed seconds per training measurement
    eval_s: float  # ... and per evaluation measurement
    min_steps: int
    max_steps: int
    warmup: int  # untimed calls before each timed measurement
    eval_images: int  # at most this many validation images per evaluation pass
    synthetic_per_class: int  # images per class of the synthetic set (when no data is given)
    matmul_reps: int
    rounds: int  # training measurements are timed in this many interleaved turns

    def steps_for(self, seconds_per_step: float, target_s: float | None = None) -> int:
        """Steps per round that make a measurement last about `target_s` in all, within [min_steps, max_steps]."""
        want = math.ceil((target_s or self.target_s) / self.rounds / max(seconds_per_step, 1e-6))
        return min(self.max_steps, max(self.min_steps, want))


# quick: a smoke test that finishes in well under a minute even on one busy core.
QUICK = Plan(max_batch=16, target_s=0.3, eval_s=0.3, min_steps=1, max_steps=3, warmup=1, eval_images=64,
             synthetic_per_class=20, matmul_reps=2, rounds=1)
# full: long enough for stable numbers (the default backbone times ~15 s per measurement, in 3 turns).
FULL = Plan(max_batch=4096, target_s=15.0, eval_s=5.0, min_steps=2, max_steps=400, warmup=2, eval_images=5000,
            synthetic_per_class=1500, matmul_reps=10, rounds=3)


# ----------------------------------------------------------------------------------------------
# The one timing helper


def sync() -> None:
    """Wait for the GPU's queued work, so that a clock read next counts it (nothing to wait for on a CPU)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def warm_up(step: Callable[[], int], warmup: int) -> float:
    """Run `step` `warmup` times untimed; return the duration of the last call (0 if none)."""
    last = 0.0
    for _ in range(warmup):
        sync()
        t = time.perf_counter()
        step()
        sync()
        last = time.perf_counter() - t
    return last


def timed(step: Callable[[], int], steps: int) -> tuple[int, float]:
    """Items done and seconds taken by `steps` calls of `step`."""
    sync()
    t0 = time.perf_counter()
    items = sum(step() for _ in range(steps))
    sync()
    return items, time.perf_counter() - t0


def measure(step: Callable[[], int], warmup: int, steps: int | Callable[[float], int]) -> tuple[float, int]:
    """Items per second of `step`, a callable that does some work and returns how many items it did.

    `warmup` calls run untimed first; `steps` is a count or a function choosing the count from the
    duration of the last warm-up call. Returns (items per second, steps timed).
    """
    last = warm_up(step, warmup)
    n_steps = steps(last) if callable(steps) else steps
    items, seconds = timed(step, n_steps)
    return items / seconds, n_steps


def interleaved(paths: dict[str, Callable[[], tuple[int, float]]], rounds: int) -> dict[str, float]:
    """Items per second of each path, timed in turns (A B C, A B C, ...) and pooled over the rounds.

    On a shared machine a neighbour's load comes and goes; timing the paths one after another lets it
    depress one path and not the other, so their ratio would measure the neighbour. In turns, every
    path sees the same mix of quiet and busy moments.
    """
    items, seconds = dict.fromkeys(paths, 0), dict.fromkeys(paths, 0.0)
    for _ in range(rounds):
        for name, timed in paths.items():
            n, t = timed()
            items[name] += n
            seconds[name] += t
    return {name: items[name] / seconds[name] for name in paths}

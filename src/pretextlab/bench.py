"""How fast is pretextlab on this machine, and where does the time go?

One process, one run, several measurements side by side, so that their ratios mean something:

1. the CPU's peak dense matmul throughput (fp32, and bf16 where the CPU runs it natively);
2. the model alone: forward + backward + SGD step on a float batch already in memory;
3. pretextlab's real training step: `train.fit` on real `data.make_splits` output, i.e. batch
   cutting, augmentation, normalisation and logging included (validation excluded, as fit times it
   separately);
4. the tutorial way (naive.py): `ImageFolder` + per-sample PIL transforms + `DataLoader(num_workers=2)`;
5. the same model-vs-pipeline comparison for the context-prediction pretext step, and evaluation
   (`finetune.predict_logits` vs a DataLoader loop).

From these: overhead = 1 - (3)/(2) (what the pipeline costs on top of the model), speedup over the
naive baseline = (3)/(4), and MFU = achieved training FLOP/s / peak FLOP/s (training ~ 3x forward).

Every measurement runs a few untimed warm-up calls first (allocation, oneDNN primitive creation,
DataLoader worker start-up), then times a number of steps chosen so the timed part lasts about
`Plan.target_s`; the pipeline and the naive baseline then time the same number of steps as the model.
The training measurements of one backbone are timed in interleaved turns (model, pipeline, naive,
model, ...), so that load from other processes on a shared machine falls on all of them alike.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import hw, naive
from .data import DataConfig, Splits, load_dataset, make_splits
from .errors import UserError
from .finetune import Classification, predict_logits
from .io import save_json
from .models import Classifier, count_flops, make_backbone
from .naive import write_synthetic_folder
from .pretext.context import ContextNet, ContextOptions, ContextPrediction
from .sources import Dataset
from .train import TrainConfig, fit, make_optimizer

CPU = torch.device("cpu")


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


def _warm_up(step: Callable[[], int], warmup: int) -> float:
    """Run `step` `warmup` times untimed; return the duration of the last call (0 if none)."""
    last = 0.0
    for _ in range(warmup):
        t = time.perf_counter()
        step()
        last = time.perf_counter() - t
    return last


def _timed(step: Callable[[], int], steps: int) -> tuple[int, float]:
    """Items done and seconds taken by `steps` calls of `step`."""
    t0 = time.perf_counter()
    items = sum(step() for _ in range(steps))
    return items, time.perf_counter() - t0


def _measure(step: Callable[[], int], warmup: int, steps: int | Callable[[float], int]) -> tuple[float, int]:
    """Items per second of `step`, a callable that does some work and returns how many items it did.

    `warmup` calls run untimed first; `steps` is a count or a function choosing the count from the
    duration of the last warm-up call. Returns (items per second, steps timed).
    """
    last = _warm_up(step, warmup)
    n_steps = steps(last) if callable(steps) else steps
    items, seconds = _timed(step, n_steps)
    return items / seconds, n_steps


def _interleaved(paths: dict[str, Callable[[], tuple[int, float]]], rounds: int) -> dict[str, float]:
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


# ----------------------------------------------------------------------------------------------
# Entry point


def run_bench(
    quick: bool = False,
    data: str | None = None,
    backbones: tuple[str, ...] = ("fast", "resnet18"),
    batch_size: int = 256,
    json_out: bool = False,
    out: Path | None = None,
) -> dict[str, Any]:
    """Measure peak, model, pipeline and naive throughput per backbone; print a table, return a dict.

    data: an image folder (one sub-folder per class, or a root with train/); None writes a synthetic
    JPEG folder to a temp dir. quick caps the batch at 16 and times only a few steps (a smoke test).
    json_out: the last line of stdout is the result as one JSON object. out: also save it there.
    """
    if not backbones:
        raise UserError("give at least one backbone to benchmark")
    for name in backbones:
        make_backbone(name)  # an unknown name fails now, not minutes into the run
    plan = QUICK if quick else FULL
    bs = max(2, min(batch_size, plan.max_batch))
    load_before = os.getloadavg()[0]  # others' load: it depresses every absolute number below
    threads = hw.setup_threads()
    precision = hw.pick_precision("auto", CPU)
    result: dict[str, Any] = {"machine": hw.machine_info(), "precision": precision, "threads": threads,
                              "batch_size": bs, "quick": quick, "load_avg_1min_at_start": load_before}

    with tempfile.TemporaryDirectory(prefix="pretextlab-bench-") as tmp:
        tmp_dir = Path(tmp)
        if data is None:
            root = write_synthetic_folder(tmp_dir / "synthetic", per_class=plan.synthetic_per_class)
            ds = load_dataset(str(root), cache_dir=tmp_dir / "cache")  # keep the user's cache clean
        else:
            root = naive.check_image_folder(Path(data).expanduser())
            ds = load_dataset(str(root))  # decoded once, then cached: re-runs start fast
        splits = make_splits(ds, 1.0, seed=0)
        result["data"] = {"source": data or "synthetic", "classes": len(ds.classes), "images": len(ds.train),
                          "image_size": ds.image_size, "channels": ds.channels}

        peaks, notes = _peak_gflops(plan)
        result["peak_gflops"] = peaks
        peak = peaks["bf16"] if precision == "bf16" and peaks["bf16"] else peaks["fp32"]
        naive_sets = naive.image_folder_sets(root, ds, splits)
        setup = _Setup(plan, bs, precision, ds, splits, naive_sets, tmp_dir, peak * 1e9)
        result["batch_prep_ms"] = _batch_prep_ms(setup)
        result["backbones"] = {name: _bench_backbone(name, setup) for name in backbones}

    first = result["backbones"][backbones[0]]
    for k in ("overhead", "speedup_vs_naive", "mfu"):
        result[k] = first[k]
    if load_before > 0.5:
        notes.append(f"other processes were using the CPU (1-min load average {load_before:.1f} on "
                     f"{hw.available_cores()} cores): absolute numbers are depressed")
    result["notes"] = notes

    print(format_report(result))
    if out is not None:
        save_json(result, Path(out))
    if json_out:
        print(json.dumps(result))
    return result


@dataclass
class _Setup:
    """What every backbone's measurements share."""

    plan: Plan
    bs: int
    precision: str
    ds: Dataset
    splits: Splits
    naive: naive.NaiveSets
    tmp: Path
    peak_flops: float  # FLOP/s of the precision `auto` picks: the MFU denominator


# ----------------------------------------------------------------------------------------------
# 1. Peak matmul


def _peak_gflops(plan: Plan, n: int = 2048) -> tuple[dict[str, float | None], list[str]]:
    """Dense n x n matmul GFLOP/s in fp32, and in bf16 only where the CPU has native bf16."""

    def rate(dtype: torch.dtype) -> float:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        c = torch.empty(n, n, dtype=dtype)

        def matmul() -> int:
            torch.mm(a, b, out=c)
            return 2 * n**3  # FLOPs

        flops, _ = _measure(matmul, 1, plan.matmul_reps)
        return flops / 1e9

    peaks: dict[str, float | None] = {"fp32": rate(torch.float32), "bf16": None}
    notes = []
    if hw.cpu_bf16_speedup() > 0:
        peaks["bf16"] = rate(torch.bfloat16)
    else:
        notes.append(f"bf16 peak not measured: no native bf16 on this CPU ({hw.cpu_capability()}); it would be "
                     "emulated and slower than fp32, so precision auto trains in fp32")
    return peaks, notes


# ----------------------------------------------------------------------------------------------
# Per backbone


def _bench_backbone(name: str, s: _Setup) -> dict[str, Any]:
    """All measurements of one backbone; the pipeline and naive paths time as many steps as the model."""
    plan, bs = s.plan, s.bs
    shape = (s.ds.channels, s.ds.image_size, s.ds.image_size)
    fwd_flops = count_flops(_classifier(name, s), shape)

    # 2. the model alone, on a ready channels_last float batch
    model = _classifier(name, s).to(memory_format=torch.channels_last)
    x = torch.randn(bs, *shape).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, len(s.ds.classes), (bs,))
    model_step = _train_step(model, x, y, s.precision)
    steps = plan.steps_for(_warm_up(model_step, plan.warmup))
    # 3. the real path: train.fit on a Classification task
    pipe_model = _classifier(name, s)
    pipeline = _fit_path(pipe_model, lambda sp: _classification(sp, s), "train", steps, s, f"{name}-classify")
    # 4. the tutorial way, same model, optimizer and loss, NCHW float32
    naive_model = _classifier(name, s)
    naive_step = naive.train_step(naive_model, s.naive.train_batches(bs))
    _warm_up(naive_step, plan.warmup)
    rates = _interleaved({"model": lambda: _timed(model_step, steps), "pipeline": pipeline,
                          "naive": lambda: _timed(naive_step, steps)}, plan.rounds)
    model_img_s, pipeline_img_s, naive_img_s = rates["model"], rates["pipeline"], rates["naive"]

    # 5a. evaluation: predict_logits on uint8 tensors vs a DataLoader loop (the models of 3 and 4)
    eval_img_s, naive_eval_img_s, n_eval = _eval_rates(pipe_model, naive_model, s)

    # 5b. the context-prediction pretext step: ready patch pairs vs ContextPrediction.batch inside fit
    o = ContextOptions()  # the defaults, which the task resolves for this image size
    p = o.resolved(s.ds.image_size).patch
    ctx = _context_net(name, s).to(memory_format=torch.channels_last)
    patches = torch.randn(2 * bs, shape[0], p, p).contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, 8, (bs,))
    ctx_step = _train_step(ctx, patches, targets, s.precision)
    ctx_steps = plan.steps_for(_warm_up(ctx_step, plan.warmup))
    ctx_pipeline = _fit_path(_context_net(name, s), lambda sp: ContextPrediction(sp, o, s.precision), "pool",
                             ctx_steps, s, f"{name}-context")
    pairs = _interleaved({"model": lambda: _timed(ctx_step, ctx_steps), "pipeline": ctx_pipeline}, plan.rounds)
    pretext_model, pretext_pipeline = pairs["model"], pairs["pipeline"]

    train_flops = 3 * fwd_flops  # forward + backward (~2x forward)
    return {
        "model_img_s": model_img_s,
        "pipeline_img_s": pipeline_img_s,
        "naive_img_s": naive_img_s,
        "overhead": 1 - pipeline_img_s / model_img_s,
        "speedup_vs_naive": pipeline_img_s / naive_img_s,
        "mfu": model_img_s * train_flops / s.peak_flops,
        "mfu_pipeline": pipeline_img_s * train_flops / s.peak_flops,
        "gflops_per_image_fwd": fwd_flops / 1e9,
        "eval_img_s": eval_img_s,
        "naive_eval_img_s": naive_eval_img_s,
        "pretext_model_pairs_s": pretext_model,
        "pretext_pipeline_pairs_s": pretext_pipeline,
        "pretext_overhead": 1 - pretext_pipeline / pretext_model,
        "steps": {"train": steps, "pretext": ctx_steps, "eval_images": n_eval},
    }


def _classifier(name: str, s: _Setup) -> Classifier:
    """The same initial weights for every path, so no path is timed on a different network."""
    torch.manual_seed(0)
    return Classifier(make_backbone(name, s.ds.channels), len(s.ds.classes))


def _context_net(name: str, s: _Setup) -> ContextNet:
    """The pretext network, seeded like `_classifier` so the model and fit paths start from the same weights."""
    torch.manual_seed(0)
    return ContextNet(make_backbone(name, s.ds.channels))


def _classification(splits: Splits, s: _Setup) -> Classification:
    """The supervised task exactly as `pretextlab train` builds it with its default options."""
    data = DataConfig()
    return Classification(splits, data.crop_pad(s.ds.image_size), data.flip, TrainConfig().label_smoothing,
                          s.precision)


def _train_step(model: nn.Module, x: Tensor, y: Tensor, precision: str) -> Callable[[], int]:
    """Forward, loss, backward and optimizer step on a fixed batch: the model's cost and nothing else."""
    cfg = TrainConfig(precision=precision)
    opt = make_optimizer(model.train(), cfg)

    def step() -> int:
        with hw.autocast(CPU, precision):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return len(y)

    return step


def _fit_path(model: nn.Module, make_task: Callable[[Splits], Any], part: str, steps: int, s: _Setup,
              name: str) -> Callable[[], tuple[int, float]]:
    """A measurement of train.fit's training steps: each call fits one epoch of `steps` batches.

    fit's `images_per_s` covers batch cutting, augmentation, forward, backward, step and the in-loop
    logging of each epoch, not the validation pass: exactly the part comparable with the model alone.
    `part` is the split the task draws from ("train" for classification, "pool" for pretext tasks).
    A 1-step fit warms up first. Returns a callable giving (examples, seconds) like `_timed`.
    """
    calls = iter(range(10**9))

    def run(n_steps: int) -> tuple[int, float]:
        sub, epochs = _subset(s.splits, part, n_steps * s.bs, s.bs)
        cfg = TrainConfig(epochs=epochs, batch_size=s.bs, precision="auto")  # fit's defaults otherwise
        train_log = logging.getLogger("pretextlab.train")
        level = train_log.level
        train_log.setLevel(logging.WARNING)  # the timing fits' epoch lines would only clutter the bench's output
        try:
            history = fit(model, make_task(sub), cfg, s.tmp / name / f"fit{next(calls)}",
                          {"kind": "bench", "run": name}, device=CPU, quiet=True, precision=s.precision)
        finally:
            train_log.setLevel(level)
        seconds = sum(n_steps * s.bs / epochs / row["images_per_s"] for row in history)
        return n_steps * s.bs, seconds

    run(1)
    return lambda: run(steps)


def _subset(splits: Splits, part: str, n: int, n_val: int) -> tuple[Splits, int]:
    """Splits whose `part` holds n examples (or all it has, repeated over epochs) and a small val set."""
    g = torch.Generator().manual_seed(0)
    available = len(splits.x_pool if part == "pool" else splits.y_train)
    take = torch.randperm(available, generator=g)[:n]
    val = slice(0, n_val)  # fit validates after every epoch: keep that cheap, it is not timed anyway
    sub = dataclasses.replace(splits, x_val=splits.x_val[val], y_val=splits.y_val[val])
    if part == "pool":
        sub.x_pool = splits.x_pool[take]
    else:
        sub.x_train, sub.y_train = splits.x_train[take], splits.y_train[take]
    return sub, math.ceil(n / len(take))


def _eval_rates(model: nn.Module, naive_model: nn.Module, s: _Setup) -> tuple[float, float, int]:
    """Images/s of one evaluation pass each way, over the same number of validation images.

    The count is chosen from a one-batch warm-up so a pass lasts about plan.eval_s. The naive pass
    includes its DataLoader worker start-up: a tutorial loop pays it at every evaluation.
    """
    x_val, mean, std = s.splits.x_val, s.splits.mean, s.splits.std

    def predict(n: int) -> Callable[[], int]:
        return lambda: len(predict_logits(model, x_val[:n], mean, std, precision=s.precision))

    warm_img_s, _ = _measure(predict(s.bs), 1, 1)  # sets the count
    n = min(len(x_val), s.plan.eval_images, max(s.bs, round(s.plan.eval_s * warm_img_s / s.bs) * s.bs))
    eval_img_s, _ = _measure(predict(n), 0, 1)

    naive_model.eval()
    with torch.no_grad():
        naive_model(torch.randn(s.bs, *x_val.shape[1:]))  # kernel warm-up, as for the pipeline
        naive_eval_img_s, _ = _measure(lambda: naive.eval_pass(naive_model, s.naive.eval_loader(n, s.bs)), 0, 1)
    naive_model.train()
    return eval_img_s, naive_eval_img_s, n


# ----------------------------------------------------------------------------------------------
# Batch preparation alone (where the pipeline's overhead comes from)


def _batch_prep_ms(s: _Setup) -> dict[str, float]:
    """Milliseconds per batch of the tasks' `batch` (cut, augment, normalise) plus fit's layout change."""
    g = torch.Generator().manual_seed(0)
    out = {}
    tasks = {"classification": _classification(s.splits, s),
             "context": ContextPrediction(s.splits, ContextOptions(), s.precision)}
    for name, task in tasks.items():
        def step(task=task) -> int:
            idx = torch.randint(0, task.n_train, (s.bs,), generator=g)
            x, _ = task.batch(idx, g)
            x.contiguous(memory_format=torch.channels_last)
            return 1

        rate, _ = _measure(step, s.plan.warmup, lambda dt: s.plan.steps_for(dt, target_s=min(2.0, s.plan.target_s)))
        out[name] = 1000 / rate
    return out


# ----------------------------------------------------------------------------------------------
# Report


def format_report(r: dict[str, Any]) -> str:
    """A human-readable table: throughputs per backbone, then the ratios that answer the question."""
    peaks = r["peak_gflops"]
    bf16 = f"{peaks['bf16']:.0f}" if peaks["bf16"] else "n/a"
    d = r["data"]
    lines = [
        f"pretextlab bench{' (quick)' if r['quick'] else ''}: {r['machine']['cpu']} "
        f"({r['machine']['cpu_capability']}), {r['threads']} threads, {r['precision']}, batch {r['batch_size']}",
        f"data: {d['source']} ({d['images']} images, {d['classes']} classes, {d['image_size']} px)",
        f"peak matmul GFLOP/s: fp32 {peaks['fp32']:.0f}, bf16 {bf16}",
        f"batch preparation per batch: classification {r['batch_prep_ms']['classification']:.1f} ms, "
        f"context {r['batch_prep_ms']['context']:.1f} ms",
        "",
        f"{'throughput':<12}{'GFLOP/img':>10}{'model':>10}{'pipeline':>10}{'naive':>10}"
        f"{'eval':>10}{'naive eval':>12}{'ctx model':>11}{'ctx pipe':>10}",
        f"{'':<12}{'(fwd)':>10}{'img/s':>10}{'img/s':>10}{'img/s':>10}{'img/s':>10}{'img/s':>12}"
        f"{'pairs/s':>11}{'pairs/s':>10}",
    ]
    for name, b in r["backbones"].items():
        lines.append(f"{name:<12}{b['gflops_per_image_fwd']:>10.3f}{b['model_img_s']:>10.0f}"
                     f"{b['pipeline_img_s']:>10.0f}"
                     f"{b['naive_img_s']:>10.0f}{b['eval_img_s']:>10.0f}{b['naive_eval_img_s']:>12.0f}"
                     f"{b['pretext_model_pairs_s']:>11.0f}{b['pretext_pipeline_pairs_s']:>10.0f}")
    lines += ["", f"{'ratios':<12}{'overhead':>10}{'vs naive':>10}{'MFU':>8}{'MFU pipe':>10}{'ctx overhead':>14}"
              f"{'eval vs naive':>15}"]
    for name, b in r["backbones"].items():
        lines.append(f"{name:<12}{b['overhead']:>+10.1%}{b['speedup_vs_naive']:>9.1f}x{b['mfu']:>8.1%}"
                     f"{b['mfu_pipeline']:>10.1%}{b['pretext_overhead']:>+14.1%}"
                     f"{b['eval_img_s'] / b['naive_eval_img_s']:>14.1f}x")
    first = next(iter(r["backbones"]))
    lines += ["", f"==> {first}: pipeline overhead {r['overhead']:+.1%} vs the model alone, "
                  f"{r['speedup_vs_naive']:.1f}x the naive DataLoader loop, MFU {r['mfu']:.1%}"]
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)

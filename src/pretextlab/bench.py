"""How fast is pretextlab on this machine, and where does the time go?

One process, one run, several measurements side by side, so that their ratios mean something:

1. the CPU's peak dense matmul throughput (fp32, and bf16 where the CPU runs it natively);
2. the model alone: forward + backward + SGD step on a float batch already in memory;
3. pretextlab's real training step: `train.fit` on real `data.make_splits` output, i.e. batch
   cutting, augmentation, normalisation and logging included (validation excluded, as fit times it
   separately);
4. the tutorial way (naive.py): `ImageFolder` + per-sample PIL transforms + `DataLoader(num_workers=2)`;
5. evaluation (`finetune.predict_logits` vs a DataLoader loop);
6. every pretext task (context, rotation, reconstruction, simclr): its model alone on one ready batch
   of the task's own inputs and targets vs `train.fit` on the task, i.e. each path at its ceiling;
7. with `peer="lightly"`, lightly's standard SimCLR pipeline (peers.py), timed in the same turns as
   pretextlab's SimCLR model step and pipeline, each side's augmentation cost per image on one core
   and, with `peer_epochs`, both trained for that many epochs and scored by the same k-NN probe.

From these: overhead = 1 - (3)/(2) (what the pipeline costs on top of the model), per task the same
for 6, speedup over the naive baseline = (3)/(4), over lightly = pretextlab's SimCLR pipeline / lightly's
(and the ceiling's ratio, model alone / lightly's), and MFU = achieved training FLOP/s / peak FLOP/s
(training ~ 3x forward). On `device="cuda"` the models and the data live on the GPU, the peak is the
GPU's matmul peak, and every timer waits for the GPU's queued work first.

Every measurement runs a few untimed warm-up calls first (allocation, oneDNN primitive creation,
DataLoader worker start-up), then times a number of steps chosen so the timed part lasts about
`Plan.target_s`; the pipeline and the naive baseline then time the same number of steps as the model.
The training measurements of one backbone are timed in interleaved turns (model, pipeline, naive,
model, ...), so that load from other processes on a shared machine falls on all of them alike.
Rates count source images: a rotation batch holds four inputs per image, a SimCLR batch two views.
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

from . import hw, naive, peers
from .data import DataConfig, Splits, load_dataset, make_splits
from .errors import UserError
from .finetune import Classification, predict_logits
from .io import save_json
from .models import Classifier, count_flops, make_backbone
from .naive import write_synthetic_folder
from .pretext import TASKS, make_task
from .pretext.simclr import SimCLR
from .probe import knn_accuracy
from .sources import Dataset
from .study import PRESETS
from .train import TrainConfig, fit, make_optimizer

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


def _sync() -> None:
    """Wait for the GPU's queued work, so that a clock read next counts it (nothing to wait for on a CPU)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _warm_up(step: Callable[[], int], warmup: int) -> float:
    """Run `step` `warmup` times untimed; return the duration of the last call (0 if none)."""
    last = 0.0
    for _ in range(warmup):
        _sync()
        t = time.perf_counter()
        step()
        _sync()
        last = time.perf_counter() - t
    return last


def _timed(step: Callable[[], int], steps: int) -> tuple[int, float]:
    """Items done and seconds taken by `steps` calls of `step`."""
    _sync()
    t0 = time.perf_counter()
    items = sum(step() for _ in range(steps))
    _sync()
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
    device: str = "auto",
    peer: str | None = None,
    peer_epochs: int = 0,
) -> dict[str, Any]:
    """Measure peak, model, pipeline and naive throughput per backbone; print a table, return a dict.

    data: an image folder (one sub-folder per class, or a root with train/); None writes a synthetic
    JPEG folder to a temp dir. quick caps the batch at 16 and times only a few steps (a smoke test).
    json_out: the last line of stdout is the result as one JSON object. out: also save it there.
    device: auto | cpu | cuda, where models and data live. peer: "lightly" races lightly's SimCLR
    pipeline (when lightly is missing, one line says how to install it and the rest runs); peer_epochs:
    also train both SimCLRs that many epochs on the first backbone and score them with the same k-NN.
    """
    if not backbones:
        raise UserError("give at least one backbone to benchmark")
    for name in backbones:
        make_backbone(name)  # an unknown name fails now, not minutes into the run
    if peer is not None and peer not in peers.PEERS:
        raise UserError(f"--peer {peer} is unknown; the library pretextlab races is: {', '.join(peers.PEERS)}")
    if peer_epochs < 0 or (peer_epochs and not peer):
        raise UserError("--peer-epochs N needs N >= 0 and --peer lightly (the library to train beside pretextlab)")
    plan = QUICK if quick else FULL
    bs = max(2, min(batch_size, plan.max_batch))
    load_before = os.getloadavg()[0]  # others' load: it depresses every absolute number below
    threads = hw.setup_threads()
    dev = hw.pick_device(device)
    precision = hw.pick_precision("auto", dev)
    result: dict[str, Any] = {"machine": hw.machine_info(), "device": str(dev), "precision": precision,
                              "threads": threads, "batch_size": bs, "quick": quick,
                              "load_avg_1min_at_start": load_before}
    notes = []

    with tempfile.TemporaryDirectory(prefix="pretextlab-bench-") as tmp:
        tmp_dir = Path(tmp)
        if data is None:
            root = write_synthetic_folder(tmp_dir / "synthetic", per_class=plan.synthetic_per_class)
            ds = load_dataset(str(root), cache_dir=tmp_dir / "cache")  # keep the user's cache clean
        else:
            root = naive.check_image_folder(Path(data).expanduser())
            ds = load_dataset(str(root))  # decoded once, then cached: re-runs start fast
        splits = make_splits(ds, 1.0, seed=0)
        naive_sets = naive.image_folder_sets(root, ds, splits)  # before the splits move to the device
        splits = splits.to(dev)
        result["data"] = {"source": data or "synthetic", "classes": len(ds.classes), "images": len(ds.train),
                          "image_size": ds.image_size, "channels": ds.channels}
        why = peers.unavailable(peer, ds) if peer is not None else None
        if why:  # one line, said at once rather than after minutes of measuring
            print(why)
            result["peer_skipped"] = why
            peer = None

        peaks, peak_notes = _peak_gflops(plan, dev)
        notes += peak_notes
        result["peak_gflops"] = peaks
        peak = peaks["bf16"] if precision == "bf16" and peaks["bf16"] else peaks["fp32"]
        pool = peers.simclr_pool(root, ds, splits) if peer else None
        setup = _Setup(plan, bs, precision, ds, splits, naive_sets, tmp_dir, peak * 1e9, dev, peer, pool)
        result["batch_prep_ms"] = _batch_prep_ms(setup)
        result["backbones"] = {name: _bench_backbone(name, setup) for name in backbones}
        if peer is not None:
            result["peer"] = _peer_summary(backbones[0], result["backbones"][backbones[0]]["peer"], setup,
                                           peer_epochs)
            for k in ("speedup_vs_lightly", "ceiling_vs_lightly", "augment_ms_per_image", "knn_pretextlab",
                      "knn_lightly"):
                result[k] = result["peer"][k]
        if dev.type == "cuda":
            result["cuda_max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20

    first = result["backbones"][backbones[0]]
    for k in ("overhead", "speedup_vs_naive", "mfu"):
        result[k] = first[k]
    result["task_overheads"] = {"classification": first["overhead"],
                                **{task: t["overhead"] for task, t in first["tasks"].items()}}
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
    device: torch.device
    peer: str | None  # the library raced, where it is installed
    peer_pool: Any  # the peer's dataset: the pool images of `splits`, read from the image folder


# ----------------------------------------------------------------------------------------------
# 1. Peak matmul


def _peak_gflops(plan: Plan, device: torch.device) -> tuple[dict[str, float | None], list[str]]:
    """Dense n x n matmul GFLOP/s in fp32 (TF32 on CUDA, as pick_device allows), and in bf16 on a GPU
    that has it or a CPU with native bf16."""
    n = 8192 if device.type == "cuda" else 2048

    def rate(dtype: torch.dtype) -> float:
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        c = torch.empty(n, n, dtype=dtype, device=device)

        def matmul() -> int:
            torch.mm(a, b, out=c)
            return 2 * n**3  # FLOPs

        flops, _ = _measure(matmul, 1, plan.matmul_reps)
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


def _bench_backbone(name: str, s: _Setup) -> dict[str, Any]:
    """All measurements of one backbone; the pipeline and naive paths time as many steps as the model."""
    plan, bs = s.plan, s.bs
    shape = (s.ds.channels, s.ds.image_size, s.ds.image_size)
    fwd_flops = count_flops(_classifier(name, s), shape)

    # 2. the model alone, on a ready channels_last float batch
    model = _classifier(name, s).to(s.device, memory_format=torch.channels_last)
    x = torch.randn(bs, *shape, device=s.device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, len(s.ds.classes), (bs,), device=s.device)
    model_step = _train_step(model, x, y, _smoothed_cross_entropy, s.device, s.precision)
    steps = plan.steps_for(_warm_up(model_step, plan.warmup))
    # 3. the real path: train.fit on a Classification task
    pipe_model = _classifier(name, s)
    pipeline = _fit_path(pipe_model, lambda sp: _classification(sp, s), "train", steps, s, f"{name}-classify")
    # 4. the tutorial way, same model, optimizer and loss, NCHW float32
    naive_model = _classifier(name, s).to(s.device)
    naive_step = naive.train_step(naive_model, s.naive.train_batches(bs))
    _warm_up(naive_step, plan.warmup)
    rates = _interleaved({"model": lambda: _timed(model_step, steps), "pipeline": pipeline,
                          "naive": lambda: _timed(naive_step, steps)}, plan.rounds)
    model_img_s, pipeline_img_s, naive_img_s = rates["model"], rates["pipeline"], rates["naive"]

    # 5. evaluation: predict_logits on uint8 tensors vs a DataLoader loop (the models of 3 and 4)
    eval_img_s, naive_eval_img_s, n_eval = _eval_rates(pipe_model, naive_model, s)

    # 6. every pretext task at its ceiling (and, on simclr, 7. the peer in the same turns)
    tasks = {task: _task_rates(name, task, s) for task in TASKS}
    peer = tasks["simclr"].pop("peer", None)
    context = tasks["context"]  # the pretext_* keys of earlier versions of this bench

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
        "pretext_model_pairs_s": context["model_img_s"],  # one patch pair per image
        "pretext_pipeline_pairs_s": context["pipeline_img_s"],
        "pretext_overhead": context["overhead"],
        "tasks": tasks,
        **({"peer": peer} if peer is not None else {}),
        "steps": {"train": steps, "pretext": context["steps"], "eval_images": n_eval},
    }


def _classifier(name: str, s: _Setup) -> Classifier:
    """The same initial weights for every path, so no path is timed on a different network."""
    torch.manual_seed(0)
    return Classifier(make_backbone(name, s.ds.channels), len(s.ds.classes))


def _pretext_net(name: str, task: Any, s: _Setup) -> nn.Module:
    """A pretext task's network, seeded like `_classifier` so the model and fit paths start from the same weights."""
    torch.manual_seed(0)
    return task.make_model(make_backbone(name, s.ds.channels))


def _classification(splits: Splits, s: _Setup) -> Classification:
    """The supervised task exactly as `pretextlab train` builds it with its default options."""
    data = DataConfig()
    return Classification(splits, data.crop_pad(s.ds.image_size), data.flip, TrainConfig().label_smoothing,
                          s.precision)


def _smoothed_cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    """The classification loss, with fit's default label smoothing."""
    return F.cross_entropy(out.float(), y, label_smoothing=TrainConfig().label_smoothing)


def _train_step(model: nn.Module, x: Any, y: Any, loss_fn: Callable[[Tensor, Any], Tensor], device: torch.device,
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


def _fit_quietly(model: nn.Module, task: Any, cfg: TrainConfig, out_dir: Path, name: str,
                 s: _Setup) -> list[dict[str, float]]:
    """train.fit as the bench runs it: in a temp folder, without its epoch lines cluttering the bench's output."""
    train_log = logging.getLogger("pretextlab.train")
    level = train_log.level
    train_log.setLevel(logging.WARNING)
    try:
        return fit(model, task, cfg, out_dir, {"kind": "bench", "run": name}, device=s.device, quiet=True,
                   precision=s.precision)
    finally:
        train_log.setLevel(level)


def _training_seconds(history: list[dict[str, float]], images_per_row: float) -> float:
    """fit's training time (validation excluded) from its history: each row's images / its images_per_s."""
    return sum(images_per_row / row["images_per_s"] for row in history)


def _fit_path(model: nn.Module, make_task: Callable[[Splits], Any], part: str, steps: int, s: _Setup,
              name: str, base: TrainConfig | None = None) -> Callable[[], tuple[int, float]]:
    """A measurement of train.fit's training steps: each call fits one epoch of `steps` batches.

    fit's `images_per_s` covers batch cutting, augmentation, forward, backward, step and the in-loop
    logging of each epoch, not the validation pass: exactly the part comparable with the model alone.
    `part` is the split the task draws from ("train" for classification, "pool" for pretext tasks);
    `base` the optimizer settings (default: fit's). A 1-step fit warms up first. Returns a callable
    giving (examples, seconds) like `_timed`.
    """
    calls = iter(range(10**9))

    def run(n_steps: int) -> tuple[int, float]:
        sub, epochs = _subset(s.splits, part, n_steps * s.bs, s.bs)
        cfg = dataclasses.replace(base or TrainConfig(), epochs=epochs, batch_size=s.bs, precision="auto")
        history = _fit_quietly(model, make_task(sub), cfg, s.tmp / name / f"fit{next(calls)}", name, s)
        return n_steps * s.bs, _training_seconds(history, n_steps * s.bs / epochs)

    run(1)
    return lambda: run(steps)


def _subset(splits: Splits, part: str, n: int, n_val: int) -> tuple[Splits, int]:
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
        naive_model(torch.randn(s.bs, *x_val.shape[1:], device=s.device))  # kernel warm-up, as for the pipeline
        naive_eval_img_s, _ = _measure(lambda: naive.eval_pass(naive_model, s.naive.eval_loader(n, s.bs)), 0, 1)
    naive_model.train()
    return eval_img_s, naive_eval_img_s, n


# ----------------------------------------------------------------------------------------------
# 6. Every pretext task at its ceiling


def _task_rates(name: str, task_name: str, s: _Setup) -> dict[str, Any]:
    """One pretext task (its default options, as `pretextlab pretrain` uses them): the model alone vs train.fit.

    The model alone trains on one ready batch, the task's own first batch (its exact inputs and targets,
    cut and augmented once), so it does all that fit's step does except making batches; both train with
    pretextlab's pretraining optimizer. For simclr with a peer, the peer's pipeline runs in the same turns.
    """
    task = make_task(task_name, s.splits, None, s.precision)
    x, y = task.batch(torch.arange(s.bs) % task.n_train, torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)  # as fit lays its inputs out
    model = _pretext_net(name, task, s).to(s.device, memory_format=torch.channels_last)
    model_step = _train_step(model, x, y, task.loss, s.device, s.precision, PRETRAIN, images=s.bs)
    steps = s.plan.steps_for(_warm_up(model_step, s.plan.warmup))
    paths = {"model": lambda: _timed(model_step, steps),
             "pipeline": _fit_path(_pretext_net(name, task, s), lambda sp: make_task(task_name, sp, None, s.precision),
                                   "pool", steps, s, f"{name}-{task_name}", PRETRAIN)}
    race = _LightlyRace(name, s, steps) if task_name == "simclr" and s.peer else None
    if race is not None:
        paths["lightly"] = race.turn
    rates = _interleaved(paths, s.plan.rounds)
    out: dict[str, Any] = {"model_img_s": rates["model"], "pipeline_img_s": rates["pipeline"],
                           "overhead": 1 - rates["pipeline"] / rates["model"], "steps": steps}
    if race is not None:
        out["peer"] = race.report(rates)
    return out


# ----------------------------------------------------------------------------------------------
# 7. The peer: lightly's SimCLR pipeline


class _LightlyRace:
    """lightly's SimCLR pipeline on one backbone, timed as bench times pretextlab's.

    Every turn starts a fresh DataLoader and times its start-up: a DataLoader kept across turns would
    go on preparing batches in its workers while the other paths are timed, slowing them and handing
    lightly ready batches. Before the race, every count of `peers.worker_counts()` is tried for one
    turn; the fastest races.
    """

    def __init__(self, name: str, s: _Setup, steps: int):
        torch.manual_seed(0)  # the initial backbone weights of pretextlab's paths
        cfg = dataclasses.replace(PRETRAIN, batch_size=s.bs)
        self.run = peers.lightly_simclr(s.peer_pool, make_backbone(name, s.ds.channels), cfg, s.device, s.precision)
        self.steps = steps
        _warm_up(self.run.step(self.run.batches(0)), s.plan.warmup)
        self.by_workers = {}
        for workers in peers.worker_counts():
            n, seconds = self.timed(workers)
            self.by_workers[str(workers)] = n / seconds
        self.workers = int(max(self.by_workers, key=self.by_workers.get))

    def timed(self, workers: int) -> tuple[int, float]:
        """(images, seconds) of `steps` training steps from a DataLoader with `workers` workers started now
        (it starts them at its first batch, inside the timed part; they stop when it is dropped, after it)."""
        return _timed(self.run.step(self.run.batches(workers)), self.steps)

    def turn(self) -> tuple[int, float]:
        return self.timed(self.workers)

    def report(self, rates: dict[str, float]) -> dict[str, Any]:
        return {"name": "lightly", "img_s": rates["lightly"], "workers": self.workers,
                "img_s_by_workers": self.by_workers, "speedup_vs_lightly": rates["pipeline"] / rates["lightly"],
                "ceiling_vs_lightly": rates["model"] / rates["lightly"]}


def _peer_summary(name: str, race: dict[str, Any], s: _Setup, epochs: int) -> dict[str, Any]:
    """The peer's headline (the first backbone's race), each side's augmentation cost and, with epochs,
    both SimCLRs trained that long and scored by the same k-NN probe."""
    out = {"name": race["name"], "version": peers.version(race["name"]), "backbone": name, **race,
           **_augment_ms_per_image(s), "epochs": epochs, "knn_pretextlab": None, "knn_lightly": None}
    if epochs:
        out.update(_train_both(name, s, epochs, race["workers"]))
    return out


def _augment_ms_per_image(s: _Setup) -> dict[str, Any]:
    """Milliseconds per image of making its two SimCLR views, on one CPU thread: pretextlab's whole batch
    preparation (cut, augment, normalise; on the bench's device) and lightly's SimCLRTransform alone, on
    images already decoded; lightly's JPEG decoding (ImageFolder's loader) beside it."""
    files = peers.pool_files(s.peer_pool, 256)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ours = _batch_ms(SimCLR(s.splits, precision=s.precision), s) / s.bs
        transform, _ = _measure(peers.transform_step(s.peer_pool, files), s.plan.warmup, len(files))
        decode, _ = _measure(peers.decode_step(s.peer_pool, files), s.plan.warmup, len(files))
    finally:
        torch.set_num_threads(threads)
    return {"augment_ms_per_image": {"pretextlab": ours, "lightly": 1000 / transform},
            "decode_ms_per_image": {"lightly": 1000 / decode}, "augment_device": str(s.device)}


def _train_both(name: str, s: _Setup, epochs: int, workers: int) -> dict[str, Any]:
    """pretextlab's SimCLR (train.fit) and lightly's trained `epochs` epochs from the same initial weights, with
    the same optimizer and schedule; k-NN accuracy of both backbones (and of the untrained one) on the
    validation split, with the labelled pool as memory bank."""
    cfg = dataclasses.replace(PRETRAIN, epochs=epochs, batch_size=s.bs, precision="auto")
    task = SimCLR(s.splits, precision=s.precision)
    ours = _pretext_net(name, task, s)
    history = _fit_quietly(ours, task, cfg, s.tmp / f"{name}-simclr-epochs", f"{name}-simclr", s)
    ours_seen = history[-1]["images_seen"]
    ours_s = _training_seconds(history, ours_seen / len(history))

    torch.manual_seed(0)
    theirs = peers.lightly_simclr(s.peer_pool, make_backbone(name, s.ds.channels), cfg, s.device, s.precision)
    t0 = time.perf_counter()
    theirs_loss, theirs_seen = theirs.train_epochs(epochs, workers, cfg)
    theirs_s = time.perf_counter() - t0

    torch.manual_seed(0)
    untrained = make_backbone(name, s.ds.channels).to(s.device)
    sp = s.splits

    def knn(backbone: nn.Module) -> float:
        return knn_accuracy(backbone, sp.x_train, sp.y_train, sp.x_val, sp.y_val, sp.mean, sp.std, len(sp.classes))

    return {"knn_pretextlab": knn(ours.backbone), "knn_lightly": knn(theirs.model.backbone),
            "knn_untrained": knn(untrained), "knn_images": {"bank": len(sp.x_train), "val": len(sp.x_val)},
            "train_img_s": {"pretextlab": ours_seen / ours_s, "lightly": theirs_seen / theirs_s},
            "final_train_loss": {"pretextlab": history[-1]["train_loss"], "lightly": theirs_loss}}


# ----------------------------------------------------------------------------------------------
# Batch preparation alone (where the pipeline's overhead comes from)


def _batch_ms(task: Any, s: _Setup) -> float:
    """Milliseconds per batch of a task's `batch` (cut, augment, normalise) plus fit's layout change."""
    g = torch.Generator().manual_seed(0)

    def step() -> int:
        idx = torch.randint(0, task.n_train, (s.bs,), generator=g)
        x, _ = task.batch(idx, g)
        x.contiguous(memory_format=torch.channels_last)
        return 1

    rate, _ = _measure(step, s.plan.warmup, lambda dt: s.plan.steps_for(dt, target_s=min(2.0, s.plan.target_s)))
    return 1000 / rate


def _batch_prep_ms(s: _Setup) -> dict[str, float]:
    """`_batch_ms` of classification and of every pretext task (default options)."""
    tasks = {"classification": _classification(s.splits, s),
             **{name: make_task(name, s.splits, None, s.precision) for name in TASKS}}
    return {name: _batch_ms(task, s) for name, task in tasks.items()}


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
        step = _train_step(net, x, y, _smoothed_cross_entropy, dev, precision, cfg)
        first = _warm_up(step, 1)  # compiles, where compiled
        _warm_up(step, 2)
        rate, _ = _measure(step, 0, steps)
        out["compiled" if compiled else "eager"] = {"img_s": rate, "first_step_s": first}
    out["compile_speedup"] = out["compiled"]["img_s"] / out["eager"]["img_s"]
    if dev.type == "cuda":
        out["cuda_max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


# ----------------------------------------------------------------------------------------------
# Report


def format_report(r: dict[str, Any]) -> str:
    """A human-readable table: throughputs per backbone, then the ratios that answer the question."""
    peaks = r["peak_gflops"]
    bf16 = f"{peaks['bf16']:.0f}" if peaks["bf16"] else "n/a"
    d = r["data"]
    where = r["machine"]["cuda"] if r["device"].startswith("cuda") else r["machine"]["cpu"]
    lines = [
        f"pretextlab bench{' (quick)' if r['quick'] else ''}: {where} on {r['device']} "
        f"({r['machine']['cpu_capability']}), {r['threads']} threads, {r['precision']}, batch {r['batch_size']}",
        f"data: {d['source']} ({d['images']} images, {d['classes']} classes, {d['image_size']} px)",
        f"peak matmul GFLOP/s: fp32 {peaks['fp32']:.0f}, bf16 {bf16}",
        "batch preparation per batch: " + ", ".join(f"{k} {v:.1f} ms" for k, v in r["batch_prep_ms"].items()),
        "",
        f"{'throughput':<12}{'GFLOP/img':>10}{'model':>10}{'pipeline':>10}{'naive':>10}"
        f"{'eval':>10}{'naive eval':>12}",
        f"{'':<12}{'(fwd)':>10}{'img/s':>10}{'img/s':>10}{'img/s':>10}{'img/s':>10}{'img/s':>12}",
    ]
    for name, b in r["backbones"].items():
        lines.append(f"{name:<12}{b['gflops_per_image_fwd']:>10.3f}{b['model_img_s']:>10.0f}"
                     f"{b['pipeline_img_s']:>10.0f}"
                     f"{b['naive_img_s']:>10.0f}{b['eval_img_s']:>10.0f}{b['naive_eval_img_s']:>12.0f}")
    lines += ["", f"{'ratios':<12}{'overhead':>10}{'vs naive':>10}{'MFU':>8}{'MFU pipe':>10}{'eval vs naive':>15}"]
    for name, b in r["backbones"].items():
        lines.append(f"{name:<12}{b['overhead']:>+10.1%}{b['speedup_vs_naive']:>9.1f}x{b['mfu']:>8.1%}"
                     f"{b['mfu_pipeline']:>10.1%}{b['eval_img_s'] / b['naive_eval_img_s']:>14.1f}x")
    lines += ["", f"{'pretext':<28}{'model img/s':>12}{'pipeline img/s':>16}{'overhead':>10}"]
    for name, b in r["backbones"].items():
        for task, t in b["tasks"].items():
            lines.append(f"{name + ' ' + task:<28}{t['model_img_s']:>12.0f}{t['pipeline_img_s']:>16.0f}"
                         f"{t['overhead']:>+10.1%}")
    if "peer" in r:
        lines += ["", *_peer_lines(r)]
    first = next(iter(r["backbones"]))
    lines += ["", f"==> {first}: pipeline overhead {r['overhead']:+.1%} vs the model alone, "
                  f"{r['speedup_vs_naive']:.1f}x the naive DataLoader loop, MFU {r['mfu']:.1%}; pretext overheads "
              + ", ".join(f"{k} {v:+.1%}" for k, v in r["task_overheads"].items() if k != "classification")]
    if "peer" in r:
        p = r["peer"]
        lines.append(f"==> {p['backbone']} SimCLR: pretextlab {r['speedup_vs_lightly']:.2f}x lightly's pipeline "
                     f"(its model alone {r['ceiling_vs_lightly']:.2f}x)")
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)


def _peer_lines(r: dict[str, Any]) -> list[str]:
    """The race against lightly: rates per backbone, augmentation costs, and the k-NN scores after training."""
    p = r["peer"]
    lines = [f"{'simclr vs ' + p['name'] + ' ' + p['version']:<28}{'model':>8}{'pretextlab':>12}{'lightly':>9}"
             f"{'workers':>9}{'vs lightly':>12}{'ceiling':>9}",
             f"{'':<28}{'img/s':>8}{'img/s':>12}{'img/s':>9}"]
    for name, b in r["backbones"].items():
        t, q = b["tasks"]["simclr"], b["peer"]
        lines.append(f"{name:<28}{t['model_img_s']:>8.0f}{t['pipeline_img_s']:>12.0f}{q['img_s']:>9.0f}"
                     f"{q['workers']:>9}{q['speedup_vs_lightly']:>11.2f}x{q['ceiling_vs_lightly']:>8.2f}x")
    a = p["augment_ms_per_image"]
    lines.append(f"two views per image, ms on one thread: pretextlab {a['pretextlab']:.3f} ({p['augment_device']}), "
                 f"lightly {a['lightly']:.3f} (+ JPEG decoding {p['decode_ms_per_image']['lightly']:.3f})")
    if p["epochs"]:
        speed = p["train_img_s"]
        lines.append(f"after {p['epochs']} epoch(s) on {p['knn_images']['bank']} images: k-NN accuracy on "
                     f"{p['knn_images']['val']} held out, pretextlab {p['knn_pretextlab']:.4f}, lightly "
                     f"{p['knn_lightly']:.4f}, untrained {p['knn_untrained']:.4f}; training img/s pretextlab "
                     f"{speed['pretextlab']:.0f}, lightly {speed['lightly']:.0f}")
    return lines

"""A study's stages, in the order they run: each pretraining, each probe stage, each fine-tuning run.

A stage is an object (name, kind, work, done) that runs itself against the study's environment (its
data, device, precision); run stages hand a job to the one run driver, probe stages score frozen
backbones. The plan (plan.py) counts their work before anything runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import DataConfig
from ..data.sources import Dataset
from ..driver import Job, execute
from ..finetune import Finetuning
from ..layout import BACKBONE, RANDOM_INIT_DIR, pretrain_dir, run_name
from ..models import random_backbone
from ..pretext import TASKS as PRETEXTS
from ..pretext import Pretraining
from ..tasks import get_task
from ..train import eval_steps, steps_per_epoch
from . import plan
from .presets import Preset
from .probes import pretrained_backbone, run_probes


@dataclass
class Env:
    """What every stage of a study shares: its data (opened once), device, precision and output mode."""

    data: DataConfig
    ds: Dataset
    device: torch.device
    precision: str
    quiet: bool


@dataclass
class RunStage(plan.Stage):
    """A pretraining or a fine-tuning run: a job for the run driver, in its folder."""

    job: Job
    folder: Path

    def run(self, env: Env) -> Any:
        return execute(self.job, self.folder, env.ds, str(env.device), env.quiet, env.precision)


@dataclass
class ProbeStage(plan.Stage):
    """A frozen backbone (pretrained weights, or None: the seed's random initialisation) probed at `keys`."""

    backbone: str
    weights: Path | None
    seed: int
    folder: Path
    keys: list[tuple[float, int]]

    def run(self, env: Env) -> Any:
        if self.weights is None:
            net = random_backbone(self.backbone, env.ds.channels, self.seed)
            origin = {"backbone": self.backbone, "init": "random (torch.manual_seed(seed), then build)"}
        else:
            net = pretrained_backbone(self.backbone, env.ds.channels, self.weights)
            origin = {"backbone": self.backbone, "init": str(self.weights)}
        return run_probes(net, origin, self.folder, self.keys, env.data, env.ds, env.device, env.precision)


def study_stages(p: Preset, env: Env, out_dir: Path, backbone: str, fractions: tuple[float, ...],
                 seeds: tuple[int, ...], arms: list[tuple[str, str, int]], shared: bool, task: str,
                 times: dict[str, float]) -> list[plan.Stage]:
    """The study's stages in the order they run: pretrainings, probes, then fine-tuning runs, smallest
    fraction first and all seeds of a fraction before the next, so that the most telling comparison
    arrives early and a study stopped part-way holds complete multi-seed comparisons so far. arms: (arm,
    pretext task, pretraining epochs) of every pretrained arm (Preset.arms)."""
    data, ds = env.data, env.ds
    n_val = len(ds.val) if ds.val is not None else int(round(len(ds.train) * data.val_fraction))
    n_pool = len(ds.train) - (0 if ds.val is not None else n_val)  # a source's own val split is not in the pool
    n_test = len(ds.test) if ds.test is not None else 0
    owners = {s: (None if shared else s) for s in seeds}  # seed -> the seed its pretraining used (None: shared)
    keys = [(f, seed) for seed in seeds for f in sorted(fractions)]
    stages: list[plan.Stage] = []
    for arm, name, epochs in arms:  # one per arm and seed (the seed's replicate), or one per arm for all seeds
        for pre_seed in dict.fromkeys(owners.values()):
            folder = out_dir / pretrain_dir(arm, pre_seed)
            cfg = p.pretrain_config(name, seeds[0] if pre_seed is None else pre_seed, epochs)
            options = p.pretext_options.get(name)
            per_image = PRETEXTS[name][0].work_per_image(options or {})
            job = Pretraining(name, data, cfg, backbone, options, downstream=task)
            stages.append(RunStage(folder.name, "pretrain", plan.pretrain_work(per_image, cfg.epochs, n_pool, n_val),
                                   folder.name in times, job, folder))
    probed = [a for a, _, _ in arms] if get_task(task).probes else []  # probes need a label per image
    for arm in probed:  # frozen pretrained backbones: every fraction and seed, features extracted once
        for pre_seed in dict.fromkeys(owners.values()):
            folder = out_dir / pretrain_dir(arm, pre_seed)
            own = [k for k in keys if pre_seed is None or k[1] == pre_seed]
            stage = f"probe-{folder.name.removeprefix('pretrain-')}"
            stages.append(ProbeStage(stage, "probe", plan.probe_work(n_pool, n_val, n_test, len(own)), stage in times,
                                     backbone, folder / BACKBONE, 0, folder, own))
    for seed in seeds if probed else ():  # the baseline: each seed's random initialisation, frozen
        own = [k for k in keys if k[1] == seed]
        stage = f"probe-random-s{seed}"
        stages.append(ProbeStage(stage, "probe", plan.probe_work(n_pool, n_val, n_test, len(own)), stage in times,
                                 backbone, None, seed, out_dir / RANDOM_INIT_DIR, own))
    for f in sorted(fractions):
        for seed in seeds:  # every run repeated per seed: new label subset, new initialisation
            cfg = dataclasses.replace(p.finetune, epochs=p.epochs_for(f), seed=seed)
            dcfg = dataclasses.replace(data, fraction=f)
            n_train = int(round(n_pool * f))
            spe = steps_per_epoch(n_train, min(cfg.batch_size, n_train))
            evaluations = len(eval_steps(cfg.epochs * spe, spe, cfg.evals))  # as fit() will evaluate
            work = plan.finetune_work(cfg.epochs, n_train, evaluations, n_val, n_test)
            for arm in ("scratch", *(a for a, _, _ in arms)):
                init = None if arm == "scratch" else str(out_dir / pretrain_dir(arm, owners[seed]) / BACKBONE)
                name = run_name(f, arm, seed)
                stages.append(RunStage(name, "finetune", work, name in times,
                                       Finetuning(task, dcfg, cfg, backbone, init), out_dir / name))
    return stages

"""Started by test_dist.py as `torchrun --nproc_per_node 2 dist_worker.py <image folder> <out>`.

Each rank pretrains (context for two epochs, the other pretext tasks for one), fine-tunes from the
pretrained backbone, and fine-tunes again with an interruption after the first epoch and a resume; a
spy on the tasks' `batch` records the training indices every rank cut, written to
<out>/seen-rank<r>.json for the test to check.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from pretextlab import dist
from pretextlab.data import DataConfig, load_dataset, make_splits
from pretextlab.finetune import finetune
from pretextlab.models import make_backbone
from pretextlab.pretext import make_task, pretrain
from pretextlab.pretext.context import ContextPrediction
from pretextlab.tasks.classification import Classification
from pretextlab.train import TrainConfig

OTHER_TASKS = ("rotation", "reconstruction", "simclr")
RUNS = {"context": "pretrain", **{task: f"pretrain-{task}" for task in OTHER_TASKS}}  # task -> its run folder
SEEN: dict[str, list[list[int]]] = {}
CURRENT = ["none"]


def spy_on(cls: type) -> None:
    """Record every index batch cls.batch is asked for, under the current run's name."""
    original = cls.batch

    def batch(self, idx, g):
        SEEN.setdefault(CURRENT[0], []).append(idx.tolist())
        return original(self, idx, g)

    cls.batch = batch


def rebuilt_task(run: Path, task_name: str) -> tuple[Any, torch.nn.Module]:
    """The pretext task of a pretraining run, on the run's own data split, and a fresh model for it."""
    config = json.loads((run / "config.json").read_text())
    ds = load_dataset(config["data"]["source"], cache_dir=config["data"]["cache_dir"])
    splits = make_splits(ds, 1.0, 0, config["data"]["val_fraction"], config["data"]["split_seed"])
    task = make_task(task_name, splits, config["options"], "fp32")
    return task, task.make_model(make_backbone("fast", ds.channels))


def scored_in_evaluation(out: Path) -> dict[str, int]:
    """How many images each pretext task's evaluate() fed its model on this rank (a seeded random model)."""
    counts = {}
    for task_name, run in RUNS.items():
        torch.manual_seed(0)
        task, model = rebuilt_task(out / run, task_name)
        seen = [0]
        model.register_forward_pre_hook(lambda module, args: seen.append(seen.pop() + len(args[0])))
        task.evaluate(model)
        counts[task_name] = seen[0]
    return counts


class Interrupt(Exception):
    pass


def stop_after_first_epoch(epoch: int, row: dict) -> None:
    if epoch == 0:
        raise Interrupt


def main(data: str, out: Path) -> None:
    spy_on(ContextPrediction)
    spy_on(Classification)
    dcfg = DataConfig(source=data, val_fraction=0.25, cache_dir=str(out / "cache"))
    cfg = TrainConfig(epochs=2, batch_size=12, lr=0.02, precision="fp32")
    kw = dict(device="cpu", quiet=True)

    CURRENT[0] = "pretrain"
    pretrain("context", dcfg, cfg, "fast", out / "pretrain", knn_images=50, **kw)
    for task in OTHER_TASKS:  # one epoch each: their held-out metrics are reduced over the ranks too
        CURRENT[0] = f"pretrain-{task}"
        options = {"eval_batch": 6} if task == "simclr" else None  # two held-out retrieval batches, one per rank
        pretrain(task, dcfg, dataclasses.replace(cfg, epochs=1), "fast", out / f"pretrain-{task}", options,
                 knn_images=50, **kw)
    init = str(out / "pretrain" / "backbone.safetensors")
    CURRENT[0] = "finetune"
    finetune(dcfg, cfg, "fast", out / "finetune", init=init, **kw)

    CURRENT[0] = "interrupted"
    try:
        finetune(dcfg, cfg, "fast", out / "resumed", init=init, on_epoch_end=stop_after_first_epoch, **kw)
    except Interrupt:
        pass
    dist.barrier()
    if dist.is_main():  # keep the interrupted state for the test's single-process resume attempt
        shutil.copytree(out / "resumed", out / "interrupted")
    dist.barrier()
    CURRENT[0] = "resumed"
    finetune(dcfg, cfg, "fast", out / "resumed", init=init, **kw)

    (out / f"seen-rank{dist.rank()}.json").write_text(json.dumps({**SEEN, "scored": scored_in_evaluation(out)}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))

"""Started by test_dist.py as `torchrun --nproc_per_node 2 dist_worker.py <image folder> <out>`.

Each rank pretrains, fine-tunes from the pretrained backbone, and fine-tunes again with an
interruption after the first epoch and a resume; a spy on the tasks' `batch` records the training
indices every rank cut, written to <out>/seen-rank<r>.json for the test to check.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from pretextlab import dist
from pretextlab.finetune import Classification, DataConfig, train_classifier
from pretextlab.pretext import pretrain
from pretextlab.pretext.context import ContextPrediction
from pretextlab.train import TrainConfig

SEEN: dict[str, list[list[int]]] = {}
CURRENT = ["none"]


def spy_on(cls: type) -> None:
    """Record every index batch cls.batch is asked for, under the current run's name."""
    original = cls.batch

    def batch(self, idx, g):
        SEEN.setdefault(CURRENT[0], []).append(idx.tolist())
        return original(self, idx, g)

    cls.batch = batch


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
    init = str(out / "pretrain" / "backbone.safetensors")
    CURRENT[0] = "finetune"
    train_classifier(dcfg, cfg, "fast", out / "finetune", init=init, **kw)

    CURRENT[0] = "interrupted"
    try:
        train_classifier(dcfg, cfg, "fast", out / "resumed", init=init, on_epoch_end=stop_after_first_epoch, **kw)
    except Interrupt:
        pass
    dist.barrier()
    if dist.is_main():  # keep the interrupted state for the test's single-process resume attempt
        shutil.copytree(out / "resumed", out / "interrupted")
    dist.barrier()
    CURRENT[0] = "resumed"
    train_classifier(dcfg, cfg, "fast", out / "resumed", init=init, **kw)

    (out / f"seen-rank{dist.rank()}.json").write_text(json.dumps(SEEN))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))

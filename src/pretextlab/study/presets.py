"""Presets: a recipe per setting (backbone, pretext pretraining, fine-tuning, the epoch budget rule).

A preset names a whole, tested recipe, so that `pretextlab study --preset fast` means the same on
every machine; --epochs and --pretrain-epochs override its training length (recorded in study.json).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..layout import length_arm
from ..train import TrainConfig


@dataclass
class Preset:
    """A recipe: backbone, pretext pretraining and fine-tuning settings, and the epoch budget rule."""

    backbone: str
    pretrain: TrainConfig
    finetune: TrainConfig
    pretext_options: dict[str, dict] = field(default_factory=dict)
    pretrain_epochs: dict[str, int] = field(default_factory=dict)  # per pretext task, where not pretrain.epochs
    max_epoch_factor: float = 6.0  # small fractions get at most this many times the full-data epochs
    image_size: int | None = None  # the images' shorter side when --image-size is not given (None: as stored)

    def pretrain_config(self, task: str, seed: int, epochs: int | None = None) -> TrainConfig:
        """A pretraining's settings: the task's epochs (or `epochs`, an arm of the length axis), the seed."""
        return dataclasses.replace(self.pretrain, seed=seed,
                                   epochs=epochs or self.pretrain_epochs.get(task, self.pretrain.epochs))

    def arms(self, pretexts: tuple[str, ...], lengths: tuple[int, ...] = ()) -> list[tuple[str, str, int]]:
        """(arm, pretext task, pretraining epochs) of every pretrained arm: one per task; with `lengths` (the
        study's pretraining-length axis, --pretrain-epochs 2,8,32) one per task and length (context-e8), each
        from a pretraining of its own: the one-cycle schedule decays to zero over the whole run, so a shorter
        run is not a prefix of a longer one and no length can resume another."""
        if lengths:
            return [(length_arm(t, n), t, n) for t in pretexts for n in lengths]
        return [(t, t, self.pretrain_config(t, 0).epochs) for t in pretexts]

    def epochs_for(self, fraction: float) -> int:
        """Epochs grow as 1/sqrt(fraction), capped: small label sets get enough optimizer steps
        (a 10% run gets 3.2x the epochs, 32% of the full run's steps) without the full run's cost."""
        return int(math.ceil(self.finetune.epochs * min(1 / math.sqrt(fraction), self.max_epoch_factor)))

    def budget_rule(self) -> str:
        return (f"epochs(f) = ceil({self.finetune.epochs} x min(1/sqrt(f), {self.max_epoch_factor:g})): "
                "fewer labels get more epochs but fewer optimizer steps than the full set")


PRESETS: dict[str, Preset] = {
    # CPU-friendly: the whole study on 2 cores in well under an hour. Two pretext epochs, not more:
    # longer context-prediction pretraining specialised the later layers to patches and transferred
    # worse (8 epochs: 10%-label macro-F1 0.665 vs 0.706 after 2, scratch 0.710; README, Results).
    # The other tasks get the same compute: two whole-image backbone passes per pool image, i.e.
    # 2 epochs of rotation (one random rotation per image; all four would be 4x the compute) and
    # of reconstruction, 1 epoch of SimCLR (two views per image). Context's patch pairs are smaller.
    # Fine-tuning: warm-up, a constant rate, then a linear decay over the last 20% (wsd), so that a network's
    # plateau can be seen before the rate falls; against one-cycle on the same steps it ended +0.013 higher at
    # 10% labels (3 seeds) and 0.003 lower at 100% (1 seed) (docs/protocol.md).
    "fast": Preset(
        backbone="fast",
        pretrain=TrainConfig(epochs=2, batch_size=256, lr=0.1, weight_decay=5e-4, label_smoothing=0.0),
        finetune=TrainConfig(epochs=4, batch_size=256, lr=0.2, weight_decay=5e-4, label_smoothing=0.1, evals=24,
                             schedule="wsd", cooldown=0.2),
        pretext_options={"rotation": {"all_rotations": False}},
        pretrain_epochs={"simclr": 1},
    ),
    # The earlier fast recipe, one-cycle fine-tuning: the committed studies made with it resume and replicate.
    "fast-onecycle": Preset(
        backbone="fast",
        pretrain=TrainConfig(epochs=2, batch_size=256, lr=0.1, weight_decay=5e-4, label_smoothing=0.0),
        finetune=TrainConfig(epochs=4, batch_size=256, lr=0.2, weight_decay=5e-4, label_smoothing=0.1, evals=24),
        pretext_options={"rotation": {"all_rotations": False}},
        pretrain_epochs={"simclr": 1},
    ),
    # Where plateaus are observable (the homework's setting): AdamW 1e-3 at a constant rate, each run
    # stopped when validation macro-F1 has not improved for 8 of its evaluations (the same rule for every
    # arm); epochs(f) is then the maximum budget. Pretraining as in `fast`.
    "plateau": Preset(
        backbone="fast",
        pretrain=TrainConfig(epochs=2, batch_size=256, lr=0.1, weight_decay=5e-4, label_smoothing=0.0),
        finetune=TrainConfig(epochs=20, batch_size=256, optimizer="adamw", lr=1e-3, weight_decay=0.01,
                             schedule="plateau", patience=8, warmup=0.0, label_smoothing=0.0, evals=60),
        pretext_options={"rotation": {"all_rotations": False}},
        pretrain_epochs={"simclr": 1},
        max_epoch_factor=3.0,
    ),
    # The homework's setting as given: MobileNetV3-Large, AdamW lr 1e-3, betas (0.9, 0.999), wd 0.01.
    "homework": Preset(
        backbone="mobilenet_v3_large",
        pretrain=TrainConfig(epochs=15, batch_size=128, optimizer="adamw", lr=1e-3, weight_decay=0.01,
                             schedule="constant", warmup=0.0, label_smoothing=0.0),
        finetune=TrainConfig(epochs=15, batch_size=128, optimizer="adamw", lr=1e-3, weight_decay=0.01,
                             schedule="constant", warmup=0.0, label_smoothing=0.0, evals=30),
        max_epoch_factor=1.0,
    ),
    # For a GPU (or several, with torchrun): ResNet-18 with the CIFAR stem, a longer schedule, batch 512
    # with the learning rates linearly scaled from the usual 0.1 per 128 images.
    "gpu": Preset(
        backbone="resnet18",
        pretrain=TrainConfig(epochs=60, batch_size=512, lr=0.2, weight_decay=5e-4, label_smoothing=0.0),
        finetune=TrainConfig(epochs=30, batch_size=512, lr=0.4, weight_decay=5e-4, label_smoothing=0.1, evals=30),
    ),
    # Seconds, for tests and for checking a setup end to end.
    "smoke": Preset(
        backbone="fast",
        pretrain=TrainConfig(epochs=1, batch_size=32, lr=0.05, label_smoothing=0.0),
        finetune=TrainConfig(epochs=1, batch_size=32, lr=0.05),
        max_epoch_factor=2.0,
    ),
}


# Segmentation: a few hundred large images rather than tens of thousands of small ones, so smaller batches and
# more epochs, and images cut to a shorter side of 96 px (CamVid's 480 x 360 becomes 128 x 96): the fast CNN
# under its decoder costs 1.5 GFLOP a forward pass there (2.3 at 160 x 120), which keeps the default study
# (3 fractions, one seed, context) near an hour on 2 CPU cores. Pretraining: about the same pixels per pool
# image for every task (40 epochs of two 27 px context patches ~ 6 epochs of a 96 px square for rotation and
# reconstruction ~ 3 of SimCLR's two views). Fine-tuning: the classification recipe's shape (wsd, 24
# evaluations), SGD at a rate for batches of 8, 20 epochs at 100%, at most 3x that at smaller fractions.
TASK_PRESETS: dict[str, dict[str, Preset]] = {
    "segmentation": {
        "fast": Preset(
            backbone="fast",
            pretrain=TrainConfig(epochs=40, batch_size=64, lr=0.1, weight_decay=5e-4, label_smoothing=0.0),
            finetune=TrainConfig(epochs=20, batch_size=8, lr=0.05, weight_decay=5e-4, label_smoothing=0.0,
                                 evals=24, schedule="wsd", cooldown=0.2),
            pretext_options={"rotation": {"all_rotations": False}},
            pretrain_epochs={"rotation": 6, "reconstruction": 6, "simclr": 3},
            max_epoch_factor=3.0,
            image_size=96,
        ),
        "smoke": Preset(
            backbone="fast",
            pretrain=TrainConfig(epochs=1, batch_size=8, lr=0.05, label_smoothing=0.0),
            finetune=TrainConfig(epochs=1, batch_size=4, lr=0.05, label_smoothing=0.0),
            max_epoch_factor=2.0,
            image_size=48,
        ),
    },
}


def get_preset(name: str, task: str) -> Preset:
    """The preset `name` as the downstream task runs it: the task's own recipe where it has one."""
    return TASK_PRESETS.get(task, {}).get(name) or PRESETS[name]


def with_overrides(preset: Preset, epochs: int | None = None, pretrain_epochs: int | None = None) -> Preset:
    """The preset with the command line's training length: epochs at 100% labels (smaller fractions follow
    the budget rule) and pretraining epochs for every task."""
    p = preset
    if epochs is not None:
        p = dataclasses.replace(p, finetune=dataclasses.replace(p.finetune, epochs=epochs))
    if pretrain_epochs is not None:
        p = dataclasses.replace(p, pretrain=dataclasses.replace(p.pretrain, epochs=pretrain_epochs), pretrain_epochs={})
    return p

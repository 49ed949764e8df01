"""What a study will do and how long it should take on this machine, before it starts.

Every stage's work is counted in training-image equivalents: a training image is one forward and
backward pass at the data's size, an evaluated image a third of that (forward only); each pretext
task says what one of its images costs (work_per_image: a context pair about 0.4, a SimCLR image
two views). One measured rate, a few seconds of real training steps of this backbone at this size
and precision, turns them into seconds; a fixed overhead per stage covers setup, the final
evaluation's extras and file writes. The estimate is a guide, written into study.json and set
beside the actual time in the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .. import hw
from ..models import Classifier, make_backbone
from ..models.heads import Segmenter

FORWARD = 1 / 3  # an evaluated (forward-only) image, in training images
STAGE_OVERHEAD_S = 0.3  # setup, final evaluation and writes of one stage


@dataclass
class Stage:
    """One resumable unit of a study: a pretraining, a probe stage or a fine-tuning run (stages.py runs them)."""

    name: str
    kind: str  # pretrain | probe | finetune
    work: float  # training-image equivalents
    done: bool

    def run(self, env: Any) -> Any:
        raise NotImplementedError


def pretrain_work(per: float, epochs: int, n_pool: int, n_val: int) -> float:
    """One pretraining whose task trains on `per` image equivalents per pool image (the task's
    work_per_image): its epochs on the pool, a held-out pass per epoch, the BatchNorm re-estimation
    (up to 5,000 pool images) and the k-NN check (a bank of up to 10,000 and the validation images, for
    the pretrained and a random backbone)."""
    checks = min(5_000, n_pool) + 2 * (min(10_000, n_pool) + n_val)
    return epochs * (n_pool * per + n_val * per * FORWARD) + checks * FORWARD


def probe_work(n_pool: int, n_val: int, n_test: int, entries: int) -> float:
    """Features of every pool, validation and test image once, then per entry a linear probe (L-BFGS on
    cached features, up to the pool's size) and a k-NN pass, about a twentieth of the pool each."""
    return (n_pool + n_val + n_test) * FORWARD + entries * 0.05 * n_pool


def finetune_work(epochs: int, n_train: int, evaluations: int, n_val: int, n_test: int) -> float:
    return epochs * n_train + (evaluations + 1) * n_val * FORWARD + n_test * FORWARD


def measure_rate(backbone: str, channels: int, size: int | tuple[int, int], device: torch.device, precision: str,
                 batch: int = 128, seconds: float = 2.0, dense: bool = False) -> float:
    """Training images per second of this backbone at this size (a side, or (H, W)): a few real
    forward-backward-step passes (after one warm-up) on random images; dense: under the segmentation decoder,
    with a label per pixel, on batches of 8."""
    shape = (size, size) if isinstance(size, int) else tuple(size)
    net = make_backbone(backbone, channels)
    model = (Segmenter(net, 10, channels) if dense else Classifier(net, 10)).to(device)
    model = model.to(memory_format=torch.channels_last)
    batch = min(batch, 8) if dense else batch
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, channels, *shape, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch, *shape) if dense else (batch,), device=device)

    def step() -> None:
        with hw.autocast(device, precision):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds and n < 50:
        step()
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n * batch / (time.perf_counter() - t0)


def estimate_s(stages: list[Stage], rate: float) -> float:
    """Seconds the stages not yet done should take at `rate` training images per second."""
    return sum(s.work / rate + STAGE_OVERHEAD_S for s in stages if not s.done)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds % 3600 // 60, seconds % 60
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def describe(stages: list[Stage], rate: float, backbone: str, size: int | str, precision: str) -> list[str]:
    """The plan as a user reads it before any work starts."""
    kinds = {k: [s for s in stages if s.kind == k] for k in ("pretrain", "probe", "finetune")}
    done = sum(s.done for s in stages)
    lines = [f"plan: {len(kinds['pretrain'])} pretraining(s), {len(kinds['probe'])} probe stage(s), "
             f"{len(kinds['finetune'])} fine-tuning run(s); {done} of {len(stages)} stages already finished"]
    left = [s for s in stages if not s.done]
    if left:
        lines.append(f"estimated time left on this machine: {duration(estimate_s(stages, rate))} "
                     f"(measured {rate:.0f} training images/s for {backbone} at {size} px, {precision}, "
                     f"{torch.get_num_threads()} thread(s); next: {left[0].name})")
    return lines

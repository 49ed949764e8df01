"""Data-parallel plumbing for runs launched by `torchrun`: join the job, shard the work, combine results.

Without torchrun nothing here does anything: one process is world size 1, rank 0, and every helper
returns its input unchanged, so a plain run's numbers are exactly those of the single-process code.

Under torchrun every rank builds the same model from the same seed, draws the same epoch order and
takes its own slice of every batch; DistributedDataParallel averages the gradients, so one step
of N processes with batch B/N each is one step of batch B. Only rank 0 writes files.
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import TypeVar

import torch
import torch.distributed as td
from torch import Tensor, nn

from .errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")
BACKENDS = ("auto", "gloo", "nccl")
RANK_SEED_STRIDE = 2**40  # keeps the ranks' augmentation seeds apart from every (seed, epoch) seed


def _launched_world() -> int:
    """WORLD_SIZE as set by torchrun (1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_world_size() -> int:
    """Processes on this machine: they share its cores and memory."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def init(device: torch.device) -> torch.device:
    """Join the torchrun job this process belongs to (once) and return this rank's device.

    CUDA ranks take GPU LOCAL_RANK and talk over nccl, CPU ranks over gloo;
    PRETEXTLAB_DIST_BACKEND=gloo|nccl overrides the choice.
    """
    if _launched_world() == 1:
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise UserError(f"torchrun started local rank {local} but only {torch.cuda.device_count()} GPU(s) are "
                            "visible; use --nproc_per_node <number of GPUs>")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not td.is_initialized():
        name = backend(device)
        td.init_process_group(name, device_id=device if name == "nccl" else None)  # nccl: bind this GPU now
        atexit.register(shutdown)  # leave the job cleanly however the process ends
        log.info("rank %d of %d on %s", td.get_rank(), td.get_world_size(), device)
    return device


def backend(device: torch.device) -> str:
    """nccl for GPUs, gloo for CPUs, unless PRETEXTLAB_DIST_BACKEND asks for one."""
    name = os.environ.get("PRETEXTLAB_DIST_BACKEND", "auto").lower() or "auto"
    if name not in BACKENDS:
        raise UserError(f"PRETEXTLAB_DIST_BACKEND={name} is unknown; use gloo (CPU), nccl (GPU) or unset it")
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if name == "nccl" and device.type != "cuda":
        raise UserError("PRETEXTLAB_DIST_BACKEND=nccl needs CUDA GPUs but this run is on the CPU; "
                        "unset it (CPU ranks use gloo) or run on GPU machines")
    return name


def shutdown() -> None:
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def world_size() -> int:
    return td.get_world_size() if td.is_available() and td.is_initialized() else 1


def rank() -> int:
    return td.get_rank() if td.is_available() and td.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes config, metrics, TensorBoard, checkpoints and reports.
    Before the job is joined, torchrun's RANK says which process this will be."""
    if td.is_available() and td.is_initialized():
        return td.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    if world_size() > 1:
        td.barrier()


# ----------------------------------------------------------------------------------------------
# Sharding


def global_batch(batch_size: int) -> int:
    """The batch all ranks together take per step: batch_size, rounded down to a multiple of the
    world size when it does not split evenly (each rank then takes batch_size // world_size)."""
    w = world_size()
    if batch_size < w:
        raise UserError(f"a batch of {batch_size} cannot be split over {w} processes; "
                        f"use --batch-size {w} or more, or fewer processes")
    if batch_size % w and is_main():
        log.warning("batch %d does not split over %d processes: using %d (%d per process)",
                    batch_size, w, batch_size // w * w, batch_size // w)
    return batch_size // w * w


def shard(order: Tensor, steps: int, bs: int, g: torch.Generator) -> tuple[Tensor, int, torch.Generator]:
    """This rank's share of an epoch: its slice of every global batch of `order`, and its own
    augmentation stream (rank 0 keeps g, so one process draws exactly what it always drew)."""
    w, r = world_size(), rank()
    if w == 1:
        return order, bs, g
    per = bs // w
    mine = order.view(steps, bs)[:, r * per:(r + 1) * per].reshape(-1)
    return mine, per, g if r == 0 else torch.Generator().manual_seed(g.initial_seed() + r * RANK_SEED_STRIDE)


def shard_slice(n: int) -> slice:
    """This rank's contiguous part of n evaluation examples (parts differ in size by at most one)."""
    w, r = world_size(), rank()
    return slice(n * r // w, n * (r + 1) // w)


# ----------------------------------------------------------------------------------------------
# Models


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around model under torchrun (it averages gradients), else the model."""
    if world_size() == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's BatchNorm statistics on every rank.

    Each rank's last forward updated its running statistics with its own batch; evaluation and the
    checkpoint must see one model, the one rank 0 saves.
    """
    if world_size() > 1:
        for b in model.buffers():
            td.broadcast(b, src=0)


# ----------------------------------------------------------------------------------------------
# Combining results


def all_sum(t: Tensor) -> Tensor:
    """The sum of t over all ranks (t itself on one process)."""
    if world_size() == 1:
        return t
    t = t.clone()
    td.all_reduce(t)
    return t


def mean(value: Tensor, count: int) -> tuple[float, int]:
    """The mean over all ranks of per-rank means, each weighted by its count, and the total count.

    On one process: float(value) itself, bit for bit. A rank with nothing to count adds nothing.
    """
    if world_size() == 1:
        return float(value), count
    part = torch.tensor([float(value) * count if count else 0.0, count], dtype=torch.float64, device=value.device)
    total, n = all_sum(part).tolist()
    return total / n, int(n)


def gather_rows(local: Tensor, part: slice, index: Tensor) -> Tensor:
    """Rows `index` of a tensor whose rows are spread over the ranks by shard_slice, on every rank.

    Each rank fills the rows it holds and zeros elsewhere; the sum over ranks is exact.
    """
    if world_size() == 1:
        return local[index]
    index = index.to(local.device)
    out = torch.zeros(len(index), *local.shape[1:], dtype=local.dtype, device=local.device)
    mine = (index >= part.start) & (index < part.stop)
    out[mine] = local[index[mine] - part.start]
    return all_sum(out)


def from_main(obj: T) -> T:
    """Rank 0's value of obj on every rank (a picklable object); also a synchronisation point."""
    if world_size() == 1:
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]

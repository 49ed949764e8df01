"""`pretextlab bench`: set up the data and models once, measure every path of every backbone, report."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .. import hw
from ..data import load_dataset, make_splits
from ..errors import UserError
from ..io import save_json
from ..models import count_flops, make_backbone
from ..pretext import TASKS
from . import naive, peers
from .naive import write_synthetic_folder
from .race import peer_summary, segmentation_rates, task_rates
from .text import format_report
from .timing import FULL, QUICK, interleaved, timed, warm_up
from .workloads import (
    Setup,
    batch_prep_ms,
    classification,
    classifier,
    eval_rates,
    fit_path,
    peak_gflops,
    smoothed_cross_entropy,
    train_step,
)

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

        peaks, peak_notes = peak_gflops(plan, dev)
        notes += peak_notes
        result["peak_gflops"] = peaks
        peak = peaks["bf16"] if precision == "bf16" and peaks["bf16"] else peaks["fp32"]
        pool = peers.simclr_pool(root, ds, splits) if peer else None
        setup = Setup(plan, bs, precision, ds, splits, naive_sets, tmp_dir, peak * 1e9, dev, peer, pool)
        result["batch_prep_ms"] = batch_prep_ms(setup)
        result["backbones"] = {name: _bench_backbone(name, setup) for name in backbones}
        if peer is not None:
            result["peer"] = peer_summary(backbones[0], result["backbones"][backbones[0]]["peer"], setup,
                                           peer_epochs)
            for k in ("speedup_vs_lightly", "ceiling_vs_lightly", "augment_ms_per_image", "knn_pretextlab",
                      "knn_lightly"):
                result[k] = result["peer"][k]
        if dev.type == "cuda":
            result["cuda_max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20

    first = result["backbones"][backbones[0]]
    for k in ("overhead", "speedup_vs_naive", "mfu"):
        result[k] = first[k]
    result["task_overheads"] = {"classification": first["overhead"], "segmentation": first["segmentation"]["overhead"],
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


def _bench_backbone(name: str, s: Setup) -> dict[str, Any]:
    """All measurements of one backbone; the pipeline and naive paths time as many steps as the model."""
    plan, bs = s.plan, s.bs
    shape = (s.ds.channels, s.ds.image_size, s.ds.image_size)
    fwd_flops = count_flops(classifier(name, s), shape)

    # 2. the model alone, on a ready channels_last float batch
    model = classifier(name, s).to(s.device, memory_format=torch.channels_last)
    x = torch.randn(bs, *shape, device=s.device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, len(s.ds.classes), (bs,), device=s.device)
    model_step = train_step(model, x, y, smoothed_cross_entropy, s.device, s.precision)
    steps = plan.steps_for(warm_up(model_step, plan.warmup))
    # 3. the real path: train.fit on a Classification task
    pipe_model = classifier(name, s)
    pipeline = fit_path(pipe_model, lambda sp: classification(sp, s), "train", steps, s, f"{name}-classify")
    # 4. the tutorial way, same model, optimizer and loss, NCHW float32
    naive_model = classifier(name, s).to(s.device)
    naive_step = naive.train_step(naive_model, s.naive.train_batches(bs))
    warm_up(naive_step, plan.warmup)
    rates = interleaved({"model": lambda: timed(model_step, steps), "pipeline": pipeline,
                          "naive": lambda: timed(naive_step, steps)}, plan.rounds)
    model_img_s, pipeline_img_s, naive_img_s = rates["model"], rates["pipeline"], rates["naive"]

    # 5. evaluation: predict_logits on uint8 tensors vs a DataLoader loop (the models of 3 and 4)
    eval_img_s, naive_eval_img_s, n_eval = eval_rates(pipe_model, naive_model, s)

    # 6. every pretext task at its ceiling (and, on simclr, 7. the peer in the same turns)
    tasks = {task: task_rates(name, task, s) for task in TASKS}
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
        "segmentation": segmentation_rates(name, s),  # a downstream task of its own: masks, a decoder
        **({"peer": peer} if peer is not None else {}),
        "steps": {"train": steps, "pretext": context["steps"], "eval_images": n_eval},
    }

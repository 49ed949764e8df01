"""Supervised training on a label fraction (from scratch or from pretrained weights), evaluation
and prediction. Metrics come from torchmetrics with macro averaging spelled out."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import dist, hw
from .augment import augment, normalize, take
from .backbones import backbone_facts, file_sha256, is_user_file
from .data import (
    DataConfig,
    Splits,
    check_out_outside_data,
    check_same_data,
    data_facts,
    data_settings,
    describe_fingerprint,
    load_data,
    make_splits,
    open_data,
    stratified_split,
)
from .errors import UserError
from .io import load_torch, save_json, save_torch, sha256_file
from .layout import EXAMPLES, INDICES, SUMMARY
from .metrics import classification_metrics, confusion
from .models import Classifier, evaluating, load_backbone_weights, make_backbone, read_weights
from .probe import recalibrate_bn as recalibrate
from .runs import check_same_run_data, finished_summary, run_precision, summarize, writer_lock
from .sources import Dataset, ImageSet, rows
from .train import TrainConfig, fit, run_length, steps_per_epoch, train_settings

log = logging.getLogger(__name__)

N_EXAMPLES = 10  # validation images shown with predictions in the report: one per class where there are <= 10


def example_indices(labels: Tensor, n: int = N_EXAMPLES) -> Tensor:
    """Which validation images the report shows: the first of each class (every class once, up to n
    classes), topped up with images spread over the split; the same for every run of a study."""
    firsts = [int((labels == c).nonzero()[0]) for c in labels.unique().tolist()][:n]
    spread = [int(i) for i in torch.linspace(0, len(labels) - 1, n).long() if int(i) not in firsts]
    return torch.tensor(sorted(firsts + spread[: n - len(firsts)]))


TTA = ("none", "flip", "flip-translate")


def check_tta(tta: str) -> None:
    if tta not in TTA:
        raise UserError(f"--tta {tta} is unknown; use {', '.join(TTA)}")


def tta_views(x: Tensor, tta: str) -> list[tuple[float, Tensor]]:
    """(weight, view) pairs of a uint8 batch whose weighted logits make the prediction (Jordan 2024, airbench,
    arXiv 2404.00498): none; flip: the image and its mirror, 1/2 each; flip-translate: those, 1/4 each, and
    both shifted by one pixel up-left and down-right (reflect-padded), 1/8 each."""
    check_tta(tta)
    if tta == "none":
        return [(1.0, x)]
    if tta == "flip":
        return [(0.5, x), (0.5, x.flip(3))]
    padded = F.pad(x.float(), (1, 1, 1, 1), mode="reflect").to(x.dtype)
    up_left, down_right = padded[:, :, :-2, :-2], padded[:, :, 2:, 2:]
    return [(0.25, x), (0.25, x.flip(3)), (0.125, up_left), (0.125, up_left.flip(3)), (0.125, down_right),
            (0.125, down_right.flip(3))]


def predict_logits(model: nn.Module, x: Tensor, mean: Tensor, std: Tensor, batch_size: int = 1000,
                   precision: str = "fp32", channels_last: bool = True, tta: str = "none") -> Tensor:
    """Logits for uint8 images, in batches, without gradients (eval-mode BatchNorm); with test-time
    augmentation, the weighted mean of the logits of each view (tta_views)."""
    device = next(model.parameters()).device
    outs = []
    with evaluating(model):
        for chunk in x.split(batch_size):
            chunk = chunk.to(device)
            total = None
            for weight, view in tta_views(chunk, tta):
                with hw.autocast(device, precision):
                    logits = model(normalize(view, mean, std, channels_last)).float() * weight
                total = logits if total is None else total + logits
            outs.append(total)
    return torch.cat(outs)


def predict_part(model: nn.Module, x: Tensor, y: Tensor, mean: Tensor, std: Tensor,
                 precision: str = "fp32", tta: str = "none") -> tuple[Tensor, Tensor, slice]:
    """Logits and labels of this rank's part of (x, y), and which part it is (all of it on one process)."""
    part = dist.shard_slice(len(y))
    logits = predict_logits(model, x[part], mean, std, precision=precision, tta=tta)
    return logits, y[part].to(logits.device), part


class Classification:
    """Supervised task: augmented, normalised batches of the labelled subset; cross-entropy loss."""

    monitor = ("f1_macro", "max")  # what the plateau schedule watches

    def __init__(self, splits: Splits, pad: int, flip: bool, label_smoothing: float, precision: str = "fp32",
                 tta: str = "none"):
        self.splits, self.pad, self.flip, self.smoothing, self.precision = splits, pad, flip, label_smoothing, precision
        self.tta = tta  # every evaluation scores the weighted views of tta_views
        self.n_train = len(splits.y_train)
        self.num_classes = len(splits.classes)

    def batch(self, idx: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        x = augment(take(self.splits.x_train, idx), g, self.pad, self.flip)
        return normalize(x, self.splits.mean, self.splits.std), take(self.splits.y_train, idx)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.float(), y, label_smoothing=self.smoothing)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        s = self.splits
        logits, y, _ = predict_part(model, s.x_val, s.y_val, s.mean, s.std, self.precision, self.tta)
        m = classification_metrics(logits, y, self.num_classes)
        m.pop("n")
        return m


def train_classifier(
    data: DataConfig,
    cfg: TrainConfig,
    backbone: str,
    out_dir: Path,
    init: str | None = None,
    dataset: Dataset | None = None,
    device: str = "auto",
    quiet: bool = False,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Train (or resume, or just return) the run in out_dir and return its summary; precision is the
    caller's decision for `--precision auto` (a study decides once for all its runs)."""
    check_tta(cfg.tta)  # before anything is written
    check_out_outside_data(data, out_dir)
    with writer_lock(out_dir):
        return _train_classifier(data, cfg, backbone, Path(out_dir), init, dataset, device, quiet, on_epoch_end,
                                 precision)


def _train_classifier(data: DataConfig, cfg: TrainConfig, backbone: str, out_dir: Path, init: str | None,
                      dataset: Dataset | None, device: str, quiet: bool,
                      on_epoch_end: Callable[[int, dict], None] | None, decided: str | None) -> dict[str, Any]:
    settings = {"backbone": backbone, "init": str(init) if init else None, "data": data_settings(data),
                "train": train_settings(cfg)}
    done = finished_summary(out_dir, settings)
    if done is not None:
        return done
    dev, ds = open_data(data, device, dataset)
    check_same_run_data(out_dir, ds.fingerprint)
    pad = data.crop_pad(ds.image_size)
    if pad >= ds.image_size:
        raise UserError(f"--pad {pad} is not smaller than the {ds.image_size} px images; use e.g. {ds.image_size // 8}")
    splits = make_splits(ds, data.fraction, cfg.seed, data.val_fraction, data.split_seed).to(dev)
    torch.manual_seed(cfg.seed)  # --seed decides the initial weights
    model = Classifier(make_backbone(backbone, ds.channels), len(ds.classes))
    if init:
        load_backbone_weights(model.backbone, read_weights(init), init, cfg.transfer_stages)
    precision = run_precision(cfg.precision, dev, out_dir, decided)
    task = Classification(splits, pad, data.flip, cfg.label_smoothing, precision, cfg.tta)
    meta = {"kind": "classifier", "backbone": backbone, **backbone_facts(backbone), "precision": precision,
            "classes": ds.classes,
            "channels": ds.channels,
            "image_size": ds.image_size, "mean": splits.mean.tolist(), "std": splits.std.tolist(),
            "data": dataclasses.asdict(data), "data_fingerprint": ds.fingerprint}
    run_config = {"kind": "finetune", **settings, "dataset": ds.name, "classes": ds.classes,
                  "n_train": len(splits.y_train), "n_val": len(splits.y_val), "crop_pad": pad}
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main() and not (out_dir / INDICES).exists():
        save_json(splits.indices, out_dir / INDICES)
    t0 = time.perf_counter()
    history = fit(model, task, cfg, out_dir, run_config, meta, dev, quiet, on_epoch_end, data_facts(ds),
                  precision)

    # Final evaluation (each rank its part): confusion matrix, examples with predictions, the test split if any.
    logits, y, part = predict_part(model, splits.x_val, splits.y_val, splits.mean, splits.std, precision, cfg.tta)
    pick = example_indices(splits.y_val.cpu()).to(splits.y_val.device)
    batch = dist.global_batch(min(cfg.batch_size, len(splits.y_train)))  # as fit() batched it
    probs = dist.gather_rows(logits.softmax(1), part, pick)
    summary = summarize(history)
    summary.update({
        "run": out_dir.name, "backbone": backbone, "init": str(init) if init else None,
        "init_sha256": sha256_file(Path(init)) if init else None,
        "fraction": data.fraction, "seed": cfg.seed, "n_train": len(splits.y_train), "n_val": len(splits.y_val),
        "classes": ds.classes, "final": classification_metrics(logits, y, len(ds.classes)),
        "confusion_val": confusion(logits, y, len(ds.classes)),
        "examples": [{"val_index": int(i), "label": int(splits.y_val[i]), "pred": int(p.argmax()),
                      "confidence": float(p.max())} for i, p in zip(pick, probs)],
        "wall_time_s": history[-1]["wall_time_s"], "process_time_s": time.perf_counter() - t0,
        **run_length(history, cfg, steps_per_epoch(len(splits.y_train), batch)),
    })
    if splits.test is not None:
        tl, ty, _ = predict_part(model, splits.test.images, splits.test.labels, splits.mean, splits.std, precision)
        summary["test"] = classification_metrics(tl, ty, len(ds.classes))
    if dist.is_main():
        save_torch(splits.x_val[pick].cpu(), out_dir / EXAMPLES)
        save_json(summary, out_dir / SUMMARY)
    dist.barrier()  # the run's files are complete before any rank moves on
    return summary


# ----------------------------------------------------------------------------------------------
# Checkpoints: evaluate and predict need nothing but the checkpoint (and the data for evaluate).


def load_classifier(path: str | Path, backbone: str | None = None) -> tuple[Classifier, dict[str, Any]]:
    """A trained classifier rebuilt from its checkpoint alone (a run folder stands for its checkpoint.pt). A backbone
    from the user's own file is built only from the file the user names again (`backbone`): a checkpoint's contents
    never decide what runs. Its meta is checked before use, so an edited or foreign file is refused in one line."""
    from .io import UnreadableFile
    from .layout import CHECKPOINT

    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT).is_file():
            raise UserError(f"--checkpoint {path} is a folder with no {CHECKPOINT} in it; pass a run's folder or its "
                            f"{CHECKPOINT}")
        path = path / CHECKPOINT
    if not path.is_file():
        raise UserError(f"--checkpoint {path}: no such file; pass a run's checkpoint.pt")

    def refuse(why: str) -> UserError:
        return UserError(f"{path} is not a pretextlab checkpoint ({why}); pass a run's checkpoint.pt")

    try:
        state = load_torch(path)
    except UnreadableFile:
        raise refuse("it is unreadable: truncated or damaged?") from None
    meta = state.get("meta") if isinstance(state, dict) else None
    if not isinstance(meta, dict):
        raise refuse("it holds no meta dict")
    if "kind" not in meta:
        raise refuse("its meta misses 'kind'")
    if meta["kind"] != "classifier":
        raise UserError(f"{path} is a {meta['kind']} checkpoint, not a classifier; "
                        "fine-tune it first with `pretextlab train --init`")
    for key, kind in (("backbone", str), ("classes", list), ("channels", int), ("image_size", int), ("mean", list),
                      ("std", list)):
        if key not in meta:
            raise refuse(f"its meta misses '{key}'")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise refuse(f"its meta's '{key}' is not a {kind.__name__}")
    if not (meta["classes"] and all(isinstance(c, str) for c in meta["classes"]) and meta["channels"] in (1, 3)
            and 0 < meta["image_size"] <= 8192  # a bound: predict resizes every image to this side
            and all(len(meta[k]) == meta["channels"] and all(isinstance(v, (int, float)) for v in meta[k])
                    for k in ("mean", "std"))
            and meta.get("precision", "fp32") in ("fp32", "bf16", "fp16")):
        raise refuse("its meta's classes, channels, image size, mean, std or precision are not a classifier's")
    if "model" not in state:
        raise refuse("it misses 'model'")
    model = Classifier(make_backbone(_user_backbone(meta, backbone, path), meta["channels"]), len(meta["classes"]))
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError):
        raise UserError(f"{path} holds weights that do not fit {meta['backbone']} as built now; pass the backbone "
                        "it was trained with") from None
    return model.eval(), meta


def _user_backbone(meta: dict[str, Any], given: str | None, path: Path) -> str:
    """The spec to build: the checkpoint's, unless it is a user's file, which must be named again."""
    spec = meta["backbone"]
    if not is_user_file(spec):
        return spec
    if given is None:
        raise UserError(f"{path} was trained with your own module {spec}; pass --backbone {spec} (or its new path) "
                        "to build it: pretextlab never runs code a checkpoint names")
    if meta.get("backbone_sha256") not in (None, file_sha256(given)):
        log.warning("%s has changed since %s was trained (SHA-256 %s... then); the weights may not fit it",
                    given.rsplit(":", 1)[0], path, str(meta["backbone_sha256"])[:12])
    return given


def evaluate_checkpoint(checkpoint: str, source: str | None, split: str = "val", cache_dir: str | None = None,
                        backbone: str | None = None, tta: str = "none", recalibrate_bn: int = 0) -> dict[str, float]:
    """Metrics of a saved classifier on the val split it was trained with, or the source's test split;
    tta scores it with test-time augmentation (tta_views) instead of the plain images; recalibrate_bn > 0
    first re-estimates its BatchNorm statistics on that many of the run's training-pool images (no labels
    used), to tell a network that learnt from one whose running statistics lag its weights."""
    check_tta(tta)  # an unknown name fails before any loading
    if recalibrate_bn < 0:
        raise UserError("--recalibrate-bn must be >= 0 (0: the statistics as trained)")
    hw.setup_threads()
    model, meta = load_classifier(checkpoint, backbone)
    d = meta.get("data")
    optional = (str, type(None))
    for key, kind in (("val_fraction", float), ("split_seed", int), ("source", optional if source else str),
                      ("test_source", optional), ("storage", optional)):
        if not isinstance(d, dict) or not isinstance(d.get(key), kind):
            raise UserError(f"{checkpoint} is not a pretextlab checkpoint (its meta misses data.{key}); pass a run's "
                            "checkpoint.pt" + ("" if source or key != "source" else ", or the data as --data"))
    # Where files are written comes from the command line alone (--cache-dir, else the default), never from the
    # checkpoint: the cache dir recorded in it may be another machine's, or planted.
    ds = load_data(DataConfig(source=source or d["source"], image_size=meta["image_size"], cache_dir=cache_dir,
                              storage=d.get("storage") or "auto",
                              test_source=None if source else d.get("test_source")))
    if ds.classes != meta["classes"] or ds.channels != meta["channels"]:
        raise UserError(f"the checkpoint knows {len(meta['classes'])} classes ({meta['channels']} channels) but "
                        f"{ds.name} has {len(ds.classes)} ({ds.channels}); evaluate on the data it was trained for")
    _check_trained_data(meta.get("data_fingerprint"), ds.fingerprint, checkpoint, d["source"], source)
    pool, va = stratified_split(ds.train.labels, d["val_fraction"], d["split_seed"])
    if split == "test":
        if ds.test is None:
            raise UserError(f"{ds.name} has no test split; use --split val, or a root with train/ and test/")
        part = ds.test
    elif split == "val":
        part = ImageSet(rows(ds.train.images, va), ds.train.labels[va])
    else:
        raise UserError(f"--split {split} is unknown; use val or test")
    mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    if recalibrate_bn:
        recalibrate(model, rows(ds.train.images, pool), mean, std, max_images=recalibrate_bn)
    precision = meta.get("precision", "fp32")  # as trained
    logits = predict_logits(model, part.images, mean, std, precision=precision, tta=tta)
    return classification_metrics(logits, part.labels, len(ds.classes))


def _check_trained_data(trained: Any, now: dict | None, checkpoint: str, recorded: str, given: str | None) -> None:
    """The images found where the checkpoint says it was trained (a relative path read from another folder, data
    changed since) must be those it was trained on: refused, since its validation split would silently be other
    images; images the user names with --data are theirs to choose, and only told apart in a warning."""
    if not isinstance(trained, dict) or trained == now:
        return
    if given is None:
        check_same_data(trained, now, f"{checkpoint} was trained on at {recorded}")
    log.warning("--data %s holds other images than %s was trained on (%s then, %s now): its val split is other "
                "images", given, checkpoint, describe_fingerprint(trained), describe_fingerprint(now or {}))


def predict_files(checkpoint: str, files: list[str], backbone: str | None = None) -> list[tuple[str, str, float]]:
    """(file, class, confidence) per image, resized the way the training data was."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from .sources import resize_pil, to_mode

    model, meta = load_classifier(checkpoint, backbone)
    size, mode = meta["image_size"], "L" if meta["channels"] == 1 else "RGB"
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = to_mode(im, mode)
                arrays.append(np.asarray(resize_pil(im, size) if im.size != (size, size) else im))
        except FileNotFoundError:
            raise UserError(f"{f}: no such file; pass image paths") from None
        except Image.DecompressionBombError:
            raise UserError(f"{f} declares more pixels than Pillow decodes safely (a decompression bomb?); "
                            "pass an ordinary image") from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise UserError(f"{f} is not a readable image; pass JPEG, PNG or another format Pillow reads") from None
    x = torch.as_tensor(np.stack(arrays))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    probs = predict_logits(model, x, torch.tensor(meta["mean"]), torch.tensor(meta["std"]),
                           precision=meta.get("precision", "fp32")).softmax(1)
    conf, pred = probs.max(1)
    return [(f, meta["classes"][p], float(c)) for f, p, c in zip(files, pred.tolist(), conf.tolist())]

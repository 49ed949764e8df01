"""Fine-tuning on a label fraction, from scratch or from pretrained weights, for any downstream task
(tasks/), through the one run driver; and what a saved run is used for afterwards: `evaluate` on a
split and `predict` on image files, both from the checkpoint alone."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import dist, hw
from .data import DataConfig, check_same_data, data_settings, describe_fingerprint
from .data.sources import Dataset, resize_pil, to_mode
from .driver import Built, Context, execute
from .errors import UserError
from .io import UnreadableFile, load_torch, save_json, sha256_file
from .layout import CHECKPOINT, INDICES
from .models import load_backbone_weights, make_backbone, read_weights
from .models.external import backbone_facts, file_sha256, is_user_file
from .probe import recalibrate_bn as recalibrate
from .tasks import TASKS, get_task, scoring, task_of_checkpoint
from .tasks.common import DownstreamTask
from .train import TrainConfig, run_length, steps_per_epoch, train_settings

log = logging.getLogger(__name__)
DEFAULT_TASK = "classification"


@dataclass
class Finetuning:
    """A supervised run of a downstream task on a label fraction (data.fraction), from `init` weights or not."""

    task: str
    data: DataConfig
    cfg: TrainConfig
    backbone: str
    init: str | None = None

    def __post_init__(self) -> None:
        self.kind: type[DownstreamTask] = get_task(self.task)

    def settings(self) -> dict[str, Any]:
        # runs of the first task were stored without a task name: they keep comparing equal
        return {**({} if self.task == DEFAULT_TASK else {"task": self.task}), "backbone": self.backbone,
                "init": str(self.init) if self.init else None, "data": data_settings(self.data),
                "train": train_settings(self.cfg)}

    def load(self, data: DataConfig) -> Dataset:
        return self.kind.load(data)

    def complete(self, folder: Path) -> bool:
        return True

    def build(self, ctx: Context) -> Built:
        splits = self.kind.splits(ctx.ds, self.data.fraction, self.cfg.seed, self.data).to(ctx.device)
        task = self.kind(splits, self.data, self.cfg, ctx.precision)
        model = task.make_model(make_backbone(self.backbone, ctx.ds.channels))
        loaded = None
        if self.init:
            loaded = load_backbone_weights(model.backbone, read_weights(self.init), self.init, self.cfg.transfer_stages)
            if not loaded["changed"]:
                raise UserError(f"--init {self.init}: its {loaded['tensors']} tensors equal a fresh initialisation; "
                                "pass the weights of a run that trained")
            log.info("%s: %d backbone tensors loaded from %s, %d of them differ from a fresh initialisation",
                     ctx.folder.name, loaded["tensors"], self.init, loaded["changed"])
        if dist.is_main() and not (ctx.folder / INDICES).exists():  # the folder: made by the driver's lock
            save_json(splits.indices, ctx.folder / INDICES)
        meta = {"kind": self.kind.checkpoint_kind, "backbone": self.backbone, **backbone_facts(self.backbone),
                "precision": ctx.precision, **task.meta(), "data": dataclasses.asdict(self.data),
                "data_fingerprint": ctx.ds.fingerprint}
        config = {"kind": "finetune", "dataset": ctx.ds.name, "scoring": scoring(self.kind), **task.run_facts(),
                  **({"init_loaded": loaded} if loaded else {})}
        return Built(model, task, config, meta)

    def finish(self, ctx: Context, built: Built, history: list[dict[str, float]]) -> dict[str, Any]:
        n_train = built.task.n_train
        batch = dist.global_batch(min(self.cfg.batch_size, n_train))  # as fit() batched it
        out = {"run": ctx.folder.name, "backbone": self.backbone, "init": str(self.init) if self.init else None,
               "init_sha256": sha256_file(Path(self.init)) if self.init else None, "fraction": self.data.fraction,
               "seed": self.cfg.seed, "n_train": n_train, "n_val": built.config.get("n_val"),
               **run_length(history, self.cfg, steps_per_epoch(n_train, batch)),
               **built.task.final(built.model, ctx.folder, batch)}
        return out


def finetune(data: DataConfig, cfg: TrainConfig, backbone: str, out_dir: Path, init: str | None = None,
             dataset: Dataset | None = None, device: str = "auto", quiet: bool = False,
             on_epoch_end: Callable[[int, dict], None] | None = None, precision: str | None = None,
             task: str = DEFAULT_TASK) -> dict[str, Any]:
    """Train (or resume, or just return) the fine-tuning run in out_dir and return its summary."""
    return execute(Finetuning(task, data, cfg, backbone, init), out_dir, dataset, device, quiet, precision,
                   on_epoch_end)


# ----------------------------------------------------------------------------------------------
# Checkpoints: evaluate and predict need nothing but the checkpoint (and the data for evaluate).


def load_model(path: str | Path, backbone: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A trained model rebuilt from its checkpoint alone (a run folder stands for its checkpoint.pt). A backbone
    from the user's own file is built only from the file the user names again (`backbone`): a checkpoint's contents
    never decide what runs. Its meta is checked before use, so an edited or foreign file is refused in one line."""
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
    kind = task_of_checkpoint(meta["kind"])
    if kind is None:
        raise UserError(f"{path} is a {meta['kind']} checkpoint, not a fine-tuned model of "
                        f"{' or '.join(TASKS)}; fine-tune it first with `pretextlab train --init`")
    if not isinstance(meta.get("backbone"), str):
        raise refuse("its meta misses 'backbone'")
    why = kind.check_meta(meta) or (None if meta.get("precision", "fp32") in ("fp32", "bf16", "fp16") else
                                    "its meta's precision is unknown")
    if why:
        raise refuse(why)
    if "model" not in state:
        raise refuse("it misses 'model'")
    model = kind.rebuild(make_backbone(_user_backbone(meta, backbone, path), meta["channels"]), meta)
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
    """Metrics of a saved model on the val split it was trained with, or the source's test split;
    tta scores it with test-time augmentation instead of the plain images; recalibrate_bn > 0 first
    re-estimates its BatchNorm statistics on that many of the run's training-pool images (no labels
    used), to tell a network that learnt from one whose running statistics lag its weights."""
    from .tasks.classification import check_tta

    check_tta(tta)  # an unknown name fails before any loading
    if recalibrate_bn < 0:
        raise UserError("--recalibrate-bn must be >= 0 (0: the statistics as trained)")
    hw.setup_threads()
    model, meta = load_model(checkpoint, backbone)
    kind = task_of_checkpoint(meta["kind"])
    d = meta.get("data")
    optional = (str, type(None))
    for key, typ in (("val_fraction", float), ("split_seed", int), ("source", optional if source else str),
                     ("test_source", optional), ("storage", optional)):
        if not isinstance(d, dict) or not isinstance(d.get(key), typ):
            raise UserError(f"{checkpoint} is not a pretextlab checkpoint (its meta misses data.{key}); pass a run's "
                            "checkpoint.pt" + ("" if source or key != "source" else ", or the data as --data"))
    # Where files are written comes from the command line alone (--cache-dir, else the default), never from the
    # checkpoint: the cache dir recorded in it may be another machine's, or planted.
    ds = kind.load(DataConfig(source=source or d["source"], image_size=meta["image_size"], cache_dir=cache_dir,
                              storage=d.get("storage") or "auto", layout=d.get("layout") or "auto",
                              ignore_index=d.get("ignore_index"),
                              test_source=None if source else d.get("test_source")))
    if ds.classes != meta["classes"] or ds.channels != meta["channels"]:
        raise UserError(f"the checkpoint knows {len(meta['classes'])} classes ({meta['channels']} channels) but "
                        f"{ds.name} has {len(ds.classes)} ({ds.channels}); evaluate on the data it was trained for")
    pool, val = kind.held_out(ds, d)
    if split == "test":
        if ds.test is None:
            raise UserError(f"{ds.name} has no test split; use --split val, or a root with train/ and test/")
        part = ds.test
    elif split == "val":
        _check_trained_data(meta.get("data_fingerprint"), ds.fingerprint, checkpoint, d["source"], source)
        part = val
    else:
        raise UserError(f"--split {split} is unknown; use val or test")
    if recalibrate_bn:
        recalibrate(model, pool, torch.tensor(meta["mean"]), torch.tensor(meta["std"]), max_images=recalibrate_bn)
    return kind.score(model, part.images, part.labels, meta, tta)


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


def predict_files(checkpoint: str, files: list[str], backbone: str | None = None,
                  out_dir: str | Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(file, output) per image, resized the way the training data was; the output is the task's (a class and
    its confidence for classification; for segmentation the classes covering most of the image, and the index
    mask PNG and colour overlay written into out_dir at the image's own size)."""
    from PIL import Image, UnidentifiedImageError

    model, meta = load_model(checkpoint, backbone)
    mode = "L" if meta["channels"] == 1 else "RGB"
    hw = meta.get("hw")  # segmentation: every image stretched to the training size, as the data loader does
    stems = [Path(f).stem for f in files]
    if hw and len(set(stems)) < len(stems):
        twice = next(s for s in stems if stems.count(s) > 1)
        raise UserError(f"two images are named {twice}.*: their masks would overwrite each other in {out_dir}; "
                        "predict them in separate runs with separate --out folders")
    arrays, sizes = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                im = to_mode(im, mode)
                sizes.append(im.size)
                if hw:
                    arrays.append(np.asarray(im.resize((hw[1], hw[0]), Image.BILINEAR) if im.size != (hw[1], hw[0])
                                             else im))
                else:
                    size = meta["image_size"]
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
    outputs = task_of_checkpoint(meta["kind"]).predict(model, x, meta)
    if hw:
        outputs = [_write_mask(f, out, size, x[i], meta, Path(out_dir or "predictions"))
                   for i, (f, out, size) in enumerate(zip(files, outputs, sizes))]
    return list(zip(files, outputs))


def _write_mask(file: str, out: dict[str, Any], size: tuple[int, int], image: torch.Tensor, meta: dict[str, Any],
                folder: Path) -> dict[str, Any]:
    """A predicted mask as <stem>_mask.png (8-bit palette PNG: the value is the class index, the palette its
    colour) and <stem>_overlay.png (the image with the mask's colours at half strength), both at the image's own
    size (the mask resized nearest: no class is blended into another)."""
    from PIL import Image

    from .colours import class_colours, paint

    folder.mkdir(parents=True, exist_ok=True)
    n, stem = len(meta["classes"]), Path(file).stem
    mask = Image.fromarray(out.pop("mask").numpy(), "P").resize(size, Image.NEAREST)
    mask.putpalette([int(v * 255) for c in class_colours(n) for v in c] + [153] * 3 * (256 - n))
    mask_path, overlay_path = folder / f"{stem}_mask.png", folder / f"{stem}_overlay.png"
    mask.save(mask_path)
    with Image.open(file) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64) / 255
    colour = paint(np.asarray(mask), n, None)
    Image.fromarray(np.round((0.5 * rgb + 0.5 * colour) * 255).astype(np.uint8)).save(overlay_path)
    return {**out, "mask": str(mask_path), "overlay": str(overlay_path)}

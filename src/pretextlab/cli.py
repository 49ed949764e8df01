"""The `pretextlab` command. Every mistake a user can fix ends as one line on stderr, exit code 2. It names no
pretext or downstream task: they come from pretext.TASKS and tasks.TASKS, defaults from TrainConfig and DataConfig."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import __version__
from .data import DataConfig, check_fraction
from .data.masks import LAYOUTS
from .data.sources import TORCHVISION_SOURCES
from .dist import is_main
from .errors import UserError
from .finetune import evaluate_checkpoint, finetune, predict_files
from .io import load_json, save_json
from .layout import ANSWERS_MD
from .metrics import METRIC_NAMES
from .models import BACKBONES, check_backbone
from .pretext import TASKS as PRETEXTS
from .pretext import pretrain as run_pretrain
from .pretext import typed_options
from .study import export_study, replicate_settings, run_study
from .tasks import TASKS, get_task, resolve_task
from .train import TrainConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)

PRETRAIN_EPOCHS, PRETRAIN_LR, PRETRAIN_LABEL_SMOOTHING = 8, 0.1, 0.0  # pretraining's, not TrainConfig's (fine-tuning)
DEFAULT_PRETEXT = next(iter(PRETEXTS))  # the registry's first

STORAGE_HELP = ("auto | memory | stream: decoded images in memory, or in memory-mapped shards read per batch "
                "(auto streams above PRETEXTLAB_STREAM_GB, default a quarter of RAM)")
DATA_HELP = ("image folder (one sub-folder per class), a root with train/ and test/, a cifar-10-batches-py "
             f"folder, or {' | '.join(TORCHVISION_SOURCES)} (downloaded)")
BACKBONE_HELP = (" | ".join(BACKBONES) + " | timm:<name> | torchvision:<name> | path/to/file.py:<name> "
                 "(add @cifar to adapt a strided stem to 32 px images)")
PRESET_HELP = {  # what each preset runs, and about how long the default study takes on a 2-core CPU
    "fast": "the fast CNN, 2 pretext epochs, 4 fine-tuning epochs at 100%, the rate held constant then lowered over "
            "the last 20% (--dry-run prints the time on this machine)",
    "fast-onecycle": "fast with one-cycle fine-tuning (the earlier recipe: its studies resume and replicate)",
    "homework": "MobileNetV3-Large, AdamW 1e-3, 15 epochs at a constant rate (hours on 2 cores; a GPU preset)",
    "plateau": "the fast CNN, AdamW 1e-3 at a constant rate, each run stopped when validation macro-F1 stops "
               "improving (8 evaluations), at most 20 epochs at 100%",
    "gpu": "ResNet-18 (CIFAR stem), 60 pretext and 30 fine-tuning epochs, batch 512 (for a GPU)",
    "smoke": "1 epoch of everything on tiny batches (seconds to minutes: checks a setup end to end)",
}
TTA_HELP = ("test-time augmentation: none | flip (the image and its mirror) | flip-translate (also shifted by a "
            "pixel both ways), logits averaged")
PRECISION_HELP = "auto | fp32 | bf16 | fp16 (auto: bf16/fp16 on CUDA; bf16 on a CPU only where measured faster)"
OPTION_HELP = ("an option of the pretext task as KEY=VALUE (repeatable; VALUE read as JSON where it parses): "
               + "; ".join(f"{name}: {', '.join(f.name for f in dataclasses.fields(o))}"
                           for name, (_, o) in PRETEXTS.items()))

# The options several commands share, declared once; each command gives its default.
Data = Annotated[str, typer.Option(help=DATA_HELP)]
Backbone = Annotated[str, typer.Option(help=BACKBONE_HELP)]
UserBackbone = Annotated[Optional[str], typer.Option(help="only for a model trained with your own file: name it "
                                                          "again (path/to/file.py:<name>)")]
Checkpoint = Annotated[Path, typer.Option(help="a run's checkpoint.pt")]
TestData = Annotated[Optional[str], typer.Option(help="a separate test set (same classes): every run (and a study's "
                                                      "probes) scored on it at the end; nothing is chosen on it")]
Task = Annotated[str, typer.Option(help="downstream task: auto | " + " | ".join(TASKS) + " (auto: segmentation when "
                                        "--data holds images with masks, else classification)")]
Layout = Annotated[str, typer.Option(help="segmentation folder layout: auto | " + " | ".join(LAYOUTS))]
IgnoreIndex = Annotated[Optional[int], typer.Option(help="segmentation: the mask value to leave out of loss and "
                                                         "metrics (default: a void/unlabelled class, or 255)")]
BatchSize = Annotated[int, typer.Option(help="images per optimizer step (all processes together)")]
WeightDecay = Annotated[float, typer.Option(help="L2 weight decay")]
ValFraction = Annotated[float, typer.Option(help="share of the training images held out for validation")]
SplitSeed = Annotated[int, typer.Option(help="seed of the validation split (keep it fixed to compare runs)")]
ImageSize = Annotated[Optional[int], typer.Option(help="resize images to this square size (default: from the data)")]
Precision = Annotated[str, typer.Option(help=PRECISION_HELP)]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda: where models and data live (auto: CUDA when visible)")]
CacheDir = Annotated[Optional[str], typer.Option(help="where decoded data are cached (default ~/.cache/pretextlab)")]
Storage = Annotated[str, typer.Option(help=STORAGE_HELP)]
Quiet = Annotated[bool, typer.Option(help="log lines instead of progress bars")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pretextlab {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="print the version and exit")) -> None:
    """Does self-supervised pretraining help my model, by how much, at which label budget?"""


def _numbers(text: str, name: str, kind: type = float) -> tuple:
    try:
        return tuple(kind(t) for t in text.split(","))  # int() and float() take " 1 ", neither takes ""
    except ValueError:
        example = "integers, e.g. 0,1,2" if kind is int else "numbers, e.g. 1.0,0.5,0.1"
        raise UserError(f"{name} '{text}' is not a comma-separated list of {example}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _config(cls: type, options: dict[str, Any], **renamed: Any) -> Any:
    """cls (a config dataclass) from a command's options named as its fields, and `renamed` (the others)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in {**options, **renamed}.items() if k in names})


@app.command()
def train(
    data: Data = DataConfig.source, task: Task = "auto", backbone: Backbone = "fast",
    test_data: TestData = DataConfig.test_source, layout: Layout = DataConfig.layout,
    ignore_index: IgnoreIndex = DataConfig.ignore_index,
    fraction: float = typer.Option(DataConfig.fraction, help="share of the training labels used, in (0, 1]; "
                                   "stratified, seeded"),
    epochs: int = typer.Option(TrainConfig.epochs, help="training epochs (the maximum, with --schedule plateau)"),
    batch_size: BatchSize = TrainConfig.batch_size, weight_decay: WeightDecay = TrainConfig.weight_decay,
    optimizer: str = typer.Option(TrainConfig.optimizer, help="sgd (Nesterov momentum) | adamw"),
    lr: float = typer.Option(TrainConfig.lr, help="peak learning rate"),
    momentum: float = typer.Option(TrainConfig.momentum, help="SGD momentum (Nesterov)"),
    betas: str = typer.Option(",".join(map(str, TrainConfig.betas)), help="AdamW betas"),
    schedule: str = typer.Option(TrainConfig.schedule, help="onecycle (linear warm-up, linear decay) | cosine | "
                                 "constant | plateau (constant until the validation metric stops improving) | "
                                 "wsd (warm-up, constant, then a linear decay over the last --cooldown)"),
    cooldown: float = typer.Option(TrainConfig.cooldown, help="wsd: share of the steps, at the end, over which the "
                                   "rate falls to 0"),
    patience: int = typer.Option(TrainConfig.patience, help="plateau: stop after N evaluations without improvement"),
    evals: int = typer.Option(TrainConfig.evals, help="evaluations per run, evenly spaced in steps (0: per epoch)"),
    warmup: float = typer.Option(TrainConfig.warmup, help="share of the steps spent warming up"),
    label_smoothing: float = typer.Option(TrainConfig.label_smoothing, help="label smoothing of the cross-entropy"),
    tta: str = typer.Option(TrainConfig.tta, help=TTA_HELP + ", at every evaluation (a forward pass per view)"),
    ema: float = typer.Option(TrainConfig.ema, help="evaluate and keep a moving average of the weights with this "
                              "decay per step, e.g. 0.99 (0: the last step's weights)"),
    backbone_lr_scale: float = typer.Option(TrainConfig.backbone_lr_scale, help="backbone learning rate relative "
                                            "to the head's"),
    freeze_backbone: bool = typer.Option(TrainConfig.freeze_backbone, help="train the head only (linear probe)"),
    init: Optional[str] = typer.Option(None, help="start from these weights (checkpoint.pt or .safetensors)"),
    transfer_stages: int = typer.Option(TrainConfig.transfer_stages, help="with --init: take only the backbone's "
                                        "first N stages (0: all)"),
    seed: int = typer.Option(TrainConfig.seed, help="initialisation, batch order and label subset"),
    pad: int = typer.Option(DataConfig.pad, help="random-crop translation in px (-1: image size / 8)"),
    flip: bool = typer.Option(DataConfig.flip, help="random horizontal flips"),
    split_seed: SplitSeed = DataConfig.split_seed, val_fraction: ValFraction = DataConfig.val_fraction,
    image_size: ImageSize = DataConfig.image_size, precision: Precision = TrainConfig.precision,
    device: Device = "auto", cache_dir: CacheDir = DataConfig.cache_dir, storage: Storage = DataConfig.storage,
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/train-<backbone>-f<fraction>-s<seed>)"),
    quiet: Quiet = False,
) -> None:
    """Supervised training on a label fraction, from scratch or from --init weights; resumes if interrupted."""
    options = dict(locals())
    b = _numbers(betas, "--betas")
    if len(b) != 2:
        raise UserError(f"--betas '{betas}' needs two numbers, e.g. 0.9,0.999")
    cfg = _config(TrainConfig, options, betas=b)
    dcfg = _config(DataConfig, options, source=data, test_source=test_data)
    check_fraction(fraction)
    check_backbone(backbone)
    out = out or Path("runs") / f"train-{backbone}-f{fraction:g}-s{seed}"
    task = resolve_task(task, data)
    s = finetune(dcfg, cfg, backbone, out, init=init, device=device, quiet=quiet, task=task)
    kind, b = get_task(task), s["best"]
    key, name, second = kind.primary, METRIC_NAMES[kind.primary], kind.secondary
    _echo(f"{out}: best val {name} {b[key]['value']:.4f} (epoch {b[key]['epoch']}), {METRIC_NAMES[second]} "
          f"{b[second]['value']:.4f}; {s['n_train']} labelled images, {s['wall_time_s']:.0f} s"
          + (f"; test {name} {s['test'][key]:.4f}" if "test" in s else ""))


@app.command()
def evaluate(
    checkpoint: Checkpoint,
    data: Optional[str] = typer.Option(None, help="data source (default: the one it was trained on)"),
    split: str = typer.Option("val", help="val (the run's held-out split) | test"),
    cache_dir: CacheDir = DataConfig.cache_dir, backbone: UserBackbone = None,
    tta: str = typer.Option("none", help=TTA_HELP),
    recalibrate_bn: int = typer.Option(0, help="first re-estimate BatchNorm statistics on this many training-pool "
                                               "images (0: as trained); tells stale running averages from a "
                                               "network that did not learn"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
) -> None:
    """A trained model's metrics on a split, those of its task (e.g. macro-F1, precision, recall, accuracy, loss)."""
    m = evaluate_checkpoint(str(checkpoint), data, split, cache_dir, backbone, tta, recalibrate_bn)
    if json_out:
        typer.echo(json.dumps(m))
    else:
        typer.echo(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()))


@app.command()
def predict(
    images: Annotated[list[str], typer.Argument(help="image files")], checkpoint: Checkpoint,
    backbone: UserBackbone = None,
    out: Path = typer.Option(Path("predictions"), help="segmentation: where each image's <stem>_mask.png (class "
                                                       "indices, coloured palette) and <stem>_overlay.png go"),
) -> None:
    """A line per image: the file, then the values of its task's output (a class and its confidence; for
    segmentation the main classes and the paths of the mask and overlay PNGs)."""
    for f, result in predict_files(str(checkpoint), images, backbone, out):
        typer.echo("\t".join([f, *(f"{v:.3f}" if isinstance(v, float) else str(v) for v in result.values())]))


def _pretext_flag(key: str, text: str) -> Any:
    """An older spelling of `--option key=VALUE` (unset: the task's default); its help says which tasks have it."""
    owners = [f"{name} (default {f.default})" for name, (_, o) in PRETEXTS.items() for f in dataclasses.fields(o)
              if f.name == key]
    return typer.Option(None, help=f"{text}; as --option {key}=VALUE, an option of {', '.join(owners)}")


@app.command()
def pretrain(
    data: Data = DataConfig.source, backbone: Backbone = "fast",
    pretext: str = typer.Option(DEFAULT_PRETEXT, help="pretext task: " + " | ".join(PRETEXTS)),
    task: Task = "auto", layout: Layout = DataConfig.layout, ignore_index: IgnoreIndex = DataConfig.ignore_index,
    epochs: int = typer.Option(PRETRAIN_EPOCHS, help="pretraining epochs over the training pool"),
    lr: float = typer.Option(PRETRAIN_LR, help="peak learning rate (SGD, one-cycle schedule)"),
    batch_size: BatchSize = TrainConfig.batch_size, weight_decay: WeightDecay = TrainConfig.weight_decay,
    scale: Optional[float] = _pretext_flag("scale", "image upscaling before cutting the 3x3 grid (0: to 64 px)"),
    patch: Optional[int] = _pretext_flag("patch", "patch side, upscaled px (0: 14/64 of the canvas)"),
    gap: Optional[int] = _pretext_flag("gap", "gap between grid cells, upscaled px (-1: half a patch)"),
    jitter: Optional[int] = _pretext_flag("jitter", "max random shift of each patch, px (-1: canvas/32)"),
    colour: Optional[str] = _pretext_flag("colour", "project | drop | none (against chromatic aberration)"),
    downsample: Optional[float] = _pretext_flag("downsample", "share of patches randomly down-and-up sampled"),
    patch_norm: Optional[bool] = _pretext_flag("patch_norm", "subtract each patch's mean"),
    option: list[str] = typer.Option([], help=OPTION_HELP),
    seed: int = typer.Option(TrainConfig.seed, help="initial weights, batch order and augmentation"),
    split_seed: SplitSeed = DataConfig.split_seed, val_fraction: ValFraction = DataConfig.val_fraction,
    image_size: ImageSize = DataConfig.image_size, precision: Precision = TrainConfig.precision,
    device: Device = "auto", cache_dir: CacheDir = DataConfig.cache_dir, storage: Storage = DataConfig.storage,
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/pretrain-<pretext>-<backbone>)"),
    quiet: Quiet = False,
) -> None:
    """Pretrain a backbone without labels; writes backbone.safetensors for `train --init`."""
    given = dict(locals())
    check_backbone(backbone)
    cfg = _config(TrainConfig, given, label_smoothing=PRETRAIN_LABEL_SMOOTHING)
    dcfg = _config(DataConfig, given, source=data)
    flags = ("scale", "patch", "gap", "jitter", "colour", "downsample", "patch_norm")  # given: --option KEY=VALUE
    options = {**{k: given[k] for k in flags if given[k] is not None}, **_key_values(option)}
    if pretext in PRETEXTS:  # an option the task lacks is refused now, not after the data is read
        typed_options(pretext, PRETEXTS[pretext][1], options)
    out = out or Path("runs") / f"pretrain-{pretext}-{backbone}"
    s = run_pretrain(pretext, dcfg, cfg, backbone, out, options, device=device, quiet=quiet,
                     downstream=resolve_task(task, data))
    best, knn = s["best"], s.get("knn_accuracy")
    held_out = (f"pretext val accuracy {best['accuracy']['value']:.4f} (chance {s['chance']:.3f})"
                if "accuracy" in best and s.get("chance") else f"pretext val loss {best['loss']['value']:.4f}")
    knn = f"; k-NN accuracy pretrained {knn['pretrained']:.4f} vs random {knn['random']:.4f}" if knn else ""
    _echo(f"{out}: {held_out}{knn}; weights in {out / 'backbone.safetensors'}")


def _key_values(items: list[str]) -> dict[str, object]:
    """KEY=VALUE strings -> a dict; values are read as JSON where they parse (numbers, true/false)."""
    out: dict[str, object] = {}
    for key, sep, value in (item.partition("=") for item in items):
        if not sep or not key:
            raise UserError(f"--option '{key}{sep}{value}' is not KEY=VALUE; e.g. --option temperature=0.2")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command()
def study(
    data: Annotated[Optional[str], typer.Option(help=DATA_HELP + f" [default: {DataConfig.source}]")] = None,
    test_data: TestData = DataConfig.test_source,
    fractions: str = typer.Option("1.0,0.5,0.1", help="label fractions, comma-separated (e.g. add 0.05,0.01)"),
    preset: str = typer.Option("fast", help="; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items())),
    seeds: str = typer.Option("0", help="seeds, comma-separated: each is a whole replicate (its own pretraining, "
                                        "label subset and initialisation); 2 or more give 95% confidence intervals"),
    pretext: str = typer.Option(DEFAULT_PRETEXT, help="pretext tasks, comma-separated: " + ", ".join(PRETEXTS)),
    shared_pretraining: bool = typer.Option(False, help="pretrain once per task (first seed) for every seed: "
                                                        "cheaper, but intervals then leave out pretraining's variance"),
    backbone: Optional[str] = typer.Option(None, help="override the preset's backbone: " + BACKBONE_HELP),
    task: Task = "auto", layout: Layout = DataConfig.layout, ignore_index: IgnoreIndex = DataConfig.ignore_index,
    val_fraction: ValFraction = DataConfig.val_fraction,
    split_seed: SplitSeed = DataConfig.split_seed, image_size: ImageSize = DataConfig.image_size,
    device: Device = "auto", cache_dir: CacheDir = DataConfig.cache_dir, storage: Storage = DataConfig.storage,
    precision: str = typer.Option(TrainConfig.precision, help=PRECISION_HELP + "; decided once per study and "
                                  "kept on resume"),
    replicate_of: Optional[Path] = typer.Option(None, help="a finished study to run again into --out under other "
                                                "--seeds or --precision (taking its data, fractions, tasks, preset and "
                                                "backbone); the report says which of its verdicts held"),
    epochs: Optional[int] = typer.Option(None, help="fine-tuning epochs at 100% labels (smaller fractions follow "
                                                    "the preset's budget rule); overrides the preset"),
    pretrain_epochs: Optional[str] = typer.Option(None, help="pretraining epochs of every task, overriding the preset; "
                                                  "several (2,8,32) make pretraining length an axis: each length "
                                                  "its own pretraining and arm, and the report's gain-vs-length curve"),
    dry_run: bool = typer.Option(False, help="print the plan and its estimated time on this machine, then exit"),
    out: Path = typer.Option(Path("studies/study"), help="study folder (re-run the same command to resume)"),
    quiet: Quiet = False,
) -> None:
    """Pretrain; fine-tune every fraction and seed from scratch and pretrained; probe the frozen backbones
    (linear, k-NN); write the report. Resumable."""
    if backbone:
        check_backbone(backbone)
    if replicate_of is not None:  # the original's settings, its task included
        kw = replicate_settings(replicate_of, data, backbone)
    else:
        kw = dict(data=_config(DataConfig, locals(), source=data or DataConfig.source, test_source=test_data),
                  fractions=_numbers(fractions, "--fractions"), preset=preset, pretexts=_names(pretext),
                  backbone=backbone, shared_pretraining=shared_pretraining,
                  task=resolve_task(task, data or DataConfig.source))
    folder = run_study(out_dir=out, seeds=_numbers(seeds, "--seeds", int), device=device, quiet=quiet,
                       precision=precision, epochs=epochs, dry_run=dry_run, **kw,
                       pretrain_epochs=_numbers(pretrain_epochs, "--pretrain-epochs", int) if pretrain_epochs else None)
    if is_main() and not dry_run:  # one process writes the report
        from .report import write_report

        details = write_report(folder)
        typer.echo(f"answers: {details.with_name(ANSWERS_MD)}\ndetails: {details}")


@app.command()
def report(study_dir: Path = typer.Argument(..., help="a study folder, or a single run folder")) -> None:
    """(Re-)write a study's answers.md, report.md (and their .html), figures and summary.json; for a run, its
    curves.png."""
    from .report import write_report
    from .report.figures import run_figure

    if not (study_dir / "study.json").is_file() and (study_dir / "metrics.csv").is_file():
        typer.echo(f"curves: {run_figure(study_dir)}")
        return
    if not (study_dir / "study.json").is_file():
        raise UserError(f"{study_dir} is not a study folder (no study.json); run `pretextlab study --out {study_dir}`")
    details = write_report(study_dir)
    typer.echo(f"answers: {details.with_name(ANSWERS_MD)}\ndetails: {details}")


@app.command()
def export(
    study_dir: Path = typer.Argument(..., help="a study folder (the --out of `pretextlab study`)"),
    dest: Path = typer.Argument(..., help="where to copy its report and results, e.g. docs/my-study (new or empty)"),
    force: bool = typer.Option(False, help="export into a folder that is not empty, overwriting common files"),
) -> None:
    """Copy a study's report and results without weights, checkpoints or TensorBoard logs (small enough to
    commit). Given as --out (wherever it is copied to), `pretextlab study` resumes it, re-making the backbones."""
    files, size = export_study(study_dir, dest, force)
    _echo(f"exported {files} files ({size / 2**20:.1f} MiB) to {dest}")


@app.command()
def bench(
    data: Optional[str] = typer.Option(None, help="image folder to measure on (default: synthetic 32 px JPEGs)"),
    backbones: str = typer.Option("fast,resnet18", help="backbones, comma-separated; the first is the default"),
    batch_size: BatchSize = TrainConfig.batch_size, device: Device = "auto",
    quick: bool = typer.Option(False, help="a smoke run in under a minute (numbers are rough)"),
    peer: Optional[str] = typer.Option(None, help="lightly: race lightly's standard SimCLR pipeline on the same "
                                                  "backbone, batch, head, loss and optimizer (needs the peers "
                                                  "extra: lightly==1.6.0)"),
    peer_epochs: int = typer.Option(0, help="with --peer: also train both SimCLRs this many epochs on the first "
                                            "backbone and score both with the same k-NN probe"),
    time_to_accuracy: bool = typer.Option(False, help="instead: train the preset's 100%-label scratch run on --data "
                                                      "and print validation macro-F1 against training seconds"),
    preset: str = typer.Option("fast", help="with --time-to-accuracy: the recipe whose curve to measure"),
    seed: int = typer.Option(0, help="with --time-to-accuracy: the run's seed (initialisation and batch order)"),
    tta: str = typer.Option("none", help="with --time-to-accuracy: " + TTA_HELP + ", at every point of the curve"),
    before: Optional[Path] = typer.Option(None, help="with --time-to-accuracy: an earlier --out JSON; also print the "
                                                     "macro-F1 within its budget and the seconds to its macro-F1"),
    json_out: bool = typer.Option(False, "--json", help="last line of stdout: one JSON object"),
    out: Optional[Path] = typer.Option(None, help="also save the JSON here (with --time-to-accuracy, its curve "
                                                  "beside it as a PNG)"),
) -> None:
    """Measure peak matmul, model-only, pipeline and naive-tutorial throughput side by side in one run, for
    the downstream task and every pretext task; with --peer, against another library's SimCLR; with
    --time-to-accuracy, the recipe's validation macro-F1 against training seconds."""
    if not time_to_accuracy:
        from .bench import run_bench

        for b in _names(backbones):
            check_backbone(b)
        run_bench(quick=quick, data=data, backbones=_names(backbones), batch_size=batch_size, json_out=json_out,
                  out=out, device=device, peer=peer, peer_epochs=peer_epochs)
        return
    from .bench.accuracy import format_curve, plot_curve, time_to_accuracy

    if data is None:
        raise UserError("--time-to-accuracy trains on real labels: give --data (an image folder or a dataset name)")
    result = time_to_accuracy(data, preset, seed, device=device, before=before, tta=tta)
    _echo(format_curve(result))
    if out is not None:
        save_json(result, out)
        plot_curve(result, out.with_suffix(".png"), load_json(before) if before is not None else None)
        _echo(f"wrote {out} and {out.with_suffix('.png')}")
    if json_out:
        _echo(json.dumps(result))


def _echo(text: str) -> None:
    """Print a run's result once: under torchrun every rank holds the same one."""
    if is_main():
        typer.echo(text)


def main() -> None:
    rank = os.environ.get("RANK", "0")  # set by torchrun: only rank 0 logs progress
    logging.basicConfig(level=logging.INFO if rank == "0" else logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("PIL").setLevel(logging.WARNING)
    try:
        app()
    except UserError as e:
        print(f"pretextlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    except SystemExit as e:  # typer turns Ctrl-C into a silent exit 130
        if e.code == 130:
            print("pretextlab: interrupted; run the same command again to resume from the last finished epoch",
                  file=sys.stderr)
        raise


if __name__ == "__main__":
    main()

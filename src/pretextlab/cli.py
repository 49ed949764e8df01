"""The `pretextlab` command. Every mistake a user can fix ends as one line on stderr, exit code 2."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .data import check_fraction
from .errors import UserError
from .models import BACKBONES, check_backbone
from .sources import TORCHVISION_SOURCES

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Does self-supervised pretraining help my classifier, by how much, at which label budget?")


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"pretextlab {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="print the version and exit")) -> None:
    """Does self-supervised pretraining help my classifier, by how much, at which label budget?"""

STORAGE_HELP = ("auto | memory | stream: decoded images in memory, or in memory-mapped shards read per batch "
                "(auto streams above PRETEXTLAB_STREAM_GB, default a quarter of RAM)")
DATA_HELP = ("image folder (one sub-folder per class), a root with train/ and test/, a cifar-10-batches-py "
             f"folder, or {' | '.join(TORCHVISION_SOURCES)} (downloaded)")
BACKBONE_HELP = (" | ".join(BACKBONES) + " | timm:<name> | torchvision:<name> | path/to/file.py:<name> "
                 "(add @cifar to adapt a strided stem to 32 px images)")
USER_BACKBONE_HELP = "only for a model trained with your own file: name it again (path/to/file.py:<name>)"
PRESET_HELP = {  # what each preset runs, and about how long the default study takes on a 2-core CPU
    "fast": "the fast CNN, 2 pretext epochs, 4 fine-tuning epochs at 100% (about 50 min on 2 cores)",
    "homework": "MobileNetV3-Large, AdamW 1e-3, 15 epochs at a constant rate (hours on 2 cores; a GPU preset)",
    "plateau": "the fast CNN, AdamW 1e-3 at a constant rate, each run stopped when validation macro-F1 stops "
               "improving (8 evaluations), at most 20 epochs at 100%",
    "gpu": "ResNet-18 (CIFAR stem), 60 pretext and 30 fine-tuning epochs, batch 512 (for a GPU)",
    "smoke": "1 epoch of everything on tiny batches (seconds to minutes: checks a setup end to end)",
}
TTA_HELP = ("test-time augmentation: none | flip (the image and its mirror) | flip-translate (also shifted by a "
            "pixel both ways), logits averaged")
CACHE_HELP = "where decoded datasets are cached (default ~/.cache/pretextlab)"
PRECISION_HELP = "auto | fp32 | bf16 | fp16 (auto: bf16/fp16 on CUDA; bf16 on a CPU only where measured faster)"


def _numbers(text: str, name: str, kind: type = float) -> tuple:
    try:
        items = [t.strip() for t in text.split(",")]
        if "" in items:
            raise ValueError(text)
        return tuple(kind(t) for t in items)
    except ValueError:
        example = "integers, e.g. 0,1,2" if kind is int else "numbers, e.g. 1.0,0.5,0.1"
        raise UserError(f"{name} '{text}' is not a comma-separated list of {example}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


@app.command()
def train(
    data: str = typer.Option("cifar10", help=DATA_HELP),
    test_data: Optional[str] = typer.Option(None, help="a separate test set (same classes), scored at the end"),
    fraction: float = typer.Option(1.0, help="share of the training labels used, in (0, 1]; stratified, seeded"),
    backbone: str = typer.Option("fast", help=BACKBONE_HELP),
    epochs: int = typer.Option(15, help="training epochs (the maximum, with --schedule plateau)"),
    batch_size: int = typer.Option(256, help="images per optimizer step (all processes together)"),
    optimizer: str = typer.Option("sgd", help="sgd (Nesterov momentum) | adamw"),
    lr: float = typer.Option(0.2, help="peak learning rate"),
    momentum: float = typer.Option(0.9, help="SGD momentum (Nesterov)"),
    betas: str = typer.Option("0.9,0.999", help="AdamW betas"),
    weight_decay: float = typer.Option(5e-4, help="L2 weight decay"),
    schedule: str = typer.Option("onecycle", help="onecycle (linear warm-up, linear decay) | cosine | constant | "
                                                  "plateau (constant until validation macro-F1 stops improving)"),
    patience: int = typer.Option(0, help="plateau: stop after this many evaluations without improvement"),
    evals: int = typer.Option(0, help="validation evaluations over the run, evenly spaced in steps (0: per epoch)"),
    warmup: float = typer.Option(0.2, help="share of the steps spent warming up"),
    label_smoothing: float = typer.Option(0.1, help="label smoothing of the cross-entropy"),
    tta: str = typer.Option("none", help=TTA_HELP + ", at every evaluation (each costs a forward pass per view)"),
    ema: float = typer.Option(0.0, help="evaluate and keep a moving average of the weights with this decay per "
                                        "step, e.g. 0.99 (0: the last step's weights)"),
    backbone_lr_scale: float = typer.Option(1.0, help="backbone learning rate relative to the head's"),
    freeze_backbone: bool = typer.Option(False, help="train the head only (linear probe)"),
    init: Optional[str] = typer.Option(None, help="start from these weights (checkpoint.pt or .safetensors)"),
    transfer_stages: int = typer.Option(0, help="with --init: take only the backbone's first N stages (0: all)"),
    seed: int = typer.Option(0, help="initialisation, batch order and label subset"),
    split_seed: int = typer.Option(0, help="validation split (keep it fixed to compare runs)"),
    val_fraction: float = typer.Option(0.1, help="share of the training images held out for validation"),
    image_size: Optional[int] = typer.Option(None, help="resize images to this square size (default: from the data)"),
    pad: int = typer.Option(-1, help="random-crop translation in px (-1: image size / 8)"),
    flip: bool = typer.Option(True, help="random horizontal flips"),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP),
    storage: str = typer.Option("auto", help=STORAGE_HELP),
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/train-<backbone>-f<fraction>-s<seed>)"),
    quiet: bool = typer.Option(False, help="log lines instead of a progress bar"),
) -> None:
    """Supervised training on a label fraction, from scratch or from --init weights; resumes if interrupted."""
    from .data import DataConfig
    from .finetune import finetune
    from .train import TrainConfig

    b = _numbers(betas, "--betas")
    if len(b) != 2:
        raise UserError(f"--betas '{betas}' needs two numbers, e.g. 0.9,0.999")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum, betas=b,
                      weight_decay=weight_decay, schedule=schedule, warmup=warmup, label_smoothing=label_smoothing,
                      backbone_lr_scale=backbone_lr_scale, freeze_backbone=freeze_backbone,
                      transfer_stages=transfer_stages, seed=seed, precision=precision, evals=evals,
                      patience=patience, tta=tta, ema=ema)
    dcfg = DataConfig(source=data, fraction=fraction, val_fraction=val_fraction, split_seed=split_seed,
                      image_size=image_size, cache_dir=cache_dir, pad=pad, flip=flip, storage=storage,
                      test_source=test_data)
    check_fraction(fraction)
    check_backbone(backbone)
    out = out or Path("runs") / f"train-{backbone}-f{fraction:g}-s{seed}"
    s = finetune(dcfg, cfg, backbone, out, init=init, device=device, quiet=quiet)
    b = s["best"]
    _echo(f"{out}: best val macro-F1 {b['f1_macro']['value']:.4f} (epoch {b['f1_macro']['epoch']}), "
               f"accuracy {b['accuracy']['value']:.4f}; {s['n_train']} labelled images, "
               f"{s['wall_time_s']:.0f} s" + (f"; test macro-F1 {s['test']['f1_macro']:.4f}" if "test" in s else ""))


@app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., help="a run's checkpoint.pt"),
    data: Optional[str] = typer.Option(None, help="data source (default: the one it was trained on)"),
    split: str = typer.Option("val", help="val (the run's held-out split) | test"),
    cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP),
    backbone: Optional[str] = typer.Option(None, help=USER_BACKBONE_HELP),
    tta: str = typer.Option("none", help=TTA_HELP),
    recalibrate_bn: int = typer.Option(0, help="first re-estimate BatchNorm statistics on this many training-pool "
                                               "images (0: as trained); tells stale running averages from a "
                                               "network that did not learn"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
) -> None:
    """Macro-F1, precision, recall, accuracy and loss of a trained classifier on a split."""
    from .finetune import evaluate_checkpoint

    m = evaluate_checkpoint(str(checkpoint), data, split, cache_dir, backbone, tta, recalibrate_bn)
    if json_out:
        typer.echo(json.dumps(m))
    else:
        typer.echo(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()))


@app.command()
def predict(
    images: list[str] = typer.Argument(..., help="image files"),
    checkpoint: Path = typer.Option(..., help="a run's checkpoint.pt"),
    backbone: Optional[str] = typer.Option(None, help=USER_BACKBONE_HELP),
) -> None:
    """Class and confidence for each image."""
    from .finetune import predict_files

    for f, out in predict_files(str(checkpoint), images, backbone):  # classification: class and confidence
        typer.echo("\t".join([f, *(f"{v:.3f}" if isinstance(v, float) else str(v) for v in out.values())]))


@app.command()
def pretrain(
    data: str = typer.Option("cifar10", help=DATA_HELP),
    pretext: str = typer.Option("context", help="pretext task: context | rotation | reconstruction | simclr"),
    backbone: str = typer.Option("fast", help=BACKBONE_HELP),
    epochs: int = typer.Option(8, help="pretraining epochs over the training pool"),
    batch_size: int = typer.Option(256, help="images per optimizer step (all processes together)"),
    lr: float = typer.Option(0.1, help="peak learning rate (SGD, one-cycle schedule)"),
    weight_decay: float = typer.Option(5e-4, help="L2 weight decay"),
    scale: float = typer.Option(0.0, help="context: image upscaling before cutting the 3x3 grid (0: to 64 px)"),
    patch: int = typer.Option(0, help="context: patch side, upscaled px (0: 14/64 of the canvas)"),
    gap: int = typer.Option(-1, help="context: gap between grid cells, upscaled px (-1: half a patch)"),
    jitter: int = typer.Option(-1, help="context: max random shift of each patch, px (-1: canvas/32)"),
    colour: str = typer.Option("project", help="context: project | drop | none (against chromatic aberration)"),
    downsample: float = typer.Option(0.5, help="context: share of patches randomly down-and-up sampled"),
    patch_norm: bool = typer.Option(True, help="context: subtract each patch's mean"),
    option: list[str] = typer.Option([], help="any option of the pretext task as KEY=VALUE (repeatable), e.g. "
                                              "temperature=0.2 for simclr, all_rotations=false for rotation"),
    seed: int = typer.Option(0, help="initial weights, batch order and augmentation"),
    split_seed: int = typer.Option(0, help="seed of the validation split (keep it to compare runs)"),
    val_fraction: float = typer.Option(0.1, help="share of the training images held out for validation"),
    image_size: Optional[int] = typer.Option(None, help="resize images to this square size (default: from the data)"),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
    device: str = typer.Option("auto", help="auto | cpu | cuda (auto: CUDA when visible)"),
    cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP),
    storage: str = typer.Option("auto", help=STORAGE_HELP),
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/pretrain-<pretext>-<backbone>)"),
    quiet: bool = typer.Option(False, help="log lines instead of a progress bar"),
) -> None:
    """Pretrain a backbone without labels; writes backbone.safetensors for `train --init`."""
    from .data import DataConfig
    from .pretext import pretrain as run_pretrain
    from .train import TrainConfig

    check_backbone(backbone)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                      label_smoothing=0.0, precision=precision)
    dcfg = DataConfig(source=data, val_fraction=val_fraction, split_seed=split_seed, image_size=image_size,
                      cache_dir=cache_dir, storage=storage)
    options = {"scale": scale, "patch": patch, "gap": gap, "jitter": jitter, "colour": colour,
               "downsample": downsample, "patch_norm": patch_norm} if pretext == "context" else {}
    options.update(_key_values(option))
    out = out or Path("runs") / f"pretrain-{pretext}-{backbone}"
    s = run_pretrain(pretext, dcfg, cfg, backbone, out, options, device=device, quiet=quiet)
    best = s["best"]
    held_out = (f"pretext val accuracy {best['accuracy']['value']:.4f} (chance {s['chance']:.3f})"
                if "accuracy" in best and s.get("chance") else f"pretext val loss {best['loss']['value']:.4f}")
    _echo(f"{out}: {held_out}; k-NN accuracy pretrained {s['knn_accuracy']['pretrained']:.4f} vs random "
               f"{s['knn_accuracy']['random']:.4f}; weights in {out / 'backbone.safetensors'}")


def _key_values(items: list[str]) -> dict[str, object]:
    """KEY=VALUE strings -> a dict; values are read as JSON where they parse (numbers, true/false)."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--option '{item}' is not KEY=VALUE; e.g. --option temperature=0.2")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command()
def study(
    data: Optional[str] = typer.Option(None, help=DATA_HELP + " [default: cifar10]"),
    test_data: Optional[str] = typer.Option(None, help="a separate test set (same classes): every run and probe is "
                                                       "scored on it at the end; nothing is chosen on it"),
    fractions: str = typer.Option("1.0,0.5,0.1", help="label fractions, comma-separated (e.g. add 0.05,0.01)"),
    preset: str = typer.Option("fast", help="; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items())),
    seeds: str = typer.Option("0", help="seeds, comma-separated: each is a whole replicate (its own pretraining, "
                                        "label subset and initialisation); 2 or more give 95% confidence intervals"),
    pretext: str = typer.Option("context", help="pretext tasks, comma-separated: context, rotation, reconstruction, "
                                                "simclr"),
    shared_pretraining: bool = typer.Option(False, help="pretrain once per task (first seed) for every seed: "
                                                        "cheaper, but intervals then leave out pretraining's variance"),
    backbone: Optional[str] = typer.Option(None, help="override the preset's backbone: " + BACKBONE_HELP),
    val_fraction: float = typer.Option(0.1, help="share of the training images held out for validation"),
    split_seed: int = typer.Option(0, help="seed of the validation split (keep it to compare studies)"),
    image_size: Optional[int] = typer.Option(None, help="resize images to this square size (default: from the data)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda (auto: CUDA when visible)"),
    precision: str = typer.Option("auto", help=PRECISION_HELP + "; decided once per study and kept on resume"),
    cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP),
    storage: str = typer.Option("auto", help=STORAGE_HELP),
    replicate_of: Optional[Path] = typer.Option(None, help="a finished study to run again into --out under other "
                                                           "--seeds or --precision (its data, fractions, tasks, preset "
                                                           "and backbone are taken from it); the report says which of "
                                                           "its verdicts held"),
    epochs: Optional[int] = typer.Option(None, help="fine-tuning epochs at 100% labels (smaller fractions follow "
                                                    "the preset's budget rule); overrides the preset"),
    pretrain_epochs: Optional[int] = typer.Option(None, help="pretraining epochs of every task; overrides the preset"),
    dry_run: bool = typer.Option(False, help="print the plan and its estimated time on this machine, then exit"),
    out: Path = typer.Option(Path("studies/study"), help="study folder (re-run the same command to resume)"),
    quiet: bool = typer.Option(False, help="log lines instead of progress bars"),
) -> None:
    """Pretrain; fine-tune every fraction and seed from scratch and pretrained; probe the frozen backbones
    (linear, k-NN); write the report. Resumable."""
    from .data import DataConfig
    from .dist import is_main
    from .report import write_report
    from .study import replicate_settings, run_study

    if backbone:
        check_backbone(backbone)
    if replicate_of is not None:
        kw = replicate_settings(replicate_of, data, backbone)
        folder = run_study(out_dir=out, seeds=_numbers(seeds, "--seeds", int), device=device, quiet=quiet,
                           precision=precision, epochs=epochs, pretrain_epochs=pretrain_epochs, dry_run=dry_run, **kw)
    else:
        dcfg = DataConfig(source=data or "cifar10", val_fraction=val_fraction, split_seed=split_seed,
                          image_size=image_size, cache_dir=cache_dir, storage=storage, test_source=test_data)
        folder = run_study(dcfg, out, _numbers(fractions, "--fractions"), preset, _numbers(seeds, "--seeds", int),
                           _names(pretext), backbone, device, quiet, precision, shared_pretraining, epochs=epochs,
                           pretrain_epochs=pretrain_epochs, dry_run=dry_run)
    if is_main() and not dry_run:  # one process writes the report
        typer.echo(f"report: {write_report(folder)}")


@app.command()
def report(study_dir: Path = typer.Argument(..., help="a study folder, or a single run folder")) -> None:
    """(Re-)write a study's report.md, report.html, figures and summary.json; for a run, its curves.png."""
    from .report import write_report
    from .report.figures import run_figure

    if not (study_dir / "study.json").is_file() and (study_dir / "metrics.csv").is_file():
        typer.echo(f"curves: {run_figure(study_dir)}")
        return
    if not (study_dir / "study.json").is_file():
        raise UserError(f"{study_dir} is not a study folder (no study.json); run `pretextlab study --out {study_dir}`")
    typer.echo(f"report: {write_report(study_dir)}")


@app.command()
def export(
    study_dir: Path = typer.Argument(..., help="a study folder (the --out of `pretextlab study`)"),
    dest: Path = typer.Argument(..., help="where to copy its report and results, e.g. docs/my-study (new or empty)"),
    force: bool = typer.Option(False, help="export into a folder that is not empty, overwriting common files"),
) -> None:
    """Copy a study's report and results without weights, checkpoints or TensorBoard logs (small enough to
    commit). Given as --out (wherever it is copied to), `pretextlab study` resumes it, re-making the backbones."""
    from .study import export_study

    files, size = export_study(study_dir, dest, force)
    _echo(f"exported {files} files ({size / 2**20:.1f} MiB) to {dest}")


@app.command()
def bench(
    data: Optional[str] = typer.Option(None, help="image folder to measure on (default: synthetic 32 px JPEGs)"),
    backbones: str = typer.Option("fast,resnet18", help="backbones, comma-separated; the first is the default"),
    batch_size: int = typer.Option(256, help="images per optimizer step (all processes together)"),
    quick: bool = typer.Option(False, help="a smoke run in under a minute (numbers are rough)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda: where models and data live (auto: CUDA when visible)"),
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
    classification and every pretext task; with --peer, against another library's SimCLR; with
    --time-to-accuracy, the recipe's validation macro-F1 against training seconds."""
    if time_to_accuracy:
        _time_to_accuracy(data, preset, seed, tta, device, before, json_out, out)
        return
    from .bench import run_bench

    names = tuple(b.strip() for b in backbones.split(",") if b.strip())
    for b in names:
        check_backbone(b)
    run_bench(quick=quick, data=data, backbones=names, batch_size=batch_size, json_out=json_out, out=out,
              device=device, peer=peer, peer_epochs=peer_epochs)


def _time_to_accuracy(data: Optional[str], preset: str, seed: int, tta: str, device: str, before: Optional[Path],
                      json_out: bool, out: Optional[Path]) -> None:
    from .bench.accuracy import format_curve, plot_curve, time_to_accuracy
    from .io import load_json, save_json

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
    from .dist import is_main

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

"""Fabricated tiny studies, as the study command leaves them, for the report's tests.

A module and not tests/report/conftest.py: a second conftest module would shadow tests/conftest.py, which
other test modules import by name (`from conftest import ...`).
"""

from __future__ import annotations

import csv
import json
import shutil
from functools import lru_cache
from pathlib import Path

import torch

from pretextlab import schema
from pretextlab.models import Classifier, make_backbone
from pretextlab.report.files import as_record
from pretextlab.report.records import RunConfig, RunSummary
from pretextlab.report.results import Run
from pretextlab.runs import summarize

CLASSES = ["cat", "dog", "ship"]
# Validation macro-F1 per epoch of each fabricated run: (fraction, arm, seed) -> curve.
CURVES = {
    (1.0, "scratch", 0): [0.3012, 0.4123, 0.4701, 0.4912],
    (1.0, "context", 0): [0.4521, 0.5534, 0.5873, 0.5861],
    (0.1, "scratch", 0): [0.2034, 0.2611, 0.3017, 0.3102],
    (0.1, "context", 0): [0.3345, 0.4158, 0.4406, 0.4437],
}
# The figures the report of the CURVES study shows.
FIGURES = ["f1_vs_fraction.png", "loss.png", "val_metrics.png", "examples_f1.png", "examples_f0.1.png",
           "confusion_f0.1.png", "pretext_context.png", "pretext_samples_context.png", "filters_context.png",
           "feature_maps_context.png"]


def _write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _meta(kind: str) -> dict:
    return {"kind": kind, "backbone": "fast", "channels": 3, "image_size": 16, "classes": CLASSES,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@lru_cache(maxsize=1)
def classifier_state() -> dict:
    """The weights of every fabricated checkpoint (a fresh fast classifier, seed 0), made once."""
    torch.manual_seed(0)
    return Classifier(make_backbone("fast", 3), len(CLASSES)).state_dict()


def held_out_metrics(v: float) -> dict:
    """The "test" entry of a run's summary.json (the final model on the test split): macro-F1 v."""
    return {"accuracy": v + 0.02, "f1_macro": v, "precision_macro": v + 0.01, "recall_macro": v - 0.01, "loss": 1.1,
            "n": 60}


STEPS_PER_EPOCH = 10  # of every fabricated fine-tuning run (config.json resolved.steps_per_epoch)
BATCH = 32


def run_files(fraction: float, arm: str, seed: int, f1: list[float], test: float | None = None,
              precision: str = "fp32", *, epochs: int | None = None, steps: list[int] | None = None,
              schedule: str = "onecycle", patience: int | None = None, train_loss: list[float] | None = None,
              val_loss: list[float] | None = None, old_format: bool = False) -> tuple[list[dict], dict, dict]:
    """A finished fine-tuning run's metrics.csv rows, summary.json and config.json, as
    finetune.finetune writes them.

    f1: validation macro-F1 per evaluation; test: the final model's test macro-F1 (a study with a test split).
    The budget is `epochs` (default: one per evaluation) x STEPS_PER_EPOCH optimizer steps; evaluations are
    evenly spaced over it unless `steps` says where (a plateau-schedule run that stopped early ends before its
    budget). train_loss and val_loss default to falling lines. old_format: as runs wrote before the step
    column (one evaluation per epoch, no steps.csv, no run length in summary.json)."""
    epochs = epochs or len(f1)
    budget = epochs * STEPS_PER_EPOCH
    if old_format:
        steps = [STEPS_PER_EPOCH * (i + 1) for i in range(len(f1))]
    steps = steps or [round(budget * (i + 1) / len(f1)) for i in range(len(f1))]
    head_start = 0.3 if arm != "scratch" else 0.0  # pretrained: lower training loss
    rows = []
    for i, (step, v) in enumerate(zip(steps, f1)):
        e = step / STEPS_PER_EPOCH
        row = {"epoch": e if e.is_integer() else round(e, 4), "step": step, "images_seen": step * BATCH,
               "train_loss": train_loss[i] if train_loss else 2.0 - head_start - 0.3 * e, "train_accuracy": v + 0.05,
               "val_f1_macro": v, "val_precision_macro": v + 0.011, "val_recall_macro": v - 0.012,
               "val_accuracy": v + 0.013, "val_loss": val_loss[i] if val_loss else 1.6 - v, "lr": 0.1,
               "images_per_s": 900.0 + 10 * e, "epoch_time_s": 2.0, "wall_time_s": 2.0 * e}
        if old_format:
            row = {k: (int(x) if k == "epoch" else x) for k, x in row.items() if k not in ("step", "images_seen")}
        rows.append(row)
    name = f"f{fraction:g}-{arm}-s{seed}"
    labels = [i % 3 for i in range(8)]
    summary = {**summarize(rows), "run": name, "backbone": "fast", "init": None, "fraction": fraction,
               "seed": seed, "n_train": int(300 * fraction), "n_val": 30, "classes": CLASSES,
               "final": {"f1_macro": f1[-1], "precision_macro": f1[-1], "recall_macro": f1[-1],
                         "accuracy": f1[-1], "loss": 1.0, "n": 30},
               "confusion_val": ([[8, 1, 1], [2, 7, 1], [0, 3, 7]] if arm == "scratch"
                                 else [[9, 1, 0], [1, 9, 0], [0, 1, 9]]),
               "examples": [{"val_index": 4 * i, "label": y, "pred": y if i % 3 else (y + 1) % 3,
                             "confidence": 0.5 + 0.05 * i} for i, y in enumerate(labels)],
               "wall_time_s": rows[-1]["wall_time_s"]}
    if not old_format:
        summary |= {"steps": steps[-1], "planned_steps": budget, "stopped_early": steps[-1] < budget,
                    "schedule": schedule, **({"patience": patience} if schedule == "plateau" else {})}
    if test is not None:
        summary["test"] = held_out_metrics(test)
    train = {"epochs": epochs, "schedule": schedule, **({"patience": patience} if patience else {})}
    config = {"kind": "finetune", "backbone": "fast", "train": train,
              "resolved": {"precision": precision, "steps_per_epoch": STEPS_PER_EPOCH}}
    return rows, summary, config


def memory_run(fraction: float, arm: str, seed: int, f1: list[float], **spec) -> Run:
    """The Run that load_study would read from run_files' folder, without writing one."""
    rows, summary, config = run_files(fraction, arm, seed, f1, **spec)
    rows = [{k: float(v) for k, v in r.items()} for r in rows]  # metrics.csv reads back as floats
    path = Path(summary["run"])
    return Run(summary["run"], path, fraction, arm, seed, rows,
               RunSummary.parse(as_record(path / "summary.json", schema.FINETUNE, summary)), RunConfig.parse(config))


def write_finetune_run(study: Path, fraction: float, arm: str, seed: int, f1: list[float], state: dict,
                       test: float | None = None, precision: str = "fp32", **spec) -> dict:
    """A finished fine-tuning run folder (run_files' files, steps.csv unless old_format, examples and a
    checkpoint); returns its summary."""
    rows, summary, config = run_files(fraction, arm, seed, f1, test, precision, **spec)
    d = study / summary["run"]
    _write_csv(rows, d / "metrics.csv")
    if not spec.get("old_format"):
        last = int(rows[-1]["step"])
        _write_csv([{"step": s, "train_loss": next(r["train_loss"] for r in rows if r["step"] >= s)}
                    for s in range(10, last + 1, 10)] or [{"step": last, "train_loss": rows[-1]["train_loss"]}],
                   d / "steps.csv")
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "config.json").write_text(json.dumps(config))
    (d / "indices.json").write_text(json.dumps({"train": [], "val": []}))
    g = torch.Generator().manual_seed(7)
    torch.save(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=g), d / "examples.pt")
    torch.save({"model": state, "meta": _meta("classifier")}, d / "checkpoint.pt")
    return summary


def write_pretext_run(study: Path, state: dict, folder: str = "pretrain-context", extra: dict | None = None) -> None:
    """A finished pretraining folder; extra: more summary.json keys (backbone_sha256, ...)."""
    d = study / folder
    rows = [{"epoch": e, "train_loss": 2.0 - 0.2 * e, "train_accuracy": 0.15 + 0.1 * e, "val_loss": 2.05 - 0.2 * e,
             "val_accuracy": 0.14 + 0.1 * e, "val_knn_accuracy": 0.3 + 0.05 * e, "lr": 0.1, "images_per_s": 1500.0,
             "epoch_time_s": 3.0, "wall_time_s": 3.0 * e} for e in range(1, 5)]
    _write_csv(rows, d / "metrics.csv")
    (d / "summary.json").write_text(json.dumps({"pretext": "context", "chance": 0.125, **summarize(rows),
                                                "wall_time_s": 12.0, **(extra or {})}))
    (d / "config.json").write_text(json.dumps({"kind": "pretext", "resolved": {"precision": "fp32"}}))
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.")}
    torch.save({"model": {**backbone, "pair_head.weight": torch.zeros(8, 384)}, "meta": _meta("pretext")},
               d / "checkpoint.pt")
    g = torch.Generator().manual_seed(3)
    torch.save({"first": torch.randint(0, 256, (6, 3, 6, 6), dtype=torch.uint8, generator=g),
                "second": torch.randint(0, 256, (6, 3, 6, 6), dtype=torch.uint8, generator=g),
                "true": torch.tensor([0, 1, 2, 3, 4, 5]), "pred": torch.tensor([0, 1, 5, 3, 7, 5]),
                "positions": ["top-left", "top", "top-right", "left", "right", "bottom-left", "bottom",
                              "bottom-right"]}, d / "samples.pt")


def make_study(root: Path, curves: dict = CURVES, seeds: list[int] = [0], pretraining: str | None = None,
               test: dict | None = None, extra: dict | None = None) -> Path:
    """A finished study folder at root: every run of `curves`, the context pretext run(s), study.json.

    curves: (fraction, arm, seed) -> validation macro-F1 per evaluation, or a dict with that list as "f1" and
    write_finetune_run's keyword arguments (epochs, steps, schedule, patience, train_loss, val_loss, old_format).

    pretraining "per-seed": one pretrain-context-s<seed> per seed (stage times 14.5 s, 15.5 s, ...; backbone
    SHA-256 "sha<seed>"), else one pretrain-context shared by every seed (None: a study.json from before the
    key). test: {(fraction, arm, seed): test macro-F1} of a study with a test split. extra: more study.json keys.
    """
    state = classifier_state()
    root.mkdir(parents=True, exist_ok=True)
    fractions = sorted({f for f, _, _ in curves}, reverse=True)
    machine = {"python": "3.11.7", "torch": torch.__version__, "cpu": "test CPU", "cores": 2, "threads": 1,
               "cuda": None}
    folders = [f"pretrain-context-s{s}" for s in seeds] if pretraining == "per-seed" else ["pretrain-context"]
    stage_times = {**{name: 14.5 + i for i, name in enumerate(folders)},
                   **{f"f{f:g}-{a}-s{s}": 9.0 for f, a, s in curves}}
    (root / "study.json").write_text(json.dumps({
        "data": {"source": "synthetic", "val_fraction": 0.1, "split_seed": 0}, "fractions": fractions,
        "seeds": seeds, "pretexts": ["context"], "preset": "fast", "backbone": "fast", "train": {"epochs": 4,
        "label_smoothing": 0.1}, "pretrain": {"epochs": 4}, "budget_rule": "text", "machine": machine,
        "dataset": {"name": "synthetic", "classes": CLASSES, "n_pool": 300, "n_val": 30, "image_size": 16,
                    "channels": 3, **({"n_test": 60} if test else {})},
        "stage_times_s": stage_times, **({"pretraining": pretraining} if pretraining else {}), **(extra or {})}))
    for (f, arm, seed), curve in curves.items():
        spec = dict(curve) if isinstance(curve, dict) else {"f1": curve}
        write_finetune_run(root, f, arm, seed, spec.pop("f1"), state, (test or {}).get((f, arm, seed)), **spec)
    for i, name in enumerate(folders):
        write_pretext_run(root, state, name, {"backbone_sha256": f"sha{seeds[i]}"} if len(folders) > 1 else None)
    return root


def make_replicate(root: Path, original: Path, curves: dict, seeds: list[int]) -> Path:
    """A replicate of `original` (a study whose report has been written) as `study --replicate-of` leaves
    it: its own runs under other seeds, study.json "replicate_of", and original-summary.json."""
    make_study(root, curves, seeds, extra={"replicate_of": {"study": str(original.resolve()), "seeds": [0, 1, 2],
                                                            "precision": None, "pretraining": "shared"}})
    shutil.copyfile(original / "summary.json", root / "original-summary.json")
    return root


def write_probes(root: Path, folder: str, f1: dict[tuple[float, int], float], test: float | None = None) -> None:
    """A probes.json as study.run_probes leaves it; k-NN gets the linear numbers minus 0.05. test: with a
    test split, every entry's "test" scores are its validation ones plus `test`."""
    def scores(v: float) -> dict:
        return {"linear": {"f1_macro": v, "accuracy": v + 0.01}, "knn": {"f1_macro": v - 0.05, "accuracy": v - 0.04}}

    results = {f"f{f:g}-s{s}": {"fraction": f, "seed": s, "n_train": int(300 * f), **scores(v),
                                **({"test": scores(v + test)} if test is not None else {}), "time_s": 0.1}
               for (f, s), v in f1.items()}
    (root / folder).mkdir(exist_ok=True)
    (root / folder / "probes.json").write_text(json.dumps({"settings": {}, "results": results}))

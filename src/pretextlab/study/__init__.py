"""The one-command experiment: pretrain per pretext task and seed, then evaluate every backbone at
every label fraction and seed with three protocols: full fine-tuning (from scratch and from each
pretrained backbone, same recipe, budget, split and label subset), a linear probe and k-NN on the
frozen backbone (pretrained, and randomly initialised as the baseline).

Every seed is a whole replicate: its own pretraining, label subset and initialisation (or, with
shared pretraining, one pretraining per task with the first seed for all). A study is a folder of
runs. A run is done when its summary.json exists; probe results accumulate entry by entry in a
probes.json per backbone folder. Re-running the same command skips what is finished, resumes an
interrupted run from its last epoch, and re-renders the report.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import dist, hw, plan
from .backbones import is_user_file
from .data import (
    DataConfig,
    check_fraction,
    check_out_outside_data,
    check_same_data,
    label_fraction,
    make_splits,
    open_data,
)
from .errors import UserError
from .finetune import train_classifier
from .io import load_json, save_bytes, save_json, sha256_file
from .layout import (
    BACKBONE,
    EXAMPLES,
    ORIGINAL_SUMMARY,
    PROBES,
    RANDOM_INIT_DIR,
    REPORT_SUMMARY,
    SAMPLES,
    STUDY,
    SUMMARY,
    TENSORBOARD,
    pretrain_dir,
    pretrain_task,
    probe_key,
    run_name,
)
from .models import load_backbone_weights, make_backbone, random_backbone, read_weights
from .presets import PRESETS, Preset, with_overrides
from .probe import evaluate_frozen, features, frozen_features, probe_settings
from .runs import hold_precision, json_roundtrip, settings_diff, writer_lock
from .sources import Dataset
from .train import check_precision, check_seed, eval_steps, steps_per_epoch

log = logging.getLogger(__name__)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def run_probes(net: nn.Module, origin: dict[str, str], folder: Path, keys: list[tuple[float, int]],
               data: DataConfig, ds: Dataset, device: torch.device, precision: str = "fp32") -> dict[str, Any]:
    """Linear probe and k-NN of one frozen backbone at each (fraction, seed) missing from folder/probes.json.

    The labelled subset of (fraction, seed) is the one fine-tuning trains on (same split, same
    label_fraction draw). Features are extracted once for the whole pool and the validation split
    and reused for every entry; each finished entry is saved at once (atomically), so an
    interrupted stage resumes at the first missing entry and a finished one costs nothing. Features are
    extracted under the study's precision, recorded; a folder's probes keep the precision they began
    with (probes from before it was recorded were fp32), so one folder never mixes two.
    """
    if not dist.is_main():  # probes are cheap and single-process: rank 0 computes and writes them
        dist.barrier()
        return {}
    path = folder / PROBES
    store = load_json(path) if path.exists() else None
    if store is not None:  # the folder keeps the precision it began with (fp32 before it was recorded)
        precision = store["settings"].setdefault("features_precision", "fp32")
    settings = json_roundtrip({**origin, "data": {**dataclasses.asdict(data), "fraction": None},
                               **probe_settings(), "features_precision": precision})
    if store is None:
        store = {"settings": settings, "results": {}}
    diff = settings_diff(store["settings"], settings, folder)
    if diff:
        raise UserError(f"{path} holds probes with other settings ({', '.join(diff)}); use another --out or "
                        "delete that file")
    todo = [(f, s) for f, s in keys if probe_key(f, s) not in store["results"]]
    if not todo:
        dist.barrier()
        return store
    splits = make_splits(ds, 1.0, 0, data.val_fraction, data.split_seed).to(device)  # pool in split order
    pool_y = splits.y_train  # fraction 1.0: the labelled set is the whole pool, in pool order
    pool_f, val_f = frozen_features(net.to(device), splits.x_pool, splits.x_val, splits.mean, splits.std, precision)
    test = None  # the test split, when the source has one, scored by the same fitted probes
    if splits.test is not None:
        test = (features(net, splits.test.images, splits.mean, splits.std, precision=precision),
                splits.test.labels.to(device))
    for f, seed in todo:
        t0 = time.perf_counter()
        idx = label_fraction(pool_y.cpu(), f, seed, ds.classes).to(device)
        result = evaluate_frozen(pool_f[idx], pool_y[idx], val_f, splits.y_val, len(ds.classes), test)
        store["results"][probe_key(f, seed)] = {"fraction": f, "seed": seed, "n_train": len(idx), **result,
                                                "time_s": time.perf_counter() - t0}
        save_json(store, path)
    dist.barrier()
    return store


def pretrained_backbone(name: str, channels: int, weights: Path) -> nn.Module:
    net = make_backbone(name, channels)
    load_backbone_weights(net, read_weights(weights), str(weights))
    return net


def run_study(
    data: DataConfig,
    out_dir: Path,
    fractions: tuple[float, ...] = (1.0, 0.5, 0.1),
    preset: str = "fast",
    seeds: tuple[int, ...] = (0,),
    pretexts: tuple[str, ...] = ("context",),
    backbone: str | None = None,
    device: str = "auto",
    quiet: bool = False,
    precision: str = "auto",
    shared_pretraining: bool = False,
    replicate_of: Path | None = None,
    epochs: int | None = None,
    pretrain_epochs: int | None = None,
    dry_run: bool = False,
) -> Path:
    """Run (or resume) the whole study in out_dir; returns out_dir. The report is written apart
    (`report.write_report`): it reads only what the study wrote, so it never depends on this module.

    Each seed is a whole replicate of the pipeline: its own pretraining (weights, order, augmentation),
    label subset and initialisation, so that intervals over seeds include the pretraining's variance.
    shared_pretraining pretrains once per task, with the first seed, for every seed: cheaper, but its
    intervals then cover label subsets and initialisations only (the report says so in its headline).
    replicate_of: the finished study this one repeats (see replicate_settings); its summary.json is kept
    beside this one's, so the report can say which of its verdicts held. epochs and pretrain_epochs
    override the preset's training length. dry_run prints the plan and its estimated time, and writes
    nothing.
    """
    from .pretext import TASKS

    if preset not in PRESETS:
        raise UserError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    for f in fractions:
        check_fraction(f, "--fractions")
    for p in pretexts:
        if p not in TASKS:
            raise UserError(f"unknown pretext task '{p}'; choose one of: {', '.join(TASKS)}")
    for what, values in (("fraction", fractions), ("seed", seeds), ("pretext task", pretexts)):
        if not values:
            raise UserError(f"no {what} given; pass at least one, e.g. --fractions 1.0,0.1 --seeds 0 --pretext context")
        if len(set(values)) < len(values):
            raise UserError(f"a {what} is listed twice in {', '.join(map(str, values))}; list each once")
    for seed in seeds:
        check_seed(seed, "--seeds")
    check_precision(precision)
    p = with_overrides(PRESETS[preset], epochs, pretrain_epochs)
    backbone = backbone or p.backbone
    out_dir = Path(out_dir)
    check_out_outside_data(data, out_dir)
    dev, ds = open_data(data, device, None)  # under torchrun: join the job before anything is written
    for f in fractions:  # fail now, not an hour in, if a fraction leaves a class empty
        make_splits(ds, f, seeds[0], data.val_fraction, data.split_seed)
    if dry_run:
        state = load_json(out_dir / STUDY) if (out_dir / STUDY).exists() else {}
        chosen = _study_precision(precision, state.get("precision"), dev, out_dir)
        _announce(_stages(p, data, ds, dev, out_dir, backbone, fractions, seeds, pretexts, shared_pretraining,
                          chosen, device, quiet, state.get("stage_times_s", {})), backbone, ds, dev, chosen, out_dir)
        return out_dir

    with writer_lock(out_dir):  # one process writes a study; validated before anything is written
        study_file = out_dir / STUDY
        state = load_json(study_file) if study_file.exists() else {}
        times: dict[str, float] = state.get("stage_times_s", {})
        study = {
            "data": dataclasses.asdict(data), "fractions": list(fractions), "seeds": list(seeds),
            "pretexts": list(pretexts), "preset": preset, "backbone": backbone,
            "pretrain": dataclasses.asdict(p.pretrain), "train": dataclasses.asdict(p.finetune),
            "pretext_options": p.pretext_options, "budget_rule": p.budget_rule(),
            "pretrain_epochs": {t: p.pretrain_config(t, seeds[0]).epochs for t in pretexts},
            "pretraining": "shared" if shared_pretraining else "per-seed",
            "epochs_per_fraction": {f"{f:g}": p.epochs_for(f) for f in fractions},
            "overrides": {k: v for k, v in (("epochs", epochs), ("pretrain_epochs", pretrain_epochs)) if v is not None},
            "protocols": ["finetune", "linear", "knn"], "probes": probe_settings(),
            "dataset": {"name": ds.name, "classes": ds.classes, "n_train_total": len(ds.train),
                        "n_test": len(ds.test) if ds.test is not None else 0, "image_size": ds.image_size,
                        "channels": ds.channels, "skipped_files": ds.skipped, "fingerprint": ds.fingerprint},
            "machine": hw.machine_info(), "stage_times_s": times,
        }
        if replicate_of is not None:
            original = load_json(Path(replicate_of) / STUDY)
            study["replicate_of"] = {"study": str(Path(replicate_of).resolve()), "seeds": original.get("seeds"),
                                     "precision": original.get("precision"), "pretraining": original.get(
                                         "pretraining", "shared")}
        _check_same_study(state, study, out_dir)
        study["precision"] = _study_precision(precision, state.get("precision"), dev, out_dir)
        earlier = state.get("earlier_machines", [])  # a study resumed elsewhere (e.g. from `pretextlab export`)
        if state.get("machine") not in (None, study["machine"], *earlier):
            earlier.append(state["machine"])
        if earlier:
            study["earlier_machines"] = earlier
        stages = _stages(p, data, ds, dev, out_dir, backbone, fractions, seeds, pretexts, shared_pretraining,
                         study["precision"], device, quiet, times)
        estimate = _announce(stages, backbone, ds, dev, study["precision"], out_dir)
        # the first estimate of a study is kept, to be set beside the actual time in the report
        study["estimate"] = state.get("estimate") or {**estimate, "stages": len(stages)}

        def save() -> None:
            if dist.is_main():
                save_json(study, study_file)

        save()
        if replicate_of is not None and not (out_dir / ORIGINAL_SUMMARY).exists():
            shutil.copyfile(Path(replicate_of) / REPORT_SUMMARY, out_dir / ORIGINAL_SUMMARY)
        from tqdm.auto import tqdm

        overall = tqdm(total=len(stages), initial=sum(s.done for s in stages), desc="study", unit="stage",
                       position=0, dynamic_ncols=True, disable=quiet or not dist.is_main())
        for k, s in enumerate(stages):  # the plan, in order: each stage is skipped when done, resumed if begun
            if not s.done:
                left = plan.duration(plan.estimate_s(stages, estimate["rate"]))
                (log.info if quiet or not dist.is_main() else overall.write)(
                    f"study: {s.name} (stage {k + 1}/{len(stages)}; about {left} left)")
            t = time.perf_counter()
            s.run()
            if not s.done:
                times[s.name], s.done = time.perf_counter() - t, True
                overall.update(1)
                save()
        overall.close()
        study["total_time_s"] = sum(times.values())
        # a study resumed over several processes: the largest peak of them, not that of the last one
        study["peak_rss_mib"] = max(state.get("peak_rss_mib", 0.0), peak_rss_mib())
        save()
        return out_dir


def _stages(p: Preset, data: DataConfig, ds: Dataset, dev: torch.device, out_dir: Path, backbone: str,
            fractions: tuple[float, ...], seeds: tuple[int, ...], pretexts: tuple[str, ...], shared: bool,
            precision: str, device: str, quiet: bool, times: dict[str, float]) -> list[plan.Stage]:
    """The study's stages in the order they run: pretrainings, probes, then fine-tuning runs, smallest
    fraction first and all seeds of a fraction before the next, so that the most telling comparison
    arrives early and a study stopped part-way holds complete multi-seed comparisons so far."""
    from .pretext import pretrain

    n_val = int(round(len(ds.train) * data.val_fraction))
    n_pool, n_test = len(ds.train) - n_val, len(ds.test) if ds.test is not None else 0
    owners = {s: (None if shared else s) for s in seeds}  # seed -> the seed its pretraining used (None: shared)
    stages: list[plan.Stage] = []

    def add(name: str, kind: str, work: float, run) -> None:
        stages.append(plan.Stage(name, kind, work, run, done=name in times))

    for task in pretexts:  # one per task and seed (the seed's replicate), or one per task shared by all seeds
        for pre_seed in dict.fromkeys(owners.values()):
            name = pretrain_dir(task, pre_seed)
            cfg = p.pretrain_config(task, seeds[0] if pre_seed is None else pre_seed)
            options = p.pretext_options.get(task)
            add(name, "pretrain", plan.pretrain_work(task, cfg.epochs, n_pool, n_val,
                                                     (options or {}).get("all_rotations", True)),
                lambda task=task, name=name, cfg=cfg, options=options: pretrain(
                    task, data, cfg, backbone, out_dir / name, options, dataset=ds, device=device, quiet=quiet,
                    precision=precision))
    keys = [(f, seed) for seed in seeds for f in sorted(fractions)]
    for task in pretexts:  # frozen pretrained backbones: every fraction and seed, features extracted once
        for pre_seed in dict.fromkeys(owners.values()):
            folder = out_dir / pretrain_dir(task, pre_seed)
            own = [k for k in keys if pre_seed is None or k[1] == pre_seed]
            origin = {"backbone": backbone, "init": str(folder / BACKBONE)}
            add(f"probe-{folder.name.removeprefix('pretrain-')}", "probe", plan.probe_work(n_pool, n_val, n_test,
                                                                                         len(own)),
                lambda folder=folder, own=own, origin=origin: run_probes(
                    pretrained_backbone(backbone, ds.channels, folder / BACKBONE), origin, folder, own, data, ds, dev,
                    precision))
    for seed in seeds:  # the baseline: each seed's random initialisation, frozen
        origin = {"backbone": backbone, "init": "random (torch.manual_seed(seed), then build)"}
        own = [k for k in keys if k[1] == seed]
        add(f"probe-random-s{seed}", "probe", plan.probe_work(n_pool, n_val, n_test, len(own)),
            lambda seed=seed, origin=origin, own=own: run_probes(
                random_backbone(backbone, ds.channels, seed), origin, out_dir / RANDOM_INIT_DIR, own, data, ds, dev,
                precision))
    for f in sorted(fractions):
        for seed in seeds:  # every run repeated per seed: new label subset, new initialisation
            cfg = dataclasses.replace(p.finetune, epochs=p.epochs_for(f), seed=seed)
            dcfg = dataclasses.replace(data, fraction=f)
            n_train = int(round(n_pool * f))
            spe = steps_per_epoch(n_train, min(cfg.batch_size, n_train))
            evaluations = len(eval_steps(cfg.epochs * spe, spe, cfg.evals))  # as fit() will evaluate
            for arm in ("scratch", *pretexts):
                init = None if arm == "scratch" else str(out_dir / pretrain_dir(arm, owners[seed]) / BACKBONE)
                name = run_name(f, arm, seed)
                add(name, "finetune", plan.finetune_work(cfg.epochs, n_train, evaluations, n_val, n_test),
                    lambda name=name, cfg=cfg, dcfg=dcfg, init=init: train_classifier(
                        dcfg, cfg, backbone, out_dir / name, init=init, dataset=ds, device=device, quiet=quiet,
                        precision=precision))
    return stages


def _announce(stages: list[plan.Stage], backbone: str, ds: Dataset, dev: torch.device, precision: str,
              out_dir: Path) -> dict[str, float]:
    """Print the plan and the time it should take here (measured now), and where to watch it."""
    rate = plan.measure_rate(backbone, ds.channels, ds.image_size, dev, precision) if dist.is_main() else 1.0
    if dist.is_main():
        for line in plan.describe(stages, rate, backbone, ds.image_size, precision):
            log.info(line)
        log.info("curves: tensorboard --logdir %s", out_dir)
    return {"rate": rate, "estimated_s": plan.estimate_s(stages, rate)}


def replicate_settings(original: Path, data: str | None = None, backbone: str | None = None) -> dict[str, Any]:
    """run_study's settings of a finished study, to run it again under other seeds or another precision.

    The replicate takes the original's data, fractions, pretext tasks, preset, backbone and pretraining
    mode; `data` points it at another copy of the same images (e.g. on another machine). A backbone from
    the user's own file is built only from the file the user names again (`backbone`): a study folder
    someone hands over never decides which code runs.
    """
    original = Path(original)
    if not (original / STUDY).is_file():
        raise UserError(f"--replicate-of {original}: no study.json there; pass the folder of a finished study")
    if not (original / REPORT_SUMMARY).is_file():
        raise UserError(f"--replicate-of {original} has no summary.json yet; run `pretextlab report {original}` first")
    try:
        s = load_json(original / STUDY)
        fields = {f.name for f in dataclasses.fields(DataConfig)}
        d = DataConfig(**{k: v for k, v in s["data"].items() if k in fields})
        stored = str(s["backbone"])
        settings = {"data": dataclasses.replace(d, source=data) if data else d,
                    "fractions": tuple(float(f) for f in s["fractions"]), "preset": str(s["preset"]),
                    "pretexts": tuple(str(t) for t in s["pretexts"]),
                    "shared_pretraining": s.get("pretraining", "shared") == "shared", "replicate_of": original}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise UserError(f"--replicate-of {original}: its study.json is damaged or not a pretextlab study's; "
                        "pass the folder of a finished study") from None
    if is_user_file(stored) and backbone is None:
        raise UserError(f"--replicate-of {original} was trained with your own module {stored}; pass --backbone "
                        f"{stored} (or its new path) to build it: pretextlab never runs code a study folder names")
    if backbone is not None and backbone != stored and not (is_user_file(stored) and is_user_file(backbone)):
        raise UserError(f"--replicate-of {original} used the backbone {stored}; a replicate keeps it: drop "
                        f"--backbone {backbone}")
    return {**settings, "backbone": backbone or stored}


# What must match for a study folder to be resumed: its recipe. Fractions, seeds and pretext tasks may
# be added to a finished study (the new runs join the old ones); a changed recipe would mix two studies.
RECIPE = ("preset", "backbone", "pretrain", "train", "pretext_options", "budget_rule", "probes", "pretraining")


def _check_same_study(stored: dict[str, Any], new: dict[str, Any], out_dir: Path) -> None:
    """Refuse, before anything is written, to resume a study folder with another recipe or data."""
    if not stored:
        return
    was, now = stored.get("dataset") or {}, new["dataset"]["fingerprint"]
    if "fingerprint" in was:
        check_same_data(was["fingerprint"], now, f"the study in {out_dir} began with")
    elif "classes" in was and now:  # a study from before the fingerprint: its classes and image count must hold
        then = {"classes": len(was["classes"]), "images": was.get("n_train_total", 0) + was.get("n_test", 0)}
        check_same_data(then, {k: now[k] for k in then}, f"the study in {out_dir} began with")
    stored = {"pretraining": "shared", **stored}  # studies from before per-seed pretraining shared it
    old = {k: stored.get(k) for k in RECIPE} | {"data": _data_settings(stored.get("data") or {})}
    cur = {k: new[k] for k in RECIPE} | {"data": _data_settings(new["data"])}
    diff = settings_diff(json_roundtrip(old), json_roundtrip(cur), out_dir)
    if diff:
        hint = " (it shares one pretraining per task: add --shared-pretraining)" if diff == ["pretraining"] \
            and stored["pretraining"] == "shared" else ""
        raise UserError(f"{out_dir} holds a study with other settings ({', '.join(diff)}){hint}; run it with its "
                        "own settings to resume it, or use another --out")


def _data_settings(data: dict[str, Any]) -> dict[str, Any]:
    """A study's data settings without storage, which never changes the numbers (as data.data_settings)."""
    return {k: v for k, v in data.items() if k != "storage"}


def _study_precision(requested: str, stored: str | None, device: torch.device, out_dir: Path) -> str:
    """One precision for every run of a study, decided when it starts and recorded in study.json."""
    return hold_precision(requested, stored, device, f"{out_dir} is a study in")


KEPT_SUFFIXES = (".json", ".csv", ".md", ".html", ".png")  # results and report; not weights, checkpoints or logs
# The report's figure inputs: a run's uint8 validation examples (the same images in every run, so git
# stores one blob) and a pretext run's sample pairs, some KB each; without them a re-rendered copy
# loses its example-prediction and pretext-sample figures.
FIGURE_INPUTS = (EXAMPLES, SAMPLES)


def export_study(study_dir: Path, dest: Path, force: bool = False) -> tuple[int, int]:
    """Copy a study's report, result files and figure inputs to dest, leaving out weights, checkpoints
    and TensorBoard logs; returns (files, bytes).

    Why: a study can outlive the machine it runs on (hours of CPU, a machine lent for a while). The copy is
    small enough to commit and is itself a study folder: given as --out, wherever it is copied to,
    `pretextlab study` keeps every finished run and probe, re-makes the pretrained backbones
    (pretraining again, same seed) and goes on. Each backbone's SHA-256 is kept in its summary.json,
    so the re-made one can be told apart from the one the finished runs started from, and the report
    says so.

    Only the study's own regular files are copied: a link that leads out of the study is refused, and
    so is a DEST that already holds files (unless force), so an export never merges into another study.
    """
    study_dir, dest = Path(study_dir).resolve(), Path(dest).resolve()
    if not (study_dir / STUDY).is_file():
        raise UserError(f"{study_dir} is not a study folder (no study.json); pass the --out of `pretextlab study`")
    if dest == study_dir or study_dir in dest.parents:
        raise UserError(f"{dest} is inside the study folder; export to a folder outside {study_dir}")
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest} is a file; export to a new or empty folder")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise UserError(f"{dest} is not empty; export to a new or empty folder, or pass --force to overwrite "
                        "the files it has in common with the study")
    chosen = []
    for src in sorted(study_dir.rglob("*")):
        rel = src.relative_to(study_dir)
        kept = src.suffix in KEPT_SUFFIXES or src.name in FIGURE_INPUTS
        if not src.is_file() or not kept or TENSORBOARD in rel.parts or src.name.startswith("."):
            continue
        if study_dir not in src.resolve().parents:  # checked for every file before any is copied
            raise UserError(f"{study_dir / rel} is a link to {src.resolve()}, outside the study; export copies only "
                            "the study's own files: remove the link")
        if src.stat().st_nlink > 1:  # a hard link may be another folder's file: its contents are not the study's
            raise UserError(f"{study_dir / rel} is a hard link shared with another file; export copies only the "
                            f"study's own files: replace it by a copy (cp {rel.name} x && mv x {rel.name})")
        _check_no_link(dest, rel)
        chosen.append(rel)
    files, size = 0, 0
    for rel in chosen:
        src, out = study_dir / rel, dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        weights = src.parent / BACKBONE
        if src.name == SUMMARY and pretrain_task(src.parent.name) and weights.is_file():
            summary = load_json(src)  # made before backbones carried their hash: add it now
            summary.setdefault("backbone_sha256", sha256_file(weights))
            save_json(summary, out)
        else:
            save_bytes(src.read_bytes(), out)  # a new file moved into place: never written through a link
            shutil.copystat(src, out)
        files, size = files + 1, size + out.stat().st_size
    return files, size


def _check_no_link(dest: Path, rel: Path) -> None:
    """Refuse to export through a link inside dest: the copy would land wherever it points."""
    for depth in range(1, len(rel.parts) + 1):
        here = dest.joinpath(*rel.parts[:depth])
        if here.is_symlink():
            raise UserError(f"{here} is a link (to {here.resolve()}); export writes only inside {dest}: remove the "
                            "link or export to a new folder")

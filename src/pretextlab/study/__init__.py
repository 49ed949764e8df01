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

from .. import dist, hw, schema
from ..data import DataConfig, check_fraction, check_out_outside_data, check_same_data, data_settings, open_data
from ..errors import UserError
from ..io import load_json, save_json
from ..layout import ORIGINAL_SUMMARY, REPORT_SUMMARY, STUDY
from ..models.external import is_user_file
from ..probe import probe_settings
from ..runs import decide_precision, json_roundtrip, settings_diff, writer_lock
from ..tasks import get_task, scoring
from ..train import check_precision, check_seed
from . import plan
from .export import export_study
from .presets import PRESETS, get_preset, with_overrides
from .probes import run_probes
from .stages import Env, study_stages

__all__ = ["PRESETS", "export_study", "replicate_settings", "run_probes", "run_study"]

log = logging.getLogger(__name__)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


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
    pretrain_epochs: int | tuple[int, ...] | None = None,
    dry_run: bool = False,
    task: str = "classification",
) -> Path:
    """Run (or resume) the whole study in out_dir; returns out_dir. The report is written apart
    (`report.write_report`): it reads only what the study wrote, so it never depends on this module.

    Each seed is a whole replicate of the pipeline: its own pretraining (weights, order, augmentation),
    label subset and initialisation, so that intervals over seeds include the pretraining's variance.
    shared_pretraining pretrains once per task, with the first seed, for every seed: cheaper, but its
    intervals then cover label subsets and initialisations only (the report says so in its headline).
    replicate_of: the finished study this one repeats (see replicate_settings); its summary.json is kept
    beside this one's, so the report can say which of its verdicts held. epochs and pretrain_epochs
    override the preset's training length; several pretrain_epochs make pretraining length an axis: every
    pretext task pretrains once per length (and seed), each its own arm (context-e2, context-e8, ...).
    dry_run prints the plan and its estimated time, and writes nothing.
    """
    from ..pretext import TASKS

    kind = get_task(task)
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
    lengths = tuple(sorted(set(pretrain_epochs))) if isinstance(pretrain_epochs, tuple) else ()
    if len(lengths) == 1:  # one length: the override it always was
        pretrain_epochs, lengths = lengths[0], ()
    if any(n < 1 for n in lengths) or isinstance(pretrain_epochs, int) and pretrain_epochs < 1:
        raise UserError("--pretrain-epochs must be whole numbers >= 1, e.g. 8, or 2,8,32 to compare lengths")
    p = with_overrides(get_preset(preset, task), epochs, None if lengths else pretrain_epochs)
    arms = p.arms(pretexts, lengths)
    backbone = backbone or p.backbone
    if data.image_size is None and p.image_size is not None:  # the preset's size, recorded in study.json
        data = dataclasses.replace(data, image_size=p.image_size)
    out_dir = Path(out_dir)
    check_out_outside_data(data, out_dir)
    dev, ds = open_data(data, device, None, kind.load)  # under torchrun: join the job before anything is written
    for f in fractions:  # fail now, not an hour in, if a fraction leaves a class empty
        kind.splits(ds, f, seeds[0], data)
    if dry_run:
        state = load_json(out_dir / STUDY) if (out_dir / STUDY).exists() else {}
        chosen = decide_precision(precision, state.get("precision"), dev, f"{out_dir} is a study in")
        env = Env(data, ds, dev, chosen, quiet)
        _announce(study_stages(p, env, out_dir, backbone, fractions, seeds, arms, shared_pretraining, task,
                               state.get("stage_times_s", {})), backbone, env, out_dir)
        return out_dir

    with writer_lock(out_dir):  # one process writes a study; validated before anything is written
        study_file = out_dir / STUDY
        state = schema.upgrade(schema.STUDY, load_json(study_file), study_file) if study_file.exists() else {}
        times: dict[str, float] = state.get("stage_times_s", {})
        study = {
            schema.SCHEMA_KEY: schema.SCHEMA_VERSION, "data": dataclasses.asdict(data), "fractions": list(fractions),
            "seeds": list(seeds),
            "task": task, "scoring": scoring(kind), "pretexts": list(pretexts), "preset": preset, "backbone": backbone,
            "pretrain": dataclasses.asdict(p.pretrain), "train": dataclasses.asdict(p.finetune),
            "pretext_options": p.pretext_options, "budget_rule": p.budget_rule(),
            "arms": [a for a, _, _ in arms], "pretrain_epochs": {a: n for a, _, n in arms},
            **({"pretrain_lengths": list(lengths)} if lengths else {}),
            "pretraining": "shared" if shared_pretraining else "per-seed",
            "epochs_per_fraction": {f"{f:g}": p.epochs_for(f) for f in fractions},
            "overrides": {k: v for k, v in (("epochs", epochs), ("pretrain_epochs", list(lengths) or pretrain_epochs))
                          if v is not None},
            "protocols": ["finetune", "linear", "knn"] if kind.probes else ["finetune"], "probes": probe_settings(),
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
        study["precision"] = decide_precision(precision, state.get("precision"), dev, f"{out_dir} is a study in")
        earlier = state.get("earlier_machines", [])  # a study resumed elsewhere (e.g. from `pretextlab export`)
        if state.get("machine") not in (None, study["machine"], *earlier):
            earlier.append(state["machine"])
        if earlier:
            study["earlier_machines"] = earlier
        env = Env(data, ds, dev, study["precision"], quiet)
        stages = study_stages(p, env, out_dir, backbone, fractions, seeds, arms, shared_pretraining, task, times)
        estimate = _announce(stages, backbone, env, out_dir)
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
            s.run(env)
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


def _announce(stages: list[plan.Stage], backbone: str, env: Env, out_dir: Path) -> dict[str, float]:
    """Print the plan and the time it should take here (measured now), and where to watch it."""
    ds = env.ds
    hw_ = tuple(int(v) for v in ds.train.images.shape[-2:])
    dense = ds.train.labels.ndim == 3  # a mask per image: the segmentation decoder's cost
    rate = plan.measure_rate(backbone, ds.channels, hw_, env.device, env.precision, dense=dense) if dist.is_main() \
        else 1.0
    if dist.is_main():
        size = f"{hw_[1]} x {hw_[0]}" if hw_[0] != hw_[1] else hw_[0]
        for line in plan.describe(stages, rate, backbone, size, env.precision):
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
        s = schema.upgrade(schema.STUDY, load_json(original / STUDY), original / STUDY)
        fields = {f.name for f in dataclasses.fields(DataConfig)}
        d = DataConfig(**{k: v for k, v in s["data"].items() if k in fields})
        stored = str(s["backbone"])
        settings = {"data": dataclasses.replace(d, source=data) if data else d,
                    "fractions": tuple(float(f) for f in s["fractions"]), "preset": str(s["preset"]),
                    "pretexts": tuple(str(t) for t in s["pretexts"]),
                    "shared_pretraining": s["pretraining"] == schema.SHARED, "replicate_of": original,
                    "task": str(s["task"])}
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
RECIPE = ("task", "preset", "backbone", "pretrain", "train", "pretext_options", "budget_rule", "probes", "pretraining")


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
    old = {k: stored.get(k) for k in RECIPE} | {"data": data_settings(stored.get("data") or {})}
    cur = {k: new[k] for k in RECIPE} | {"data": data_settings(new["data"])}
    diff = settings_diff(json_roundtrip(old), json_roundtrip(cur), out_dir)
    if diff:
        hint = " (it shares one pretraining per task: add --shared-pretraining)" if diff == ["pretraining"] \
            and stored["pretraining"] == "shared" else ""
        raise UserError(f"{out_dir} holds a study with other settings ({', '.join(diff)}){hint}; run it with its "
                        "own settings to resume it, or use another --out")




"""The versioned files (pretextlab.schema): a folder written before versions were kept (version 0, older shapes) and
the same folder written now (version 1) read to the same records and the same report numbers; a folder written by
a newer pretextlab is refused in one line; the report's checks are the schema's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pretextlab import schema
from pretextlab.errors import UserError
from pretextlab.report import load_study, summarize_study
from pretextlab.report.files import check_of, read_record
from pretextlab.report.summary import finite
from pretextlab.runs import summarize

CLASSES = ["cat", "dog"]
STEPS = 10  # optimizer steps per epoch


def _rows(arm: str) -> list[dict]:
    """A fine-tuning run's metrics.csv: 4 evaluations, one per epoch, with the step column."""
    gain = 0.1 if arm == "context" else 0.0
    return [{"epoch": e, "step": STEPS * e, "train_loss": 1.5 - 0.2 * e - gain, "val_loss": 1.4 - 0.15 * e - gain,
             "val_f1_macro": 0.3 + 0.1 * e + gain, "val_accuracy": 0.32 + 0.1 * e + gain, "wall_time_s": 2.0 * e}
            for e in range(1, 5)]


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, list):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(obj[0]))
            w.writeheader()
            w.writerows(obj)
    else:
        path.write_text(json.dumps(obj))


def _folder(root: Path, version: int) -> Path:
    """One study at fraction 0.5, seed 0: scratch and context fine-tuning, the shared context pretraining and
    the probes of both backbones. version 0: as pretextlab wrote it before versions, the older shapes included
    (study.json without "pretraining", "task" and "protocols"; fine-tuning summaries without their run length,
    a run from before it; a pretraining summary without backbone_sha256 nor knn_accuracy; probes without
    features_precision). version 1: as it writes them now: "schema": 1, and every one of those fields."""
    v1 = version == 1
    stamp = {"schema": 1} if v1 else {}
    study = {"data": {"source": "synthetic", "val_fraction": 0.5, "split_seed": 0}, "fractions": [0.5], "seeds": [0],
             "pretexts": ["context"], "preset": "fast", "backbone": "fast", "train": {"epochs": 4},
             "dataset": {"name": "synthetic", "classes": CLASSES, "n_test": 0},
             "stage_times_s": {"f0.5-scratch-s0": 9.0}, **stamp}
    if v1:
        study |= {"pretraining": "shared", "task": "classification", "protocols": ["finetune"]}
    _write(root / "study.json", study)
    for arm in ("scratch", "context"):
        rows = _rows(arm)
        summary = {**summarize(rows), "run": f"f0.5-{arm}-s0", "backbone": "fast", "fraction": 0.5, "seed": 0,
                   "n_train": 50, "n_val": 50, "classes": CLASSES,
                   "final": {"f1_macro": rows[-1]["val_f1_macro"], "accuracy": rows[-1]["val_accuracy"], "loss": 0.8},
                   "confusion_val": [[20, 5], [4, 21]], "examples": [{"val_index": 0, "label": 1, "pred": 1}],
                   "wall_time_s": 8.0, **stamp}
        if v1:
            summary |= {"steps": 40, "planned_steps": 40, "stopped_early": False, "schedule": "onecycle"}
        folder = root / f"f0.5-{arm}-s0"
        _write(folder / "metrics.csv", rows)
        _write(folder / "summary.json", summary)
        _write(folder / "config.json", {"kind": "finetune", "train": {"epochs": 4, "schedule": "onecycle"},
                                        "resolved": {"precision": "fp32", "steps_per_epoch": STEPS}})
    pretext = [{"epoch": e, "train_loss": 2.0 - 0.2 * e, "val_loss": 2.1 - 0.2 * e, "val_accuracy": 0.2 * e}
               for e in range(1, 4)]
    _write(root / "pretrain-context" / "metrics.csv", pretext)
    _write(root / "pretrain-context" / "summary.json", {**summarize(pretext), "pretext": "context", "chance": 0.125,
                                                         "wall_time_s": 6.0, **stamp,
                                                         **({"backbone_sha256": None, "knn_accuracy": {}} if v1
                                                            else {})})
    for folder, f1 in (("random-init", 0.3), ("pretrain-context", 0.4)):
        settings = {"backbone": "fast", "init": folder, **({"features_precision": "fp32"} if v1 else {})}
        _write(root / folder / "probes.json", {"settings": settings, **stamp, "results": {"f0.5-s0": {
            "fraction": 0.5, "seed": 0, "n_train": 50, "linear": {"f1_macro": f1, "accuracy": f1},
            "knn": {"f1_macro": f1 - 0.05, "accuracy": f1 - 0.05}, "time_s": 0.1}}})
    return root


def _numbers(study) -> dict:
    """The report's summary.json of a study, as read back (NaN written as null, so that equal means equal)."""
    return json.loads(json.dumps(finite(summarize_study(study))))


def test_a_version_0_and_a_version_1_folder_read_to_the_same_records(tmp_path: Path):
    old, new = load_study(_folder(tmp_path / "v0" / "study", 0)), load_study(_folder(tmp_path / "v1" / "study", 1))
    assert old.config == new.config and old.config.raw != new.config.raw  # the same record of other files
    assert (old.config.pretraining, old.config.task, old.config.protocols) == ("shared", "classification", ["finetune"])
    pretext = old.pretexts["context"].summary
    assert pretext == new.pretexts["context"].summary and pretext.backbone_sha256 is None and pretext.knn_accuracy == {}
    assert old.probes == new.probes and old.missing == new.missing == [] and old.missing_probes == new.missing_probes

    def read(study) -> list[tuple]:  # what the report reads of each run, its summary or its other files
        return [(r.name, r.history, r.config, r.schedule, r.patience, r.budget, r.steps, r.stopped_early,
                 r.wall_time_s, r.best, r.summary.final, r.summary.examples, r.summary.confusion_val)
                for r in study.runs]

    assert read(old) == read(new)
    assert old.runs[0].summary.steps is None and new.runs[0].summary.steps == old.runs[0].steps == 40
    assert _numbers(old) == _numbers(new)  # every number of the report
    assert _numbers(old)["schema"] == schema.SCHEMA_VERSION  # the report's own summary.json is versioned too


@pytest.mark.parametrize("name", ["study.json", "f0.5-scratch-s0/summary.json", "pretrain-context/summary.json",
                                  "random-init/probes.json"])
def test_a_version_2_folder_is_refused_in_one_line(tmp_path: Path, name: str, run_cli, assert_user_error):
    root = _folder(tmp_path / "study", 1)
    path = root / name
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema": 2}))
    with pytest.raises(UserError, match="written by a newer pretextlab") as e:
        load_study(root)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    assert_user_error(run_cli("report", root), str(path), "written by a newer pretextlab (schema 2", "upgrade")


def test_a_newer_original_summary_of_a_replicate_is_refused_in_one_line(tmp_path: Path):
    path = tmp_path / "original-summary.json"
    path.write_text(json.dumps({"schema": 2, "comparison": {}}))
    with pytest.raises(UserError, match=r"written by a newer pretextlab \(schema 2; this one reads up to 1\)"):
        read_record(path, schema.REPORT, schema.ReportVerdicts)
    path.write_text(json.dumps({"comparison": {"1": {"context": {"f1_macro": {"paired_n": 2}}}}}))  # version 0
    with pytest.raises(UserError, match='"comparison.1.context.f1_macro.pretrained_minus_scratch" is missing'):
        read_record(path, schema.REPORT, schema.ReportVerdicts)


@pytest.mark.parametrize("value", ["1", -1, True, 1.5])
def test_a_schema_key_that_is_no_version_is_refused_in_one_line(tmp_path: Path, value):
    root = _folder(tmp_path / "study", 1)
    (root / "study.json").write_text(json.dumps({**json.loads((root / "study.json").read_text()), "schema": value}))
    with pytest.raises(UserError, match='"schema" is .*, not a schema version') as e:
        load_study(root)
    assert "\n" not in str(e.value)


def test_upgrade_fills_what_version_0_meant_and_stamps_the_version():
    assert schema.upgrade(schema.STUDY, {"seeds": [0]}, "study.json") == {
        "pretraining": "shared", "task": "classification", "protocols": ["finetune"], "seeds": [0], "schema": 1}
    assert schema.upgrade(schema.STUDY, {"pretraining": "per-seed", "schema": 1}, "x")["pretraining"] == "per-seed"
    probes = schema.upgrade(schema.PROBES, {"settings": {"backbone": "fast"}, "results": {}}, "probes.json")
    assert probes["settings"] == {"features_precision": "fp32", "backbone": "fast"}
    assert schema.upgrade(schema.PRETRAIN, {}, "x") == {"backbone_sha256": None, "knn_accuracy": {}, "schema": 1}
    kept = {"settings": {"features_precision": "bf16"}, "results": {}}
    assert schema.upgrade(schema.PROBES, kept, "x")["settings"]["features_precision"] == "bf16"
    assert schema.upgrade(schema.STUDY, [1, 2], "x") == [1, 2]  # not an object: left to the reader's check
    with pytest.raises(ValueError):
        schema.upgrade("nonsense", {}, "x")
    assert len(schema.UPGRADES) == schema.SCHEMA_VERSION


def test_every_file_kind_has_a_check_derived_from_its_schema():
    for kind, shape in schema.FILES.items():
        check = check_of(shape)
        assert check({}) is None or kind == schema.PROBES  # every field optional but probes.json's results
        assert check([]) == ("", [], "an object")
    where, _, what = check_of(schema.ProbesFile)({})
    assert (where, what) == ("results", "a value")
    assert check_of(schema.StudyFile)({"fractions": [0.5, 2]})[0] == "fractions"
    assert check_of(schema.FinetuneSummary)({"best": {"f1_macro": {"value": 0.5}}})[0] == "best.f1_macro.epoch"
    assert check_of(schema.FinetuneSummary)({"best": {"loss": {"value": float("nan"), "epoch": 1}}}) is None

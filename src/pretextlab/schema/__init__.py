"""The JSON files pretextlab writes, field by field: the one description the writers annotate their dicts with
and the report reads (and checks) through. docs/schema.md says what every field is, with its unit.

Files: a fine-tuning run's summary.json (FinetuneSummary), a pretraining run's summary.json (PretrainSummary),
a study's study.json (StudyFile), a backbone folder's probes.json (ProbesFile) and the study report's own
summary.json (ReportSummary). A run's config.json (RunConfig) is described too, but carries no version: it is
compared key by key when a run resumes, so its shape is fixed by the settings it holds.

Versions. Each of those files holds "schema": SCHEMA_VERSION, the version of this module it was written
with; a file without the key is version 0 (written before versions were kept). `upgrade` brings a record
of any version up to SCHEMA_VERSION to the current shape, one step per version (UPGRADES: the values an older
file meant without writing them), and refuses a newer one in one line. Readers only ever see the current
shape. When a field is added, removed, renamed, or changes meaning, type or unit, bump SCHEMA_VERSION, add
the step from the previous version to UPGRADES, and say what changed in docs/schema.md.

Types. TypedDicts say which fields a file holds (total=False: a field may be absent, in an older version
or where it does not apply); the few without which a file is malformed in every version are in a required
base class (_Best, _Example, _ProbeKey, _ProbeResults, _Compared). Numbers are finite unless typed Real;
every int is a count, an index or a seed, never negative; the Annotated types below narrow a value further.
X | None: the writer may write null. A reader checks a file against its TypedDict (report/files.check_of).

This package sits below everything: it imports nothing of pretextlab but errors. files.py describes the
files of runs and studies, report.py the report's own summary.json; this module keeps the versions.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import UserError
from .files import (
    CLASSIFICATION,
    FEATURES_FP32,
    PER_SEED,
    SCHEMA_KEY,
    SCHEMA_VERSION,
    SHARED,
    Best,
    BestReal,
    BestScores,
    Dataset,
    Estimate,
    Example,
    FinetuneSummary,
    Fraction,
    HeldOutProbes,
    Interval,
    Matrix,
    Name,
    PositiveInt,
    PretrainSummary,
    ProbeEntry,
    ProbeScores,
    ProbeSettings,
    ProbesFile,
    Real,
    ReplicateOf,
    Resolved,
    RunConfig,
    Scores,
    StudyFile,
    TrainSettings,
)
from .report import (
    Aggregate,
    Cell,
    Compared,
    Difference,
    Evaluation,
    Headline,
    InProgress,
    Precision,
    PretextFolder,
    PretextStats,
    ReportSummary,
    ReportVerdicts,
    RunStats,
    SplitEvaluation,
    Status,
    Timing,
)

# --- versions ------------------------------------------------------------------------------------------

STUDY, FINETUNE, PRETRAIN, PROBES, REPORT = "study", "finetune", "pretrain", "probes", "report"
FILES: dict[str, type] = {STUDY: StudyFile, FINETUNE: FinetuneSummary, PRETRAIN: PretrainSummary,
                          PROBES: ProbesFile, REPORT: ReportSummary}


def version(record: Any, where: object) -> int:
    """The schema version a file's record was written with (0: no "schema" key); UserError, in one line, for
    a version newer than this pretextlab reads or a "schema" that is no version."""
    if not isinstance(record, dict) or SCHEMA_KEY not in record:
        return 0
    v = record[SCHEMA_KEY]
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise UserError(f'{where} holds invalid data: "{SCHEMA_KEY}" is {str(v)[:40]!r}, not a schema version (a '
                        "whole number); restore it from a copy, or re-run what wrote it")
    if v > SCHEMA_VERSION:
        raise UserError(f"{where} was written by a newer pretextlab (schema {v}; this one reads up to "
                        f"{SCHEMA_VERSION}); upgrade pretextlab to read it")
    return v


def _from_0(kind: str, r: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (no "schema" key) to 1: what files written before versions meant without saying it."""
    if kind == STUDY:
        # studies from before per-seed pretraining shared one; from before tasks, classified; from before the
        # probes, ran fine-tuning only
        r = {"pretraining": SHARED, "task": CLASSIFICATION, "protocols": ["finetune"], **r}
    elif kind == PRETRAIN:
        # pretrainings from before the hash did not keep it; the k-NN diagnostic may be absent
        r = {"backbone_sha256": None, "knn_accuracy": {}, **r}
    elif kind == PROBES and isinstance(r.get("settings"), dict):
        # probes from before their features' precision was recorded extracted them in fp32
        r = {**r, "settings": {"features_precision": FEATURES_FP32, **r["settings"]}}
    return r


# UPGRADES[v] brings a record of version v to version v + 1 (it may assume nothing of the values' types:
# the reader checks the upgraded record).
UPGRADES: list[Callable[[str, dict[str, Any]], dict[str, Any]]] = [_from_0]
assert len(UPGRADES) == SCHEMA_VERSION


def upgrade(kind: str, record: Any, where: object) -> Any:
    """A file's record (kind: STUDY, FINETUNE, PRETRAIN, PROBES or REPORT) in the current version's shape, as
    a new dict; UserError (`version`) for a newer one. Anything but a dict is returned as it is: the reader's
    check refuses it."""
    if kind not in FILES:
        raise ValueError(f"unknown file kind {kind!r}; one of {', '.join(FILES)}")
    v = version(record, where)
    if not isinstance(record, dict):
        return record
    for step in UPGRADES[v:]:
        record = step(kind, record)
    return {**record, SCHEMA_KEY: SCHEMA_VERSION}


__all__ = [
    "Aggregate",
    "Best",
    "BestReal",
    "BestScores",
    "CLASSIFICATION",
    "Cell",
    "Compared",
    "Dataset",
    "Difference",
    "Estimate",
    "Evaluation",
    "Example",
    "FEATURES_FP32",
    "FILES",
    "FINETUNE",
    "FinetuneSummary",
    "Fraction",
    "Headline",
    "HeldOutProbes",
    "InProgress",
    "Interval",
    "Matrix",
    "Name",
    "PER_SEED",
    "PRETRAIN",
    "PROBES",
    "PositiveInt",
    "Precision",
    "PretextFolder",
    "PretextStats",
    "PretrainSummary",
    "ProbeEntry",
    "ProbeScores",
    "ProbeSettings",
    "ProbesFile",
    "REPORT",
    "Real",
    "ReplicateOf",
    "ReportSummary",
    "ReportVerdicts",
    "Resolved",
    "RunConfig",
    "RunStats",
    "SCHEMA_KEY",
    "SCHEMA_VERSION",
    "SHARED",
    "STUDY",
    "Scores",
    "SplitEvaluation",
    "Status",
    "StudyFile",
    "Timing",
    "TrainSettings",
    "UPGRADES",
    "upgrade",
    "version",
]

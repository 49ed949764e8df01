"""Every folder and file name of a run and of a study, spelled once: writers and readers both ask here.

A study folder holds study.json, the report, one pretrain-<task>-s<seed>/ folder per pretext task
and seed (its backbone and its frozen-backbone probes; pretrain-<task>/ when one pretraining is
shared by every seed), random-init/ (the probes of the scratch runs' start) and one
f<fraction>-<arm>-s<seed>/ run folder per fine-tuning run.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# files of a run folder
CONFIG = "config.json"
METRICS = "metrics.csv"  # one row per validation evaluation
STEPS = "steps.csv"  # the training loss every few optimizer steps
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
BACKBONE = "backbone.safetensors"  # a pretext run's backbone weights, what fine-tuning starts from
INDICES = "indices.json"
EXAMPLES = "examples.pt"  # validation images with their predictions, for the report
SAMPLES = "samples.pt"  # a pretext task's sample inputs, for the report
PROBES = "probes.json"
TENSORBOARD = "tb"

# files and folders of a study
STUDY = "study.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_SUMMARY = "summary.json"
ANSWERS_MD = "answers.md"  # the page a student pastes; report.md holds the details
ANSWERS_HTML = "answers.html"
FIGURES = "figures"
PRETRAIN_PREFIX = "pretrain-"
RANDOM_INIT_DIR = "random-init"  # probes of the randomly initialised backbone (the scratch runs' start)
SCRATCH = "scratch"  # the arm that starts from a random initialisation

RUN_NAME = re.compile(r"^f(?P<fraction>\d*\.?\d+(?:e[+-]?\d+)?)-(?P<arm>.+)-s(?P<seed>\d+)$")


class RunKey(NamedTuple):
    fraction: float
    arm: str
    seed: int


PRETRAIN_NAME = re.compile(rf"^{PRETRAIN_PREFIX}(?P<task>.+?)(?:-s(?P<seed>\d+))?$")
ORIGINAL_SUMMARY = "original-summary.json"  # a replicate's copy of the summary.json of the study it repeats


def pretrain_dir(task: str, seed: int | None = None) -> str:
    """The folder of a study's pretraining with `task` (its backbone, samples and probes): one per seed
    (pretrain-<task>-s<seed>), or one shared by every seed (pretrain-<task>, seed None)."""
    return f"{PRETRAIN_PREFIX}{task}" + (f"-s{seed}" if seed is not None else "")


def parse_pretrain_dir(folder: str) -> tuple[str, int | None] | None:
    """(task, seed) of a pretrain folder name (seed None: shared by every seed), or None for any other name."""
    m = PRETRAIN_NAME.match(folder)
    return (m["task"], int(m["seed"]) if m["seed"] is not None else None) if m else None


def pretrain_task(folder: str) -> str | None:
    """The task of a pretrain folder name, or None for any other name."""
    parsed = parse_pretrain_dir(folder)
    return parsed[0] if parsed else None


LENGTH_SUFFIX = re.compile(r"^(?P<task>.+)-e(?P<epochs>\d+)$")  # an arm of one pretraining length: context-e8


def length_arm(task: str, epochs: int) -> str:
    """The arm (and pretraining folder stem) of `task` pretrained `epochs` epochs, in a study whose pretraining
    length is an axis (--pretrain-epochs 2,8,32): context-e8."""
    return f"{task}-e{epochs}"


def pretext_of(arm: str) -> str:
    """The pretext task of an arm: context-e8 -> context; an arm without a length is its task."""
    m = LENGTH_SUFFIX.match(arm)
    return m["task"] if m else arm


def run_name(fraction: float, arm: str, seed: int) -> str:
    """The folder of one fine-tuning run: label fraction, arm (scratch or a pretext task) and seed."""
    return f"f{fraction:g}-{arm}-s{seed}"


def parse_run_name(name: str) -> RunKey | None:
    """(fraction, arm, seed) of a run folder name, or None for any other name."""
    m = RUN_NAME.match(name)
    return RunKey(float(m["fraction"]), m["arm"], int(m["seed"])) if m else None


def probe_key(fraction: float, seed: int) -> str:
    """The entry of one (label fraction, seed) in a probes.json."""
    return f"f{fraction:g}-s{seed}"

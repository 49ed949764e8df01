"""`pretextlab export`: a study's results and report without weights, small enough to commit, and a
study folder itself (given as --out, `pretextlab study` resumes it)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import UserError
from ..io import load_json, save_bytes, save_json, sha256_file
from ..layout import BACKBONE, EXAMPLES, SAMPLES, STUDY, SUMMARY, TENSORBOARD, pretrain_task

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

"""Downstream tasks (labels): one file each behind tasks.common.DownstreamTask, registered here by name."""

from __future__ import annotations

from ..errors import UserError
from .classification import Classification
from .common import DownstreamTask
from .segmentation import Segmentation

TASKS: dict[str, type[DownstreamTask]] = {
    Classification.name: Classification,
    Segmentation.name: Segmentation,
}


def get_task(name: str) -> type[DownstreamTask]:
    if name not in TASKS:
        raise UserError(f"unknown task '{name}'; choose one of: {', '.join(TASKS)}")
    return TASKS[name]


def resolve_task(name: str, source: str) -> str:
    """`auto`: segmentation when the data root has a segmentation layout (images and masks, SegNet's pairs of
    folders, Pascal VOC's SegmentationClass), else classification; any other name is checked and kept."""
    if name != "auto":
        get_task(name)
        return name
    from pathlib import Path

    from ..data.masks import DOWNLOADS, detect_layout

    if source.lower() in DOWNLOADS:
        return Segmentation.name
    try:
        detect_layout(Path(source).expanduser())
    except UserError:
        return Classification.name
    return Segmentation.name


def task_of_checkpoint(kind: str) -> type[DownstreamTask] | None:
    """The task whose checkpoints carry meta kind `kind` (None: no downstream task's)."""
    return next((t for t in TASKS.values() if t.checkpoint_kind == kind), None)


def scoring(kind: type[DownstreamTask]) -> dict[str, object]:
    """What the report scores a task's runs by, recorded in config.json and study.json (report/scoring.py)."""
    return {"primary": kind.primary, "secondary": kind.secondary, "metrics": list(kind.metrics)}

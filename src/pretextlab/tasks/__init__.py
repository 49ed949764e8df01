"""Downstream tasks (labels): one file each behind tasks.common.DownstreamTask, registered here by name."""

from __future__ import annotations

from ..errors import UserError
from .classification import Classification
from .common import DownstreamTask

TASKS: dict[str, type[DownstreamTask]] = {
    Classification.name: Classification,
}


def get_task(name: str) -> type[DownstreamTask]:
    if name not in TASKS:
        raise UserError(f"unknown task '{name}'; choose one of: {', '.join(TASKS)}")
    return TASKS[name]


def task_of_checkpoint(kind: str) -> type[DownstreamTask] | None:
    """The task whose checkpoints carry meta kind `kind` (None: no downstream task's)."""
    return next((t for t in TASKS.values() if t.checkpoint_kind == kind), None)

"""A study's image files, read for the figures only: each run's examples.pt (validation images) and each
pretraining's samples.pt (what its task saw and predicted). Tensors and plain values only (pretextlab.io's
load_torch runs no code); a file that is missing, unreadable or malformed leaves its figure out, with a warning,
and never stops the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..io import load_torch
from ..layout import EXAMPLES, SAMPLES
from .files import check_size

if TYPE_CHECKING:
    from .results import Study

log = logging.getLogger(__name__)


def images_problem(images: Any) -> str | None:
    """What keeps a tensor from being drawn as a batch of images (uint8, N x C x H x W, C 1 or 3), or None."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        what = f"a {images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, Tensor) \
            else type(images).__name__
        return f"{what}, not a uint8 batch of images (N x C x H x W)"
    n, c, h, w = images.shape
    if n < 1 or c not in (1, 3) or not (1 <= h <= 1024 and 1 <= w <= 1024):
        return f"a batch of shape {tuple(images.shape)}: no images, not 1 or 3 channels, or larger than 1024 px"
    return None


def masks_problem(examples: Any) -> str | None:
    """What keeps a segmentation examples.pt (images, truth and predicted masks) from being drawn, or None."""
    if not isinstance(examples, dict) or not {"images", "truth", "pred"} <= set(examples):
        return "not a dict of images, truth and pred"
    images, truth, pred = examples["images"], examples["truth"], examples["pred"]
    if problem := images_problem(images):
        return problem
    shape = (len(images), *images.shape[-2:])
    if not all(isinstance(m, Tensor) and m.dtype == torch.uint8 and tuple(m.shape) == shape for m in (truth, pred)):
        return f"its masks are not uint8 of shape {shape}"
    return None


def _samples_problem(samples: Any) -> str | None:
    """What keeps a samples.pt from being drawn as images.samples_figure reads it, or None."""
    if not isinstance(samples, dict):
        return f"a {type(samples).__name__}, not a dict"
    if problem := images_problem(samples.get("first")):
        return f'"first" is {problem}'
    k = min(8, len(samples["first"]))  # the examples the figure shows
    panels = samples.get("panels") or [p for p in ("first", "second") if p in samples]
    if not isinstance(panels, list) or not all(isinstance(p, str) for p in panels):
        return '"panels" is not a list of names'
    for p in panels:
        t = samples.get(p)
        problem = images_problem(t)
        if problem is None and (len(t) < k or t.shape[2:] != samples["first"].shape[2:]):
            problem = f"{len(t)} images of {tuple(t.shape[2:])} px, where the figure needs {k} the first's size"
        if problem:
            return f'"{p}" is {problem}'

    def texts(v: Any, n: int = 0) -> bool:
        return isinstance(v, list) and len(v) >= n and all(isinstance(x, str) for x in v)

    def labels(v: Any) -> bool:
        return isinstance(v, Tensor) and v.ndim == 1 and len(v) >= k and not v.is_floating_point() \
            and not v.is_complex()

    if "titles" in samples and not texts(samples["titles"], k):
        return '"titles" is not a list of a title per example'
    if "titles" not in samples and not (labels(samples.get("true")) and labels(samples.get("pred"))):
        return 'it has neither "titles" nor "true" and "pred" labels per example'
    if not all(texts(samples[key]) for key in ("positions", "panel_names") if key in samples):
        return '"positions" or "panel_names" is not a list of names'
    return None


def load_samples(path: Path) -> dict[str, Any] | None:
    """A pretext run's samples.pt, or None: a missing, unreadable or malformed one only leaves a figure out."""
    f = path / SAMPLES
    if not f.exists():
        return None
    try:
        check_size(f)
        samples = load_torch(f)  # weights_only: tensors and plain values, never objects
    except Exception as e:  # a torch.load failure can be any of several types; the report just skips it
        log.warning("could not read %s: %s", f, e)
        return None
    if problem := _samples_problem(samples):
        log.warning("%s is left out of the report: %s", f, problem)
        return None
    return samples


def read_examples(study: Study) -> dict[str, Any]:
    """Each run's examples.pt (uint8 validation images; for segmentation a dict of the images with their true and
    predicted masks), read once, in the study's run order; an unreadable or malformed file is logged, becomes a
    note in the report's status, and the figures use the next run's."""
    images_of: dict[str, Tensor] = {}
    for run in study.runs:
        path = run.path / EXAMPLES
        if not path.exists():
            continue
        try:
            check_size(path)
            images = load_torch(path)
        except Exception as e:  # unreadable file: noted, the report goes on
            images, problem = None, str(e)
        else:
            problem = masks_problem(images) if isinstance(images, dict) else images_problem(images)
        if problem:
            log.warning("%s is left out of the report: %s", path, problem)
            study.problems.append(f"{run.name}/{EXAMPLES}: {problem}")
        else:
            images_of[run.name] = images
    return images_of

"""Decoded images that do not fit in memory: uint8 shards on disk, memory-mapped, read per batch.

The in-memory path keeps every decoded image in one tensor, which stops working at ImageNet
sizes. Here images are decoded once into .npy shards of about SHARD_BYTES under the cache folder,
each written atomically, so an interrupted build resumes at the first missing shard; the manifest,
written last, marks the build complete. ShardedImages answers x[idx] with a uint8 tensor of just
those rows, like the tensor it replaces, so the tasks and the training loop do not change.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..dist import local_world_size
from ..errors import UserError
from ..io import load_json, save_json, save_npy

log = logging.getLogger(__name__)
SHARD_BYTES = 2**28  # 256 MiB: few files for ImageNet, yet a small unit of work to redo after a crash
MANIFEST = "manifest.json"
Reader = Callable[[int, int], tuple[np.ndarray, np.ndarray]]  # rows [start, stop) -> images, labels


class ShardedImages:
    """uint8 images (N, C, H, W) spread over memory-mapped .npy shards, indexed like a tensor.

    x[idx] (index tensor, list or int) reads those rows into a tensor on x.device; x[a:b] and
    x.rows(idx) are lazy views, as slicing a tensor is; x.split(n) reads consecutive chunks.
    """

    def __init__(self, files: list[Path], device: torch.device | str = "cpu"):
        self._maps = [np.load(f, mmap_mode="r", allow_pickle=False) for f in files]  # pages are read on access only
        self._starts = np.cumsum([0] + [len(m) for m in self._maps])
        self._rows = np.arange(self._starts[-1])
        self.device = torch.device(device)

    def _view(self, rows: np.ndarray, device: torch.device | str | None = None) -> "ShardedImages":
        view = copy.copy(self)
        view._rows, view.device = rows, torch.device(device) if device is not None else self.device
        return view

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self._rows), *self._maps[0].shape[1:]))

    def __len__(self) -> int:
        return len(self._rows)

    def to(self, device: torch.device | str) -> "ShardedImages":
        """A view whose reads land on `device` (the images stay on disk)."""
        return self._view(self._rows, device)

    def rows(self, idx: Tensor | np.ndarray) -> "ShardedImages":
        return self._view(self._rows[_numpy(idx)])

    def __getitem__(self, key: slice | int | Tensor | np.ndarray | list[int]) -> "ShardedImages | Tensor":
        if isinstance(key, slice):
            return self._view(self._rows[key])
        if isinstance(key, int):
            return self._read(np.array([key]))[0]
        return self._read(_numpy(key))

    def split(self, size: int) -> Iterator[Tensor]:
        for start in range(0, len(self), size):
            yield self._read(np.arange(start, min(start + size, len(self))))

    def _read(self, idx: np.ndarray) -> Tensor:
        rows = self._rows[idx]
        shard = np.searchsorted(self._starts, rows, side="right") - 1
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        for s in np.unique(shard):
            at = np.flatnonzero(shard == s)
            out[at] = self._maps[s][rows[at] - self._starts[s]]
        return torch.from_numpy(out).to(self.device)


def _numpy(idx: Tensor | np.ndarray | list[int]) -> np.ndarray:
    return idx.cpu().numpy() if isinstance(idx, Tensor) else np.asarray(idx)


# ----------------------------------------------------------------------------------------------
# Writing and opening a shard folder


def write_part(folder: Path, part: str, n: int, image_bytes: int, read: Reader) -> list[str]:
    """Write source rows [0, n) of one part (train or test) as shards `<part>-00000.npy` plus
    `.labels.npy`, skipping shards an interrupted build finished; returns the shard names.
    read(start, stop) may return fewer rows than asked (unreadable files are left out)."""
    per_shard = max(1, SHARD_BYTES // image_bytes)
    names = []
    for k, start in enumerate(range(0, n, per_shard)):
        name = f"{part}-{k:05d}"
        if _shard_shape(folder, name) is None:  # missing, or damaged: (re)written
            x, y = read(start, min(n, start + per_shard))
            save_npy(y.astype(np.int64), folder / f"{name}.labels.npy")
            save_npy(np.ascontiguousarray(x, dtype=np.uint8), folder / f"{name}.npy")  # last: marks the shard done
        names.append(name)
    return names


def finish(folder: Path, parts: dict[str, list[str]], meta: dict) -> None:
    """The manifest: written once every shard exists, it is what makes a shard folder usable."""
    save_json({**meta, "parts": parts}, folder / MANIFEST)


def is_complete(folder: Path) -> bool:
    """Whether the folder holds a finished, intact build. A damaged one (a shard truncated or replaced, e.g. by an
    object array that only pickle could load, a manifest edited) loses its manifest, with a warning, so the
    caller builds it again (write_part redoes the bad shards only), as a damaged .pt cache is rebuilt."""
    if not (folder / MANIFEST).is_file():
        return False
    problem = _problem(folder)
    if problem is None:
        return True
    log.warning("shard cache %s is damaged (%s); rebuilding it", folder, problem)
    (folder / MANIFEST).unlink(missing_ok=True)
    return False


def _problem(folder: Path) -> str | None:
    """What is wrong with a shard folder's manifest or shards (read from headers only: cheap), or None."""
    try:
        meta = load_json(folder / MANIFEST)
    except (OSError, ValueError):
        return "unreadable manifest"
    parts = meta.get("parts") if isinstance(meta, dict) else None
    if not (isinstance(parts, dict) and "train" in parts and set(parts) <= {"train", "test"}
            and isinstance(meta.get("name"), str) and isinstance(meta.get("classes"), list)
            and isinstance(meta.get("listed"), int)):
        return "manifest of another shape"
    sizes = set()
    for part, names in parts.items():
        if not isinstance(names, list) or names != [f"{part}-{k:05d}" for k in range(len(names))]:
            return f"manifest names other {part} shards"
        for name in names:
            shape = _shard_shape(folder, name)
            if shape is None:
                return f"shard {name} is damaged"
            sizes.add(shape[1:])
    return "shards of different image sizes" if len(sizes) > 1 else None


def _shard_shape(folder: Path, name: str) -> tuple[int, ...] | None:
    """The images' shape of an intact shard (uint8 images and as many int64 labels, both complete), else None."""
    images, labels = _npy_header(folder / f"{name}.npy"), _npy_header(folder / f"{name}.labels.npy")
    if images is None or labels is None or images[1] != np.uint8 or labels[1] != np.int64:
        return None
    return images[0] if len(images[0]) == 4 and labels[0] == images[0][:1] else None


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype from a .npy header, or None where the file is missing, not .npy, cut short or not plain
    numbers (an object array: loading it would unpickle)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as f:
            reader = readers.get(np.lib.format.read_magic(f))
            if reader is None:
                return None
            shape, fortran, dtype = reader(f)
            offset = f.tell()
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if fortran or dtype.hasobject or size != offset + int(np.prod(shape)) * dtype.itemsize:
        return None
    return shape, dtype


def open_parts(folder: Path) -> tuple[dict, dict[str, tuple[ShardedImages, Tensor]]]:
    """The manifest and, per part, its images (memory-mapped) and labels (in memory: 8 bytes an image)."""
    meta = load_json(folder / MANIFEST)
    parts = {}
    for part, names in meta["parts"].items():
        labels = np.concatenate([np.load(folder / f"{name}.labels.npy", allow_pickle=False) for name in names])
        parts[part] = (ShardedImages([folder / f"{name}.npy" for name in names]), torch.from_numpy(labels))
    return meta, parts


def stream_threshold() -> int:
    """Bytes of decoded images above which `--storage auto` streams.

    PRETEXTLAB_STREAM_GB if set; else a quarter of this machine's memory, shared by the processes
    torchrun started on it (each holds its own copy of an in-memory dataset).
    """
    env = os.environ.get("PRETEXTLAB_STREAM_GB", "")
    if env:
        try:
            return int(float(env) * 2**30)
        except ValueError:
            raise UserError(f"PRETEXTLAB_STREAM_GB={env} is not a number; give a size in GiB, e.g. 8") from None
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf: assume a modest 32 GiB machine
        memory = 32 * 2**30
    return memory // 4 // local_world_size()

"""Atomic file writes: an interrupted write never leaves a half-written checkpoint or summary."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError


class WriteError(UserError, OSError):
    """A file could not be written (disk full, read-only, no permission): one line for the user, and
    still an OSError for callers that can go on without the file (the dataset cache)."""


def _atomic(path: Path, write) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, UserError):
            raise _write_error(path, e) from None
        raise


def _write_error(path: Path, e: BaseException) -> WriteError:
    """What went wrong, said once: torch.save reports a full disk only as a RuntimeError about positions."""
    import errno
    import shutil

    free = shutil.disk_usage(next((p for p in (path, *path.parents) if p.exists()), Path("/"))).free
    if getattr(e, "errno", None) == errno.ENOSPC or isinstance(e, RuntimeError) and free < 256 * 2**20:
        return WriteError(f"cannot write {path}: the disk is full ({free / 2**20:.0f} MiB free); free some space "
                          "and run the same command again (finished work is kept)")
    if isinstance(e, RuntimeError):
        return WriteError(f"cannot write {path} ({e}); check the disk and run the same command again")
    return WriteError(f"cannot write {path} ({e.strerror or e}); pass an --out you can write to")


def save_torch(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and os.replace (atomic on POSIX)."""
    _atomic(path, lambda f: torch.save(obj, f))


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True: tensors, numbers, strings and containers of them, never objects.

    Why: a checkpoint or cache handed in by someone else is a pickle, and unpickling arbitrary objects
    runs their code. Everything pretextlab saves is plain data, so anything else is refused in one line.
    """
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e):
            raise  # not a torch file at all: the caller says what it expected
        raise UserError(f"{path} holds Python objects, not only tensors and plain values; refused, since loading "
                        "them could run code (pretextlab never saves such files: use one it wrote)") from None


def save_npy(array: np.ndarray, path: Path) -> None:
    _atomic(path, lambda f: np.save(f, array))


def save_json(obj: Any, path: Path) -> None:
    _atomic(path, lambda f: f.write((json.dumps(obj, indent=2, default=str) + "\n").encode()))


def save_text(text: str, path: Path) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file: names a weights file by its bits, so runs can say which one they started from."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the with-block, so that processes building the same
    cache (the ranks of a torchrun job, two runs started together) take turns and it is built once.
    Where no lock file can be made (a read-only cache) the block runs unlocked."""
    from filelock import FileLock

    lock = FileLock(str(path))
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()

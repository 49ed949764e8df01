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


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and os.replace (atomic on POSIX)."""
    _atomic(path, lambda f: torch.save(obj, f))


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

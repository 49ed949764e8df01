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


# torch.save writes its zip entries uncompressed (stored), so a genuine file never declares much more than its own
# size; torch.load inflates every entry into memory, so a deflated zip bomb is refused from its directory first.
MAX_INFLATE = 64 * 2**20  # bytes a torch file may declare beyond twice its own size
MAX_RATIO = 100  # a compressed entry over 1 MiB that inflates more than this many times is a bomb


class UnreadableFile(UserError):
    """Not a readable torch file (truncated, damaged, another format): callers may add what to do about it."""


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True: tensors, numbers, strings and containers of them, never objects.

    Why: a checkpoint or cache handed in by someone else is a pickle, and unpickling arbitrary objects
    runs their code. Everything pretextlab saves is plain data, so anything else is refused in one line,
    never with torch's own message (it advises weights_only=False). The zip directory is checked first
    (check_zip), since torch.load inflates a zip bomb into memory before anything else can look at it.
    """
    import pickle

    path = Path(path)
    check_zip(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # every refusal of the weights-only unpickler (a global, an opcode)
        raise UserError(f"{path} holds Python objects, not only tensors and plain values; refused, since loading "
                        "them could run code (pretextlab never saves such files: use one it wrote)") from None
    except Exception:  # a user's file, damaged inside a sound zip directory: torch's errors vary
        raise _unreadable(path) from None


def check_zip(path: Path) -> None:
    """Refuse what is not a zip archive (a truncated or legacy torch file, random bytes) and a zip whose entries
    declare far more bytes than the file holds, reading only its directory."""
    import zipfile

    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            entries = z.infolist()
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e})") from None
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise _unreadable(path) from None
    declared = sum(i.file_size for i in entries)
    ratio = max((i.file_size / max(1, i.compress_size) for i in entries
                 if i.compress_type != zipfile.ZIP_STORED and i.file_size > 2**20), default=0)
    if declared > 2 * size + MAX_INFLATE or ratio > MAX_RATIO:
        raise UserError(f"{path} would inflate to {declared / 2**20:.0f} MiB from {size / 2**20:.1f} MiB (a zip "
                        "bomb?); refused: pretextlab writes checkpoints uncompressed, use one it wrote")


def _unreadable(path: Path) -> UnreadableFile:
    return UnreadableFile(f"{path} is not a readable checkpoint (truncated or damaged?); use a file pretextlab wrote")


def save_npy(array: np.ndarray, path: Path) -> None:
    _atomic(path, lambda f: np.save(f, array))


def save_json(obj: Any, path: Path) -> None:
    _atomic(path, lambda f: f.write((json.dumps(obj, indent=2, default=str) + "\n").encode()))


def save_bytes(data: bytes, path: Path) -> None:
    _atomic(path, lambda f: f.write(data))


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

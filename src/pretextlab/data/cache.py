"""Images in, uint8 tensors out: which data a run uses (DataConfig), a decode-once cache of its
source (sources.py decodes), the images' fingerprint, and the data a run opens (open_data).

Why tensors: CIFAR-10 is 150 MB as uint8, so the whole set lives in memory (on the training device)
and every batch is cut from it by indexing, as in airbench. Per-image PIL work happens once, when
the cache is built, never in the training loop. Folders too big for memory are decoded into
memory-mapped shards instead (shards.py), indexed the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import dist, hw
from ..errors import UserError
from ..io import file_lock, load_torch, save_torch
from . import shards
from .sources import (
    SOURCE_HELP,
    TORCHVISION_SOURCES,
    Dataset,
    FolderScan,
    ImageSet,
    cifar_pickle,
    folder_dataset,
    scan_folder,
    scan_split_root,
    torchvision_dataset,
)

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: plain tensors and values (1 pickled the Dataset object)
STORAGES = ("auto", "memory", "stream")



@dataclass
class DataConfig:
    """Which images, at which size, split how: shared by every run of a study."""

    source: str = "cifar10"
    fraction: float = 1.0
    val_fraction: float = 0.1
    split_seed: int = 0
    image_size: int | None = None
    cache_dir: str | None = None
    pad: int = -1  # crop translation in px; -1: image_size / 8 (4 px at 32x32)
    flip: bool = True
    storage: str = "auto"  # auto | memory | stream (memory-mapped shards): where images live, see shards.py
    test_source: str | None = None  # a separate test set (same classes): scored at the end, never chosen on
    layout: str = "auto"  # segmentation: the folder layout (masks.LAYOUTS), detected when auto
    ignore_index: int | None = None  # segmentation: the mask value left out of loss and metrics (None: from the data)

    def crop_pad(self, image_size: int) -> int:
        return self.pad if self.pad >= 0 else max(1, image_size // 8)


# Fields added after runs were first stored, left out at their default so that those runs still resume.
LATER_DATA_FIELDS = {"layout": "auto", "ignore_index": None}


def data_settings(data: DataConfig | dict[str, Any]) -> dict[str, Any]:
    """The data settings a resumed run must match (of a DataConfig, or of one stored as a dict): storage is
    left out, it never changes the numbers."""
    d = dataclasses.asdict(data) if isinstance(data, DataConfig) else data
    return {k: v for k, v in d.items() if k != "storage" and not (k in LATER_DATA_FIELDS and v == LATER_DATA_FIELDS[k])}


def default_cache_dir() -> Path:
    return Path(os.environ.get("PRETEXTLAB_CACHE", Path.home() / ".cache" / "pretextlab"))


# ----------------------------------------------------------------------------------------------
# The decode-once cache


def load_dataset(source: str, image_size: int | None = None, cache_dir: Path | None = None,
                 storage: str = "auto") -> Dataset:
    """Load any supported source, decoding once and re-using the uint8 cache afterwards.

    storage: memory (one tensor), stream (memory-mapped shards) or auto: stream when the decoded
    images exceed shards.stream_threshold(), or when only shards of this source are cached.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    if image_size is not None and not 8 <= image_size <= 1024:
        raise UserError(f"--image-size {image_size} is out of range; use a size between 8 and 1024 pixels")
    if storage not in STORAGES:
        raise UserError(f"--storage {storage} is unknown; use auto, memory or stream")
    key_src = source.lower()
    if key_src in TORCHVISION_SOURCES and not Path(source).exists():
        ds = _cached(cache_dir, key_src, f"{key_src}|{image_size}", storage,
                     build=lambda: torchvision_dataset(key_src, cache_dir, image_size))
        return _fingerprinted(ds, key_src)
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"--data {source}: no such file or directory; {SOURCE_HELP}")
    if not path.is_dir():
        raise UserError(f"--data {source} is a file, not a folder; {SOURCE_HELP}")
    if (path / "data_batch_1").exists() or (path / "meta").exists() and (path / "train").is_file():
        listing, files = _listing(path, recursive=False)
        return _fingerprinted(_cached(cache_dir, path.name, f"pickle|{listing}|{image_size}", storage,
                                      build=lambda: cifar_pickle(path, image_size)), files)
    if (path / "train").is_dir():
        listing, files = _listing(path, recursive=True)
        return _fingerprinted(_told(_cached(cache_dir, path.name, f"split|{listing}|{image_size}", storage,
                                            scan=lambda: scan_split_root(path, image_size)), path), files)
    listing, files = _listing(path, recursive=True)
    ds = _cached(cache_dir, path.name, f"folder|{listing}|{image_size}", storage,
                 scan=lambda: {"train": scan_folder(path, image_size)})
    if path.name in ("train", "test"):  # ".../cifar10/train" is better named by its parent
        ds.name = f"{path.resolve().parent.name}/{path.name}"
    return _fingerprinted(_told(ds, path), files)


def _fingerprinted(ds: Dataset, files: str) -> Dataset:
    """ds with its fingerprint: classes, image counts and a hash of every file's name and size (not its time,
    so that a copy of the same images elsewhere matches). Runs and studies record it and refuse to go on
    when it changes: images added under a half-finished study would silently change its splits."""
    ds.fingerprint = {"classes": len(ds.classes), "images": len(ds.train) + len(ds.test or ()), "files": files}
    return ds


def describe_fingerprint(fp: dict) -> str:
    return f"{fp.get('classes')} classes, {fp.get('images')} images" + (
        f", test {describe_fingerprint(fp['test'])}" if fp.get("test") else "")


def check_same_data(stored: dict | None, current: dict | None, what: str) -> None:
    """Refuse, in one line, images other than those `what` names ("the run in X began with"): a run or study
    whose images changed under it, a checkpoint evaluated on other images."""
    if stored and current and stored != current:
        same = describe_fingerprint(stored) == describe_fingerprint(current)
        raise UserError(f"the images of --data differ from those {what} (then "
                        f"{describe_fingerprint(stored)}, now {describe_fingerprint(current)}"
                        f"{'; same counts, other files' if same else ''}); restore them, or use another --out to "
                        "start afresh")


def check_out_outside_data(data: DataConfig, out: Path) -> None:
    """An --out inside --data would be read back as images (a new class, or a changed folder): refused."""
    out = Path(out).expanduser().resolve()
    for flag, source in (("--data", data.source), ("--test-data", data.test_source)):
        if source and Path(source).expanduser().is_dir():
            root = Path(source).expanduser().resolve()
            if out == root or root in out.parents:
                raise UserError(f"--out {out} is inside {flag} {source}; its files would be read as images: put "
                                "--out outside the data folder")


def _told(ds: Dataset, path: Path) -> Dataset:
    """Say how many files of a folder were left out, every time it is loaded (from the cache too)."""
    if ds.skipped:
        log.warning("%s: %d unreadable or non-image file(s) skipped", path, ds.skipped)
    return ds


def _listing(path: Path, recursive: bool) -> tuple[str, str]:
    """Two hashes of a folder's files: of every name, size and mtime (the cache key: any change invalidates
    the cache), and of every name and size only (the fingerprint: a copy elsewhere matches)."""
    key, fingerprint = hashlib.sha256(), hashlib.sha256()
    files = sorted(path.rglob("*") if recursive else path.iterdir())
    for f in files:
        if f.is_file() and not f.name.startswith("."):
            st = f.stat()
            key.update(f"{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            fingerprint.update(f"{f.relative_to(path).as_posix()}|{st.st_size}\n".encode())
    return key.hexdigest(), fingerprint.hexdigest()[:16]


def _cached(cache_dir: Path, name: str, key: str, storage: str, build: Callable[[], Dataset] | None = None,
            scan: Callable[[], dict[str, "FolderScan"]] | None = None) -> Dataset:
    """The dataset under `key` from its cache (a .pt file, or a folder of shards), else decoded and cached.

    build() decodes a source into memory; scan() reads an image folder's headers only, so that a
    folder too big for memory is decoded straight into shards.
    """
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{key}".encode()).hexdigest()[:16]
    file, folder = cache_dir / f"{name}-{digest}.pt", cache_dir / f"{name}-{digest}.shards"
    with file_lock(cache_dir / f".{name}-{digest}.lock"):  # one process decodes, the others wait, then read
        if storage != "stream" and file.exists():
            try:
                return _read_cache(file)
            except Exception:  # a damaged cache is rebuilt, never trusted
                log.warning("cache %s is unreadable; rebuilding it", file)
        if storage != "memory" and shards.is_complete(folder):
            return _open_shards(folder)
        scans = scan() if scan else None
        if scans and _streams(storage, sum(s.nbytes for s in scans.values())):
            return _write_shards(folder, name, scans["train"].classes, _scan_readers(scans),
                                 sum(s.listed for s in scans.values()))
        dataset = folder_dataset(name, scans) if scans else build()
        if _streams(storage, sum(p.images.numel() for p in (dataset.train, dataset.test) if p is not None)):
            return _write_shards(folder, dataset.name, dataset.classes, _memory_readers(dataset),
                                 len(dataset.train) + len(dataset.test or ()) + dataset.skipped)
        _save_cache(dataset, file)
        return dataset


def _streams(storage: str, nbytes: int) -> bool:
    return storage == "stream" or storage == "auto" and nbytes > shards.stream_threshold()


def _read_cache(file: Path) -> Dataset:
    """A cached dataset: plain tensors and values only (read with weights_only), so a replaced cache
    file cannot run code."""
    d = load_torch(file)
    parts = {k: ImageSet(d[k]["images"], d[k]["labels"]) if d[k] is not None else None for k in ("train", "test")}
    return Dataset(d["name"], list(d["classes"]), parts["train"], parts["test"], int(d["skipped"]), str(file))


def _save_cache(dataset: Dataset, file: Path) -> None:
    plain = {"name": dataset.name, "classes": list(dataset.classes), "skipped": dataset.skipped,
             **{k: {"images": p.images, "labels": p.labels} if p is not None else None
                for k, p in (("train", dataset.train), ("test", dataset.test))}}
    try:
        save_torch(plain, file)
        dataset.cache_file = str(file)
    except OSError as e:
        log.warning("could not write the cache %s (%s); continuing without it", file, e)


def _write_shards(folder: Path, name: str, classes: list[str], readers: dict[str, tuple[int, int, shards.Reader]],
                  listed: int) -> Dataset:
    """Decode (or copy) every part into shards, then write the manifest: only then is the build complete."""
    log.info("decoding %s into memory-mapped shards in %s", name, folder)
    parts = {part: shards.write_part(folder, part, n, image_bytes, read)
             for part, (n, image_bytes, read) in readers.items()}
    shards.finish(folder, parts, {"name": name, "classes": classes, "listed": listed})
    return _open_shards(folder)


def _open_shards(folder: Path) -> Dataset:
    meta, parts = shards.open_parts(folder)
    sets = {part: ImageSet(images, labels) for part, (images, labels) in parts.items()}
    if not len(sets["train"]):
        raise UserError(f"{meta['name']} holds no readable images; {SOURCE_HELP}")
    skipped = meta["listed"] - sum(len(s) for s in sets.values())
    return Dataset(meta["name"], meta["classes"], sets["train"], sets.get("test"), skipped, str(folder))


def _memory_readers(ds: Dataset) -> dict[str, tuple[int, int, shards.Reader]]:
    """Rows of an in-memory dataset, for copying it into shards."""
    parts = {"train": ds.train, **({"test": ds.test} if ds.test is not None else {})}
    return {part: (len(s), s.images[0].numel(), lambda a, b, s=s: (s.images[a:b].numpy(), s.labels[a:b].numpy()))
            for part, s in parts.items()}


def _scan_readers(scans: dict[str, "FolderScan"]) -> dict[str, tuple[int, int, shards.Reader]]:
    """Files of scanned folders, for decoding them into shards."""
    return {part: (len(s.files), s.image_bytes, s.decode) for part, s in scans.items()}


def data_facts(ds: Dataset) -> dict[str, Any]:
    """Where a run's images lived and what they were (recorded in config.json's `resolved`): storage and
    cache location never change the numbers and are not compared; the fingerprint is (runs.check_same_run_data)."""
    return {"storage": ds.storage, "cache": ds.cache_file, "data_fingerprint": ds.fingerprint}


def open_data(data: DataConfig, device: str, dataset: Dataset | None,
              load: Callable[[DataConfig], Dataset] | None = None) -> tuple[torch.device, Dataset]:
    """Threads, device (this rank's, under torchrun) and the (cached) dataset, read by `load` (a downstream
    task's reader; default: labelled image folders): what every run needs before it builds its model."""
    hw.setup_threads()
    dev = dist.init(hw.pick_device(device))
    return dev, dataset or (load or load_data)(data)


def load_data(data: DataConfig) -> Dataset:
    """The source, with the separate test set attached when one is given (--test-data): it must have the
    same classes and is read at the training images' size."""
    ds = load_dataset(data.source, data.image_size, data.cache_dir, data.storage)
    if not data.test_source:
        return ds
    if ds.test is not None:
        raise UserError(f"--data {data.source} has a test/ split already; drop --test-data, or give the train/ "
                        "folder as --data")
    test = load_dataset(data.test_source, ds.image_size, data.cache_dir, data.storage)
    if test.classes != ds.classes or test.channels != ds.channels:
        raise UserError(f"--test-data {data.test_source} has classes {test.classes} ({test.channels} channels), "
                        f"--data has {ds.classes} ({ds.channels}); give a test set of the same classes")
    if test.test is not None:
        raise UserError(f"--test-data {data.test_source} has train/ and test/ folders; give its test/ folder")
    return dataclasses.replace(ds, test=test.train, fingerprint={**ds.fingerprint, "test": test.fingerprint})

"""Images in, uint8 tensors out: sources, a decode-once cache, stratified splits and label fractions,
and augmentation on whole batches.

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
import pickle
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import dist, hw, shards
from .errors import UserError
from .io import file_lock, save_torch
from .shards import ShardedImages

log = logging.getLogger(__name__)

CACHE_VERSION = 1
STORAGES = ("auto", "memory", "stream")
TORCHVISION_SOURCES = ("cifar10", "cifar100", "fashion-mnist", "mnist", "stl10")
SOURCE_HELP = (
    "give an image folder (one sub-folder per class), a root with train/ and test/ sub-folders, "
    "a cifar-10-batches-py folder, or one of: " + ", ".join(TORCHVISION_SOURCES)
)


@dataclass
class ImageSet:
    """A labelled set of images: uint8 (N, C, H, W) (a tensor, or ShardedImages on disk) and int64 (N,)."""

    images: Tensor | ShardedImages
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    """What a source yields: class names, a train set and, when the source has one, a test set."""

    name: str
    classes: list[str]
    train: ImageSet
    test: ImageSet | None = None
    skipped: int = 0  # unreadable files left out when decoding a folder
    cache_file: str | None = None

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def storage(self) -> str:
        """memory (one tensor) or stream (memory-mapped shards read per batch)."""
        return "stream" if isinstance(self.train.images, ShardedImages) else "memory"


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

    def crop_pad(self, image_size: int) -> int:
        return self.pad if self.pad >= 0 else max(1, image_size // 8)


def data_settings(data: DataConfig) -> dict[str, Any]:
    """The data settings a resumed run must match: storage is left out, it never changes the numbers."""
    return {k: v for k, v in dataclasses.asdict(data).items() if k != "storage"}


def rows(images: Tensor | ShardedImages, idx: Tensor) -> Tensor | ShardedImages:
    """images[idx] for a tensor; a lazy view for shards, which are not read into memory at once."""
    return images.rows(idx) if isinstance(images, ShardedImages) else images[idx]


def default_cache_dir() -> Path:
    return Path(os.environ.get("PRETEXTLAB_CACHE", Path.home() / ".cache" / "pretextlab"))


# ----------------------------------------------------------------------------------------------
# Sources


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
        return _cached(cache_dir, key_src, f"{key_src}|{image_size}", storage,
                       build=lambda: _torchvision(key_src, cache_dir, image_size))
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"--data {source}: no such file or directory; {SOURCE_HELP}")
    if not path.is_dir():
        raise UserError(f"--data {source} is a file, not a folder; {SOURCE_HELP}")
    if (path / "data_batch_1").exists() or (path / "meta").exists() and (path / "train").is_file():
        listing = _listing(path, recursive=False)
        return _cached(cache_dir, path.name, f"pickle|{listing}|{image_size}", storage,
                       build=lambda: _cifar_pickle(path, image_size))
    if (path / "train").is_dir():
        listing = _listing(path, recursive=True)
        return _cached(cache_dir, path.name, f"split|{listing}|{image_size}", storage,
                       scan=lambda: _scan_split_root(path, image_size))
    listing = _listing(path, recursive=True)
    ds = _cached(cache_dir, path.name, f"folder|{listing}|{image_size}", storage,
                 scan=lambda: {"train": _scan_folder(path, image_size)})
    if path.name in ("train", "test"):  # ".../cifar10/train" is better named by its parent
        ds.name = f"{path.resolve().parent.name}/{path.name}"
    return ds


def _listing(path: Path, recursive: bool) -> str:
    """A hash of every file's name, size and mtime: any change to the folder invalidates the cache."""
    h = hashlib.sha256()
    files = sorted(path.rglob("*") if recursive else path.iterdir())
    for f in files:
        if f.is_file() and not f.name.startswith("."):
            st = f.stat()
            h.update(f"{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


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
                d = torch.load(file, weights_only=False)
                d.cache_file = str(file)
                return d
            except Exception:  # a damaged cache is rebuilt, never trusted
                log.warning("cache %s is unreadable; rebuilding it", file)
        if storage != "memory" and shards.is_complete(folder):
            return _open_shards(folder)
        scans = scan() if scan else None
        if scans and _streams(storage, sum(s.nbytes for s in scans.values())):
            return _write_shards(folder, name, scans["train"].classes, _scan_readers(scans),
                                 sum(s.listed for s in scans.values()))
        dataset = _folder_dataset(name, scans) if scans else build()
        if _streams(storage, sum(p.images.numel() for p in (dataset.train, dataset.test) if p is not None)):
            return _write_shards(folder, dataset.name, dataset.classes, _memory_readers(dataset),
                                 len(dataset.train) + len(dataset.test or ()) + dataset.skipped)
        _save_cache(dataset, file)
        return dataset


def _streams(storage: str, nbytes: int) -> bool:
    return storage == "stream" or storage == "auto" and nbytes > shards.stream_threshold()


def _save_cache(dataset: Dataset, file: Path) -> None:
    try:
        save_torch(dataset, file)
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


def _torchvision(name: str, cache_dir: Path, image_size: int | None) -> Dataset:
    from torchvision import datasets

    root = cache_dir / "downloads"
    cls = {
        "cifar10": datasets.CIFAR10,
        "cifar100": datasets.CIFAR100,
        "fashion-mnist": datasets.FashionMNIST,
        "mnist": datasets.MNIST,
        "stl10": datasets.STL10,
    }[name]

    def get(train: bool):
        kw = {"split": "train" if train else "test"} if name == "stl10" else {"train": train}
        return cls(str(root), download=True, **kw)

    try:
        parts = [get(True), get(False)]
    except Exception as e:  # URLError, RuntimeError, ...: all mean "not here and not downloadable"
        raise UserError(
            f"could not download {name} into {root} ({type(e).__name__}); without internet, copy the data "
            f"there or pass --data a local copy (image folder, or cifar-10-batches-py)"
        ) from None
    sets = []
    for p in parts:
        data = torch.as_tensor(np.asarray(p.data))
        if data.ndim == 3:  # (N, H, W) grayscale
            data = data[:, None]
        elif data.shape[-1] == 3:  # (N, H, W, 3)
            data = data.permute(0, 3, 1, 2)
        labels = torch.as_tensor(np.asarray(getattr(p, "targets", None) if hasattr(p, "targets") else p.labels))
        sets.append(ImageSet(_resize_tensor(data.contiguous(), image_size), labels.long()))
    return Dataset(name, list(parts[0].classes), sets[0], sets[1])


def _cifar_pickle(path: Path, image_size: int | None) -> Dataset:
    """The python pickle layout of CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test)."""

    def read(f: Path) -> dict:
        try:
            with open(f, "rb") as fh:
                return pickle.load(fh, encoding="latin1")
        except Exception:
            raise UserError(f"{f} is not a readable CIFAR pickle; re-extract the archive") from None

    if (path / "data_batch_1").exists():
        train_files = sorted(path.glob("data_batch_*"))
        test_files = [path / "test_batch"] if (path / "test_batch").exists() else []
        label_key, classes = "labels", read(path / "batches.meta")["label_names"]
    else:
        train_files, test_files = [path / "train"], [path / "test"] if (path / "test").exists() else []
        label_key, classes = "fine_labels", read(path / "meta")["fine_label_names"]

    def build(files: list[Path]) -> ImageSet:
        batches = [read(f) for f in files]
        data = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([b[label_key] for b in batches])
        return ImageSet(_resize_tensor(torch.as_tensor(data), image_size), torch.as_tensor(labels).long())

    return Dataset(path.name, list(classes), build(train_files), build(test_files) if test_files else None)


@dataclass
class FolderScan:
    """Pass 1 over an ImageFolder (headers only): its readable files, classes, colour mode and size.

    Enough to know how big the decoded set will be before decoding it (pass 2, `decode`).
    """

    path: Path
    classes: list[str]
    files: list[tuple[Path, int]]  # (file, class index) of every readable header
    mode: str  # L | RGB
    image_size: int
    listed: int  # files looked at, readable or not

    @property
    def image_bytes(self) -> int:
        return (1 if self.mode == "L" else 3) * self.image_size**2

    @property
    def nbytes(self) -> int:
        return len(self.files) * self.image_bytes

    def decode(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pass 2 over files[start:stop]: convert and resize once; uint8 (n, C, H, W) images and their
        labels, leaving out files that fail here."""
        from PIL import Image, UnidentifiedImageError

        size = self.image_size
        arrays, labels = [], []
        for f, ci in self.files[start:stop]:
            try:
                with Image.open(f) as im:
                    im = im.convert(self.mode)
                    if im.size != (size, size):
                        im = _resize_pil(im, size)
                    arrays.append(np.asarray(im))
                    labels.append(ci)
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                pass
        empty = (0, size, size) if self.mode == "L" else (0, size, size, 3)
        x = np.stack(arrays) if arrays else np.empty(empty, np.uint8)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x), np.array(labels, dtype=np.int64)


def _scan_split_root(path: Path, image_size: int | None) -> dict[str, FolderScan]:
    """root/train and, if present, root/test (with train's classes, size and colour mode)."""
    train = _scan_folder(path / "train", image_size)
    if not (path / "test").is_dir():
        return {"train": train}
    test = _scan_folder(path / "test", train.image_size, classes=train.classes, channels=1 if train.mode == "L" else 3)
    return {"train": train, "test": test}


def _scan_folder(path: Path, image_size: int | None, classes: list[str] | None = None,
                 channels: int | None = None) -> FolderScan:
    """An ImageFolder layout: each sub-folder is a class, each readable image in it an example."""
    from PIL import Image, UnidentifiedImageError

    found = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise UserError(f"{path} has no class sub-folders; {SOURCE_HELP}")
    classes = classes or found
    unknown = set(found) - set(classes)
    if unknown:
        raise UserError(f"{path} has class folders not in train/: {sorted(unknown)}; make test/ use train/'s classes")
    files: list[tuple[Path, int]] = []
    for ci, c in enumerate(classes):
        if not (path / c).is_dir():
            continue
        files += [(f, ci) for f in sorted((path / c).rglob("*")) if f.is_file() and not f.name.startswith(".")]

    # Headers only: sizes and modes decide the common size and channel count.
    ok, sizes, gray = [], [], True
    for f, ci in files:
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
                gray &= im.mode in ("L", "1", "I", "I;16", "F")
            ok.append((f, ci))
        except (UnidentifiedImageError, OSError, ValueError):
            pass
    counts = Counter(ci for _, ci in ok)
    empty = [c for ci, c in enumerate(classes) if counts[ci] == 0 and (path / c).is_dir()]
    if empty:
        raise UserError(f"class folder {path / empty[0]} has no readable images; add images or remove the folder")
    mode = "L" if (channels == 1 if channels else gray) else "RGB"
    if image_size is None:
        common = Counter(sizes).most_common(1)[0][0]
        image_size = common[0] if common[0] == common[1] else int(np.median([min(s) for s in sizes]))
    return FolderScan(path, list(classes), ok, mode, image_size, len(files))


def _folder_dataset(name: str, scans: dict[str, FolderScan]) -> Dataset:
    """Decode scanned folders (train, maybe test) into memory."""
    sets, skipped = {}, 0
    for part, scan in scans.items():
        x, y = scan.decode()
        if scan.listed > len(y):
            log.warning("skipped %d unreadable or non-image file(s) in %s", scan.listed - len(y), scan.path)
        if not len(y):
            raise UserError(f"{scan.path} holds no readable images; {SOURCE_HELP}")
        sets[part], skipped = ImageSet(torch.as_tensor(x), torch.as_tensor(y)), skipped + scan.listed - len(y)
    return Dataset(name, scans["train"].classes, sets["train"], sets.get("test"), skipped=skipped)


def _resize_pil(im, size: int):
    """Shorter side to `size`, then a centre crop: keeps the aspect ratio, gives square tensors."""
    from PIL import Image

    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def _resize_tensor(x: Tensor, size: int | None) -> Tensor:
    if size is None or x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------------------------
# Splits and label fractions


def stratified_split(labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Carve a validation split with the same class proportions as the whole, reproducible by seed."""
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction {val_fraction} must be between 0 and 1 (exclusive)")
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def check_fraction(fraction: float, flag: str = "--fraction") -> None:
    """A label fraction must lie in (0, 1]; checked before any work starts, wherever one is given."""
    if not 0 < fraction <= 1:
        raise UserError(f"{flag} {fraction} is outside (0, 1]; use e.g. 1.0, 0.5 or 0.1")


def label_fraction(labels: Tensor, fraction: float, seed: int, classes: list[str] | None = None) -> Tensor:
    """Indices (into `labels`) of a stratified, seeded subset holding `fraction` of each class.

    Nested by construction: every class is shuffled once with the seed and a fraction takes a prefix
    of that order, so the 10% subset lies inside the 50% subset for the same seed.
    """
    check_fraction(fraction, "fraction")
    g = torch.Generator().manual_seed(10_000 + seed)
    chosen = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * fraction))
        if k < 1:
            name = classes[c] if classes else str(c)
            need = 1 / len(idx)
            raise UserError(
                f"fraction {fraction} leaves class '{name}' ({len(idx)} images) with no labelled example; "
                f"use a fraction of at least {need:.4g}"
            )
        chosen.append(idx[:k])
    return torch.cat(chosen).sort().values


@dataclass
class Splits:
    """The data a run sees, all on one device: labelled train subset, full train pool, validation."""

    classes: list[str]
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_pool: Tensor  # every training image (labels unused): what pretext tasks learn from
    mean: Tensor
    std: Tensor
    indices: dict[str, list[int]] = field(default_factory=dict)
    test: ImageSet | None = None

    def to(self, device: torch.device) -> "Splits":
        for k in ("x_train", "y_train", "x_val", "y_val", "x_pool", "mean", "std"):
            setattr(self, k, getattr(self, k).to(device))
        return self


def make_splits(ds: Dataset, fraction: float = 1.0, seed: int = 0, val_fraction: float = 0.1,
                split_seed: int = 0) -> Splits:
    """Validation split (fixed by split_seed, shared by all runs) then a label fraction (by seed)."""
    tr, va = stratified_split(ds.train.labels, val_fraction, split_seed)
    sub = tr[label_fraction(ds.train.labels[tr], fraction, seed, ds.classes)]
    pool = rows(ds.train.images, tr)
    mean, std = channel_stats(pool)
    return Splits(
        classes=ds.classes, x_train=rows(ds.train.images, sub), y_train=ds.train.labels[sub],
        x_val=rows(ds.train.images, va), y_val=ds.train.labels[va], x_pool=pool, mean=mean, std=std,
        indices={"train": sub.tolist(), "val": va.tolist()}, test=ds.test,
    )


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std in [0, 1] units, from the training images (chunked: no float copy)."""
    s = torch.zeros(x.shape[1], dtype=torch.float64)
    s2 = torch.zeros_like(s)
    for chunk in x.split(4096):
        c = chunk.double().div_(255)
        s += c.sum((0, 2, 3))
        s2 += (c * c).sum((0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    std = (s2 / n - mean**2).clamp_min(1e-12).sqrt()
    return mean.float(), std.float().clamp_min(1e-3)


# ----------------------------------------------------------------------------------------------
# Batched augmentation and normalisation


def crop_at(x: Tensor, top: Tensor, left: Tensor, h: int, w: int) -> Tensor:
    """Cut an (h, w) window at a per-image (top, left) from every image of a batch, in one gather."""
    rows = top.to(x.device)[:, None] + torch.arange(h, device=x.device)  # (B, h)
    cols = left.to(x.device)[:, None] + torch.arange(w, device=x.device)  # (B, w)
    return _gather(x, rows, cols)


def _gather(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """out[b, :, i, j] = x[b, :, rows[b, i], cols[b, j]]: one advanced-indexing gather."""
    b = torch.arange(x.shape[0], device=x.device)[:, None, None]
    out = x[b, :, rows[:, :, None], cols[:, None, :]]  # (B, h, w, C)
    return out.permute(0, 3, 1, 2)  # NCHW view with channels-last strides


def _reflect(i: Tensor, n: int) -> Tensor:
    """Index into a length-n axis as if it were reflect-padded (torch's 'reflect': edge not repeated)."""
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def random_crop(x: Tensor, pad: int, g: torch.Generator) -> Tensor:
    """Pad-and-crop translation for a whole batch, the standard CIFAR augmentation.

    Equivalent to reflect-padding by `pad` and cropping at a random offset, but done as one gather
    of reflected indices: no padded copy and no uint8 -> float -> uint8 round trip.
    """
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(x.device)
    rows = _reflect(dy[:, None] + torch.arange(h, device=x.device) - pad, h)
    cols = _reflect(dx[:, None] + torch.arange(w, device=x.device) - pad, w)
    return _gather(x, rows, cols)


def random_flip(x: Tensor, g: torch.Generator) -> Tensor:
    flip = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def augment(x: Tensor, g: torch.Generator, pad: int = 4, flip: bool = True) -> Tensor:
    """The standard CIFAR augmentation (random translation by up to `pad` px, horizontal flip)."""
    x = random_crop(x, pad, g)
    return random_flip(x, g) if flip else x


def normalize(x: Tensor, mean: Tensor, std: Tensor, channels_last: bool = False) -> Tensor:
    """uint8 -> float, standardised with the training set's channel statistics."""
    x = x.to(torch.float32, copy=True).div_(255).sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def data_facts(ds: Dataset) -> dict[str, Any]:
    """Where a run's images lived (recorded in config.json's `resolved`, never compared: storage and
    cache location do not change the numbers)."""
    return {"storage": ds.storage, "cache": ds.cache_file}


def open_data(data: DataConfig, device: str, dataset: Dataset | None) -> tuple[torch.device, Dataset]:
    """Threads, device (this rank's, under torchrun) and the (cached) dataset: what every run needs
    before it builds its model."""
    hw.setup_threads()
    dev = dist.init(hw.pick_device(device))
    return dev, dataset or load_dataset(data.source, data.image_size, data.cache_dir, data.storage)

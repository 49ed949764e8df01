"""Sources decoded into uint8 tensors: image folders (one sub-folder per class, or train/ and test/
roots), torchvision's CIFAR pickles, and torchvision's downloadable datasets.

Per-image PIL work happens here, once, when data.load_dataset builds its cache; training only
ever indexes the tensors. Images of mixed sizes are resized (shorter side, centre crop) to one size.
"""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .shards import ShardedImages

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
    fingerprint: dict | None = None  # what the images were (data.fingerprint): a run notices when they change
    val: ImageSet | None = None  # a validation split the source provides (segmentation: data.masks)
    ignore_index: int | None = None  # a mask value left out of the loss and the metrics (segmentation)

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


def rows(images: Tensor | ShardedImages, idx: Tensor) -> Tensor | ShardedImages:
    """images[idx] for a tensor; a lazy view for shards, which are not read into memory at once."""
    return images.rows(idx) if isinstance(images, ShardedImages) else images[idx]


def torchvision_dataset(name: str, cache_dir: Path, image_size: int | None) -> Dataset:
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
        sets.append(ImageSet(resize_tensor(data.contiguous(), image_size), labels.long()))
    return Dataset(name, list(parts[0].classes), sets[0], sets[1])


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR batch holds (dicts, lists, strings, bytes, numpy arrays) and nothing else:
    a pickle that names any other global (a function to call) is refused, so a crafted file runs no code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"holds a reference to {module}.{name}, which a CIFAR batch never does; "
                                         "refused (it could run code): re-extract the original archive")
        return super().find_class(module, name)


def cifar_pickle(path: Path, image_size: int | None) -> Dataset:
    """The python pickle layout of CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test)."""

    def read(f: Path) -> dict:
        try:
            with open(f, "rb") as fh:
                return _PlainUnpickler(fh, encoding="latin1").load()
        except pickle.UnpicklingError as e:
            raise UserError(f"{f}: {e}") from None
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
        return ImageSet(resize_tensor(torch.as_tensor(data), image_size), torch.as_tensor(labels).long())

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
                    im = to_mode(im, self.mode)
                    if im.size != (size, size):
                        im = resize_pil(im, size)
                    arrays.append(np.asarray(im))
                    labels.append(ci)
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
                pass
        empty = (0, size, size) if self.mode == "L" else (0, size, size, 3)
        x = np.stack(arrays) if arrays else np.empty(empty, np.uint8)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x), np.array(labels, dtype=np.int64)


def scan_split_root(path: Path, image_size: int | None) -> dict[str, FolderScan]:
    """root/train and, if present, root/test (with train's classes, size and colour mode)."""
    train = scan_folder(path / "train", image_size)
    if not (path / "test").is_dir():
        return {"train": train}
    test = scan_folder(path / "test", train.image_size, classes=train.classes, channels=1 if train.mode == "L" else 3)
    return {"train": train, "test": test}


def scan_folder(path: Path, image_size: int | None, classes: list[str] | None = None,
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
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
            pass  # counted and reported as skipped
    counts = Counter(ci for _, ci in ok)
    empty = [c for ci, c in enumerate(classes) if counts[ci] == 0 and (path / c).is_dir()]
    if empty:
        raise UserError(f"class folder {path / empty[0]} has no readable images; add images or remove the folder")
    mode = "L" if (channels == 1 if channels else gray) else "RGB"
    if image_size is None:
        common = Counter(sizes).most_common(1)[0][0]
        image_size = common[0] if common[0] == common[1] else int(np.median([min(s) for s in sizes]))
    return FolderScan(path, list(classes), ok, mode, image_size, len(files))


def folder_dataset(name: str, scans: dict[str, FolderScan]) -> Dataset:
    """Decode scanned folders (train, maybe test) into memory."""
    sets, skipped = {}, 0
    for part, scan in scans.items():
        x, y = scan.decode()
        if not len(y):
            raise UserError(f"{scan.path} holds no readable images; {SOURCE_HELP}")
        sets[part], skipped = ImageSet(torch.as_tensor(x), torch.as_tensor(y)), skipped + scan.listed - len(y)
    return Dataset(name, scans["train"].classes, sets["train"], sets.get("test"), skipped=skipped)


WIDE_GRAY = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # Pillow's modes of 16-bit, 32-bit and float grayscale


def to_mode(im, mode: str):
    """im as 8-bit L or RGB. Pillow's convert clips wider grayscale to 0..255, which turns a 16-bit PNG almost
    white; such images are scaled to 8 bits instead: 16-bit files (and 32-bit values above 255) by /257, floats
    of at most 1 by 255, 32-bit values that fit in 8 bits as they are."""
    from PIL import Image

    if im.mode not in WIDE_GRAY:
        return im.convert(mode)
    a = np.asarray(im, dtype=np.float64)
    top = a.max(initial=0.0)
    scale = 255 / 65535 if im.mode.startswith("I;16") or top > 255 else 255.0 if im.mode == "F" and top <= 1 else 1.0
    gray = Image.fromarray(np.clip(np.round(a * scale), 0, 255).astype(np.uint8), "L")
    return gray.convert(mode)


def resize_pil(im, size: int):
    """Shorter side to `size`, then a centre crop: keeps the aspect ratio, gives square tensors."""
    from PIL import Image

    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def resize_tensor(x: Tensor, size: int | None) -> Tensor:
    if size is None or x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)

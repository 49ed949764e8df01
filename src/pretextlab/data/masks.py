"""Semantic segmentation data: folders of images and their per-pixel label masks, decoded into uint8 tensors.

Why a module of its own: a segmentation label is an image too (one class index per pixel), so the pairing of
each image with its mask, the mask's encoding (palette, grayscale, 0/255 binary, colour-coded RGB), the value
that marks unlabelled pixels, and resizing that never blends two labels all need rules that class folders
(sources.py) never had. What comes out is the same `sources.Dataset` a classifier reads, with masks as labels:
`ImageSet(images=uint8 (N, 3, H, W), labels=uint8 (N, H, W))`, a `val` split where the source has one, and
`ignore_index`, the mask value to leave out of the loss and the metrics.

Three folder layouts are read (detect_layout tells which one a root has):

- images-masks: root/images/ and root/masks/, each image paired with the mask of the same file stem; or
  images/{train,val,test}/ with masks/{train,val,test}/.
- segnet: train/ + trainannot/, val/ + valannot/, optionally test/ + testannot/ (SegNet's CamVid).
- voc: Pascal VOC, JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/{train,val}.txt, in the root,
  in root/VOC2012/ or in root/VOCdevkit/VOC2012/.

Every file is decoded with PIL once per call (CamVid's 468 pairs take seconds); nothing in the files is executed, and no
symbolic link is followed out of the root.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .cache import _fingerprinted, _listing
from .sources import Dataset, ImageSet, to_mode

log = logging.getLogger(__name__)

LAYOUTS = ("images-masks", "segnet", "voc")
LAYOUT_HELP = {
    "images-masks": "images-masks (images/ and masks/ holding files of the same stems, or images/{train,val,test}/ "
                    "and masks/{train,val,test}/)",
    "segnet": "segnet (train/ + trainannot/, val/ + valannot/, optionally test/ + testannot/, same file names)",
    "voc": "voc (JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/train.txt and val.txt, in the root, "
           "in VOC2012/ or in VOCdevkit/VOC2012/)",
}
SPLITS = ("train", "val", "test")
VOID_NAMES = ("void", "unlabelled", "unlabeled", "ignore")
VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]
# SegNet's 11-class CamVid (Brostow et al. 2009; Badrinarayanan et al. 2017): its distribution has no classes.txt;
# value 11 marks unlabelled pixels. Taken for a segnet root named camvid* that has no classes.txt of its own.
CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign/symbol", "fence", "car", "pedestrian",
                  "bicyclist", "unlabelled"]
COLOUR_MAP_FILES = ("colors.txt", "colormap.txt")
COLOUR_LINE = "one line per colour: `name r g b`, e.g. `road 128 64 128`"
INDEX_MODES = ("P", "L", "1", "PA", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N")


def layout_help() -> str:
    return "; ".join(LAYOUT_HELP[k] for k in LAYOUTS)


# ----------------------------------------------------------------------------------------------
# Layouts: which image goes with which mask


def _voc_base(root: Path) -> Path | None:
    """The folder that holds VOC's JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/train.txt."""
    for base in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if ((base / "JPEGImages").is_dir() and (base / "SegmentationClass").is_dir()
                and (base / "ImageSets" / "Segmentation" / "train.txt").is_file()):
            return base
    return None


def detect_layout(root: Path) -> str:
    """Which of LAYOUTS `root` has; a UserError naming every layout when none (or more than one) matches."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; give a segmentation root in one of these layouts: {layout_help()}")
    found = [name for name, hit in (
        ("voc", _voc_base(root) is not None),
        ("segnet", (root / "train").is_dir() and (root / "trainannot").is_dir()),
        ("images-masks", (root / "images").is_dir() and (root / "masks").is_dir()),
    ) if hit]
    if not found:
        raise UserError(f"{root} matches no segmentation layout; arrange it as one of: {layout_help()}")
    if len(found) > 1:
        raise UserError(f"{root} looks like both {found[0]} and {found[1]}; pass layout={found[0]!r} or "
                        f"layout={found[1]!r} to choose")
    return found[0]


def _image_suffixes() -> set[str]:
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def _files_by_stem(folder: Path, suffixes: set[str]) -> tuple[dict[str, Path], int]:
    """The image files directly in `folder`, by file stem, and how many other files it holds (left out)."""
    by_stem: dict[str, Path] = {}
    other = 0
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or f.is_dir():
            continue
        if f.suffix.lower() not in suffixes:
            other += 1
            continue
        if f.stem in by_stem:
            raise UserError(f"{by_stem[f.stem]} and {f.name} share the stem {f.stem!r}, so which mask is whose is "
                            "unclear; rename or remove one")
        by_stem[f.stem] = f
    return by_stem, other


def _match(images: Path, masks: Path, suffixes: set[str]) -> tuple[list[tuple[Path, Path]], int]:
    """(image, mask) pairs of the same file stem; one line for an image without a mask or a mask without an image."""
    imgs, other_i = _files_by_stem(images, suffixes)
    msks, other_m = _files_by_stem(masks, suffixes)
    if not imgs:
        raise UserError(f"{images} holds no image files; put the images there and their masks (same file names) "
                        f"in {masks}")
    missing = [s for s in imgs if s not in msks]
    if missing:
        raise UserError(f"image {imgs[missing[0]]} has no mask in {masks} ({len(missing)} image(s) without one); "
                        "add a mask with the same file stem, or remove the image")
    extra = [s for s in msks if s not in imgs]
    if extra:
        raise UserError(f"mask {msks[extra[0]]} has no image in {images} ({len(extra)} mask(s) without one); add "
                        "the image, or remove the mask")
    return [(imgs[s], msks[s]) for s in imgs], other_i + other_m


def _images_masks_pairs(root: Path, suffixes: set[str]) -> tuple[dict[str, list], int]:
    images, masks = root / "images", root / "masks"
    if not (images.is_dir() and masks.is_dir()):
        raise UserError(f"{root} is not in the images-masks layout; arrange it as {LAYOUT_HELP['images-masks']}")
    splits = [s for s in SPLITS if (images / s).is_dir() or (masks / s).is_dir()]
    if not splits:
        pairs, other = _match(images, masks, suffixes)
        return {"train": pairs}, other
    if "train" not in splits:
        raise UserError(f"{images} has {'/, '.join(splits)}/ sub-folders but no train/; add images/train/ and "
                        "masks/train/")
    loose = [f for d in (images, masks) for f in sorted(d.iterdir()) if f.is_file() and f.suffix.lower() in suffixes]
    if loose:
        raise UserError(f"{loose[0]} lies beside the {'/, '.join(splits)}/ sub-folders; move it into one of them")
    out, other = {}, 0
    for s in splits:
        for d in (images / s, masks / s):
            if not d.is_dir():
                raise UserError(f"{d} is missing, though its counterpart exists; give images/{s}/ and masks/{s}/ "
                                "together")
        out[s], n = _match(images / s, masks / s, suffixes)
        other += n
    return out, other


def _segnet_pairs(root: Path, suffixes: set[str]) -> tuple[dict[str, list], int]:
    out, other = {}, 0
    for s in SPLITS:
        images, masks = root / s, root / f"{s}annot"
        if not images.is_dir() and not masks.is_dir():
            continue
        if not (images.is_dir() and masks.is_dir()):
            have, lack = (images, masks) if images.is_dir() else (masks, images)
            raise UserError(f"{have} has no {lack.name}/ beside it; add {lack.name}/ or remove {have.name}/ "
                            f"({LAYOUT_HELP['segnet']})")
        out[s], n = _match(images, masks, suffixes)
        other += n
    if "train" not in out:
        raise UserError(f"{root} is not in the segnet layout; arrange it as {LAYOUT_HELP['segnet']}")
    return out, other


def _voc_pairs(root: Path) -> tuple[dict[str, list], int]:
    voc = _voc_base(root)
    if voc is None:
        raise UserError(f"{root} is not in the voc layout; arrange it as {LAYOUT_HELP['voc']}")
    out = {}
    for s in ("train", "val"):
        listed = voc / "ImageSets" / "Segmentation" / f"{s}.txt"
        if not listed.is_file():
            continue
        ids = [line.split()[0] for line in listed.read_text(errors="replace").splitlines()
               if line.strip()]
        if not ids:
            raise UserError(f"{listed} lists no images; give one image id per line (a file stem in JPEGImages/)")
        pairs = []
        for i in ids:
            if "/" in i or "\\" in i or i.startswith("."):
                raise UserError(f"{listed} lists {i!r}, which is not a file stem; give bare ids like 2007_000032")
            image = next((voc / "JPEGImages" / f"{i}{e}" for e in (".jpg", ".jpeg", ".png")
                          if (voc / "JPEGImages" / f"{i}{e}").exists()), None)
            if image is None:
                raise UserError(f"{listed} lists {i}, but {voc / 'JPEGImages'} has no {i}.jpg; add the image or "
                                f"remove the line")
            mask = voc / "SegmentationClass" / f"{i}.png"
            if not mask.exists():
                raise UserError(f"image {image} has no mask {mask}; add the mask or remove {i} from {listed}")
            pairs.append((image, mask))
        out[s] = pairs
    return out, 0


# ----------------------------------------------------------------------------------------------
# Class names and colour maps


def _read_lines(path: Path) -> list[str]:
    lines = path.read_text(errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _classes_file(root: Path) -> list[str] | None:
    """classes.txt: one class name per line, line 1 naming class 0."""
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in _read_lines(path)]
    for n, name in enumerate(names, 1):
        if not name:
            raise UserError(f"{path} line {n} is empty; give one class name per line (line 1 names class 0)")
    if not names:
        raise UserError(f"{path} is empty; give one class name per line (line 1 names class 0), or remove it")
    dup = next((x for x in names if names.count(x) > 1), None)
    if dup is not None:
        raise UserError(f"{path} names {dup!r} twice; give each class one line")
    return names


@dataclass
class ColourMap:
    """colors.txt (or colormap.txt): each RGB colour of a colour-coded mask, and the class index it stands for."""

    path: Path
    names: list[str]
    colours: dict[int, int] = field(default_factory=dict)  # 0xRRGGBB -> class index

    def indices(self, rgb: np.ndarray, mask: Path) -> np.ndarray:
        """uint8 (H, W) class indices of a uint8 (H, W, 3) colour mask."""
        code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
        values, inverse = np.unique(code, return_inverse=True)
        lookup = np.empty(len(values), np.uint8)
        for k, v in enumerate(values.tolist()):
            if v not in self.colours:
                r, g, b = v >> 16, (v >> 8) & 255, v & 255
                raise UserError(f"mask {mask} has the colour {r} {g} {b}, which {self.path} does not list; add a "
                                f"line `name {r} {g} {b}`")
            lookup[k] = self.colours[v]
        return lookup[inverse].reshape(code.shape)


def _colour_map(root: Path, classes: list[str] | None) -> ColourMap | None:
    """The colour map in the root, if any. A name's class index is its line in classes.txt when there is one,
    else the order in which names first appear in the colour map (one name may have several colours)."""
    found = [root / f for f in COLOUR_MAP_FILES if (root / f).is_file()]
    if not found:
        return None
    if len(found) > 1:
        raise UserError(f"{root} has both {found[0].name} and {found[1].name}; keep one colour map")
    path = found[0]
    names = list(classes or [])
    cmap = ColourMap(path, names)
    for n, line in enumerate(_read_lines(path), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            r, g, b = (int(v) for v in parts[-3:])
            if len(parts) < 4 or not all(0 <= v <= 255 for v in (r, g, b)):
                raise ValueError
        except ValueError:
            raise UserError(f"{path} line {n} is {line.strip()!r}; give {COLOUR_LINE}") from None
        name = " ".join(parts[:-3])
        if name not in names:
            if classes is not None:
                raise UserError(f"{path} line {n} names {name!r}, which classes.txt does not list; use its names")
            names.append(name)
        code = (r << 16) | (g << 8) | b
        if cmap.colours.get(code, names.index(name)) != names.index(name):
            raise UserError(f"{path} gives the colour {r} {g} {b} to two classes; give each colour one class")
        cmap.colours[code] = names.index(name)
    if not cmap.colours:
        raise UserError(f"{path} lists no colours; give {COLOUR_LINE}")
    if len(names) > 256:
        raise UserError(f"{path} names {len(names)} classes; uint8 masks hold at most 256")
    return cmap


# ----------------------------------------------------------------------------------------------
# Decoding


def _round8(v: float) -> int:
    return max(8, int(v / 8 + 0.5) * 8)


def target_size(width: int, height: int, image_size: int | None) -> tuple[int, int]:
    """(W, H) every image is resized to: the first image's size, or its aspect with the shorter side
    image_size, both sides rounded to multiples of 8."""
    if image_size is None:
        return width, height
    s = image_size / min(width, height)
    return _round8(width * s), _round8(height * s)


def _mask_array(im, mask: Path, cmap: ColourMap | None) -> np.ndarray:
    """The mask as it is stored: uint8 (H, W) indices, or uint8 (H, W, 3) colours for a colour-coded mask."""
    if im.mode in ("RGB", "RGBA"):
        if cmap is None:
            raise UserError(f"mask {mask} is colour-coded RGB; add colors.txt to the data root with {COLOUR_LINE} "
                            "(line order = class index), or save the masks as 8-bit index PNGs")
        return np.asarray(im.convert("RGB"))
    if im.mode not in INDEX_MODES:
        raise UserError(f"mask {mask} is in mode {im.mode}; save masks as 8-bit index PNGs (mode L or P)")
    a = np.asarray(im)  # P: the palette indices, never the colours
    a = a[..., 0] if a.ndim == 3 else a
    if a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise UserError(f"mask {mask} holds values outside 0..255; uint8 masks hold at most 256 classes")
        a = a.astype(np.uint8)
    return a


@dataclass
class _Part:
    images: np.ndarray  # uint8 (n, 3, H, W)
    masks: np.ndarray  # uint8 (n, H, W)
    present: np.ndarray  # bool (n, 256): which values each mask holds
    files: list[Path]  # each row's mask file


def _decode(pairs: list[tuple[Path, Path]], size: tuple[int, int] | None, image_size: int | None,
            cmap: ColourMap | None) -> tuple[_Part, tuple[int, int] | None, int, Path | None]:
    """Read, convert and resize every pair (images bilinear, masks nearest); unreadable ones are left out.
    Returns the part, the (W, H) size (fixed by the first readable image when `size` is None), how many pairs
    were left out, and the first of their files."""
    from PIL import Image

    def read(f: Path):
        """The decoded image of f, or None when it is unreadable (damaged, truncated, not an image, a bomb)."""
        try:
            with Image.open(f) as im:
                im.load()
                return im.copy()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None

    x = y = None
    present, files, skipped, first_bad = [], [], 0, None
    for image, mask in pairs:
        im, mk = read(image), read(mask)
        if im is None or mk is None:
            skipped, first_bad = skipped + 1, first_bad or (image if im is None else mask)
            continue
        if im.size != mk.size:
            raise UserError(f"mask {mask} is {mk.size[0]}x{mk.size[1]} but its image {image.name} is "
                            f"{im.size[0]}x{im.size[1]}; give every image a mask of its own size")
        rgb = to_mode(im, "RGB")
        labels = _mask_array(mk, mask, cmap)
        if size is None:
            size = target_size(*rgb.size, image_size)
        w, h = size
        if rgb.size != size:
            rgb = rgb.resize(size, Image.BILINEAR)
            labels = np.asarray(Image.fromarray(labels).resize(size, Image.NEAREST))
        if labels.ndim == 3:
            labels = cmap.indices(labels, mask)
        if x is None:
            x, y = np.empty((len(pairs), 3, h, w), np.uint8), np.empty((len(pairs), h, w), np.uint8)
        n = len(files)
        x[n], y[n] = np.asarray(rgb).transpose(2, 0, 1), labels
        present.append(np.bincount(labels.ravel(), minlength=256) > 0)
        files.append(mask)
    n = len(files)
    if not n:
        return _Part(np.empty((0, 3, 0, 0), np.uint8), np.empty((0, 0, 0), np.uint8), np.zeros((0, 256), bool),
                     []), size, skipped, first_bad
    return _Part(x[:n], y[:n], np.stack(present), files), size, skipped, first_bad


def _ignore_and_classes(parts: dict[str, _Part], names: list[str] | None, given: bool, source: str, layout: str,
                        ignore_index: int | None) -> tuple[list[str], int | None, bool]:
    """Class names, the ignore value and whether the masks are binary 0/255 (to be stored as 0/1)."""
    present = np.concatenate([p.present for p in parts.values()]).any(0)
    values = set(np.flatnonzero(present).tolist())
    void = next((k for k, n in enumerate(names or []) if given and n.strip().lower() in VOID_NAMES), None)
    binary = layout != "voc" and values == {0, 255} and ignore_index != 255
    if ignore_index is not None:
        ignore = ignore_index
    elif void is not None:
        ignore = void
    elif layout == "voc" or 255 in values and not binary:
        ignore = 255
    else:
        ignore = None
    if names is not None and void is not None and void == ignore and void == len(names) - 1:
        names = names[:-1]
    if binary:
        values = {0, 1}
        names = names or ["background", "foreground"]
    labelled = values - {ignore}
    if names is None:
        if not labelled:
            raise UserError(f"every mask holds only the ignore value {ignore}; give masks with class labels")
        return [str(k) for k in range(max(labelled) + 1)], ignore, binary
    outside = sorted(v for v in labelled if v >= len(names))
    if outside:
        v = outside[0]
        stored = 255 if binary and v == 1 else v  # the value as the mask file holds it
        file = next(f for p in parts.values() for f, has in zip(p.files, p.present[:, stored]) if has)
        raise UserError(f"mask {file} holds label {v}, but {source} names {len(names)} classes (0..{len(names) - 1}); "
                        f"add the missing class to {source}, or pass ignore_index={v} if it marks unlabelled pixels")
    return list(names), ignore, binary


# ----------------------------------------------------------------------------------------------
# Downloadable sources: fetched by torchvision into the cache, then read as a folder like any other

DOWNLOADS = ("voc-segmentation", "oxford-pets")
PET_VALUES = {1: 1, 2: 0, 3: 255}  # Oxford-IIIT Pet trimaps: 1 pet, 2 background, 3 border (ignored)


def download_root(name: str, cache_dir: Path) -> Path:
    """The folder a downloadable source is read from, downloading it first where it is not there yet:
    Pascal VOC 2012 (torchvision.datasets.VOCSegmentation: its own VOCdevkit tree, the voc layout) or the
    Oxford-IIIT Pet trimaps (torchvision.datasets.OxfordIIITPet, target_types="segmentation"), written once as
    an images-masks folder with classes background and pet and the border value 255 ignored. Without
    internet: one line saying where to put a copy."""
    from torchvision import datasets

    root = cache_dir / "downloads"
    done = root / f"{name}.done"
    target = root / "VOCdevkit" / "VOC2012" if name == "voc-segmentation" else root / "oxford-pets-segmentation"
    if done.exists():
        return target
    try:
        if name == "voc-segmentation":
            for split in ("train", "val"):
                datasets.VOCSegmentation(str(root), year="2012", image_set=split, download=True)
        else:
            for split, folder in (("trainval", "train"), ("test", "test")):
                pets = datasets.OxfordIIITPet(str(root), split=split, target_types="segmentation", download=True)
                _write_pets(pets, target, folder)
            (target / "classes.txt").write_text("background\npet\n")
    except Exception as e:  # URLError, RuntimeError, ...: all mean "not here and not downloadable"
        raise UserError(f"could not download {name} into {root} ({type(e).__name__}); without internet, copy it "
                        f"there (or pass --data a local copy in one of these layouts: {layout_help()})") from None
    done.touch()
    return target


def _write_pets(pets, target: Path, split: str) -> None:
    """Oxford-IIIT Pet pairs as images/<split>/<i>.png and masks/<split>/<i>.png with PET_VALUES applied."""
    from PIL import Image

    lut = np.full(256, 255, np.uint8)
    for k, v in PET_VALUES.items():
        lut[k] = v
    for folder in ("images", "masks"):
        (target / folder / split).mkdir(parents=True, exist_ok=True)
    for i in range(len(pets)):
        image, trimap = pets[i]
        image.convert("RGB").save(target / "images" / split / f"{i:05d}.png")
        Image.fromarray(lut[np.asarray(trimap, np.uint8)]).save(target / "masks" / split / f"{i:05d}.png")


def load_segmentation(source: str | Path, image_size: int | None = None, layout: str = "auto",
                      ignore_index: int | None = None, cache_dir: Path | None = None) -> Dataset:
    """Images and masks of a segmentation root, as a Dataset: train (and val, test where the layout has them)
    are ImageSet(images=uint8 (N, 3, H, W), labels=uint8 masks (N, H, W)).

    Masks: 8-bit index PNGs in mode P (the palette indices are the classes, not the colours) or L (the values
    are); binary masks stored as 0/255 (exactly the values {0, 255} across the dataset, not voc) become 0/1,
    classes "background" and "foreground"; colour-coded RGB masks need colors.txt (or colormap.txt) in the
    root, `name r g b` per line.

    Classes: classes.txt in the root (one name per line, line 1 naming class 0), else the colour map's names
    (in order of first appearance), else VOC's 21 names for the voc layout, else "0", "1", ... up to the
    largest label found other than the ignore value. A label outside named classes (other than the ignore
    value) is an error.

    Ignore value: the `ignore_index` argument wins; else a class named void, unlabelled, unlabeled or ignore
    (in classes.txt or the colour map; it is dropped from the class list only when it is the last one);
    else 255 for voc (its border value); else 255 if any mask holds 255 and the masks are not binary; else
    None.

    Sizes: each image and its mask must have the same size. All images are resized, images bilinear and
    masks nearest (no new label values), to one (W, H): with image_size None the first readable training
    image's size (images of other sizes are resized to it), else the first image's aspect with its shorter
    side image_size, both sides rounded to multiples of 8 (image_size 90 on 480x360 gives 120x88). An image
    of another aspect is stretched, never cropped, so that no labelled pixel is lost.

    Unreadable images or masks are left out of their pair and counted in `skipped`, as are non-image files in
    the image and mask folders. The fingerprint hashes every file's relative name and size under the root.
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise UserError(f"layout {layout!r} is unknown; use auto or one of: {', '.join(LAYOUTS)}")
    if image_size is not None and not 8 <= image_size <= 1024:
        raise UserError(f"--image-size {image_size} is out of range; use a shorter side between 8 and 1024 pixels")
    if ignore_index is not None and not 0 <= ignore_index <= 255:
        raise UserError(f"ignore_index {ignore_index} is not a mask value; use one between 0 and 255")
    root = Path(source).expanduser()
    if str(source).lower() in DOWNLOADS and not root.exists():
        from .cache import default_cache_dir

        root = download_root(str(source).lower(), Path(cache_dir) if cache_dir else default_cache_dir())
    if not root.exists():
        raise UserError(f"{root}: no such folder; give a segmentation root in one of these layouts: {layout_help()}, "
                        f"or one of: {', '.join(DOWNLOADS)} (downloaded)")
    layout = detect_layout(root) if layout == "auto" else layout
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; give a segmentation root in one of these layouts: {layout_help()}")
    _check_links(root)

    suffixes = _image_suffixes()
    if layout == "voc":
        pairs, other = _voc_pairs(root)
    elif layout == "segnet":
        pairs, other = _segnet_pairs(root, suffixes)
    else:
        pairs, other = _images_masks_pairs(root, suffixes)
    classes = _classes_file(root)
    cmap = _colour_map(root, classes)
    names, source_name = classes, "classes.txt"
    if names is None and cmap is not None:
        names, source_name = cmap.names, cmap.path.name
    given = names is not None
    if names is None and layout == "voc":
        names, source_name = VOC_CLASSES, "VOC's 21 classes"
    if names is None and layout == "segnet" and root.resolve().name.lower().startswith("camvid"):
        names, source_name, given = CAMVID_CLASSES, "CamVid's 11 classes", True  # its last, unlabelled: ignored
        log.info("%s: SegNet's CamVid classes (11, value 11 unlabelled and ignored); add classes.txt to name others",
                 root)

    parts, size, skipped, first_bad = {}, None, other, None
    for split in SPLITS:
        if split not in pairs:
            continue
        part, size, bad, first = _decode(pairs[split], size, image_size, cmap)
        if not len(part.files):
            raise UserError(f"the {split} split of {root} holds no readable image with its mask; add readable "
                            "images (PNG or JPEG)")
        parts[split], skipped, first_bad = part, skipped + bad, first_bad or first
    if first_bad is not None:
        log.warning("%s: %d unreadable or non-image file(s) skipped (the first: %s)", root, skipped, first_bad)

    names, ignore, binary = _ignore_and_classes(parts, names, given, source_name, layout, ignore_index)
    sets = {}
    for split, part in parts.items():
        masks = torch.from_numpy(part.masks)
        if binary:
            masks[masks == 255] = 1
        sets[split] = ImageSet(torch.from_numpy(part.images), masks)
    ds = Dataset(root.resolve().name, names, sets["train"], sets.get("test"), skipped=skipped, val=sets.get("val"),
                 ignore_index=ignore)
    _, files = _listing(root, recursive=True)
    ds = _fingerprinted(ds, files)
    ds.fingerprint["images"] = sum(len(s) for s in sets.values())
    return ds


def _check_links(root: Path) -> None:
    """Refuse, in one line, any symbolic link under the root that leads out of it (checked before anything
    under the root is read; links that stay inside are followed)."""
    base = root.resolve()
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            p = Path(folder) / name
            if p.is_symlink():
                real = p.resolve()
                if real != base and base not in real.parents:
                    raise UserError(f"{p} is a symbolic link to {real}, outside {root}; copy the file into the "
                                    "folder instead (links out of the data root are not followed)")

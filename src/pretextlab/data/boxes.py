"""Object detection data: images and the boxes around their objects, read from the three formats people keep them
in, decoded into uint8 tensors and one packed table of boxes.

Why a module of its own: a detection label is a variable number of boxes per image, each with a class, stored as
Pascal VOC XML (one file per image), COCO JSON (one file per split) or YOLO text (one file per image, boxes as
normalised centres and sizes). Reading them to the same boxes, scaling them with their image, and handling the
annotations real data has (boxes touching or crossing the border, degenerate boxes, images without any box) need
rules that class folders and masks never had. What comes out is the same `sources.Dataset` every task reads, with
`ImageSet(images=uint8 (N, 3, H, W), labels=BoxTargets)`: boxes in pixels of the stored image, (x1, y1, x2, y2).

Layouts (detect_layout tells which one a root has):

- voc: `JPEGImages/`, `Annotations/*.xml`, `ImageSets/Main/{train,val,trainval,test}.txt` (BCCD, Pascal VOC); in
  the root, in `VOC2012/` or in `VOCdevkit/VOC2012/`. Without the lists, every annotated image is training data.
- coco: `annotations/instances_<split>.json` with the images in `<split>/` (or `images/<split>/`) beside it.
- yolo: `images/` + `labels/` (or `images/{train,val,test}/` + `labels/{train,val,test}/`), one `<stem>.txt` per
  image, a line `class cx cy w h` per box in [0, 1]; class names from `classes.txt` or `data.yaml`'s `names`.

Rules, the same for every layout:
- a box is clipped to its image; one left with no area (x1 >= x2 or y1 >= y2, before or after clipping) is
  dropped; both are counted and said in one warning line;
- an image without any box is kept (all background) and counted;
- a box of a class the class list does not name is an error, as is an annotation for an image that is not there;
- XML is parsed by defusedxml (no entity expansion, no external entities); JSON and text are plain data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .sources import Dataset, ImageSet, to_mode

log = logging.getLogger(__name__)

LAYOUTS = ("voc", "coco", "yolo")
LAYOUT_HELP = {
    "voc": "voc (JPEGImages/, Annotations/*.xml and ImageSets/Main/train.txt, val.txt, in the root, in VOC2012/ or "
           "in VOCdevkit/VOC2012/)",
    "coco": "coco (annotations/instances_<split>.json with the images in <split>/ or images/<split>/)",
    "yolo": "yolo (images/ and labels/ with a <stem>.txt per image, or images/{train,val}/ and labels/{train,val}/, "
            "and classes.txt or data.yaml)",
}
SPLITS = ("train", "val", "test")


def layout_help() -> str:
    return "; ".join(LAYOUT_HELP[k] for k in LAYOUTS)


@dataclass
class BoxTargets:
    """The boxes of N images in one table: image i's boxes are rows offsets[i]:offsets[i + 1] of `boxes` (float32,
    x1 y1 x2 y2 in pixels) and `classes` (int64). Indexed like a tensor of N labels: len(), [i] gives one image's
    (boxes, classes), [index tensor] the targets of those images in that order."""

    boxes: Tensor
    classes: Tensor
    offsets: Tensor

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def image(self, i: int) -> tuple[Tensor, Tensor]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.boxes[a:b], self.classes[a:b]

    def __getitem__(self, idx: int | Tensor) -> tuple[Tensor, Tensor] | BoxTargets:
        if isinstance(idx, int):
            return self.image(idx)
        parts = [self.image(int(i)) for i in torch.as_tensor(idx).flatten()]
        return BoxTargets.of([p[0] for p in parts], [p[1] for p in parts])

    @staticmethod
    def of(boxes: list[Tensor], classes: list[Tensor]) -> BoxTargets:
        counts = torch.tensor([0, *(len(b) for b in boxes)])
        return BoxTargets(torch.cat(boxes).reshape(-1, 4).float() if boxes else torch.zeros(0, 4),
                          torch.cat(classes).long() if classes else torch.zeros(0, dtype=torch.long),
                          counts.cumsum(0))

    def to(self, device: torch.device | str) -> BoxTargets:
        return BoxTargets(self.boxes.to(device), self.classes.to(device), self.offsets)


@dataclass
class _Annotated:
    """One image file and its boxes as the annotation gives them (pixels of the file, x1 y1 x2 y2), class names."""

    image: Path
    boxes: list[tuple[float, float, float, float]]
    names: list[str]
    source: Path  # the annotation file, for messages


# ----------------------------------------------------------------------------------------------
# Layouts


def _voc_base(root: Path) -> Path | None:
    for base in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (base / "JPEGImages").is_dir() and (base / "Annotations").is_dir():
            return base
    return None


def _coco_files(root: Path) -> dict[str, Path]:
    folder = root / "annotations"
    found = sorted(folder.glob("instances_*.json")) if folder.is_dir() else []
    return {f.stem.removeprefix("instances_"): f for f in found}


def detect_layout(root: Path) -> str:
    """Which of LAYOUTS `root` has; a UserError naming every layout when none (or more than one) matches."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; give a detection root in one of these layouts: {layout_help()}")
    found = [name for name, hit in (("voc", _voc_base(root) is not None), ("coco", bool(_coco_files(root))),
                                    ("yolo", (root / "images").is_dir() and (root / "labels").is_dir())) if hit]
    if not found:
        raise UserError(f"{root} matches no detection layout; arrange it as one of: {layout_help()}")
    if len(found) > 1:
        raise UserError(f"{root} looks like both {found[0]} and {found[1]}; pass --layout {found[0]} or "
                        f"--layout {found[1]} to choose")
    return found[0]


def _number(text: str | None, what: str, source: Path) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise UserError(f"{source}: {what} is {text!r}, not a number; fix the annotation") from None


def _voc_file(xml: Path, images: Path) -> _Annotated:
    """One Pascal VOC XML file: its image (by <filename>, else the XML's stem) and every <object>'s box."""
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    try:
        tree = ElementTree.parse(str(xml))
    except (ElementTree.ParseError, DefusedXmlException) as e:
        raise UserError(f"{xml} is not well-formed XML ({e}); fix or remove the file") from None
    root = tree.getroot()
    name = (root.findtext("filename") or "").strip()
    image = images / Path(name).name if name else None
    if image is None or not image.is_file():  # hand-made files name their image loosely: fall back to the stem
        image = next((p for p in sorted(images.glob(f"{xml.stem}.*")) if p.is_file()), image)
    boxes, names = [], []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        cls = (obj.findtext("name") or "").strip()
        if box is None or not cls:
            raise UserError(f"{xml}: an <object> without <name> or <bndbox>; fix the annotation")
        boxes.append(tuple(_number(box.findtext(k), k, xml) for k in ("xmin", "ymin", "xmax", "ymax")))
        names.append(cls)
    return _Annotated(image, boxes, names, xml)


def _voc(root: Path) -> dict[str, list[_Annotated]]:
    base = _voc_base(root)
    images, notes = base / "JPEGImages", base / "Annotations"
    lists = base / "ImageSets" / "Main"
    xmls = {p.stem: p for p in sorted(notes.glob("*.xml"))}
    splits = {s: [line.strip() for line in (lists / f"{s}.txt").read_text().splitlines() if line.strip()]
              for s in SPLITS if (lists / f"{s}.txt").is_file()}
    if not splits:
        splits = {"train": list(xmls)}
    out = {}
    for split, ids in splits.items():
        missing = next((i for i in ids if i not in xmls), None)
        if missing is not None:
            raise UserError(f"{lists / (split + '.txt')} lists {missing}, which has no {notes / (missing + '.xml')}; "
                            "add the annotation or remove the line")
        out[split] = [_voc_file(xmls[i], images) for i in ids]
    return out


def _coco(root: Path) -> dict[str, list[_Annotated]]:
    out = {}
    for split, path in _coco_files(root).items():
        key = next((s for s in SPLITS if split.startswith(s)), split)
        try:
            data = json.loads(path.read_text())
            categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
            images = {int(i["id"]): str(i["file_name"]) for i in data["images"]}
            per_image: dict[int, list] = {i: [] for i in images}
            for a in data["annotations"]:
                per_image.setdefault(int(a["image_id"]), []).append((a["bbox"], int(a["category_id"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path} is not a COCO instances file ({type(e).__name__}: {e}); fix or remove "
                            "it") from None
        folder = next((f for f in (root / split, root / "images" / split, root / "images") if f.is_dir()), root / split)
        items = []
        for image_id, anns in per_image.items():
            if image_id not in images:
                raise UserError(f"{path}: an annotation names image id {image_id}, which its images do not list")
            boxes, names = [], []
            for (x, y, w, h), cat in anns:
                if cat not in categories:
                    raise UserError(f"{path}: an annotation names category {cat}, which its categories do not list")
                boxes.append((float(x), float(y), float(x) + float(w), float(y) + float(h)))
                names.append(categories[cat])
            items.append(_Annotated(folder / Path(images[image_id]).name, boxes, names, path))
        out[key] = items
    return out


def _yolo_names(root: Path) -> list[str] | None:
    if (root / "classes.txt").is_file():
        return [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    if (root / "data.yaml").is_file():
        import yaml

        try:
            names = yaml.safe_load((root / "data.yaml").read_text()).get("names")
        except (yaml.YAMLError, AttributeError):
            raise UserError(f"{root / 'data.yaml'} is not readable YAML with `names`; fix it") from None
        return [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
    return None


def _yolo(root: Path, suffixes: set[str]) -> dict[str, list[_Annotated]]:
    """YOLO text: boxes stay normalised here (scaled by their image's size when it is read)."""
    pairs = {s: (root / "images" / s, root / "labels" / s) for s in SPLITS if (root / "images" / s).is_dir()}
    pairs = pairs or {"train": (root / "images", root / "labels")}
    out = {}
    for split, (images, labels) in pairs.items():
        stems = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in suffixes}
        orphan = next((p for p in sorted(labels.glob("*.txt")) if p.stem not in stems), None) if labels.is_dir() \
            else None
        if orphan is not None:
            raise UserError(f"{orphan} has no image {images / orphan.stem}.*; add the image or remove the label file")
        items = []
        for stem, image in stems.items():
            boxes, names = [], []
            label = labels / f"{stem}.txt"
            for n, line in enumerate(label.read_text().splitlines() if label.is_file() else [], 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    raise UserError(f"{label} line {n} has {len(parts)} fields; YOLO boxes are `class cx cy w h`")
                cx, cy, w, h = (_number(v, f"line {n}", label) for v in parts[1:])
                boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))  # normalised, scaled on reading
                names.append(parts[0])
            items.append(_Annotated(image, boxes, names, label))
        out[split] = items
    return out


# ----------------------------------------------------------------------------------------------
# Decoding


def load_detection(source: str | Path, image_size: int | None = None, layout: str = "auto") -> Dataset:
    """Images and boxes of a detection root as a Dataset: train (and val, test where the layout has them) are
    ImageSet(images=uint8 (N, 3, H, W), labels=BoxTargets).

    Classes: classes.txt in the root (one name per line), else YOLO's data.yaml, else every class name the
    annotations use, sorted. YOLO's numeric classes index that list.

    Sizes: every image is resized to one (W, H): the first training image's, or its aspect with the shorter side
    image_size (sides rounded to multiples of 8); boxes are scaled with their image (an image of another aspect
    is stretched, so no box is cut).
    """
    from PIL import Image

    from .masks import _check_links, _image_suffixes, target_size

    if layout != "auto" and layout not in LAYOUTS:
        raise UserError(f"--layout {layout} is unknown for detection; use auto or one of: {', '.join(LAYOUTS)}")
    root = Path(source).expanduser()
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; give a detection root in one of these layouts: {layout_help()}")
    layout = detect_layout(root) if layout == "auto" else layout
    _check_links(root)
    suffixes = _image_suffixes()
    parts = _voc(root) if layout == "voc" else _coco(root) if layout == "coco" else _yolo(root, suffixes)
    listed = (root / "classes.txt").is_file() or (layout == "yolo" and _yolo_names(root) is not None)
    if layout == "yolo":
        classes = _yolo_names(root)
        if classes is None:
            raise UserError(f"{root} has YOLO labels but no classes.txt or data.yaml naming the classes; add one")
    elif listed:
        classes = [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    else:
        classes = sorted({n for items in parts.values() for a in items for n in a.names})
    if not classes:
        raise UserError(f"{root} holds no box at all; detection needs annotated objects")
    index = {c: k for k, c in enumerate(classes)}

    size: tuple[int, int] | None = None
    sets, counts = {}, {"clipped": 0, "dropped": 0, "empty": 0}
    for split in (s for s in SPLITS if s in parts) or parts:
        images, boxes, labels = [], [], []
        for a in parts[split]:
            if a.image is None or not a.image.is_file():
                raise UserError(f"{a.source} annotates {a.image}, which is not there; add the image or remove the "
                                "annotation")
            try:
                with Image.open(a.image) as im:
                    rgb = to_mode(im, "RGB")
            except (OSError, ValueError, Image.DecompressionBombError):
                raise UserError(f"{a.image} is not a readable image; replace or remove it") from None
            w0, h0 = rgb.size
            if size is None:
                size = target_size(w0, h0, image_size)
            if rgb.size != size:
                rgb = rgb.resize(size, Image.BILINEAR)
            b = np.array(a.boxes, dtype=np.float64).reshape(-1, 4)
            if layout == "yolo":
                if a.names and not all(n.isdigit() and int(n) < len(classes) for n in a.names):
                    bad = next(n for n in a.names if not (n.isdigit() and int(n) < len(classes)))
                    raise UserError(f"{a.source}: class {bad} is not one of 0..{len(classes) - 1} ({len(classes)} "
                                    "classes named); fix the label or the class list")
                b *= [w0, h0, w0, h0]
                names = [classes[int(n)] for n in a.names]
            else:
                names = a.names
            unknown = next((n for n in names if n not in index), None)
            if unknown is not None:
                raise UserError(f"{a.source}: class {unknown!r} is not in classes.txt ({', '.join(classes)}); add it "
                                "or fix the annotation")
            clipped = np.clip(b, 0, [w0, h0, w0, h0])
            counts["clipped"] += int((np.abs(clipped - b) > 1e-9).any(1).sum())
            keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
            counts["dropped"] += int((~keep).sum())
            scale = np.array([size[0] / w0, size[1] / h0, size[0] / w0, size[1] / h0])
            kept = clipped[keep] * scale
            counts["empty"] += int(not keep.any())
            images.append(np.asarray(rgb).transpose(2, 0, 1))
            boxes.append(torch.as_tensor(kept, dtype=torch.float32).reshape(-1, 4))
            labels.append(torch.as_tensor([index[n] for n, k in zip(names, keep) if k], dtype=torch.long))
        if not images:
            raise UserError(f"the {split} split of {root} holds no image; add images and their annotations")
        sets[split] = ImageSet(torch.from_numpy(np.stack(images)), BoxTargets.of(boxes, labels))
    if counts["clipped"] or counts["dropped"] or counts["empty"]:
        log.warning("%s: %d box(es) clipped to their image, %d without area dropped, %d image(s) without any box kept "
                    "as background", root, counts["clipped"], counts["dropped"], counts["empty"])
    train = sets.get("train") or sets.get(next(iter(sets)))
    ds = Dataset(root.resolve().name, classes, train, sets.get("test"), val=sets.get("val"))
    from .cache import _fingerprinted, _listing

    _, files = _listing(root, recursive=True)
    ds = _fingerprinted(ds, files)
    ds.fingerprint["images"] = sum(len(s) for s in sets.values())
    ds.fingerprint["boxes_clipped_dropped_empty"] = [counts["clipped"], counts["dropped"], counts["empty"]]
    return ds



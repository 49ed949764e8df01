"""pretextlab.data.boxes: detection roots (VOC XML, COCO JSON, YOLO text) read into images and one table of boxes.

Every scene is generated here (coloured rectangles on noise, with the boxes that say where they are), written in
each format under tmp_path: each must read to the same boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import COLOURS
from PIL import Image

from pretextlab.data.boxes import BoxTargets, detect_layout, load_detection
from pretextlab.errors import UserError

CLASSES = ["cell", "platelet"]


def scenes(n: int = 4, h: int = 48, w: int = 64, seed: int = 0) -> list[tuple[np.ndarray, list, list]]:
    """n images of dark noise with 1-2 rectangles each: (image, boxes x1 y1 x2 y2 in pixels, class names); the
    last image has no rectangle at all."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.integers(0, 50, (h, w, 3), dtype=np.uint8)
        boxes, names = [], []
        for k in range(0 if i == n - 1 else 1 + i % 2):
            x1, y1 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 16))
            x2, y2 = x1 + int(rng.integers(6, 20)), y1 + int(rng.integers(6, 16))
            img[y1:y2, x1:x2] = COLOURS[k]
            boxes.append((x1, y1, x2, y2))
            names.append(CLASSES[k])
        out.append((img, boxes, names))
    return out


def write_voc(root: Path, data: list, split_at: int = 3) -> Path:
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = []
    for i, (img, boxes, names) in enumerate(data):
        stem = f"img_{i:03d}"
        ids.append(stem)
        Image.fromarray(img).save(root / "JPEGImages" / f"{stem}.png")
        objects = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                          f"<ymax>{b[3]}</ymax></bndbox></object>" for b, n in zip(boxes, names))
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation>\n\t<filename>{stem}.png</filename>\n  {objects}</annotation>")  # uneven, as hand-made ones
    (root / "ImageSets/Main/train.txt").write_text("\n".join(ids[:split_at]) + "\n")
    (root / "ImageSets/Main/val.txt").write_text("\n".join(ids[split_at:]) + "\n")
    return root


def write_coco(root: Path, data: list, split_at: int = 3) -> Path:
    (root / "annotations").mkdir(parents=True)
    cats = [{"id": 7 + k, "name": c} for k, c in enumerate(CLASSES)]  # ids need not start at 0
    for split, part in (("train", data[:split_at]), ("val", data[split_at:])):
        (root / split).mkdir()
        images, anns = [], []
        for i, (img, boxes, names) in enumerate(part):
            Image.fromarray(img).save(root / split / f"{split}{i}.png")
            images.append({"id": 100 + i, "file_name": f"{split}{i}.png", "width": img.shape[1],
                           "height": img.shape[0]})
            anns += [{"id": len(anns), "image_id": 100 + i, "category_id": 7 + CLASSES.index(n),
                      "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for b, n in zip(boxes, names)]
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def write_yolo(root: Path, data: list, split_at: int = 3) -> Path:
    for split, part in (("train", data[:split_at]), ("val", data[split_at:])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, (img, boxes, names) in enumerate(part):
            h, w = img.shape[:2]
            Image.fromarray(img).save(root / "images" / split / f"{i}.png")
            lines = [f"{CLASSES.index(n)} {(b[0] + b[2]) / 2 / w} {(b[1] + b[3]) / 2 / h} {(b[2] - b[0]) / w} "
                     f"{(b[3] - b[1]) / h}" for b, n in zip(boxes, names)]
            if lines:  # an image without boxes has no label file, as YOLO tools write it
                (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("names:\n" + "".join(f"  {k}: {c}\n" for k, c in enumerate(CLASSES)))
    return root


def expected(data: list) -> BoxTargets:
    return BoxTargets.of([torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for _, b, _ in data],
                         [torch.tensor([CLASSES.index(n) for n in names], dtype=torch.long) for _, _, names in data])


@pytest.mark.parametrize("write, layout", [(write_voc, "voc"), (write_coco, "coco"), (write_yolo, "yolo")])
def test_each_format_reads_to_the_same_boxes(tmp_path, write, layout):
    data = scenes()
    root = write(tmp_path / layout, data)
    assert detect_layout(root) == layout
    ds = load_detection(root)
    assert ds.classes == CLASSES and ds.train.images.shape == (3, 3, 48, 64) and len(ds.val) == 1
    want = expected(data)
    assert torch.allclose(ds.train.labels.boxes, want[torch.arange(3)].boxes, atol=1e-4)
    assert torch.equal(ds.train.labels.classes, want[torch.arange(3)].classes)
    assert len(ds.val.labels.image(0)[0]) == 0  # the image without boxes: kept, all background
    assert torch.equal(ds.train.images[0], torch.as_tensor(data[0][0]).permute(2, 0, 1))


def test_resizing_scales_the_boxes_with_their_image(tmp_path):
    data = scenes()
    ds = load_detection(write_voc(tmp_path / "voc", data), image_size=24)  # 48 x 64 -> 24 x 32
    assert ds.train.images.shape[-2:] == (24, 32)
    assert torch.allclose(ds.train.labels.boxes, expected(data)[torch.arange(3)].boxes / 2, atol=1e-4)


def test_boxes_outside_the_image_are_clipped_and_empty_ones_dropped(tmp_path, caplog):
    data = scenes()
    data[0][1][0] = (-5, 3, 20, 60)  # crosses the left and bottom borders
    data[1][1][0] = (10, 10, 10, 30)  # no width
    ds = load_detection(write_voc(tmp_path / "voc", data))
    boxes, _ = ds.train.labels.image(0)
    assert boxes[0].tolist() == [0, 3, 20, 48]
    assert ds.fingerprint["boxes_clipped_dropped_empty"] == [1, 1, 1]
    assert "1 box(es) clipped to their image, 1 without area dropped, 1 image(s) without any box" in caplog.text


def test_targets_index_like_a_tensor_of_labels():
    t = expected(scenes())
    sub = t[torch.tensor([2, 0])]
    assert len(sub) == 2 and torch.equal(sub.image(0)[0], t.image(2)[0]) and torch.equal(sub.image(1)[1], t.image(0)[1])


@pytest.mark.parametrize("break_it, says", [
    (lambda r: (r / "Annotations" / "img_000.xml").write_text("<annotation><object>"), "is not well-formed XML"),
    (lambda r: [(r / "Annotations" / "img_001.xml").write_text(
        "<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
        "</bndbox></object></annotation>"), (r / "classes.txt").write_text("cell\nplatelet\n")], "class 'dog'"),
    (lambda r: (r / "JPEGImages" / "img_002.png").unlink(), "which is not there"),
    (lambda r: (r / "ImageSets/Main/train.txt").write_text("img_000\nimg_999\n"), "lists img_999"),
])
def test_bad_annotations_are_one_line_errors(tmp_path, break_it, says):
    root = write_voc(tmp_path / "voc", scenes())
    break_it(root)
    with pytest.raises(UserError, match=says) as e:
        load_detection(root)
    assert "\n" not in str(e.value)


def test_xml_entities_are_not_expanded(tmp_path):
    root = write_voc(tmp_path / "voc", scenes())
    (root / "Annotations" / "img_000.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]><annotation>&y;'
        "</annotation>")
    with pytest.raises(UserError, match="not well-formed XML"):
        load_detection(root)


def test_yolo_label_without_an_image_and_unknown_layouts(tmp_path):
    root = write_yolo(tmp_path / "yolo", scenes())
    (root / "labels" / "train" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(UserError, match="ghost.txt has no image"):
        load_detection(root)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match="matches no detection layout.*voc.*coco.*yolo"):
        detect_layout(tmp_path / "nothing")

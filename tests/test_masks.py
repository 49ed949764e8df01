"""pretextlab.data.masks: segmentation roots (images-masks, segnet, voc) read into uint8 images and masks.

Every scene is generated here (coloured squares on noise, with the masks that say where they are), written
as PNGs under tmp_path; only the CamVid check reads /work/shared, and only where it exists.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_mask, scene, write_pairs
from PIL import Image

from pretextlab.data.masks import LAYOUTS, VOC_CLASSES, detect_layout, load_segmentation
from pretextlab.data.sources import Dataset, ImageSet
from pretextlab.errors import UserError

CAMVID = Path("/work/shared/data/camvid")
def stacked(pairs: list) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2),
            torch.as_tensor(np.stack([p[1] for p in pairs])))


def user_error(fn, *fragments: str) -> str:
    """fn() raises a one-line UserError holding every fragment; returns the line."""
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


# ----------------------------------------------------------------------------------------------
# Layouts


def test_images_masks_layout(tmp_path):
    root = tmp_path / "shapes"
    pairs = write_pairs(root / "images", root / "masks", n=4)
    assert detect_layout(root) == "images-masks"
    ds = load_segmentation(root)

    x, y = stacked(pairs)
    assert ds.train.images.dtype == torch.uint8 and ds.train.images.shape == (4, 3, 24, 32)
    assert ds.train.labels.dtype == torch.uint8 and ds.train.labels.shape == (4, 24, 32)
    assert torch.equal(ds.train.images, x) and torch.equal(ds.train.labels, y)
    assert ds.classes == ["0", "1", "2"] and ds.ignore_index is None
    assert ds.val is None and ds.test is None and ds.skipped == 0 and ds.name == "shapes"
    assert ds.fingerprint["images"] == 4 and ds.fingerprint["classes"] == 3


def test_images_masks_sub_splits(tmp_path):
    root = tmp_path / "split"
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        write_pairs(root / "images" / split, root / "masks" / split, n=n, seed=n)
    ds = load_segmentation(root, layout="images-masks")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (3, 2, 1)
    assert ds.val.labels.shape == (2, 24, 32) and ds.fingerprint["images"] == 6


def test_segnet_layout_with_void_class_last(tmp_path):
    root = tmp_path / "camvid-like"
    rng = np.random.default_rng(1)
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            img, mask = scene(rng)
            mask[0, :] = 3  # a row of unlabelled pixels
            Image.fromarray(img).save(root / split / f"f{i}.png")
            save_mask(mask, root / f"{split}annot" / f"f{i}.png")
    (root / "classes.txt").write_text("sky\nroad\ncar\nUnlabelled\n")
    assert detect_layout(root) == "segnet"
    ds = load_segmentation(root)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (3, 2, 2)
    assert ds.classes == ["sky", "road", "car"] and ds.ignore_index == 3
    assert set(torch.unique(ds.train.labels).tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("where", [".", "VOC2012", "VOCdevkit/VOC2012"])
def test_voc_layout_reads_the_listed_images(tmp_path, where):
    root = tmp_path / "voc"
    masks = write_voc(root / where)
    assert detect_layout(root) == "voc"
    ds = load_segmentation(root)
    assert ds.classes == VOC_CLASSES and len(ds.classes) == 21 and ds.ignore_index == 255
    assert len(ds.train) == 2 and len(ds.val) == 1 and ds.test is None
    assert ds.train.images.shape == (2, 3, 24, 32)
    assert torch.equal(ds.train.labels, torch.as_tensor(np.stack([masks["2007_000063"], masks["2007_000032"]])))
    assert torch.equal(ds.val.labels[0], torch.as_tensor(masks["2007_000039"]))


def write_voc(voc: Path) -> dict[str, np.ndarray]:
    """A tiny VOC 2012 tree: 2 listed training images, 1 validation image, 1 listed nowhere; returns the masks."""
    rng = np.random.default_rng(2)
    masks = {}
    for i, name in enumerate(["2007_000032", "2007_000039", "2007_000063", "2007_000999"]):
        img, mask = scene(rng, classes=2)
        mask[mask == 1] = [15, 7, 20, 1][i]  # person, car, tvmonitor, aeroplane
        mask[mask.shape[0] // 2, :] = 255  # VOC's border value
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
        save_mask(mask, voc / "SegmentationClass" / f"{name}.png", mode="P")
        masks[name] = mask
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000063\n2007_000032\n")  # listed order, not file order
    (lists / "val.txt").write_text("2007_000039\n")  # 2007_000999 is in no list: left out
    return masks


# --- downloadable sources, with torchvision's downloads faked (no network in tests) ---------------------------


def test_voc_segmentation_downloads_once_into_the_cache(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeVOC:  # what torchvision's download leaves: root/VOCdevkit/VOC2012
        def __init__(self, root, year, image_set, download):
            calls.append((year, image_set, download))
            if not (Path(root) / "VOCdevkit").exists():
                write_voc(Path(root) / "VOCdevkit" / "VOC2012")

    monkeypatch.setattr(tvd, "VOCSegmentation", FakeVOC)
    ds = load_segmentation("voc-segmentation", cache_dir=tmp_path / "cache")
    assert calls == [("2012", "train", True), ("2012", "val", True)]
    assert ds.classes == VOC_CLASSES and ds.ignore_index == 255 and len(ds.train) == 2 and len(ds.val) == 1
    load_segmentation("voc-segmentation", cache_dir=tmp_path / "cache")
    assert len(calls) == 2  # read from the cache the second time


def test_oxford_pets_trimaps_become_background_pet_and_ignored_border(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    class FakePets:
        def __init__(self, root, split, target_types, download):
            assert target_types == "segmentation" and download
            self.n = 3 if split == "trainval" else 1

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            trimap = np.full((20, 30), 2, np.uint8)  # background
            trimap[5:15, 5:20], trimap[5, 5:20] = 1, 3  # the pet, its border
            return Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)), Image.fromarray(trimap)

    monkeypatch.setattr(tvd, "OxfordIIITPet", FakePets)
    ds = load_segmentation("oxford-pets", cache_dir=tmp_path / "cache")
    assert ds.classes == ["background", "pet"] and ds.ignore_index == 255
    assert len(ds.train) == 3 and len(ds.test) == 1
    assert set(ds.train.labels.unique().tolist()) == {0, 1, 255} and int(ds.train.labels[0, 10, 10]) == 1


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    from urllib.error import URLError

    import torchvision.datasets as tvd

    def offline(*a, **k):
        raise URLError("no network")

    monkeypatch.setattr(tvd, "VOCSegmentation", offline)
    said = user_error(lambda: load_segmentation("voc-segmentation", cache_dir=tmp_path / "cache"),
                      "could not download voc-segmentation", "copy it there")
    assert "\n" not in said


def test_detect_layout_names_every_layout_when_none_matches(tmp_path):
    (tmp_path / "plain" / "train").mkdir(parents=True)  # a classification root, not a segmentation one
    msg = user_error(lambda: detect_layout(tmp_path / "plain"), "images/", "trainannot/", "JPEGImages/")
    assert all(name in msg for name in LAYOUTS)


def test_two_layouts_at_once_ask_for_layout(tmp_path):
    root = tmp_path / "both"
    write_pairs(root / "images", root / "masks", n=1)
    write_pairs(root / "train", root / "trainannot", n=1)
    user_error(lambda: load_segmentation(root), "layout=")
    assert len(load_segmentation(root, layout="segnet").train) == 1


# ----------------------------------------------------------------------------------------------
# Mask formats


def test_palette_and_grayscale_masks_give_the_same_indices(tmp_path):
    gray, pal = tmp_path / "gray", tmp_path / "pal"
    write_pairs(gray / "images", gray / "masks", n=3, mode="L")
    write_pairs(pal / "images", pal / "masks", n=3, mode="P")
    with Image.open(next((pal / "masks").iterdir())) as im:
        assert im.mode == "P"
    a, b = load_segmentation(gray), load_segmentation(pal)
    assert torch.equal(a.train.labels, b.train.labels) and a.classes == b.classes


def test_binary_0_255_masks_become_0_1(tmp_path):
    root = tmp_path / "binary"
    pairs = write_pairs(root / "images", root / "masks", n=3, classes=2)
    for i, (_, mask) in enumerate(pairs):
        save_mask(mask * 255, root / "masks" / f"s{i:02d}.png")
    ds = load_segmentation(root)
    assert ds.classes == ["background", "foreground"] and ds.ignore_index is None
    assert torch.equal(ds.train.labels, stacked(pairs)[1])
    assert set(torch.unique(ds.train.labels).tolist()) == {0, 1}


RGB_CODES = [(0, 0, 0), (128, 64, 128), (64, 0, 128)]


def write_rgb_root(root: Path, n: int = 3) -> list:
    pairs = write_pairs(root / "images", root / "masks", n=n)
    for i, (_, mask) in enumerate(pairs):
        Image.fromarray(np.array(RGB_CODES, np.uint8)[mask]).save(root / "masks" / f"s{i:02d}.png")
    return pairs


@pytest.mark.parametrize("name", ["colors.txt", "colormap.txt"])
def test_rgb_masks_with_a_colour_map(tmp_path, name):
    root = tmp_path / "rgb"
    pairs = write_rgb_root(root)
    (root / name).write_text("background 0 0 0\nroad 128 64 128\nparked car 64 0 128\n")
    ds = load_segmentation(root)
    assert ds.classes == ["background", "road", "parked car"]
    assert torch.equal(ds.train.labels, stacked(pairs)[1])


def test_rgb_masks_without_a_colour_map_is_user_error(tmp_path):
    root = tmp_path / "rgb"
    write_rgb_root(root)
    user_error(lambda: load_segmentation(root), "s00.png", "colors.txt", "name r g b")


def test_rgb_mask_colour_missing_from_the_map_is_user_error(tmp_path):
    root = tmp_path / "rgb"
    write_rgb_root(root)
    (root / "colors.txt").write_text("background 0 0 0\nroad 128 64 128\n")
    user_error(lambda: load_segmentation(root), "64 0 128", "colors.txt", "add a line")


# ----------------------------------------------------------------------------------------------
# The ignore value


def ignore_root(tmp_path: Path, extra: int | None = None, classes: str | None = None) -> Path:
    root = tmp_path / "ign"
    pairs = write_pairs(root / "images", root / "masks", n=2)
    if extra is not None:
        for i, (_, mask) in enumerate(pairs):
            mask[-1, :] = extra
            save_mask(mask, root / "masks" / f"s{i:02d}.png")
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root


def test_void_class_not_last_stays_in_the_list(tmp_path):
    ds = load_segmentation(ignore_root(tmp_path, classes="void\nroad\ncar\n"))
    assert ds.classes == ["void", "road", "car"] and ds.ignore_index == 0


def test_255_in_index_masks_is_ignored(tmp_path):
    ds = load_segmentation(ignore_root(tmp_path, extra=255))
    assert ds.ignore_index == 255 and ds.classes == ["0", "1", "2"]


def test_ignore_argument_wins(tmp_path):
    ds = load_segmentation(ignore_root(tmp_path, extra=3, classes="a\nb\nc\nunlabeled\n"), ignore_index=2)
    assert ds.ignore_index == 2 and ds.classes == ["a", "b", "c", "unlabeled"]
    ds = load_segmentation(ignore_root(tmp_path / "x", extra=3), ignore_index=3)
    assert ds.ignore_index == 3 and ds.classes == ["0", "1", "2"]


def test_no_ignore_value_by_default(tmp_path):
    ds = load_segmentation(ignore_root(tmp_path, extra=3))
    assert ds.ignore_index is None and ds.classes == ["0", "1", "2", "3"]


# ----------------------------------------------------------------------------------------------
# Sizes


def square_pair(w: int, h: int, box: tuple[int, int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise (class 0) with a white box (x0, y0, x1, y1) of class 7 and, right of it, a grey strip of class 1."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1], mask[y0:y1, x0:x1] = 255, 7
    img[y0:y1, x1:x1 + 4], mask[y0:y1, x1:x1 + 4] = 120, 1
    return img, mask


def write_square_root(root: Path, sizes: list[tuple[int, int]]) -> None:
    for i, (w, h) in enumerate(sizes):
        img, mask = square_pair(w, h, (w // 4, h // 6, w // 2, h // 2), seed=i)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"s{i}.png")
        save_mask(mask, root / "masks" / f"s{i}.png")


def centroid(a: torch.Tensor) -> torch.Tensor:
    yy, xx = torch.nonzero(a, as_tuple=True)
    return torch.stack([xx.float().mean(), yy.float().mean()])


def test_resize_keeps_mask_values_and_alignment_exact_factor(tmp_path):
    root = tmp_path / "sq"
    write_square_root(root, [(64, 48)])  # box x 16..31, y 8..23
    ds = load_segmentation(root, image_size=24)  # shorter side 48 -> 24: exactly half
    x, y = ds.train.images[0], ds.train.labels[0]
    assert x.shape == (3, 24, 32) and y.shape == (24, 32)
    assert set(torch.unique(y).tolist()) <= {0, 1, 7}
    box = torch.zeros(24, 32, dtype=torch.bool)
    box[4:12, 8:16] = True
    assert torch.equal(y == 7, box)
    assert (x[:, 5:11, 9:15] > 200).all()  # the box's inside (bilinear blends its one-pixel rim)
    assert (x[:, 13:] < 60).all() and (x[:, :3] < 60).all()  # noise above and below it stays dark


def test_resize_non_integer_factor_keeps_image_and_mask_aligned(tmp_path):
    root = tmp_path / "sq"
    write_square_root(root, [(64, 48), (40, 40)])
    ds = load_segmentation(root, image_size=30)  # 64x48 at shorter side 30: 40x30, rounded to 40x32
    assert ds.train.images.shape == (2, 3, 32, 40) and ds.train.labels.shape == (2, 32, 40)
    assert set(torch.unique(ds.train.labels).tolist()) <= {0, 1, 7}  # nearest: no value between 1 and 7
    for k, (w, h) in enumerate([(64, 48), (40, 40)]):
        sx, sy = 40 / w, 32 / h
        x0, y0, x1, y1 = w // 4, h // 6, w // 2, h // 2
        expected = torch.tensor([((x0 + x1) / 2) * sx - 0.5, ((y0 + y1) / 2) * sy - 0.5])
        in_mask = centroid(ds.train.labels[k] == 7)
        in_image = centroid(ds.train.images[k].float().mean(0) > 200)
        assert torch.allclose(in_mask, expected, atol=0.75), (k, in_mask, expected)
        assert torch.allclose(in_image, in_mask, atol=0.75), (k, in_image, in_mask)


def test_without_image_size_other_sizes_go_to_the_first_size(tmp_path):
    root = tmp_path / "mixed"
    write_square_root(root, [(32, 24), (48, 36), (32, 24)])
    ds = load_segmentation(root)
    assert ds.train.images.shape == (3, 3, 24, 32) and ds.train.labels.shape == (3, 24, 32)
    assert set(torch.unique(ds.train.labels).tolist()) <= {0, 1, 7}
    assert torch.equal(ds.train.labels[1] == 7, ds.train.labels[0] == 7)  # the same box, scaled


def test_image_and_mask_of_different_sizes_is_user_error(tmp_path):
    root = tmp_path / "bad"
    write_pairs(root / "images", root / "masks", n=2)
    save_mask(np.zeros((10, 10), np.uint8), root / "masks" / "s01.png")
    user_error(lambda: load_segmentation(root), "s01.png", "10x10", "32x24")


# ----------------------------------------------------------------------------------------------
# Errors and skipped files


def test_image_without_mask_is_user_error(tmp_path):
    root = tmp_path / "r"
    write_pairs(root / "images", root / "masks", n=3)
    (root / "masks" / "s01.png").unlink()
    user_error(lambda: load_segmentation(root), "s01.png", "has no mask", "add a mask")


def test_mask_without_image_is_user_error(tmp_path):
    root = tmp_path / "r"
    write_pairs(root / "images", root / "masks", n=2)
    save_mask(np.zeros((24, 32), np.uint8), root / "masks" / "orphan.png")
    user_error(lambda: load_segmentation(root), "orphan.png", "has no image")


def test_empty_folder_is_user_error(tmp_path):
    root = tmp_path / "r"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    user_error(lambda: load_segmentation(root), "images", "holds no image files")


def test_label_outside_classes_txt_is_user_error(tmp_path):
    root = tmp_path / "r"
    write_pairs(root / "images", root / "masks", n=2)
    (root / "classes.txt").write_text("background\nroad\n")
    user_error(lambda: load_segmentation(root), "s00.png", "label 2", "classes.txt", "ignore_index=2")


def test_unreadable_image_is_skipped_and_counted(tmp_path):
    root = tmp_path / "r"
    pairs = write_pairs(root / "images", root / "masks", n=4)
    (root / "images" / "s02.png").write_bytes(b"not a png at all")
    (root / "masks" / "notes.txt").write_text("a stray file")  # a non-image file: left out and counted
    ds = load_segmentation(root)
    assert len(ds.train) == 3 and ds.skipped == 2
    assert torch.equal(ds.train.labels, stacked([pairs[0], pairs[1], pairs[3]])[1])


def test_every_image_unreadable_is_user_error(tmp_path):
    root = tmp_path / "r"
    write_pairs(root / "images", root / "masks", n=2)
    for f in (root / "images").iterdir():
        f.write_bytes(b"garbage")
    user_error(lambda: load_segmentation(root), "no readable image")


@pytest.mark.parametrize("kw, fragment", [({"layout": "coco"}, "layout 'coco' is unknown"),
                                          ({"image_size": 4}, "--image-size 4"),
                                          ({"ignore_index": 300}, "ignore_index 300")])
def test_bad_arguments_are_user_errors(tmp_path, kw, fragment):
    root = tmp_path / "r"
    write_pairs(root / "images", root / "masks", n=1)
    user_error(lambda: load_segmentation(root, **kw), fragment)


def test_missing_root_is_user_error(tmp_path):
    user_error(lambda: load_segmentation(tmp_path / "nowhere"), "no such folder")


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "r"
    write_pairs(root / "images", root / "masks", n=2)
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(outside)
    (root / "images" / "s01.png").unlink()
    (root / "images" / "s01.png").symlink_to(outside)
    user_error(lambda: load_segmentation(root), "s01.png", "symbolic link", "outside")


def test_symlink_inside_the_root_is_followed(tmp_path):
    root = tmp_path / "r"
    write_pairs(root / "real", root / "masks", n=2)
    (root / "images").symlink_to(root / "real", target_is_directory=True)
    assert len(load_segmentation(root).train) == 2


# ----------------------------------------------------------------------------------------------
# Fingerprint and the Dataset's new fields


def test_fingerprint_follows_names_and_sizes_not_location(tmp_path):
    root = tmp_path / "a"
    write_pairs(root / "images", root / "masks", n=3)
    fp = load_segmentation(root).fingerprint
    assert set(fp) == {"classes", "images", "files"}
    shutil.copytree(root, tmp_path / "b")
    assert load_segmentation(tmp_path / "b").fingerprint == fp
    save_mask(np.zeros((24, 32), np.uint8), root / "masks" / "s00.png")  # another mask: another size
    assert load_segmentation(root).fingerprint != fp


def test_dataset_new_fields_default_to_none():
    train = ImageSet(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]))
    ds = Dataset("x", ["a", "b"], train, None, 0, None, None)  # the positional order is unchanged
    assert ds.val is None and ds.ignore_index is None and ds.image_size == 8


# ----------------------------------------------------------------------------------------------
# The real data, where this machine has it


@pytest.mark.skipif(not CAMVID.exists(), reason="CamVid is not at /work/shared/data/camvid")
def test_camvid():
    ds = load_segmentation(CAMVID, image_size=90, ignore_index=11)
    assert len(ds.train) == 367 and len(ds.val) == 101 and ds.test is None
    assert len(ds.classes) == 11 and ds.ignore_index == 11
    n, c, h, w = ds.train.images.shape
    assert (n, c) == (367, 3) and h % 8 == 0 and w % 8 == 0 and (h, w) == (88, 120)
    assert ds.train.labels.shape == (367, h, w) and ds.val.labels.shape == (101, h, w)
    assert ds.val.images.shape == (101, 3, h, w)
    assert int(ds.train.labels.max()) == 11 and ds.skipped == 0

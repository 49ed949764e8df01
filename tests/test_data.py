"""pretextlab.data: sources, the decode-once cache, splits, label fractions, augmentation."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import COLOURS, GRAYS, SORTED_CLASSES
from PIL import Image

from pretextlab.data import cache as data_mod
from pretextlab.data import channel_stats, label_fraction, load_dataset, make_splits, stratified_split
from pretextlab.data.augment import augment, crop_at, normalize, random_crop, random_flip
from pretextlab.errors import UserError

# ----------------------------------------------------------------------------------------------
# Image folders


def test_image_folder_sorted_classes_labels_and_shapes(make_image_folder, cache_dir):
    root = make_image_folder(n_per_class=5, size=12)
    ds = load_dataset(str(root), cache_dir=cache_dir)

    assert ds.classes == SORTED_CLASSES == ["apple", "mango", "zebra"]
    assert ds.name == root.name
    x, y = ds.train.images, ds.train.labels
    assert x.dtype == torch.uint8 and x.shape == (15, 3, 12, 12)
    assert y.dtype == torch.int64 and y.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert ds.channels == 3 and ds.image_size == 12
    assert ds.test is None and ds.skipped == 0
    # label k holds the colour written for sorted class k (PNG is lossless; noise is +-20)
    for k in range(3):
        mean_rgb = x[y == k].float().mean((0, 2, 3))
        assert torch.allclose(mean_rgb, torch.tensor(COLOURS[k], dtype=torch.float), atol=4)


def test_jpeg_folder_loads(make_image_folder, cache_dir):
    ds = load_dataset(str(make_image_folder(n_per_class=4, fmt="jpg")), cache_dir=cache_dir)
    assert ds.train.images.shape == (12, 3, 12, 12)
    assert torch.bincount(ds.train.labels).tolist() == [4, 4, 4]


def test_grayscale_folder_has_one_channel(make_image_folder, cache_dir):
    ds = load_dataset(str(make_image_folder(gray=True, n_per_class=3)), cache_dir=cache_dir)
    assert ds.channels == 1
    assert ds.train.images.shape == (9, 1, 12, 12)
    for k in range(3):
        level = ds.train.images[ds.train.labels == k].float().mean()
        assert abs(level - GRAYS[k]) < 4


def test_mixed_sizes_resized_to_common_square(make_image_folder, cache_dir):
    make_image_folder("mixed", classes=("a",), n_per_class=3, size=16)  # the most common size: 16x16
    root = make_image_folder("mixed", classes=("b",), n_per_class=2, size=(12, 20), seed=1)  # non-square
    ds = load_dataset(str(root), cache_dir=cache_dir)
    assert ds.train.images.shape == (5, 3, 16, 16)
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1]

    ds10 = load_dataset(str(root), image_size=10, cache_dir=cache_dir)
    assert ds10.train.images.shape == (5, 3, 10, 10)
    assert ds10.cache_file != ds.cache_file  # the size is part of the cache key


@pytest.mark.parametrize("size", [4, 2048])
def test_image_size_out_of_range(make_image_folder, cache_dir, size):
    with pytest.raises(UserError, match="--image-size"):
        load_dataset(str(make_image_folder(n_per_class=2)), image_size=size, cache_dir=cache_dir)


def test_train_test_root_gives_test_split(make_split_root, cache_dir):
    root = make_split_root(n_train=6, n_test=2)
    ds = load_dataset(str(root), cache_dir=cache_dir)
    assert ds.name == root.name
    assert ds.classes == SORTED_CLASSES
    assert ds.train.images.shape == (18, 3, 12, 12)
    assert ds.test is not None
    assert ds.test.images.shape == (6, 3, 12, 12) and ds.test.images.dtype == torch.uint8
    assert ds.test.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_test_split_with_unknown_class_is_user_error(make_split_root, cache_dir):
    root = make_split_root(n_train=2, n_test=1)
    (root / "test" / "kiwi").mkdir()
    Image.new("RGB", (12, 12)).save(root / "test" / "kiwi" / "0.png")
    with pytest.raises(UserError, match="kiwi"):
        load_dataset(str(root), cache_dir=cache_dir)


def _write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6) -> tuple[np.ndarray, list[int]]:
    """A fake cifar-10-batches-py: 5 train batches and a test batch; image i has value 10*label + i%7."""
    root.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    rng = np.random.default_rng(0)
    all_data, all_labels = [], []
    for b in range(1, 7):
        n = per_batch if b <= 5 else n_test
        labels = [int(v) for v in rng.integers(0, 10, n)]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        file = root / (f"data_batch_{b}" if b <= 5 else "test_batch")
        with open(file, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": file.name}, f)
        all_data.append(data)
        all_labels.append(labels)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch}, f)
    return all_data, all_labels


def test_cifar10_pickle_folder(tmp_path, cache_dir):
    root = tmp_path / "cifar-10-batches-py"
    data, labels = _write_cifar10(root)
    ds = load_dataset(str(root), cache_dir=cache_dir)

    assert ds.classes[:3] == ["airplane", "automobile", "bird"] and len(ds.classes) == 10
    assert ds.train.images.shape == (20, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.train.labels.tolist() == sum(labels[:5], [])
    expected = torch.as_tensor(np.concatenate(data[:5]).reshape(-1, 3, 32, 32))
    assert torch.equal(ds.train.images, expected)
    assert ds.test is not None and ds.test.images.shape == (6, 3, 32, 32)
    assert ds.test.labels.tolist() == labels[5]
    assert torch.equal(ds.test.images, torch.as_tensor(data[5].reshape(-1, 3, 32, 32)))
    assert Path(ds.cache_file).name.startswith("cifar-10-batches-py-")

    small = load_dataset(str(root), image_size=16, cache_dir=cache_dir)
    assert small.train.images.shape == (20, 3, 16, 16) and small.test.images.shape == (6, 3, 16, 16)


def test_corrupt_cifar_pickle_is_user_error(tmp_path, cache_dir):
    root = tmp_path / "cifar-10-batches-py"
    _write_cifar10(root)
    (root / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="data_batch_3"):
        load_dataset(str(root), cache_dir=cache_dir)


# ----------------------------------------------------------------------------------------------
# The cache


def test_cache_reused_and_invalidated(make_image_folder, cache_dir, monkeypatch):
    root = make_image_folder(n_per_class=4)
    first = load_dataset(str(root), cache_dir=cache_dir)
    assert first.cache_file is not None and Path(first.cache_file).is_file()
    assert Path(first.cache_file).parent == cache_dir

    # Second load: no decoding at all (decoding would raise), same tensors, same cache file.
    def no_decoding(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")

    with monkeypatch.context() as m:
        m.setattr(data_mod, "folder_dataset", no_decoding)
        second = load_dataset(str(root), cache_dir=cache_dir)
    assert second.cache_file == first.cache_file
    assert second.classes == first.classes
    assert torch.equal(second.train.images, first.train.images)
    assert torch.equal(second.train.labels, first.train.labels)

    # A new file changes the folder's listing: a new cache file and one more image.
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(root / "apple" / "new.png")
    third = load_dataset(str(root), cache_dir=cache_dir)
    assert third.cache_file != first.cache_file and Path(third.cache_file).is_file()
    assert len(third.train) == len(first.train) + 1 == 13
    assert torch.bincount(third.train.labels).tolist() == [5, 4, 4]


def test_cache_dir_from_environment(make_image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PRETEXTLAB_CACHE", str(tmp_path / "envcache"))
    ds = load_dataset(str(make_image_folder(n_per_class=2)))
    assert Path(ds.cache_file).parent == tmp_path / "envcache"


def test_damaged_cache_is_rebuilt(make_image_folder, cache_dir):
    root = make_image_folder(n_per_class=3)
    first = load_dataset(str(root), cache_dir=cache_dir)
    Path(first.cache_file).write_bytes(b"garbage")
    again = load_dataset(str(root), cache_dir=cache_dir)
    assert torch.equal(again.train.images, first.train.images)
    assert torch.load(again.cache_file, weights_only=True)["train"]["images"].shape == (9, 3, 12, 12)


def test_unreadable_files_are_skipped_and_counted(make_image_folder, cache_dir):
    root = make_image_folder(n_per_class=4, fmt="jpg")
    (root / "apple" / "x.jpg").write_bytes(b"\x13\x37" + os.urandom(600))  # random bytes, not a JPEG
    (root / "mango" / "notes.txt").write_text("not an image\n")
    ds = load_dataset(str(root), cache_dir=cache_dir)
    assert ds.skipped == 2
    assert ds.train.images.shape == (12, 3, 12, 12)
    assert torch.bincount(ds.train.labels).tolist() == [4, 4, 4]


def test_truncated_image_is_skipped(make_image_folder, cache_dir):
    root = make_image_folder(n_per_class=3, size=16, fmt="jpg")
    raw = (root / "zebra" / "000.jpg").read_bytes()
    (root / "zebra" / "half.jpg").write_bytes(raw[: len(raw) // 3])  # a readable header, a broken body
    ds = load_dataset(str(root), cache_dir=cache_dir)
    assert ds.skipped == 1 and len(ds.train) == 9


def test_missing_path_is_user_error(tmp_path, cache_dir):
    with pytest.raises(UserError, match="no such file or directory"):
        load_dataset(str(tmp_path / "nope"), cache_dir=cache_dir)


def test_file_instead_of_folder_is_user_error(tmp_path, cache_dir):
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(UserError, match="is a file"):
        load_dataset(str(tmp_path / "f.png"), cache_dir=cache_dir)


def test_folder_without_class_folders_is_user_error(tmp_path, cache_dir):
    (tmp_path / "empty").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "empty" / "loose.png")  # a file, but no class folder
    with pytest.raises(UserError, match="no class sub-folders"):
        load_dataset(str(tmp_path / "empty"), cache_dir=cache_dir)


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_class_folder_without_images_is_user_error(make_image_folder, cache_dir, content):
    root = make_image_folder(n_per_class=2)
    (root / "pear").mkdir()
    if content:
        (root / "pear" / content).write_text("hello")
    with pytest.raises(UserError, match="pear.*no readable images"):
        load_dataset(str(root), cache_dir=cache_dir)


# ----------------------------------------------------------------------------------------------
# Splits and label fractions


@pytest.fixture
def labels() -> torch.Tensor:
    """60 labels, 30/20/10 per class, interleaved."""
    y = torch.tensor([0] * 30 + [1] * 20 + [2] * 10)
    return y[torch.randperm(60, generator=torch.Generator().manual_seed(3))]


def test_stratified_split_proportions_disjoint_complete(labels):
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert torch.bincount(labels[va], minlength=3).tolist() == [6, 4, 2]
    assert torch.bincount(labels[tr], minlength=3).tolist() == [24, 16, 8]
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(60))
    assert tr.tolist() == sorted(tr.tolist()) and va.tolist() == sorted(va.tolist())


def test_stratified_split_seeded(labels):
    a = stratified_split(labels, 0.2, seed=0)
    b = stratified_split(labels, 0.2, seed=0)
    c = stratified_split(labels, 0.2, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.bincount(labels[c[1]], minlength=3).tolist() == [6, 4, 2]


def test_stratified_split_keeps_one_of_each_side():
    y = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    tr, va = stratified_split(y, 0.05, seed=0)  # 5% of 2 rounds to 0: still one val example per class
    assert torch.bincount(y[va]).tolist() == [1, 1]
    assert torch.bincount(y[tr]).tolist() == [1, 7]


@pytest.mark.parametrize("vf", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_bad_fraction(labels, vf):
    with pytest.raises(UserError, match="val-fraction"):
        stratified_split(labels, vf, seed=0)


def test_label_fraction_stratified_and_seeded(labels):
    half = label_fraction(labels, 0.5, seed=0)
    assert torch.bincount(labels[half], minlength=3).tolist() == [15, 10, 5]
    assert len(set(half.tolist())) == 30 and half.tolist() == sorted(half.tolist())
    assert torch.equal(half, label_fraction(labels, 0.5, seed=0))
    other = label_fraction(labels, 0.5, seed=1)
    assert not torch.equal(half, other)
    assert torch.bincount(labels[other], minlength=3).tolist() == [15, 10, 5]


@pytest.mark.parametrize("seed", [0, 7])
def test_label_fraction_nested(labels, seed):
    s01 = set(label_fraction(labels, 0.1, seed).tolist())
    s05 = set(label_fraction(labels, 0.5, seed).tolist())
    s10 = set(label_fraction(labels, 1.0, seed).tolist())
    assert len(s01) == 3 + 2 + 1
    assert s01 < s05 < s10 == set(range(60))


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, 1.0001])
def test_label_fraction_outside_unit_interval(labels, fraction):
    with pytest.raises(UserError, match=r"outside \(0, 1\]"):
        label_fraction(labels, fraction, seed=0)


def test_label_fraction_leaving_a_class_empty(labels):
    # class 2 has 10 images: 4% of 10 rounds to 0
    with pytest.raises(UserError, match="'zebra'.*no labelled example"):
        label_fraction(labels, 0.04, seed=0, classes=["apple", "mango", "zebra"])
    # the message's lower bound (1/10 for the smallest class) is enough
    assert torch.bincount(labels[label_fraction(labels, 0.1, seed=0)]).tolist() == [3, 2, 1]


def test_make_splits_indices(tiny_dataset):
    ds = tiny_dataset  # 3 classes x 20
    s = make_splits(ds, fraction=0.5, seed=0, val_fraction=0.25, split_seed=0)
    tr, va = s.indices["train"], s.indices["val"]
    assert all(isinstance(i, int) for i in tr + va)
    assert set(tr).isdisjoint(va)
    assert len(va) == 15 and len(tr) == 3 * round(15 * 0.5)
    assert torch.equal(s.x_train, ds.train.images[tr]) and torch.equal(s.y_train, ds.train.labels[tr])
    assert torch.equal(s.x_val, ds.train.images[va]) and torch.equal(s.y_val, ds.train.labels[va])
    assert torch.bincount(s.y_val).tolist() == [5, 5, 5]
    # the pool is every non-validation image, labelled or not
    assert len(s.x_pool) == 45
    assert s.classes == ds.classes
    mean, std = channel_stats(s.x_pool)
    assert torch.equal(s.mean, mean) and torch.equal(s.std, std)

    # the validation split depends on split_seed only: every run of a study shares it
    s2 = make_splits(ds, fraction=0.5, seed=1, val_fraction=0.25, split_seed=0)
    assert s2.indices["val"] == va and s2.indices["train"] != tr
    full = make_splits(ds, fraction=1.0, seed=0, val_fraction=0.25, split_seed=0)
    assert set(tr) < set(full.indices["train"]) == set(range(60)) - set(va)
    assert make_splits(ds, 0.5, 0, 0.25, split_seed=1).indices["val"] != va


# ----------------------------------------------------------------------------------------------
# Augmentation and normalisation


@pytest.fixture
def batch() -> torch.Tensor:
    """32 random (asymmetric) uint8 images, 3x10x10."""
    return torch.randint(0, 256, (32, 3, 10, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augmentations_keep_shape_and_dtype(batch, dtype):
    x = batch.to(dtype)
    for out in (augment(x, gen(0)), augment(x, gen(0), pad=2, flip=False), random_crop(x, 3, gen(0)),
                random_flip(x, gen(0))):
        assert out.shape == x.shape and out.dtype == dtype


def test_crop_with_zero_pad_is_identity(batch):
    assert torch.equal(random_crop(batch, 0, gen(0)), batch)
    assert torch.equal(augment(batch, gen(0), pad=0, flip=False), batch)


def test_flip_flips_some_and_keeps_the_rest(batch):
    out = random_flip(batch, gen(1))
    flipped = torch.tensor([torch.equal(o, x.flip(2)) for o, x in zip(out, batch)])
    kept = torch.tensor([torch.equal(o, x) for o, x in zip(out, batch)])
    assert (flipped ^ kept).all()  # every image is either flipped horizontally or untouched
    assert 4 <= int(flipped.sum()) <= 28  # ~half of 32
    assert torch.equal(out[flipped], batch[flipped].flip(3))


def _window_offsets(out: torch.Tensor, x: torch.Tensor, pad: int) -> list[tuple[int, int] | None]:
    """For each image, the (dy, dx) window of the reflect-padded input it equals, or None."""
    xp = F.pad(x.float(), (pad,) * 4, mode="reflect")
    h, w = x.shape[-2:]
    found = []
    for o, p in zip(out.float(), xp):
        hit = None
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                if torch.equal(o, p[:, dy:dy + h, dx:dx + w]):
                    hit = (dy, dx)
        found.append(hit)
    return found


def test_crops_are_translations(batch):
    pad = 2
    out = random_crop(batch, pad, gen(2))
    offsets = _window_offsets(out, batch, pad)
    assert None not in offsets
    assert len(set(offsets)) > 3  # the offsets vary over the batch
    assert any(o != (pad, pad) for o in offsets)


def test_augment_is_translation_then_optional_flip(batch):
    out = augment(batch, gen(3), pad=2)
    ok = [a is not None or b is not None
          for a, b in zip(_window_offsets(out, batch, 2), _window_offsets(out.flip(3), batch, 2))]
    assert all(ok)


def test_augment_is_the_crop_then_the_flip_drawn_after_it(batch):
    """The flip folded into the crop's gather gives the bits of cropping, then flipping with the next draw."""
    for pad in (0, 2):
        g = gen(7)
        cropped = random_crop(batch, pad, g)
        assert torch.equal(augment(batch, gen(7), pad=pad), random_flip(cropped, g))


@pytest.mark.parametrize("channels_last", [False, True])
def test_crop_at_equals_indexing_in_either_layout(batch, channels_last):
    x = batch.float().contiguous(memory_format=torch.channels_last) if channels_last else batch.float()
    top, left, flip = torch.tensor([0, 3, 5, 1]), torch.tensor([2, 0, 4, 5]), torch.tensor([True, False, True, False])
    out = crop_at(x[:4], top, left, 5, 4, flip)
    for i in range(4):
        image = x[i].flip(2) if flip[i] else x[i]
        assert torch.equal(out[i], image[:, top[i]:top[i] + 5, left[i]:left[i] + 4])
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_augmentation_deterministic_for_a_seed(batch):
    assert torch.equal(augment(batch, gen(5)), augment(batch, gen(5)))
    assert torch.equal(random_crop(batch, 2, gen(5)), random_crop(batch, 2, gen(5)))
    assert torch.equal(random_flip(batch, gen(5)), random_flip(batch, gen(5)))
    assert not torch.equal(augment(batch, gen(5)), augment(batch, gen(6)))


def test_channel_stats_and_normalize(batch):
    x = batch
    mean, std = channel_stats(x)
    ref = x.double() / 255
    assert torch.allclose(mean.double(), ref.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), ref.std((0, 2, 3), unbiased=False), atol=1e-5)
    z = normalize(x, mean, std)
    assert z.dtype == torch.float32 and z.shape == x.shape
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert batch.dtype == torch.uint8  # input untouched
    cl = normalize(x, mean, std, channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, z)


def test_channel_stats_of_a_constant_image_do_not_divide_by_zero():
    x = torch.full((4, 1, 8, 8), 128, dtype=torch.uint8)
    mean, std = channel_stats(x)
    assert mean.item() == pytest.approx(128 / 255)
    assert std.item() >= 1e-3
    assert torch.isfinite(normalize(x, mean, std)).all()

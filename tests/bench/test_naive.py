"""pretextlab.bench.naive: the tutorial baseline reads the folder pretextlab reads, trains, and evaluates it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pretextlab.bench import write_synthetic_folder as bench_write_synthetic_folder
from pretextlab.bench.naive import check_image_folder, eval_pass, image_folder_sets, train_step, write_synthetic_folder
from pretextlab.data import load_dataset, make_splits
from pretextlab.errors import UserError


def test_synthetic_folder_is_a_seeded_image_folder_of_jpegs(tmp_path, cache_dir):
    assert bench_write_synthetic_folder is write_synthetic_folder  # the bench's public name for it
    root = write_synthetic_folder(tmp_path / "a", classes=3, per_class=4, size=16)
    assert sorted(p.name for p in root.iterdir()) == ["class_00", "class_01", "class_02"]
    assert all(len(list(d.glob("*.jpg"))) == 4 for d in root.iterdir())
    ds = load_dataset(str(root), cache_dir=cache_dir)
    assert (len(ds.train), ds.image_size, ds.channels) == (12, 16, 3)
    again = write_synthetic_folder(tmp_path / "b", classes=3, per_class=4, size=16)
    first, second = (np.asarray(Image.open(r / "class_01" / "00002.jpg")) for r in (root, again))
    assert np.array_equal(first, second)  # the same seed writes the same images


def test_check_image_folder(tmp_path, make_image_folder, make_split_root):
    flat, split = make_image_folder(), make_split_root()
    assert check_image_folder(flat) == flat
    assert check_image_folder(split) == split  # its train/ is what ImageFolder reads
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(UserError, match="ImageFolder"):
            check_image_folder(bad)


@pytest.mark.parametrize("kw, channels", [({}, 3), ({"gray": True, "size": (12, 20)}, 1)])
def test_baseline_trains_and_evaluates_on_the_folder(make_image_folder, cache_dir, kw, channels):
    root = make_image_folder(n_per_class=6, **kw)
    ds = load_dataset(str(root), cache_dir=cache_dir)
    splits = make_splits(ds, 1.0, seed=0)
    sets = image_folder_sets(root, ds, splits)
    size = ds.image_size

    x, y = next(sets.train_batches(4))
    assert x.shape == (4, channels, size, size) and x.dtype == torch.float32 and y.shape == (4,)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, len(ds.classes)))
    before = [p.detach().clone() for p in model.parameters()]
    step = train_step(model, sets.train_batches(4))
    assert step() == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the step trained

    n = len(sets.val_indices)
    assert n > 0
    with torch.no_grad():
        assert eval_pass(model.eval(), sets.eval_loader(n, 4)) == n
        assert eval_pass(model, sets.eval_loader(1, 4)) == 1

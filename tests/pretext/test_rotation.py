"""Rotation prediction: labels match the rotations, options are checked, the task is learnable."""

import pytest
import torch

from pretextlab.errors import UserError
from pretextlab.models import make_backbone
from pretextlab.pretext import make_task
from pretextlab.pretext.rotation import Rotation, RotationOptions, rotate, rotations
from pretextlab.train import TrainConfig, fit


def _unrotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Turn each image back by its label, one image at a time (the slow, obvious way)."""
    return torch.stack([img.rot90(-int(q), (1, 2)) for img, q in zip(x, k)])


@pytest.mark.parametrize("all_rotations", [True, False])
def test_rotating_back_by_the_label_recovers_the_image(all_rotations):
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    r, k = rotations(x, all_rotations, torch.Generator().manual_seed(0))
    originals = x.repeat(4, 1, 1, 1) if all_rotations else x
    assert torch.equal(_unrotate(r, k), originals)
    assert not torch.equal(r, originals)  # rotations did happen
    counts = torch.bincount(k, minlength=4)
    if all_rotations:
        assert counts.tolist() == [64] * 4
    else:
        assert counts.min() >= 6  # all four angles drawn


def test_quarter_turn_is_counter_clockwise():
    x = torch.tensor([[1, 2], [3, 4]]).view(1, 1, 2, 2)
    assert rotate(x, torch.tensor([1])).flatten().tolist() == [2, 4, 1, 3]  # top-right corner moves top-left


def test_training_batch_is_normalised_rotations_of_augmented_images(splits_of):
    x = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    task = Rotation(splits_of(x), RotationOptions(all_rotations=True, flip=False, pad=0))
    inp, k = task.batch(torch.tensor([3, 5]), torch.Generator().manual_seed(0))
    assert inp.shape == (8, 3, 8, 8) and inp.dtype == torch.float32 and k.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    pixels = inp * task.splits.std.view(1, -1, 1, 1) + task.splits.mean.view(1, -1, 1, 1)
    assert torch.allclose(_unrotate(pixels, k), x[[3, 5]].repeat(4, 1, 1, 1).float() / 255, atol=1e-5)


def test_bad_options_are_user_errors(splits_of):
    with pytest.raises(UserError, match="pad 8 is not smaller"):
        make_task("rotation", splits_of(torch.zeros(20, 3, 8, 8, dtype=torch.uint8)), {"pad": 8}, "fp32")
    with pytest.raises(UserError, match="--option angles: pretext .rotation. has no such option"):
        make_task("rotation", splits_of(torch.zeros(20, 3, 8, 8, dtype=torch.uint8)), {"angles": 8}, "fp32")


def test_train_accuracy_counts_every_rotated_copy(tmp_path, splits_of):
    """A head that always says 0 degrees is right on exactly a quarter of the 4B inputs a batch holds."""
    task = Rotation(splits_of(torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8)))
    model = task.make_model(make_backbone("fast"))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([1e6, 0, 0, 0]))
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-12, weight_decay=0, precision="fp32")
    history = fit(model, task, cfg, tmp_path, {"kind": "test"}, quiet=True)
    assert history[0]["train_accuracy"] == 0.25
    assert history[0]["val_accuracy"] == 0.25


def test_learns_above_chance_on_images_with_an_up(splits_of, gradient_images, train_a_little):
    torch.manual_seed(0)
    task = Rotation(splits_of(gradient_images(256, 16), n_val=64), RotationOptions(pad=2))
    model = task.make_model(make_backbone("fast"))
    assert task.evaluate(model)["accuracy"] < 0.5
    train_a_little(task, model, steps=8)
    assert task.evaluate(model)["accuracy"] > 0.8  # chance is 0.25


def test_pretrains_end_to_end(pretrain_and_finetune):
    summary = pretrain_and_finetune("rotation", {"all_rotations": False})
    assert summary["chance"] == 0.25 and summary["options"]["all_rotations"] is False
    assert "accuracy" in summary["best"]


def test_non_square_images_are_cut_square_before_turning(splits_of):
    """A landscape image turned a quarter would give its angle away by its shape: every input is square."""
    from pretextlab.pretext.rotation import Rotation, RotationOptions

    task = Rotation(splits_of(torch.randint(0, 255, (20, 3, 24, 32), dtype=torch.uint8)), RotationOptions())
    x, k = task.batch(torch.arange(4), torch.Generator().manual_seed(0))
    assert x.shape == (16, 3, 24, 24) and k.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4

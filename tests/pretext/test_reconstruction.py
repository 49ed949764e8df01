"""Masked-image reconstruction: masks, the masked loss, decoder shapes for every backbone, and that it learns."""

import pytest
import torch

from pretextlab.errors import UserError
from pretextlab.models import BACKBONES, make_backbone
from pretextlab.pretext import make_task
from pretextlab.pretext.reconstruction import (
    Hidden,
    Reconstruction,
    ReconstructionNet,
    ReconstructionOptions,
    masked_mse,
    random_mask,
)


def test_random_mask_hides_whole_patches_in_the_asked_share():
    m = random_mask(50, 4, 0.6, 3, torch.Generator().manual_seed(0))
    assert m.shape == (50, 1, 12, 12) and m.dtype == torch.bool
    cells = m[:, 0, ::3, ::3]  # one pixel per patch
    assert torch.equal(m[:, 0], cells.repeat_interleave(3, 1).repeat_interleave(3, 2))  # patch-aligned blocks
    assert (cells.flatten(1).sum(1) == 10).all()  # round(0.6 * 16)
    assert len({tuple(c.flatten().tolist()) for c in cells}) > 40  # drawn per image
    assert torch.equal(m, random_mask(50, 4, 0.6, 3, torch.Generator().manual_seed(0)))


def test_batch_hides_the_masked_pixels_and_keeps_the_clean_image_as_target(splits_of):
    x = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    task = Reconstruction(splits_of(x), ReconstructionOptions(patch=2, pad=0, flip=False))
    inp, target = task.batch(torch.tensor([1, 4, 7]), torch.Generator().manual_seed(0))
    clean, m = target.image, target.mask.bool()
    assert inp.shape == clean.shape == (3, 3, 8, 8) and target.mask.shape == (3, 1, 8, 8)
    assert torch.allclose(clean * task.splits.std.view(1, -1, 1, 1) + task.splits.mean.view(1, -1, 1, 1),
                          x[[1, 4, 7]].float() / 255, atol=1e-5)
    assert torch.equal(inp, torch.where(m, 0.0, clean))


def test_masked_mse_scores_hidden_pixels_only():
    clean = torch.zeros(2, 3, 4, 4)
    m = torch.zeros(2, 1, 4, 4)
    m[0, :, :2, :2] = 1  # 4 hidden pixels x 3 channels
    target = Hidden(clean, m)
    out = torch.zeros(2, 3, 4, 4)
    out[0, :, :2, :2] = 2.0  # error 2 on every hidden value
    out[1] = 100.0  # visible everywhere: must not count
    assert masked_mse(out, target).item() == pytest.approx(4.0)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_decoder_paints_an_image_of_the_input_size_for_every_backbone(name):
    torch.manual_seed(0)
    net = ReconstructionNet(make_backbone(name, 3), channels=3, image_size=32, hidden=16)
    assert net.backbone.training  # the probe of the map size left the mode alone
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 3, 32, 32)


def test_decoder_crops_a_partial_last_cell():
    net = ReconstructionNet(make_backbone("fast", 1), channels=1, image_size=20)  # maps 20 -> 3x3 cells of 7 px
    with torch.no_grad():
        assert net(torch.randn(2, 1, 20, 20)).shape == (2, 1, 20, 20)


def test_a_side_the_patch_does_not_divide_is_masked_to_the_border(splits_of):
    # Fashion-MNIST's 28 px, one channel: the default 3 px patch leaves a 1 px last row and column
    x = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    task = Reconstruction(splits_of(x), ReconstructionOptions(pad=0, flip=False, hidden=8))
    assert task.patch == 3 and task.cells == 10
    inp, target = task.batch(torch.arange(8), torch.Generator().manual_seed(0))
    assert inp.shape == target.image.shape == target.mask.shape == (8, 1, 28, 28)
    m = target.mask.bool()
    blocks = m[:, :, ::3, ::3].repeat_interleave(3, 2).repeat_interleave(3, 3)
    assert torch.equal(m[:, :, :27, :27], blocks[:, :, :27, :27])
    assert m[:, :, 27:].any() and 0.45 < m.float().mean() < 0.75  # the border cells are masked too
    torch.manual_seed(0)
    with torch.no_grad():
        out = task.make_model(make_backbone("fast", 1))(inp)
    assert out.shape == (8, 1, 28, 28) and torch.isfinite(task.loss(out, target))


def test_bad_options_are_user_errors(splits_of):
    s = splits_of(torch.zeros(20, 3, 12, 12, dtype=torch.uint8))
    with pytest.raises(UserError, match="patch 12 must be smaller than the 12 px side"):
        make_task("reconstruction", s, {"patch": 12}, "fp32")
    with pytest.raises(UserError, match="mask_ratio must be between 0 and 1"):
        make_task("reconstruction", s, {"mask_ratio": 1.0}, "fp32")


def test_loss_falls_with_training(splits_of, gradient_images, train_a_little):
    """Images that share a layout: the decoder learns to paint the hidden part of the gradient."""
    torch.manual_seed(0)
    task = Reconstruction(splits_of(gradient_images(128, 16), n_val=32), ReconstructionOptions(pad=0, hidden=32))
    model = task.make_model(make_backbone("fast"))
    before = task.evaluate(model)
    train_a_little(task, model, steps=30)
    after = task.evaluate(model)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["psnr"] > before["psnr"] + 3


def test_pretrains_end_to_end(pretrain_and_finetune):
    summary = pretrain_and_finetune("reconstruction", {"mask_ratio": 0.5})
    assert summary["chance"] is None and set(summary["best"]) == {"loss", "psnr"}
    assert summary["options"]["mask_ratio"] == 0.5


def test_non_square_images_are_cut_square(splits_of):
    from pretextlab.pretext.reconstruction import Reconstruction

    task = Reconstruction(splits_of(torch.randint(0, 255, (20, 3, 24, 32), dtype=torch.uint8)))
    x, target = task.batch(torch.arange(4), torch.Generator().manual_seed(0))
    assert x.shape == target.image.shape == (4, 3, 24, 24)

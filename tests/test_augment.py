"""pretextlab.data.augment.joint_random_resized_crop: one random crop, scale and flip for an image and its mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pretextlab.data.augment import joint_random_resized_crop

COLOUR = torch.tensor([200, 40, 120], dtype=torch.uint8)


def square_scene(n: int, size: int = 48) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int, int]]]:
    """n images (dark noise) with a COLOUR square, and masks with class 2 exactly there, class 0 elsewhere
    and an ignored (255) strip on top; each image's square at its own, off-centre place (a flip would show)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 30, (n, 3, size, size), generator=g, dtype=torch.uint8)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    masks[:, :3] = 255
    boxes = []
    for k in range(n):
        top, left, h, w = 8 + 2 * k % 16, 5 + 3 * k % 12, 14, 10
        images[k, :, top:top + h, left:left + w] = COLOUR[:, None, None]
        masks[k, top:top + h, left:left + w] = 2
        boxes.append((top, left, h, w))
    return images, masks, boxes


def dilate(x: torch.Tensor) -> torch.Tensor:
    """x (B, H, W) bool grown by one pixel in all 8 directions."""
    return F.max_pool2d(x[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0


def test_image_and_mask_stay_aligned_through_crop_scale_and_flip():
    images, masks, _ = square_scene(12)
    x, y = joint_random_resized_crop(images, masks, (32, 40), torch.Generator().manual_seed(1), scale=(0.6, 1.0))
    # where the image shows the square's colour (closer to it than to the dark background) ...
    coloured = (x.float() - COLOUR.float()[:, None, None]).abs().sum(1) < (x.float()).sum(1)
    labelled = y == 2
    assert labelled.any(dim=(1, 2)).all()  # the square is inside every crop, so the test tests something
    # ... the mask says class 2, and back, up to a 1-pixel rim where bilinear and nearest round differently
    assert not (coloured & ~dilate(labelled)).any()
    assert not (labelled & ~dilate(coloured)).any()
    # far from the rim they agree exactly
    inner = ~dilate(coloured) | ~dilate(~coloured)
    assert (coloured[inner] == labelled[inner]).all()


def test_mask_values_are_input_values_never_blends():
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (6, 3, 20, 24), generator=g, dtype=torch.uint8)
    values = torch.tensor([0, 3, 7, 200, 255], dtype=torch.uint8)
    masks = values[torch.randint(0, 5, (6, 20, 24), generator=g)]
    for seed in range(4):
        _, y = joint_random_resized_crop(images, masks, (13, 17), torch.Generator().manual_seed(seed), scale=(0.3, 1))
        assert set(y.unique().tolist()) <= set(values.tolist())


def test_shapes_and_dtypes():
    images, masks, _ = square_scene(3, size=40)
    x, y = joint_random_resized_crop(images, masks, (24, 16), torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 24, 16) and x.dtype == torch.uint8
    assert y.shape == (3, 24, 16) and y.dtype == torch.uint8
    with pytest.raises(ValueError, match="do not match"):
        joint_random_resized_crop(images, masks[:, :-1], (24, 16), torch.Generator())
    with pytest.raises(ValueError, match="scale"):
        joint_random_resized_crop(images, masks, (24, 16), torch.Generator(), scale=(0.5, 1.5))


def test_same_seed_same_output_other_seed_other_output():
    images, masks, _ = square_scene(5)
    a = joint_random_resized_crop(images, masks, (24, 24), torch.Generator().manual_seed(7))
    b = joint_random_resized_crop(images, masks, (24, 24), torch.Generator().manual_seed(7))
    c = joint_random_resized_crop(images, masks, (24, 24), torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # a resumed run draws the next batch from the generator's saved state: the same batch
    g = torch.Generator().manual_seed(7)
    joint_random_resized_crop(images, masks, (24, 24), g)
    state = g.get_state()
    nxt = joint_random_resized_crop(images, masks, (24, 24), g)
    resumed = joint_random_resized_crop(images, masks, (24, 24), torch.Generator().set_state(state))
    assert torch.equal(nxt[0], resumed[0]) and torch.equal(nxt[1], resumed[1])


def test_whole_image_without_flip_is_the_identity():
    images, masks, _ = square_scene(4)
    x, y = joint_random_resized_crop(images, masks, (48, 48), torch.Generator().manual_seed(0), scale=(1, 1),
                                     flip=False)
    assert torch.equal(x, images) and torch.equal(y, masks)


def test_flip_mirrors_image_and_mask_together():
    """With the whole image kept at its size, each output is the input or its mirror image, image and mask
    alike; a batch of 16 has both."""
    images, masks, _ = square_scene(16)
    x, y = joint_random_resized_crop(images, masks, (48, 48), torch.Generator().manual_seed(0), scale=(1, 1))
    mirrored = []
    for k in range(16):
        if torch.equal(x[k], images[k]):
            assert torch.equal(y[k], masks[k]), k
            mirrored.append(False)
        else:
            assert torch.equal(x[k], images[k].flip(-1)) and torch.equal(y[k], masks[k].flip(-1)), k
            mirrored.append(True)
    assert 0 < sum(mirrored) < 16


def test_whole_image_resize_is_bilinear_for_images_and_keeps_labels_for_masks():
    images, masks, _ = square_scene(2)
    x, y = joint_random_resized_crop(images, masks, (24, 24), torch.Generator().manual_seed(0), scale=(1, 1),
                                     flip=False)
    ref = F.interpolate(images.float(), size=(24, 24), mode="bilinear", align_corners=False)
    assert (x.float() - ref).abs().max() <= 1  # rounding only
    assert set(y.unique().tolist()) == {0, 2, 255}


def test_each_image_of_a_batch_gets_its_own_crop():
    """Eight copies of one image: outputs differ pairwise, so boxes (and flips) are drawn per image."""
    images, masks, _ = square_scene(1)
    images, masks = images.expand(8, -1, -1, -1).contiguous(), masks.expand(8, -1, -1).contiguous()
    x, y = joint_random_resized_crop(images, masks, (24, 24), torch.Generator().manual_seed(3), flip=False)
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.equal(x[i], x[j]), (i, j)


def test_crop_zooms_into_the_box():
    """A small box magnifies: with scale (0.25, 0.25) the square (14x10 of 48x48) covers about 4 times the share
    of the output it covers of the image, when the crop holds it whole."""
    images, masks, boxes = square_scene(8)
    _, y = joint_random_resized_crop(images, masks, (48, 48), torch.Generator().manual_seed(4), scale=(0.25, 0.25),
                                     flip=False)
    share = (y == 2).float().mean(dim=(1, 2))
    whole = 14 * 10 / 48 ** 2
    assert share.max() == pytest.approx(4 * whole, rel=0.25)
    assert (share <= 4 * whole * 1.25).all()

"""SimCLR: NT-Xent by hand, batched augmentations, retrieval learnt above chance, end to end."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from pretextlab.errors import UserError
from pretextlab.models import make_backbone
from pretextlab.pretext import make_task
from pretextlab.pretext.simclr import (
    SimCLR,
    SimCLROptions,
    colour_jitter,
    gray,
    hue_rotate,
    positives,
    random_grayscale,
    resized_crop,
    simclr_augment,
    similarity_logits,
)


def _nt_xent_by_hand(z: list[list[float]], t: float) -> float:
    """Chen et al.'s definition, loop by loop: views i and i + B are a pair (B = len(z) / 2)."""
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    n, total = len(z), 0.0
    for i in range(n):
        partner = (i + n // 2) % n
        others = sum(math.exp(cos(z[i], z[k]) / t) for k in range(n) if k != i)
        total += -math.log(math.exp(cos(z[i], z[partner]) / t) / others)
    return total / n


def test_nt_xent_equals_the_hand_computed_value(splits_of):
    task = SimCLR(splits_of(torch.zeros(20, 3, 8, 8, dtype=torch.uint8)))
    z = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.5]]
    for t in (0.5, 0.1, 1.0):
        got = task.loss(similarity_logits(torch.tensor(z), t), positives(2))
        assert got.item() == pytest.approx(_nt_xent_by_hand(z, t), rel=1e-5)
    # closed form: pairs aligned, every other view orthogonal, t = 1 -> -log(e / (e + 2))
    aligned = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 0.0], [0.0, 1.0]])
    assert task.loss(similarity_logits(aligned, 1.0), positives(2)).item() == pytest.approx(math.log(1 + 2 / math.e))


def test_positives_pair_first_and_second_views():
    assert positives(3).tolist() == [3, 4, 5, 0, 1, 2]
    logits = similarity_logits(torch.randn(6, 4), 0.5)
    assert torch.isinf(logits.diagonal()).all() and torch.isfinite(logits.fill_diagonal_(0)).all()


@pytest.mark.parametrize("channels", [3, 1])
def test_augment_keeps_shape_dtype_range_and_is_seeded(channels):
    x = torch.randint(0, 256, (16, channels, 12, 12), dtype=torch.uint8)
    o = SimCLROptions()
    a = simclr_augment(x, o, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, simclr_augment(x, o, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, simclr_augment(x, o, torch.Generator().manual_seed(1)))


def test_the_flip_in_the_crop_grid_mirrors_the_crop():
    """Mirroring by the sampling grid gives the bits of cropping and then flipping (at an even width)."""
    from pretextlab.data.augment import flip_mask, flip_where

    x = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    plain = resized_crop(x, 0.2, g)
    assert torch.equal(resized_crop(x, 0.2, torch.Generator().manual_seed(1), flip=True),
                       flip_where(plain, flip_mask(16, g)))


def test_augment_draws_per_image_and_runs_batched():
    """Identical images get different views, and the number of torch calls does not grow with the batch
    (no Python loop over images)."""
    class CountCalls(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    o = SimCLROptions(jitter_p=1.0)
    views = simclr_augment(torch.full((8, 3, 12, 12), 128, dtype=torch.uint8).add_(torch.arange(12, dtype=torch.uint8)),
                           o, torch.Generator().manual_seed(0))
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    calls = []
    for b in (2, 64):
        with CountCalls() as mode:
            simclr_augment(torch.zeros(b, 3, 12, 12, dtype=torch.uint8), o, torch.Generator().manual_seed(0))
        calls.append(mode.n)
    assert calls[0] == calls[1] > 0


def test_colour_operations():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(colour_jitter(x, 0.5, 0.0, g), x, atol=1e-6)  # p = 0 leaves every image alone
    assert not torch.allclose(colour_jitter(x, 0.5, 1.0, g), x)
    grayed = random_grayscale(x, 1.0, g)
    assert torch.equal(grayed[:, 0], grayed[:, 1]) and torch.equal(grayed[:, 1], grayed[:, 2])
    assert torch.allclose(grayed[:, :1], gray(x))
    # a hue turn keeps luma and leaves grays alone; a zero or full turn changes nothing
    mid = x * 0.2 + 0.4  # chroma small enough that no turn reaches the clamp
    turned = hue_rotate(mid, torch.full((8,), 1.0))
    assert torch.allclose(gray(turned), gray(mid), atol=1e-5) and not torch.allclose(turned, mid, atol=1e-2)
    grays = gray(mid).expand_as(mid)
    assert torch.allclose(hue_rotate(grays, torch.full((8,), 1.0)), grays, atol=1e-5)
    for angle in (0.0, 2 * math.pi):
        assert torch.allclose(hue_rotate(mid, torch.full((8,), angle)), mid, atol=1e-5)


def test_bad_options_are_user_errors(splits_of):
    s = splits_of(torch.zeros(20, 3, 8, 8, dtype=torch.uint8))
    for bad in ({"temperature": 0}, {"min_scale": 0}, {"gray_p": 2}, {"eval_batch": 1}):
        with pytest.raises(UserError, match="pretext 'simclr' options"):
            make_task("simclr", s, bad, "fp32")
    with pytest.raises(UserError, match="at least 2 validation images"):
        make_task("simclr", splits_of(torch.zeros(20, 3, 8, 8, dtype=torch.uint8), n_val=1), {}, "fp32")


def test_chance_follows_the_held_out_batch(splits_of):
    s = splits_of(torch.zeros(40, 3, 8, 8, dtype=torch.uint8), n_val=20)
    assert SimCLR(s, SimCLROptions(eval_batch=8)).chance == 1 / 15
    assert SimCLR(s).chance == 1 / 39  # eval_batch 256 shrinks to the 20 held-out images


def test_retrieval_learnt_above_chance_on_smooth_random_images(splits_of, train_a_little):
    """Each image a different smooth colour field: mild augmentations keep it recognisable, so a few
    steps lift held-out retrieval well above both chance and the untrained network."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(256, 3, 4, 4, generator=g)
    x = (F.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False) * 255).round().to(torch.uint8)
    task = SimCLR(splits_of(x, n_val=64), SimCLROptions(eval_batch=32, min_scale=0.5, jitter=0.2, gray_p=0.0))
    torch.manual_seed(0)
    model = task.make_model(make_backbone("fast"))
    before = task.evaluate(model)
    train_a_little(task, model, steps=20)
    after = task.evaluate(model)
    assert task.chance == 1 / 63 and before["loss"] == pytest.approx(math.log(63), abs=0.1)
    assert after["loss"] < before["loss"] - 0.4
    assert after["accuracy"] > max(before["accuracy"] + 0.1, 10 * task.chance)


def test_pretrains_end_to_end(pretrain_and_finetune):
    summary = pretrain_and_finetune("simclr", {"temperature": 0.2})
    assert summary["chance"] == pytest.approx(1 / 29)  # 15 held-out images of the tiny set: 2 x 15 - 1 candidates
    assert summary["options"]["temperature"] == 0.2 and "accuracy" in summary["best"]

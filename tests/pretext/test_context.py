"""Context prediction: patch geometry, defences, and that the task is learnable."""

import pytest
import torch

from pretextlab.data import Splits, channel_stats
from pretextlab.models import make_backbone
from pretextlab.pretext.context import (
    NEIGHBOURS,
    ContextOptions,
    ContextPrediction,
    colour_defence,
    random_downsample,
    sample_positions,
)


def _splits(x: torch.Tensor) -> Splits:
    mean, std = channel_stats(x)
    y = torch.zeros(len(x), dtype=torch.long)
    return Splits(["a"], x, y, x[:16], y[:16], x, mean, std)


def test_positions_match_labels_and_respect_gap_jitter_bounds():
    o = ContextOptions(scale=2, patch=14, gap=7, jitter=2)
    g = torch.Generator().manual_seed(0)
    first, second, label = sample_positions(4000, 64, o, g)
    step = o.patch + o.gap
    # every patch stays inside the canvas
    for p in (first, second):
        assert p.min() >= 0 and (p + o.patch).max() <= 64
    # the displacement points to the labelled neighbour, up to twice the jitter
    expected = (NEIGHBOURS[label] - 1) * step
    assert ((second - first) - expected).abs().max() <= 2 * o.jitter
    # and it is never closer than gap - 2*jitter: patches never overlap or touch
    d = (second - first).abs()
    apart = torch.where(NEIGHBOURS[label] != 1, d - o.patch, torch.full_like(d, 10**6)).min(1).values
    assert apart.min() >= o.gap - 2 * o.jitter > 0
    # jitter is used (not always zero) and all 8 labels occur evenly
    assert ((second - first) - expected).abs().max() == 2 * o.jitter
    counts = torch.bincount(label, minlength=8)
    assert counts.min() > 4000 / 8 * 0.8


def test_patches_are_the_image_regions_at_those_positions():
    o = ContextOptions(scale=1, patch=6, gap=2, jitter=1, colour="none", downsample=0, patch_norm=False, flip=False)
    x = torch.randint(0, 256, (8, 3, 24, 24), dtype=torch.uint8)
    task = ContextPrediction(_splits(x), o)
    g = torch.Generator().manual_seed(3)
    first, second, label = task.pairs(x, g)
    g = torch.Generator().manual_seed(3)
    p1, p2, lab = sample_positions(8, 24, o, g)
    assert torch.equal(label, lab)
    for i in range(8):
        r, c = p2[i].tolist()
        assert torch.allclose(second[i], x[i, :, r:r + 6, c:c + 6].float() / 255)


def test_colour_defences():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    projected = colour_defence(x, "project", g)
    axis = torch.tensor([-1.0, 2.0, -1.0]) / 6**0.5
    assert (projected * axis.view(1, 3, 1, 1)).sum(1).abs().max() < 1e-5  # no green-magenta left
    a = axis.view(1, 3, 1, 1)
    for layout in (torch.contiguous_format, torch.channels_last):  # the bits of the textbook formula
        xl = x.contiguous(memory_format=layout)
        assert torch.equal(colour_defence(xl, "project", g), xl - (xl * a).sum(1, keepdim=True) * a)
    dropped = colour_defence(x, "drop", g)
    # exactly one channel kept as is in every patch; the others are near-constant noise
    kept = (dropped == x).flatten(2).all(2).sum(1)
    assert torch.equal(kept, torch.ones(16, dtype=torch.long))
    gray = torch.rand(4, 1, 8, 8)
    assert torch.equal(colour_defence(gray, "drop", g), gray)


def test_random_downsample_keeps_shape_and_blurs_some():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 14, 14)
    y = random_downsample(x, 0.5, g)
    assert y.shape == x.shape
    changed = (y - x).abs().flatten(1).amax(1) > 1e-6
    assert 10 < changed.sum() < 54


@pytest.mark.parametrize("p", [14, 9, 21])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_random_downsample_is_the_plain_down_and_up(p, layout):
    """The blur matrices give F.interpolate down (antialiased) then up, to float rounding, in either layout."""
    import torch.nn.functional as F

    x = torch.rand(64, 3, p, p, generator=torch.Generator().manual_seed(p)).contiguous(memory_format=layout)
    g = torch.Generator().manual_seed(1)
    size = int(torch.randint(max(2, p // 2), p, (1,), generator=g))
    pick = (torch.rand(64, generator=g) < 0.5).nonzero().flatten()
    expected = x.clone()
    low = F.interpolate(x[pick], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    expected[pick] = F.interpolate(low, size=(p, p), mode="bilinear", align_corners=False)
    got = random_downsample(x, 0.5, torch.Generator().manual_seed(1))
    assert not torch.equal(got, x)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)


def test_pretext_head_learns_above_chance_on_synthetic_images():
    """Images whose quadrants differ in content make the relative position learnable."""
    torch.manual_seed(0)
    n, s = 512, 24
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    base = torch.stack([xx * 255 // s, yy * 255 // s, (xx + yy) * 127 // s]).to(torch.uint8)
    x = (base[None].expand(n, -1, -1, -1).int() + torch.randint(-20, 20, (n, 3, s, s))).clamp(0, 255).to(torch.uint8)
    o = ContextOptions(scale=1, patch=6, gap=2, jitter=1, colour="none", downsample=0, patch_norm=False, flip=False)
    task = ContextPrediction(_splits(x), o)
    model = task.make_model(make_backbone("fast"))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(60):
        inp, target = task.batch(torch.randint(0, n, (64,), generator=g), g)
        loss = task.loss(model(inp), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = task.evaluate(model)["accuracy"]
    assert acc > 0.5  # chance is 0.125


@pytest.mark.parametrize("size,canvas,patch", [(32, 64, 14), (16, 64, 14), (32, 64, 7), (8, 64, 14), (12, 12, 5),
                                               (32, 64, 13), (24, 48, 21), (16, 64, 9), (20, 80, 30), (24, 64, 14),
                                               (12, 30, 7), (32, 32, 10)])
def test_patches_sampled_equal_the_whole_image_upscaled_and_cut(size, canvas, patch):
    """Sampling each patch from the image gives what upscaling the whole image and cutting gives (to float
    rounding), for mirrored images too, at any scale, and the pixels themselves at scale 1."""
    import torch.nn.functional as F

    from pretextlab.data.augment import crop_at, flip_where, unit
    from pretextlab.pretext.context import sample_patches

    g = torch.Generator().manual_seed(size + canvas)
    x = torch.randint(0, 256, (32, 3, size, size), dtype=torch.uint8, generator=g)
    flip = torch.rand(32, generator=g) < 0.5

    def upscale(images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(unit(images), size=(canvas, canvas), mode="bilinear", align_corners=False)

    full, mirrored = upscale(x), upscale(flip_where(x, flip))
    for _ in range(5):
        c = torch.randint(0, canvas - patch + 1, (32, 2, 2), generator=g)
        for f, image in ((None, full), (flip, mirrored)):
            want = torch.cat([crop_at(image, c[:, i, 0], c[:, i, 1], patch, patch) for i in range(2)])
            torch.testing.assert_close(sample_patches(x, c, patch, canvas, f), want, rtol=0, atol=2e-6)
    if canvas == size:  # no upscaling: the very pixels
        pixels = [unit(crop_at(x, c[:, i, 0], c[:, i, 1], patch, patch)) for i in range(2)]
        assert torch.equal(sample_patches(x, c, patch, canvas), torch.cat(pixels))


# --- the paper's geometry on large or non-square images ----------------------------------------------------


def test_paper_geometry_at_the_papers_scale_and_scaled_down():
    from pretextlab.pretext.context import ContextOptions

    big = ContextOptions().resolved(480, (360, 480))
    assert (big.geometry, big.scale, big.patch, big.gap, big.jitter) == ("paper", 1.0, 96, 48, 7)
    small = ContextOptions().resolved(160, (120, 160))
    assert small.geometry == "paper" and small.patch == 34 and small.gap == 17
    assert ContextOptions().resolved(32).geometry == "canvas"  # CIFAR keeps the upscaled canvas


def test_paper_pairs_lie_inside_the_image_at_their_offsets():
    from pretextlab.pretext.context import NEIGHBOURS, ContextOptions, sample_pairs

    o = ContextOptions().resolved(160, (120, 160))
    first, second, label = sample_pairs(4000, (120, 160), o, torch.Generator().manual_seed(0))
    for c in (first, second):
        assert (c >= 0).all() and (c[:, 0] + o.patch <= 120).all() and (c[:, 1] + o.patch <= 160).all()
    offset = (second - first) - (NEIGHBOURS[label] - 1) * (o.patch + o.gap)
    assert offset.abs().max() <= 2 * o.jitter and set(label.tolist()) == set(range(8))


def test_context_cuts_patch_pairs_from_non_square_images(splits_of):
    from pretextlab.pretext.context import ContextPrediction

    task = ContextPrediction(splits_of(torch.randint(0, 255, (6, 3, 72, 96), dtype=torch.uint8)))
    x, y = task.batch(torch.arange(6), torch.Generator().manual_seed(0))
    assert x.shape == (12, 3, task.options.patch, task.options.patch) and y.shape == (6,)

"""Batched augmentation on uint8 tensors: translation by reflect-padded crops, horizontal flips and
normalisation, for a whole batch at once (no per-image loop). One generator drives every random
choice, so a batch is a pure function of (images, generator): seeded and exactly resumable.
For segmentation, joint_random_resized_crop applies one random crop, scale and flip to an image and its mask.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def take(x: Any, idx: Tensor) -> Tensor:
    """x[idx] for a 1-D index along the first axis: index_select for a tensor (an order of magnitude faster on
    a CPU than advanced indexing, the same values), x[idx] for what is only indexed like one (shards)."""
    return x.index_select(0, idx.to(x.device)) if isinstance(x, Tensor) else x[idx.to(x.device)]


def crop_at(x: Tensor, top: Tensor, left: Tensor, h: int, w: int, flip: Tensor | None = None) -> Tensor:
    """Cut an (h, w) window at a per-image (top, left) from every image of a batch, in one gather; with
    `flip`, the window of the image mirrored left to right where flip is true (read in reverse, no extra pass)."""
    rows = top.to(x.device)[:, None] + torch.arange(h, device=x.device)  # (B, h)
    cols = left.to(x.device)[:, None] + torch.arange(w, device=x.device)  # (B, w)
    if flip is not None:  # column j of the mirrored image is column W - 1 - j of the image
        cols = torch.where(flip.to(x.device)[:, None], x.shape[-1] - 1 - cols, cols)
    return _gather(x, rows, cols)


def square_crop(x: Tensor, g: torch.Generator | None = None) -> Tensor:
    """Square images as they are; others cut to a square of their shorter side, at a random place per image
    (drawn from g) or, without g, in the centre: for tasks that turn an image (rotation) or need it square."""
    b, _, h, w = x.shape
    if h == w:
        return x
    s = min(h, w)
    if g is None:
        top, left = torch.full((b,), (h - s) // 2), torch.full((b,), (w - s) // 2)
    else:
        top, left = torch.randint(0, h - s + 1, (b,), generator=g), torch.randint(0, w - s + 1, (b,), generator=g)
    return crop_at(x, top, left, s, s)


def _gather(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """out[b, :, i, j] = x[b, :, rows[b, i], cols[b, j]], as an NCHW tensor with channels-last strides.

    One torch.gather over the flattened pixels, in x's own layout (NCHW, or NHWC for a channels-last x):
    several times faster on a CPU than the same copy by advanced indexing (x[b, :, rows, cols]).
    """
    b, c, hh, ww = x.shape
    h, w = rows.shape[1], cols.shape[1]
    pixel = rows[:, :, None] * ww + cols[:, None, :]  # (B, h, w) flat pixel index
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        nhwc = x.permute(0, 2, 3, 1).reshape(b, hh * ww, c)  # a view: the memory is already NHWC
        out = nhwc.gather(1, pixel.view(b, h * w, 1).expand(b, h * w, c))
        return out.view(b, h, w, c).permute(0, 3, 1, 2)
    out = x.reshape(b, c, hh * ww).gather(2, pixel.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)
    return out.contiguous(memory_format=torch.channels_last)


def _reflect(i: Tensor, n: int) -> Tensor:
    """Index into a length-n axis as if it were reflect-padded (torch's 'reflect': edge not repeated)."""
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def random_crop(x: Tensor, pad: int, g: torch.Generator, flip: bool = False) -> Tensor:
    """Pad-and-crop translation for a whole batch, the standard CIFAR augmentation; with flip, a random
    half of the crops mirrored left to right as well (the mask drawn after the offsets).

    Equivalent to reflect-padding by `pad`, cropping at a random offset and flipping, but done as one
    gather of reflected (and, where mirrored, reversed) indices: no padded copy, no second pass and no
    uint8 -> float -> uint8 round trip.
    """
    if pad <= 0:
        return random_flip(x, g) if flip else x
    b, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(x.device)
    rows = _reflect(dy[:, None] + torch.arange(h, device=x.device) - pad, h)
    cols = _reflect(dx[:, None] + torch.arange(w, device=x.device) - pad, w)
    if flip:
        cols = torch.where(flip_mask(b, g, x.device)[:, None], cols.flip(1), cols)
    return _gather(x, rows, cols)


def unit(x: Tensor) -> Tensor:
    """uint8 pixels as floats in [0, 1]; floats pass unchanged."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def flip_mask(n: int, g: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
    """Which of n images a random horizontal flip mirrors (each with probability 1/2)."""
    return (torch.rand(n, generator=g) < 0.5).to(device)


def flip_where(x: Tensor, flip: Tensor) -> Tensor:
    """x with the images where `flip` is true mirrored left to right."""
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_flip(x: Tensor, g: torch.Generator) -> Tensor:
    return flip_where(x, flip_mask(x.shape[0], g, x.device))


def augment(x: Tensor, g: torch.Generator, pad: int = 4, flip: bool = True) -> Tensor:
    """The standard CIFAR augmentation (random translation by up to `pad` px, horizontal flip)."""
    return random_crop(x, pad, g, flip)


def normalize(x: Tensor, mean: Tensor, std: Tensor, channels_last: bool = False) -> Tensor:
    """uint8 -> float, standardised with the training set's channel statistics."""
    x = x.to(torch.float32, copy=True).div_(255).sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ----------------------------------------------------------------------------------------------
# Segmentation: the same geometry for an image and its mask


def joint_random_resized_crop(images: Tensor, masks: Tensor, out_hw: tuple[int, int], g: torch.Generator,
                              scale: tuple[float, float] = (0.5, 1.0), flip: bool = True) -> tuple[Tensor, Tensor]:
    """Random scaled crops of a batch of images and their label masks, resized to out_hw, one box per image.

    Policy: train on random crops covering a random fraction of the image, evaluate on the whole image (no
    crop, no flip). This is the random-scale-and-crop plus horizontal flip used throughout semantic
    segmentation training (FCN, Long et al. 2015; DeepLab, Chen et al. 2017), in the form of torchvision's
    RandomResizedCrop (the Inception crop, Szegedy et al. 2015) without its aspect-ratio jitter.

    Each image draws an area fraction s ~ U(scale); its box has the image's aspect, sides sqrt(s) H and
    sqrt(s) W, at a uniformly random (sub-pixel) position inside the image; with `flip`, half the boxes are
    mirrored left to right (flip_mask). Draw order, from `g` only: s, top, left, flip, so a batch is a pure
    function of (images, masks, generator state): seeded and exactly resumable. scale=(1, 1) with
    out_hw == (H, W) and no flip returns the input unchanged.

    The image and its mask are read through the SAME sampling grid (one F.grid_sample per batch, no per-image
    loop): images bilinear (pixel centres as in F.interpolate with align_corners=False, no antialiasing, so
    shrinking far below the box size aliases), masks nearest, so every output label is a label of the input
    mask at that place, never a blend of two. images uint8 (B, 3, H, W) -> uint8 (B, 3, h, w) (float images
    stay float); masks uint8 (B, H, W) -> the same dtype (B, h, w).
    """
    b, _, hh, ww = images.shape
    h, w = out_hw
    if masks.shape != (b, hh, ww):
        raise ValueError(f"masks {tuple(masks.shape)} do not match images {tuple(images.shape)}: need (B, H, W)")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale {scale} must satisfy 0 < low <= high <= 1 (fractions of the image area)")
    if h < 1 or w < 1:
        raise ValueError(f"out_hw {out_hw} must be positive")
    dev = images.device
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(b, generator=g, dtype=torch.float64)
    side = s.sqrt()  # box sides as fractions of the image's
    top = torch.rand(b, generator=g, dtype=torch.float64) * (1 - side)  # box corner, as a fraction of the image
    left = torch.rand(b, generator=g, dtype=torch.float64) * (1 - side)
    mirror = flip_mask(b, g) if flip else torch.zeros(b, dtype=torch.bool)
    # Output pixel (i, j) samples the box at its own centre; grid_sample's coordinates (align_corners=False)
    # run from -1 at the image's left edge to 1 at its right edge.
    fy = (torch.arange(h, dtype=torch.float64) + 0.5) / h  # (h,) centre of row i within the box, in [0, 1]
    fx = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    fx = torch.where(mirror[:, None], 1 - fx, fx)  # (B, w): mirrored boxes read their columns right to left
    ys = 2 * (top[:, None] + side[:, None] * fy) - 1  # (B, h)
    xs = 2 * (left[:, None] + side[:, None] * fx) - 1  # (B, w)
    grid = torch.stack([xs[:, None, :].expand(b, h, w), ys[:, :, None].expand(b, h, w)], dim=-1)
    grid = grid.to(dev, torch.float32)
    x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = x.round_().clamp_(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else x.to(images.dtype)
    y = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=False)
    return x, y[:, 0].to(masks.dtype)

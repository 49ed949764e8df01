"""Batched augmentation on uint8 tensors: translation by reflect-padded crops, horizontal flips and
normalisation, for a whole batch at once (no per-image loop). One generator drives every random
choice, so a batch is a pure function of (images, generator): seeded and exactly resumable.
"""

from __future__ import annotations

import torch
from torch import Tensor


def crop_at(x: Tensor, top: Tensor, left: Tensor, h: int, w: int) -> Tensor:
    """Cut an (h, w) window at a per-image (top, left) from every image of a batch, in one gather."""
    rows = top.to(x.device)[:, None] + torch.arange(h, device=x.device)  # (B, h)
    cols = left.to(x.device)[:, None] + torch.arange(w, device=x.device)  # (B, w)
    return _gather(x, rows, cols)


def _gather(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """out[b, :, i, j] = x[b, :, rows[b, i], cols[b, j]]: one advanced-indexing gather."""
    b = torch.arange(x.shape[0], device=x.device)[:, None, None]
    out = x[b, :, rows[:, :, None], cols[:, None, :]]  # (B, h, w, C)
    return out.permute(0, 3, 1, 2)  # NCHW view with channels-last strides


def _reflect(i: Tensor, n: int) -> Tensor:
    """Index into a length-n axis as if it were reflect-padded (torch's 'reflect': edge not repeated)."""
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def random_crop(x: Tensor, pad: int, g: torch.Generator) -> Tensor:
    """Pad-and-crop translation for a whole batch, the standard CIFAR augmentation.

    Equivalent to reflect-padding by `pad` and cropping at a random offset, but done as one gather
    of reflected indices: no padded copy and no uint8 -> float -> uint8 round trip.
    """
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(x.device)
    rows = _reflect(dy[:, None] + torch.arange(h, device=x.device) - pad, h)
    cols = _reflect(dx[:, None] + torch.arange(w, device=x.device) - pad, w)
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
    x = random_crop(x, pad, g)
    return random_flip(x, g) if flip else x


def normalize(x: Tensor, mean: Tensor, std: Tensor, channels_last: bool = False) -> Tensor:
    """uint8 -> float, standardised with the training set's channel statistics."""
    x = x.to(torch.float32, copy=True).div_(255).sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x

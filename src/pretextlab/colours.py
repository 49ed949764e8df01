"""One fixed colour per class index, shared by the report's mask figures and the mask PNGs `predict` writes, so
that a class looks the same wherever a student meets it."""

from __future__ import annotations

import numpy as np

IGNORED = (0.6, 0.6, 0.6)  # pixels of the ignore value (and of values outside the classes)


def class_colours(n: int) -> np.ndarray:
    """(n, 3) floats in [0, 1]: matplotlib's tab20, its 10 strong hues first and their light tints after (so the
    first 10 classes never share a hue), then tab20b, for up to 40 classes, cycled beyond."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    table = [*tab20[0::2], *tab20[1::2], *colormaps["tab20b"].colors]
    return np.array([table[k % len(table)] for k in range(n)])


def paint(mask: np.ndarray, n_classes: int, ignore: int | None) -> np.ndarray:
    """An index mask (H, W) as float RGB (H, W, 3): each class its colour, the ignore value and unknown values grey."""
    colours = class_colours(n_classes)
    m = mask.astype(np.int64)
    out = np.empty((*m.shape, 3))
    out[:] = IGNORED
    known = (m < n_classes) & (m != (-1 if ignore is None else ignore))
    out[known] = colours[m[known]]
    return out

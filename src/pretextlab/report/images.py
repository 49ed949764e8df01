"""The report's image figures: predictions on validation examples, confusion matrices, pretext samples.

Right and wrong are marked twice, by a symbol (✓ / ✗) and by colour, so neither colour vision nor a grey
print is needed to read them. Every figure fits the report's width (canvas.WIDTH).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from torch import Tensor

from ..colours import IGNORED, class_colours, paint
from .canvas import DPI, WIDTH, arm_colors, new_figure, save_png
from .records import Example

MARK = {True: "✓", False: "✗"}
INK = {True: "#1a7a36", False: "#b2182b"}  # text of a right / wrong prediction
PAPER = {True: "#e6f4ea", False: "#fbe5e5"}  # its cell
MAX_EXAMPLES = 10


def to_display(img: Tensor, min_px: int = 96) -> np.ndarray:
    """uint8 (C, H, W) -> float (H', W', 3) in [0, 1], enlarged by an integer factor (nearest)."""
    a = img.float().div(255).permute(1, 2, 0).numpy()
    a = np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]
    k = max(1, math.ceil(min_px / a.shape[0]))
    return a.repeat(k, 0).repeat(k, 1)


def class_name(classes: list[str], i: int) -> str:
    return classes[i] if 0 <= i < len(classes) else str(i)


def fit(t: Text, width_px: float, renderer: RendererBase, sizes: tuple[float, ...] = (8, 7, 6.5)) -> None:
    """Make a drawn text at most width_px wide: a smaller font first, then its first line cut, with an
    ellipsis, as far as needed (measured, not guessed, so no two cells' texts can touch)."""
    for size in sizes:
        t.set_fontsize(size)
        if t.get_window_extent(renderer).width <= width_px:
            return
    first, *rest = t.get_text().split("\n")
    while len(first) > 2 and t.get_window_extent(renderer).width > width_px:
        first = first.rstrip("…")[:-1] + "…"
        t.set_text("\n".join([first, *rest]))


def pick_examples(labels: list[int], n_classes: int, limit: int = MAX_EXAMPLES) -> list[int]:
    """Which examples to show: the first of each class, in class order, where there are at most `limit`
    classes; otherwise the first `limit`."""
    if 0 < n_classes <= limit:
        first: dict[int, int] = {}
        for i, y in enumerate(labels):
            first.setdefault(int(y), i)
        return [first[c] for c in sorted(first)]
    return list(range(min(limit, len(labels))))


def examples_figure(images: Tensor, examples: dict[str, list[Example]], classes: list[str],
                    path: Path) -> Figure:
    """Validation images as a table: a column per image with its true class above it, a row per arm (label
    "arm" or "arm sN") with ✓ or ✗ on green or red, the predicted class and the confidence."""
    arms = list(examples)
    colors = arm_colors(arms)
    n_all = min(len(images), *(len(e) for e in examples.values()))
    idx = pick_examples([examples[arms[0]][i].label for i in range(n_all)], len(classes))
    n = max(1, len(idx))
    pad, gap, title_h, row_h = 0.08, 0.06, 0.3, 0.5  # inches
    label_w = min(2.2, max(1.0, 0.085 * max(len(a) for a in arms) + 0.25))
    cell = min(1.15, (WIDTH - label_w - 2 * pad) / n)
    width, height = label_w + n * cell + 2 * pad, 2 * pad + title_h + cell + len(arms) * row_h
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)

    def box(left: float, top: float, w: float, h: float) -> Axes:  # inches from the top left corner
        ax = fig.add_axes((left / width, 1 - (top + h) / height, w / width, h / height))
        ax.set_xticks([])
        ax.set_yticks([])
        return ax

    renderer = fig.canvas.get_renderer()
    room = (cell - gap - 0.06) * DPI  # pixels of text in a cell
    x0 = pad + label_w
    fig.text((x0 - 0.1) / width, 1 - (pad + title_h + cell / 2) / height, "true class\nand image", ha="right",
             va="center", fontsize=8, color="0.35")
    for j, i in enumerate(idx):
        ax = box(x0 + j * cell + gap / 2, pad + title_h, cell - gap, cell - gap)
        ax.imshow(to_display(images[i]), interpolation="nearest")
        fit(ax.set_title(class_name(classes, examples[arms[0]][i].label), weight="bold", pad=3), room, renderer,
            (8.5, 7.5, 7))
    for a, arm in enumerate(arms):
        top = pad + title_h + cell + a * row_h
        fit(fig.text((x0 - 0.1) / width, 1 - (top + row_h / 2) / height, arm, ha="right", va="center",
                     weight="bold", color=colors[arm]), (label_w - 0.1) * DPI, renderer, (9, 8, 7))
        for j, i in enumerate(idx):
            e = examples[arm][i]
            right = e.pred == e.label
            ax = box(x0 + j * cell + gap / 2, top + gap / 2, cell - gap, row_h - gap)
            ax.set_facecolor(PAPER[right])
            for spine in ax.spines.values():
                spine.set_visible(False)
            conf = f"\n{e.confidence:.2f}" if e.confidence is not None else ""
            fit(ax.text(0.5, 0.5, f"{MARK[right]} {class_name(classes, e.pred)}{conf}", transform=ax.transAxes,
                        ha="center", va="center", color=INK[right]), room, renderer)
    save_png(fig, path)
    return fig


def confusion_figure(matrices: dict[str, np.ndarray], classes: list[str], title: str, path: Path) -> Figure:
    """Row-normalised confusion matrix per arm (row = true class, column = predicted), at most 3 per row,
    one colour scale (0 to 1) for all, class names on every panel's x axis and the first column's y axis."""
    k, m = len(classes) or len(next(iter(matrices.values()))), len(matrices)
    cols = min(3, m)
    rows = math.ceil(m / cols)
    side = min(4.2, (WIDTH - 0.9) / cols)
    fig = new_figure(cols * side + 0.9, rows * (side + 0.35) + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[m:]:
        fig.delaxes(ax)
    colors = arm_colors(list(matrices))
    ticks = 8 if k <= 12 else 6.5
    labels = classes if classes and k <= 40 else [""] * k
    im = None
    for n, (ax, (arm, mat)) in enumerate(zip(axes.flat, matrices.items())):
        norm = mat / np.maximum(mat.sum(1, keepdims=True), 1)
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(k), labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=ticks)
        ax.set_yticks(range(k), labels if n % cols == 0 else [""] * k, fontsize=ticks)
        ax.set_title(arm, fontsize=10, weight="bold", color=colors[arm])
        ax.set_xlabel("predicted", fontsize=9)
        if n % cols == 0:
            ax.set_ylabel("true", fontsize=9)
        if k <= 12:
            for r in range(k):
                for c in range(k):
                    ax.text(c, r, f"{norm[r, c]:.2f}"[1:] if norm[r, c] < 1 else "1", ha="center", va="center",
                            fontsize=7 if k <= 10 else 6, color="white" if norm[r, c] > 0.6 else "black")
    fig.colorbar(im, ax=list(axes.flat[:m]), shrink=0.7, label="share of the true class")
    fig.suptitle(f"validation, {title}", fontsize=10)
    save_png(fig, path)
    return fig


SAMPLE_CAPTIONS = {  # what each task's sample figure shows
    "context": "each pair shows the first patch (left) and the second (right), with the true and the predicted "
               "position of the second relative to the first (✓ green right, ✗ red wrong)",
    "rotation": "held-out images as the network saw them, with the true and the predicted rotation "
                "(✓ green right, ✗ red wrong)",
    "reconstruction": "held-out images: original | masked input | reconstruction, with the PSNR of the hidden pixels",
    "simclr": "two augmented views of each held-out image; the title says which image's view the first one found "
              "most similar among the batch (✓ green: its own partner, ✗ red: another image's)",
}


def samples_figure(samples: dict[str, Any], task: str, path: Path, n: int = 8) -> Figure:
    """Pretext examples as a task's samples() describes them: per example, the images under the keys in
    samples["panels"] side by side (default: "first", and "second" if any, e.g. a patch pair) in a thin frame,
    titled with samples["titles"] or with the true and predicted label names in samples["positions"]; ✓ green
    right, ✗ red wrong, when the samples hold "true" and "pred"."""
    panels = samples.get("panels") or [p for p in ("first", "second") if p in samples]
    k = min(n, len(samples["first"]))
    side = 1.0  # inches per image
    example_w = side * len(panels) + 0.25
    cols = max(1, min(k, 8, int(WIDTH // example_w)))
    rows = math.ceil(k / cols)
    fig = new_figure(max(2.4, example_w * cols), (side + 0.5) * rows + (0.3 if "panel_names" in samples else 0))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[k:]:
        fig.delaxes(ax)
    for i, ax in enumerate(axes.flat[:k]):
        ax.imshow(_sample_strip([samples[p][i] for p in panels]), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("0.75")
        title, right = _sample_title(samples, i)
        ax.set_title(title if right is None else f"{MARK[right]} {title}", fontsize=8,
                     color="black" if right is None else INK[right])
    if "panel_names" in samples:
        fig.suptitle(" | ".join(samples["panel_names"]), fontsize=9)
    save_png(fig, path)
    return fig


def _sample_strip(images: list[Tensor]) -> np.ndarray:
    """uint8 images side by side, enlarged to at least 64 px, with a white gap between them."""
    shown = [to_display(img, 64) for img in images]
    gap = np.ones((shown[0].shape[0], max(2, shown[0].shape[1] // 12), 3))
    return np.concatenate([part for a in shown for part in (gap, a)][1:], 1)


def _sample_title(samples: dict[str, Any], i: int) -> tuple[str, bool | None]:
    """Example i's title, and whether the prediction was right (None: nothing to be right about)."""
    right = bool(samples["true"][i] == samples["pred"][i]) if "true" in samples and "pred" in samples else None
    if "titles" in samples:
        return samples["titles"][i], right
    names = samples.get("positions") or []
    t, p = int(samples["true"][i]), int(samples["pred"][i])
    return f"true: {class_name(names, t)}\npred: {class_name(names, p)}", right


def mask_examples_figure(images: Tensor, truth: Tensor, preds: dict[str, Tensor], classes: list[str],
                         ignore: int | None, path: Path, limit: int = 6) -> Figure:
    """Segmentation examples: a row per validation image, columns image | true mask | each arm's predicted mask,
    one fixed colour per class (class_colours), ignored pixels grey; the legend below names every class shown."""
    colours = class_colours(len(classes))
    n = min(limit, len(images), *(len(p) for p in preds.values()))
    cols = 2 + len(preds)
    h, w = images.shape[-2:]
    cell_w = WIDTH / cols
    cell_h = cell_w * h / w
    legend_rows = math.ceil(len(classes) / 4)
    fig = Figure(figsize=(WIDTH, 0.35 + n * (cell_h + 0.05) + 0.25 * legend_rows + 0.2))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n + 1, cols, height_ratios=[cell_h] * n + [0.25 * legend_rows + 0.1],
                            hspace=0.08, wspace=0.03, left=0.01, right=0.99, top=1 - 0.3 / fig.get_figheight(),
                            bottom=0.01)
    titles = ["image", "true mask", *preds]
    for i in range(n):
        panels = [to_display(images[i], 0), paint(truth[i].numpy(), len(classes), ignore),
                  *(paint(p[i].numpy(), len(classes), ignore) for p in preds.values())]
        for j, panel in enumerate(panels):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=9, weight="bold", pad=3)
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[k], label=c) for k, c in enumerate(classes)]
    if ignore is not None:
        handles.append(Patch(color=IGNORED, label="ignored"))
    legend_ax = fig.add_subplot(grid[n, :])
    legend_ax.axis("off")
    legend_ax.legend(handles=handles, loc="center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    save_png(fig, path)
    return fig

"""The report's figures, drawn from a study's curves and summary.json's numbers (matplotlib's Agg canvas
directly: no pyplot state, no display needed, safe in worker processes and on headless machines).

The figures that run a network (first-layer filters, early feature maps) are in `backbone`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator
from torch import Tensor

from ..layout import METRICS as METRICS_CSV
from ..layout import SCRATCH
from ..runs import read_csv
from .formatting import fraction_title
from .results import PROTOCOLS, PretextRun, Run, Study, column
from .summary import METRICS, NAMES, baseline_name

DPI = 110


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on its own Agg canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path, tight: bool = False) -> None:
    """PNG at DPI; tight=True grows the canvas to hold text placed outside the axes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight" if tight else None)


def _colors(arms: list[str]) -> dict[str, str]:
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    return {a: palette[i % len(palette)] for i, a in enumerate(arms)}


def _mean_curve(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Epochs, and mean/min/max over seeds, over the epochs every seed has reached.

    Finished seeds only when there are any, so a seed still training does not cut the curve short.
    """
    runs = [r for r in runs if r.finished] or runs
    curves = [column(r.history, key) for r in runs]
    n = min((len(c) for c in curves), default=0)
    if n == 0:
        return None
    a = np.array([c[:n] for c in curves])
    return np.arange(1, n + 1), a.mean(0), a.min(0), a.max(0)


def _plot_curve(ax: Axes, runs: list[Run], key: str, color: str, label: str, style: str = "-") -> None:
    curve = _mean_curve(runs, key)
    if curve is None:
        return
    x, mean, lo, hi = curve
    ax.plot(x, mean, style, color=color, label=label, marker="o" if len(x) < 4 else None, ms=3)
    if len(runs) > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)


def _epoch_axis(ax: Axes) -> None:
    """Whole-epoch ticks (call after plotting); a one-epoch run still gets a readable axis."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    lo, hi = ax.get_xlim()
    if hi - lo < 2:
        ax.set_xlim(min(lo, 0.5), max(hi, 1.5))
    ax.grid(alpha=0.3)


def loss_figure(study: Study, summary: dict[str, Any], path: Path) -> None:
    """Training (dashed) and validation (solid) loss per epoch, scratch vs pretrained, one panel per fraction."""
    fractions, colors = study.fractions, _colors(study.arms)
    fig = new_figure(4.2 * len(fractions), 3.4)
    axes = fig.subplots(1, len(fractions), squeeze=False)[0]
    for ax, f in zip(axes, fractions):
        for arm in study.arms:
            runs = [r for r in study.runs if r.fraction == f and r.arm == arm]
            _plot_curve(ax, runs, "train_loss", colors[arm], f"{arm} train", "--")
            _plot_curve(ax, runs, "val_loss", colors[arm], f"{arm} val")
        ax.set(title=fraction_title(summary, f), ylabel="loss")
        _epoch_axis(ax)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no runs yet", ha="center", transform=ax.transAxes)
    save_png(fig, path)


def metrics_figure(study: Study, summary: dict[str, Any], path: Path) -> None:
    """Validation macro-F1, precision, recall and accuracy per epoch: rows = metric, columns = fraction."""
    fractions, colors = study.fractions, _colors(study.arms)
    fig = new_figure(4.2 * len(fractions), 2.6 * len(METRICS))
    axes = fig.subplots(len(METRICS), len(fractions), squeeze=False, sharex="col")
    for j, f in enumerate(fractions):
        for i, m in enumerate(METRICS):
            ax = axes[i, j]
            for arm in study.arms:
                _plot_curve(ax, [r for r in study.runs if r.fraction == f and r.arm == arm], f"val_{m}",
                            colors[arm], arm)
            _epoch_axis(ax)
            ax.set_ylabel(f"val {NAMES[m]}")
            if i == 0:
                ax.set_title(fraction_title(summary, f))
                if ax.lines:
                    ax.legend(fontsize=8)
            if i < len(METRICS) - 1:
                ax.set_xlabel("")
    save_png(fig, path)


def fraction_figure(evaluation: dict[str, Any], methods: list[str], path: Path, metric: str = "f1_macro") -> None:
    """A metric vs label fraction (log axis) on the evaluation's split, a line per method, a panel per protocol; error
    bars are 95% t intervals over seeds (none for a single seed). Methods are nudged sideways a
    little so their bars do not hide each other."""
    cells = evaluation["cells"]
    colors = _colors(methods)
    fractions = sorted({float(f) for by_f in cells.values() for f in by_f})
    fig = new_figure(4.2 * len(cells), 3.4)
    axes = fig.subplots(1, len(cells), squeeze=False, sharey=True)[0]
    for ax, (protocol, by_f) in zip(axes, cells.items()):
        for i, m in enumerate(methods):
            pts = [(float(f), c[m][metric]) for f, c in by_f.items() if metric in c.get(m, {})]
            if not pts:
                continue
            pts.sort()
            x = np.array([f for f, _ in pts]) * 1.04 ** (i - (len(methods) - 1) / 2)
            mean = np.array([c["mean"] for _, c in pts])
            err = np.array([[c["mean"] - c["ci95"][0], c["ci95"][1] - c["mean"]] if c["ci95"] else [0.0, 0.0]
                            for _, c in pts]).T
            label = baseline_name(protocol) if m == SCRATCH else m
            ax.errorbar(x, mean, yerr=err, color=colors[m], marker="o", ms=4, capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlim(fractions[0] / 1.4, fractions[-1] * 1.4)  # the same axis in every panel
        ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set(title=PROTOCOLS[protocol], xlabel="label fraction (log scale)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"{evaluation.get('split', 'validation')} {NAMES[metric]}")
    save_png(fig, path)


def run_figure(run_dir: Path, path: Path | None = None) -> Path:
    """One training run's curves (loss; validation macro-F1, precision, recall, accuracy) as a PNG."""
    h = read_csv(Path(run_dir) / METRICS_CSV)
    path = path or Path(run_dir) / "curves.png"
    fig = new_figure(9, 3.4)
    ax_loss, ax_m = fig.subplots(1, 2)
    x = [r["epoch"] for r in h]
    ax_loss.plot(x, column(h, "train_loss"), "--", label="train")
    ax_loss.plot(x, column(h, "val_loss"), label="val")
    ax_loss.set(title="loss", ylabel="loss")
    for m in METRICS:
        ax_m.plot(x, column(h, f"val_{m}"), label=f"val {NAMES[m]}")
    ax_m.set(title=f"{Path(run_dir).name}: validation metrics")
    for ax in (ax_loss, ax_m):
        _epoch_axis(ax)
        ax.legend(fontsize=8)
    save_png(fig, path)
    return path


def pretext_figure(run: PretextRun, chance: float | None, path: Path) -> None:
    """Pretext loss and accuracy (train and held-out), the chance line, and any extra val_* column."""
    h = run.history
    extras = [k for k in dict.fromkeys(k for row in h for k in row)
              if k.startswith("val_") and k not in ("val_loss", "val_accuracy")]
    panels = 2 + bool(extras)
    fig = new_figure(4.2 * panels, 3.3)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, kind in zip(axes, ("loss", "accuracy")):
        for split, style in (("train", "--"), ("val", "-")):
            ys = column(h, f"{split}_{kind}")
            if ys:
                ax.plot(range(1, len(ys) + 1), ys, style, color="tab:orange", label=f"{split} {kind}",
                        marker="o" if len(ys) < 4 else None, ms=3)
        ax.set(title=f"pretext {run.task}: {kind}", ylabel=kind)
    if chance is not None:
        axes[1].axhline(chance, color="grey", ls=":", label=f"chance ({chance:.3f})")
    for k in extras:
        ys = column(h, k)
        axes[2].plot(range(1, len(ys) + 1), ys, label=k, marker="o" if len(ys) < 4 else None, ms=3)
        axes[2].set(title="other held-out metrics")
    for ax in axes:
        _epoch_axis(ax)
        if ax.lines:
            ax.legend(fontsize=8)
    save_png(fig, path)


def to_display(img: Tensor, min_px: int = 96) -> np.ndarray:
    """uint8 (C, H, W) -> float (H', W', 3) in [0, 1], enlarged by an integer factor (nearest)."""
    a = img.float().div(255).permute(1, 2, 0).numpy()
    a = np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]
    k = max(1, math.ceil(min_px / a.shape[0]))
    return a.repeat(k, 0).repeat(k, 1)


def _class_name(classes: list[str], i: int) -> str:
    return classes[i] if 0 <= i < len(classes) else str(i)


def examples_figure(images: Tensor, examples: dict[str, list[dict[str, Any]]], classes: list[str],
                    path: Path) -> None:
    """Validation images with the true label and each arm's prediction (green right, red wrong)."""
    n = min(len(images), 10, *(len(e) for e in examples.values()))
    lines = 1 + len(examples)
    fig = Figure(figsize=(1.75 * n, 1.9 + 0.22 * lines))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for i, ax in enumerate(axes):
        ax.imshow(to_display(images[i]), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        truth = next(iter(examples.values()))[i]["label"]
        ax.text(0.5, -0.04, f"true: {_class_name(classes, truth)}", transform=ax.transAxes, ha="center",
                va="top", fontsize=8, weight="bold")
        for j, (arm, ex) in enumerate(examples.items()):
            e = ex[i]
            ax.text(0.5, -0.04 - 0.13 * (j + 1), f"{arm}: {_class_name(classes, e['pred'])} {e['confidence']:.2f}",
                    transform=ax.transAxes, ha="center", va="top", fontsize=8,
                    color="tab:green" if e["pred"] == e["label"] else "tab:red")
    save_png(fig, path, tight=True)


def confusion_figure(matrices: dict[str, np.ndarray], classes: list[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix per arm: row = true class, column = predicted class."""
    k = len(classes)
    side = max(3.6, 0.38 * k + 1.8)
    fig = new_figure(side * len(matrices), side)
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (arm, m) in zip(axes, matrices.items()):
        norm = m / np.maximum(m.sum(1, keepdims=True), 1)
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ticks = range(k)
        labels = classes if k <= 40 else [""] * k
        ax.set_xticks(ticks, labels, rotation=90, fontsize=8)
        ax.set_yticks(ticks, labels, fontsize=8)
        ax.set(title=f"{arm}: {title}", xlabel="predicted", ylabel="true")
        if k <= 12:
            for r in range(k):
                for c in range(k):
                    ax.text(c, r, f"{norm[r, c]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[r, c] > 0.6 else "black")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="share of the true class")
    save_png(fig, path)


SAMPLE_CAPTIONS = {  # what each task's sample figure shows
    "context": "each pair shows the first patch (left) and the second (right), with the true and the predicted "
               "position of the second relative to the first (green right, red wrong)",
    "rotation": "held-out images as the network saw them, with the true and the predicted rotation "
                "(green right, red wrong)",
    "reconstruction": "held-out images: original | masked input | reconstruction, with the PSNR of the hidden pixels",
    "simclr": "two augmented views of each held-out image; the title says which image's view the first one found "
              "most similar among the batch (green: its own partner)",
}


def samples_figure(samples: dict[str, Any], task: str, path: Path, n: int = 8) -> None:
    """Pretext examples as a task's samples() describes them: per example, the images under the keys in
    samples["panels"] side by side (default: "first", and "second" if any, e.g. a patch pair), titled with
    samples["titles"] or with the true and predicted label names in samples["positions"]; green right, red
    wrong, when the samples hold "true" and "pred"."""
    panels = samples.get("panels") or [p for p in ("first", "second") if p in samples]
    k = min(n, len(samples["first"]))
    cols = min(4, k)
    rows = math.ceil(k / cols)
    fig = new_figure(max(2.0, 1.3 * len(panels)) * cols, 1.7 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(k):
        axes.flat[i].imshow(_sample_strip([samples[p][i] for p in panels]), interpolation="nearest")
        title, right = _sample_title(samples, i)
        axes.flat[i].set_title(title, fontsize=8,
                               color="black" if right is None else "tab:green" if right else "tab:red")
    if "panel_names" in samples:
        fig.suptitle(" | ".join(samples["panel_names"]), fontsize=9)
    save_png(fig, path)


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
    return f"true: {_class_name(names, t)}\npred: {_class_name(names, p)}", right

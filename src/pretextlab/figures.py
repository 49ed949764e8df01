"""The study report's figures, drawn from the numbers in `results` (matplotlib's Agg canvas directly:
no pyplot state, no display needed, safe in worker processes and on headless machines)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator
from torch import Tensor, nn

from .models import evaluating, make_backbone
from .results import METRICS, NAMES, PROTOCOLS, PretextRun, Run, Study, baseline_name, column

DPI = 110


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path, tight: bool = False) -> None:
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


def fraction_title(study: Study, summary: dict[str, Any], fraction: float) -> str:
    n = next((s["n_train"] for s in summary["runs"].values() if s["fraction"] == fraction and s["n_train"]), None)
    return f"fraction {fraction:g}" + (f" ({n} labels)" if n else "")


def loss_figure(study: Study, summary: dict[str, Any], path: Path) -> None:
    """Training (dashed) and validation (solid) loss per epoch, scratch vs pretrained, one panel per fraction."""
    fractions, colors = study.fractions, _colors(study.arms)
    fig = _figure(4.2 * len(fractions), 3.4)
    axes = fig.subplots(1, len(fractions), squeeze=False)[0]
    for ax, f in zip(axes, fractions):
        for arm in study.arms:
            runs = [r for r in study.runs if r.fraction == f and r.arm == arm]
            _plot_curve(ax, runs, "train_loss", colors[arm], f"{arm} train", "--")
            _plot_curve(ax, runs, "val_loss", colors[arm], f"{arm} val")
        ax.set(title=fraction_title(study, summary, f), ylabel="loss")
        _epoch_axis(ax)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no runs yet", ha="center", transform=ax.transAxes)
    _save(fig, path)


def metrics_figure(study: Study, summary: dict[str, Any], path: Path) -> None:
    """Validation macro-F1, precision, recall and accuracy per epoch: rows = metric, columns = fraction."""
    fractions, colors = study.fractions, _colors(study.arms)
    fig = _figure(4.2 * len(fractions), 2.6 * len(METRICS))
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
                ax.set_title(fraction_title(study, summary, f))
                if ax.lines:
                    ax.legend(fontsize=8)
            if i < len(METRICS) - 1:
                ax.set_xlabel("")
    _save(fig, path)


def fraction_figure(evaluation: dict[str, Any], methods: list[str], path: Path, metric: str = "f1_macro") -> None:
    """Validation metric vs label fraction (log axis), a line per method, a panel per protocol; error
    bars are 95% t intervals over seeds (none for a single seed). Methods are nudged sideways a
    little so their bars do not hide each other."""
    cells = evaluation["cells"]
    colors = _colors(methods)
    fractions = sorted({float(f) for by_f in cells.values() for f in by_f})
    fig = _figure(4.2 * len(cells), 3.4)
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
            label = baseline_name(protocol) if m == "scratch" else m
            ax.errorbar(x, mean, yerr=err, color=colors[m], marker="o", ms=4, capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlim(fractions[0] / 1.4, fractions[-1] * 1.4)  # the same axis in every panel
        ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set(title=PROTOCOLS[protocol], xlabel="label fraction (log scale)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"validation {NAMES[metric]}")
    _save(fig, path)


def run_figure(run_dir: Path, path: Path | None = None) -> Path:
    """One training run's curves (loss; validation macro-F1, precision, recall, accuracy) as a PNG."""
    from .runs import read_csv

    h = read_csv(Path(run_dir) / "metrics.csv")
    path = path or Path(run_dir) / "curves.png"
    fig = _figure(9, 3.4)
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
    _save(fig, path)
    return path


def pretext_figure(run: PretextRun, chance: float | None, path: Path) -> None:
    """Pretext loss and accuracy (train and held-out), the chance line, and any extra val_* column."""
    h = run.history
    extras = [k for k in dict.fromkeys(k for row in h for k in row)
              if k.startswith("val_") and k not in ("val_loss", "val_accuracy")]
    panels = 2 + bool(extras)
    fig = _figure(4.2 * panels, 3.3)
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
    _save(fig, path)


def _to_display(img: Tensor, min_px: int = 96) -> np.ndarray:
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
        ax.imshow(_to_display(images[i]), interpolation="nearest")
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
    _save(fig, path, tight=True)


def confusion_figure(matrices: dict[str, np.ndarray], classes: list[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix per arm: row = true class, column = predicted class."""
    k = len(classes)
    side = max(3.6, 0.38 * k + 1.8)
    fig = _figure(side * len(matrices), side)
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
    _save(fig, path)


def filter_mosaic(weight: Tensor) -> np.ndarray:
    """Conv filters (O, C, k, k) tiled on a white grid, each min-max scaled on its own; RGB if C == 3."""
    w = weight.detach().float()
    if w.shape[1] != 3:
        w = w.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    lo, hi = w.amin((1, 2, 3), keepdim=True), w.amax((1, 2, 3), keepdim=True)
    w = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()
    o, kh, kw = w.shape[:3]
    cols = math.ceil(math.sqrt(o))
    rows = math.ceil(o / cols)
    mosaic = np.ones((rows * (kh + 1) + 1, cols * (kw + 1) + 1, 3))
    for i in range(o):
        r, c = divmod(i, cols)
        mosaic[1 + r * (kh + 1):1 + r * (kh + 1) + kh, 1 + c * (kw + 1):1 + c * (kw + 1) + kw] = w[i]
    return mosaic


def first_conv(net: nn.Module) -> nn.Conv2d:
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"{type(net).__name__} has no Conv2d layer")
    return conv


ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish)


def early_features(net: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Feature maps of the first conv stage and of the first block, captured with forward hooks.

    First conv stage: the first activation module after the first Conv2d (conv -> norm -> act).
    First block: the first module holding two or more (but not all) convolutions to finish its
    forward pass, e.g. FastNet's first ResBlock or ResNet's first BasicBlock. Works for any backbone
    built from standard modules, without naming its layers.
    """
    mods = list(net.named_modules())
    n_convs = {name: sum(isinstance(m, nn.Conv2d) for m in mod.modules()) for name, mod in mods}
    i_conv = next(i for i, (_, m) in enumerate(mods) if isinstance(m, nn.Conv2d))
    stage = next(((n, m) for n, m in mods[i_conv + 1:] if isinstance(m, ACTIVATIONS)), mods[i_conv])
    blocks = [(n, m) for n, m in mods if 2 <= n_convs[n] < n_convs[""]]
    captured: dict[str, Tensor] = {}

    def hook(label: str) -> Callable:
        def keep(_module: nn.Module, _inputs: Any, out: Any) -> None:
            if isinstance(out, Tensor) and out.ndim == 4 and not any(k.startswith(label) for k in captured):
                captured[f"{label} {out.shape[1]}x{out.shape[2]}x{out.shape[3]}"] = out.detach().clone()
        return keep

    handles = [stage[1].register_forward_hook(hook(f"first conv stage ({stage[0]})"))]
    handles += [m.register_forward_hook(hook(f"first block ({n})")) for n, m in blocks]
    try:
        with evaluating(net):
            net(x)
    finally:
        for h in handles:
            h.remove()
    first_block = next((k for k in captured if k.startswith("first block")), None)
    return {k: v for k, v in captured.items() if k.startswith("first conv stage") or k == first_block}


def load_pretext_backbone(run: PretextRun) -> tuple[nn.Module, dict[str, Any], str]:
    """A pretext run's pretrained backbone, the checkpoint's meta, and which file the weights came from.

    backbone.safetensors is preferred: it is what fine-tuning starts from (BatchNorm statistics
    recalibrated on whole images); otherwise the "backbone."-prefixed weights of checkpoint.pt.
    """
    state = torch.load(run.path / "checkpoint.pt", map_location="cpu", weights_only=False)
    meta = state["meta"]
    net = make_backbone(meta["backbone"], meta["channels"])
    if (run.path / "backbone.safetensors").exists():
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(run.path / "backbone.safetensors")))
        return net.eval(), meta, "backbone.safetensors"
    net.load_state_dict({k.removeprefix("backbone."): v for k, v in state["model"].items()
                         if k.startswith("backbone.")})
    return net.eval(), meta, "checkpoint.pt"


def filters_figure(nets: dict[str, nn.Module], path: Path) -> None:
    fig = _figure(3.6 * len(nets), 3.9)
    axes = fig.subplots(1, len(nets), squeeze=False)[0]
    for ax, (label, net) in zip(axes, nets.items()):
        w = first_conv(net).weight
        ax.imshow(filter_mosaic(w), interpolation="nearest")
        ax.set_title(f"{label}\n{w.shape[0]} filters {w.shape[1]}x{w.shape[2]}x{w.shape[3]}", fontsize=9)
        ax.axis("off")
    _save(fig, path, tight=True)


def maps_mosaic(maps: Tensor, n: int = 16, height: int = 64) -> np.ndarray:
    """The first n channels of (C, H, W) side by side as viridis RGB, each min-max scaled on its own,
    enlarged (nearest) to about `height` px so stages of different resolution line up."""
    t = maps[:n].float()
    lo, hi = t.amin((1, 2), keepdim=True), t.amax((1, 2), keepdim=True)
    t = ((t - lo) / (hi - lo).clamp_min(1e-12)).numpy()
    k = max(1, round(height / t.shape[1]))
    t = t.repeat(k, 1).repeat(k, 2)
    gap = np.full((t.shape[1], 3), np.nan)
    gray = np.concatenate([np.concatenate([m, gap], 1) for m in t], 1)[:, :-gap.shape[1]]
    rgb = colormaps["viridis"](np.nan_to_num(gray))[..., :3]
    rgb[np.isnan(gray)] = 1.0  # white gaps between channels
    return rgb


def feature_maps_figure(image: Tensor, maps: dict[str, dict[str, Tensor]], path: Path, n: int = 16) -> None:
    """The input image, then the first n channels of each captured stage, one row per (network, stage)."""
    rows = [(net, stage, t[0]) for net, stages in maps.items() for stage, t in stages.items()]
    n = min(n, *(t.shape[0] for *_, t in rows))
    fig = _figure(13, 0.68 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), 2, squeeze=False, width_ratios=[1, n])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    axes[0, 0].imshow(_to_display(image, 64), interpolation="nearest")
    axes[0, 0].set_title("input", fontsize=8)
    axes[0, 1].set_title(f"channels 0-{n - 1}, left to right", fontsize=8)
    for i, (net, stage, t) in enumerate(rows):
        axes[i, 1].imshow(maps_mosaic(t, n), interpolation="nearest")
        axes[i, 1].set_ylabel(f"{net}\n" + stage.replace(" (", "\n("), fontsize=7, rotation=0, ha="right",
                              va="center")
    _save(fig, path)


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
    samples["panels"] side by side (default: "first", and "second" if any, e.g. a patch pair), titled with samples["titles"]
    or with the true and predicted label names in samples["positions"]; green right, red wrong, when the
    samples hold "true" and "pred"."""
    panels = samples.get("panels") or [p for p in ("first", "second") if p in samples]
    k = min(n, len(samples["first"]))
    cols = min(4, k)
    rows = math.ceil(k / cols)
    fig = _figure(max(2.0, 1.3 * len(panels)) * cols, 1.7 * rows)
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
    _save(fig, path)


def _sample_strip(images: list[Tensor]) -> np.ndarray:
    """uint8 images side by side, enlarged to at least 64 px, with a white gap between them."""
    shown = [_to_display(img, 64) for img in images]
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

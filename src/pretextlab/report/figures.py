"""The report's curve figures, drawn from the runs' CSV files and summary.json's numbers: the fine-tuning
curves (one row per label fraction), macro-F1 vs label fraction, a pretext run's curves, one run's curves.

Every curve's x axis is optimizer steps, so scratch and pretrained arms are compared at equal compute:
metrics.csv's `step`, or for a run from before that column, epoch x config.json's resolved steps_per_epoch
(a run that records neither is drawn per epoch, and the axis says so). The training loss comes from
steps.csv (the loss every few steps), smoothed by a centred running mean, where a run has one; otherwise
from metrics.csv, where it is already the mean over each evaluation interval. With several seeds a line is
the mean over seeds and its band spans their minimum to maximum.

The image figures (predictions, confusion matrices, pretext samples) are in `images`, the figures that run
a network (filters, feature maps) in `backbone`; the canvas, the width and the arm colours in `canvas`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator

from ..layout import METRICS as METRICS_CSV
from ..layout import SCRATCH, STEPS
from .answers import plateau_of, stable_end
from .canvas import WIDTH, arm_colors, arm_handles, legend_above, new_figure, save_png
from .files import read_table
from .formatting import fraction_title
from .images import SAMPLE_CAPTIONS, confusion_figure, examples_figure, mask_examples_figure, samples_figure, to_display
from .results import PROTOCOLS, PretextRun, Run, Study, read_config, smoothed_losses
from .rules import LOSS_MIN_WINDOW, LOSS_SMOOTH_SHARE
from .summary import METRICS, NAMES, baseline_name

__all__ = ["SAMPLE_CAPTIONS", "confusion_figure", "curves_caption", "examples_figure", "fraction_figure",
           "mask_examples_figure",
           "loss_figure", "metrics_figure", "pretext_figure", "run_figure", "samples_figure", "to_display"]

STEP, EPOCH = "optimizer steps", "epoch"
SPIKE = 1.5  # a loss axis stops at this multiple of the highest start or second-half value (see _cut_spikes)


@dataclass
class Curve:
    x: np.ndarray
    y: np.ndarray


class Logged(Protocol):
    """A run folder as the curve figures read it: a Run, a PretextRun, or the one folder of run_figure."""

    history: list[dict[str, float]]  # metrics.csv
    path: Path  # where steps.csv is

    @property
    def steps_per_epoch(self) -> int | None: ...  # config.json "resolved"


@dataclass
class Folder:
    """One run folder read on its own (run_figure)."""

    history: list[dict[str, float]]
    path: Path
    steps_per_epoch: int | None


def eval_x(run: Logged, unit: str | None = None) -> tuple[np.ndarray, str]:
    """Each evaluation's x and its unit: optimizer steps (the step column, else epoch x steps per epoch
    from the run's config.json), else epochs; unit=EPOCH asks for epochs whatever the run records."""
    history = run.history
    epochs = np.array([r.get("epoch", i + 1) for i, r in enumerate(history)], float)
    if unit != EPOCH and history and all("step" in r for r in history):
        return np.array([r["step"] for r in history], float), STEP
    per_epoch = run.steps_per_epoch
    return (epochs * per_epoch, STEP) if per_epoch and unit != EPOCH else (epochs, EPOCH)


def logged_losses(path: Path) -> Curve | None:
    """A run's steps.csv training loss, smoothed as the answers read it; None where it has none."""
    points = smoothed_losses(path)
    return None if points is None else Curve(np.array([s for s, _ in points], float), np.array([v for _, v in points]))


def run_curve(run: Logged, key: str, unit: str) -> Curve | None:
    """One quantity of one run against `unit` (train_loss from steps.csv where the run has one)."""
    if key == "train_loss" and unit == STEP and (logged := logged_losses(run.path)) is not None:
        return logged
    history = run.history
    x, _ = eval_x(run, unit)
    keep = [i for i, r in enumerate(history) if key in r and math.isfinite(r[key])]
    return Curve(x[keep], np.array([history[i][key] for i in keep])) if keep else None


def common_unit(runs: Sequence[Logged]) -> str:
    """Optimizer steps where every run records them, else epochs (a panel never mixes the two)."""
    return STEP if all(eval_x(r)[1] == STEP for r in runs) else EPOCH


def mean_band(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, and mean, min and max over the curves, on the densest curve's points up to where all reach."""
    end = min(c.x[-1] for c in curves)
    grid = max(curves, key=lambda c: int((c.x <= end).sum())).x
    x = grid[grid <= end]
    ys = np.array([np.interp(x, c.x, c.y) for c in curves])
    return x, ys.mean(0), ys.min(0), ys.max(0)


def plot_arm(ax: Axes, runs: Sequence[Run], key: str, unit: str, color: str, label: str) -> np.ndarray | None:
    """An arm's mean curve over seeds with its min-max band where every seed has values, and each seed's own
    thin line to its end (a run the plateau schedule stopped early is seen to stop); finished seeds only where
    there are any, so a seed still training does not cut the curve short. Returns the mean (None: nothing)."""
    runs = [r for r in runs if r.finished] or list(runs)
    curves = [c for r in runs if (c := run_curve(r, key, unit)) is not None]
    if not curves:
        return None
    x, mean, lo, hi = mean_band(curves)
    ax.plot(x, mean, color=color, lw=1.6, marker="o" if len(x) < 6 else None, ms=3, label=label)
    if len(curves) > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
        for c in curves:
            ax.plot(c.x, c.y, color=color, lw=0.6, alpha=0.5)
            ax.plot(c.x[-1:], c.y[-1:], color=color, marker="|", ms=7, alpha=0.8)  # where this seed ended
    return mean


def x_axis(ax: Axes, unit: str) -> None:
    """The x axis of a curve (call after plotting): steps from 0, or whole epochs."""
    ax.set_xlabel(unit)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1, steps=[1, 2, 2.5, 5, 10]))
    if unit == EPOCH:
        lo, hi = ax.get_xlim()
        if hi - lo < 2:  # a one-epoch run still gets a readable axis
            ax.set_xlim(min(lo, 0.5), max(hi, 1.5))
    else:
        ax.set_xlim(left=0)
    ax.grid(alpha=0.3)


def _cut_spikes(ax: Axes, means: dict[str, np.ndarray]) -> str:
    """A transient spike (one arm's loss far above where every curve starts and ends) would flatten the
    others: the axis stops at SPIKE x the highest start or second-half value. Returns the title's note."""
    means = {a: m for a, m in means.items() if len(m)}
    if not means:
        return ""
    cap = SPIKE * max(max(m[0], m[len(m) // 2:].max()) for m in means.values())
    arm, peak = max(((a, float(m.max())) for a, m in means.items()), key=lambda t: t[1])
    if peak <= cap:
        return ""
    low = min(float(m.min()) for m in means.values())
    ax.set_ylim(low - 0.05 * (cap - low), cap)
    return f"\n(axis cut at {cap:.3g}; {arm} peaks at {peak:.3g})"


def _has(runs: Sequence[Any], key: str) -> bool:
    return any(key in row for r in runs for row in r.history)


def curves_grid(study: Study, summary: dict[str, Any], panels: list[tuple[str, str]], path: Path,
                cut: bool = False) -> Figure:
    """One row per label fraction that has runs, one column per (metrics.csv key, name), an arm per colour."""
    fractions = [f for f in study.fractions if any(r.fraction == f for r in study.runs)]
    panels = [p for p in panels if _has(study.runs, p[0])] or panels
    colors = arm_colors(study.arms)
    fig = new_figure(WIDTH, 0.6 + 2.8 * len(fractions))
    axes = fig.subplots(len(fractions), len(panels), squeeze=False)
    drawn: set[str] = set()
    for row, f in zip(axes, fractions):
        by_arm = {a: [r for r in study.runs if r.fraction == f and r.arm == a] for a in study.arms}
        unit = common_unit([r for runs in by_arm.values() for r in runs])
        for ax, (key, name) in zip(row, panels):
            means = {a: m for a, runs in by_arm.items()
                     if runs and (m := plot_arm(ax, runs, key, unit, colors[a], a)) is not None}
            drawn |= set(means)
            ax.set_title(f"{fraction_title(summary, f)}: {name}" + (_cut_spikes(ax, means) if cut else ""),
                         fontsize=10)
            ax.set_ylabel(name)
            x_axis(ax, unit)
    legend_above(fig, *arm_handles({a: c for a, c in colors.items() if a in drawn}), below=len(fractions) >= 3)
    save_png(fig, path)
    return fig


def loss_figure(study: Study, summary: dict[str, Any], path: Path) -> Figure:
    """Training loss (smoothed) and validation loss vs optimizer steps, one row per label fraction."""
    return curves_grid(study, summary, [("train_loss", "training loss"), ("val_loss", "validation loss")], path,
                       cut=True)


def metrics_figure(study: Study, summary: dict[str, Any], path: Path) -> Figure:
    """The task's primary and secondary validation metrics (macro-F1 and accuracy, mean IoU and pixel accuracy) vs
    optimizer steps, one row per label fraction."""
    sc = study.scoring
    return curves_grid(study, summary, [(sc.column, f"validation {sc.name}"),
                                        (f"val_{sc.secondary}", f"validation {sc.secondary_name}")], path)


def _images_per_step(run: Run) -> float | None:
    """Images per optimizer step: metrics.csv's images_seen / step, else config.json's batch size x world size."""
    last = run.history[-1] if run.history else {}
    if last.get("step") and "images_seen" in last:
        return last["images_seen"] / last["step"]
    batch, world = run.config.batch_size, run.config.world_size
    return batch * (1 if world is None else world) if batch else None


def _runs(n: int) -> str:
    return f"{n} run" + ("s" if n != 1 else "")


def curves_caption(runs: Sequence[Run]) -> str:
    """What the curve figures of these runs show, said from what their files hold."""
    if not runs:
        return ""
    steps = common_unit(runs) == STEP
    logs = [c for r in runs if steps and (c := logged_losses(r.path)) is not None]
    logged = len(logs)
    seen = {_images_per_step(r) for r in runs}
    columns = [c for c in ("images_seen", "wall_time_s") if _has(runs, c)]
    parts = [("x axis: optimizer steps, the same compute for every arm"
              + (f" (one step: {seen.pop():g} images)" if len(seen) == 1 and None not in seen else "")
              + ("; runs from before metrics.csv had a step column are placed at epoch x steps per epoch "
                 "(config.json)" if not all(_has([r], "step") for r in runs) else "")) if steps
             else "x axis: epochs (these runs record no optimizer steps)"]
    if logged:
        every = sorted({int(np.median(np.diff(c.x))) for c in logs})
        parts.append(f"training loss: {STEPS}'s loss every {'/'.join(map(str, every))} steps, smoothed by a centred "
                     "running mean over "
                     f"{LOSS_SMOOTH_SHARE:.0%} of the run's logged values (at least {LOSS_MIN_WINDOW}), the series "
                     "the answers read"
                     + (f"; for the {_runs(len(runs) - logged)} without {STEPS}, metrics.csv's mean over each "
                        "evaluation interval" if logged < len(runs) else ""))
    else:
        parts.append("training loss: the mean over each evaluation interval (metrics.csv; these runs have no "
                     f"{STEPS}), unsmoothed")
    parts.append("validation curves: one point per evaluation; thick lines are the mean over seeds where every seed "
                 "has values, bands span their minimum to maximum, thin lines are each seed to its end (a tick marks "
                 "where it ended)")
    if columns:
        parts.append(f"metrics.csv also records {' and '.join(columns)} per evaluation, so the same curves can be "
                     "drawn against " + " or ".join({"images_seen": "images seen",
                                                     "wall_time_s": "wall time"}[c] for c in columns))
    return "; ".join(parts)


def fraction_figure(evaluation: dict[str, Any], methods: list[str], path: Path, metric: str = "f1_macro") -> Figure:
    """A metric vs label fraction (log axis) on the evaluation's split, a line per method, a panel per protocol;
    error bars are 95% t intervals over seeds (none for a single seed). Methods are nudged sideways a little
    so their bars do not hide each other."""
    cells = evaluation["cells"]
    colors = arm_colors(methods)
    fractions = sorted({float(f) for by_f in cells.values() for f in by_f})
    fig = new_figure(WIDTH if len(cells) > 1 else WIDTH / 2, 3.9)
    axes = fig.subplots(1, len(cells), squeeze=False, sharey=True)[0]
    drawn: set[str] = set()
    for ax, (protocol, by_f) in zip(axes, cells.items()):
        for i, m in enumerate(methods):
            pts = sorted((float(f), c[m][metric]) for f, c in by_f.items() if metric in c.get(m, {}))
            if not pts:
                continue
            x = np.array([f for f, _ in pts]) * 1.04 ** (i - (len(methods) - 1) / 2)
            mean = np.array([c["mean"] for _, c in pts])
            err = np.array([[c["mean"] - c["ci95"][0], c["ci95"][1] - c["mean"]] if c["ci95"] else [0.0, 0.0]
                            for _, c in pts]).T
            ax.errorbar(x, mean, yerr=err, color=colors[m], marker="o", ms=4, capsize=3, label=m)
            drawn.add(m)
        ax.set_xscale("log")
        ax.set_xlim(fractions[0] / 1.4, fractions[-1] * 1.4)  # the same axis in every panel
        ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set(title=PROTOCOLS[protocol], xlabel="label fraction (log scale)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{evaluation.get('split', 'validation')} {NAMES[metric]}")
    baseline = " / ".join(dict.fromkeys(baseline_name(p) for p in cells))
    handles, labels = arm_handles({m: c for m, c in colors.items() if m in drawn}, marker="o", ms=4)
    legend_above(fig, handles, [baseline if m == SCRATCH else m for m in labels])
    save_png(fig, path)
    return fig


def run_figure(run_dir: Path, path: Path | None = None) -> Path:
    """One training run's curves (loss; validation macro-F1, precision, recall, accuracy) as a PNG."""
    run_dir = Path(run_dir)
    h = read_table(run_dir / METRICS_CSV, needs=("epoch",))
    path = path or run_dir / "curves.png"
    run = Folder(h, run_dir, read_config(run_dir).steps_per_epoch)
    unit = eval_x(run)[1]
    fig = new_figure(WIDTH, 3.9)
    ax_loss, ax_m = fig.subplots(1, 2)
    lines = []
    for key, style, label in (("train_loss", "--", "training loss"), ("val_loss", "-", "validation loss")):
        if (c := run_curve(run, key, unit)) is not None:
            lines += ax_loss.plot(c.x, c.y, style, color="0.25", label=label)
    for m, color in zip([m for m in METRICS if f"val_{m}" in h[0]], ("#0072B2", "#D55E00", "#009E73", "#CC79A7")):
        if (c := run_curve(run, f"val_{m}", unit)) is not None:
            lines += ax_m.plot(c.x, c.y, color=color, label=f"validation {NAMES[m]}")
    ax_loss.set(title="loss", ylabel="loss")
    ax_m.set(title=f"{run_dir.name}: validation metrics")
    for ax in (ax_loss, ax_m):
        x_axis(ax, unit)
    legend_above(fig, lines, [ln.get_label() for ln in lines])
    save_png(fig, path)
    return path


def _extra_name(key: str) -> str:
    name = key.removeprefix("val_")
    return {"psnr": "PSNR (dB)", "knn_accuracy": "k-NN accuracy"}.get(name, name.replace("_", " "))


def pretext_figure(run: PretextRun, chance: float | None, path: Path) -> Figure:
    """Pretext loss and, where the task has one, accuracy (train dashed, held-out solid, chance dotted), and a
    panel per other held-out metric (PSNR, k-NN accuracy): only the panels the run has data for."""
    h, color = run.history, arm_colors([run.task])[run.task]
    unit = eval_x(run)[1]
    keys = list(dict.fromkeys(k for row in h for k in row))
    panels = [("loss", ["train_loss", "val_loss"])]
    if {"train_accuracy", "val_accuracy"} & set(keys):
        panels.append(("accuracy", ["train_accuracy", "val_accuracy"]))
    panels += [(f"held-out {_extra_name(k)}", [k]) for k in keys
               if k.startswith("val_") and k not in ("val_loss", "val_accuracy")]
    cols = min(4, len(panels))
    fig = new_figure(WIDTH if cols > 1 else WIDTH / 2, 0.6 + 3.0 * math.ceil(len(panels) / cols))
    axes = list(fig.subplots(math.ceil(len(panels) / cols), cols, squeeze=False).flat)
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    for ax, (name, ks) in zip(axes, panels):
        for k in ks:
            if (c := run_curve(run, k, unit)) is not None:
                ax.plot(c.x, c.y, "--" if k.startswith("train_") else "-", color=color,
                        marker="o" if len(c.x) < 6 else None, ms=3)
        if name == "accuracy" and chance is not None:
            ax.axhline(chance, color="0.4", ls=":")
        ax.set_title(f"pretext {run.task}: {name}", fontsize=10)
        ax.set_ylabel(name)
        x_axis(ax, unit)
    smoothed = " (smoothed)" if unit == STEP and logged_losses(run.path) is not None else ""
    handles = [Line2D([], [], color=color, ls="--"), Line2D([], [], color=color)]
    labels = [f"train{smoothed}", "held-out images"]
    if chance is not None and any(name == "accuracy" for name, _ in panels):
        handles.append(Line2D([], [], color="0.4", ls=":"))
        labels.append(f"chance ({chance:.3f})")
    legend_above(fig, handles, labels)
    save_png(fig, path)
    return fig


def answer_figure(study: Study, fraction: float, path: Path) -> Figure:
    """The answer page's figure of one label fraction: training loss, validation loss and the task's validation
    metric against optimizer steps, one thin line per seed and network drawn to its own end (so a run that stopped
    early is seen to stop), the step where a constant rate starts to fall, and each run's plateau (a dot)."""
    runs = [r for r in study.runs if r.fraction == fraction]
    colors = arm_colors(study.arms)
    fig = new_figure(WIDTH, 2.8)
    axes = fig.subplots(1, 3)
    unit = common_unit(runs)
    ends = {e for r in runs if r.finished and (e := stable_end(r)) is not None and e < (r.budget or r.steps)}
    plateaus = {r.name: p["step"] for r in runs if r.finished and (p := plateau_of(r))["step"] is not None}
    metric = study.scoring.column
    for ax, (key, name) in zip(axes, (("train_loss", "training loss"), ("val_loss", "validation loss"),
                                      (metric, f"validation {study.scoring.name}"))):
        for r in sorted(runs, key=lambda r: (r.arm != SCRATCH, r.seed)):
            c = run_curve(r, key, unit)
            if c is None:
                continue
            ax.plot(c.x, c.y, color=colors[r.arm], lw=1.1, alpha=0.85)
            ax.plot(c.x[-1:], c.y[-1:], color=colors[r.arm], marker="|", ms=8)  # where the run ended
            if key == metric and r.name in plateaus:
                step = plateaus[r.name]
                ax.plot([step], [float(np.interp(step, c.x, c.y))], "o", ms=6, mfc="white", mec=colors[r.arm], mew=1.5)
        for end in ends:
            ax.axvline(end, color="#888888", ls=":", lw=1)
        ax.set_title(name, fontsize=10)
        x_axis(ax, unit)
    handles, labels = arm_handles({a: c for a, c in colors.items() if any(r.arm == a for r in runs)})
    if ends:
        handles, labels = handles + [Line2D([], [], color="#888888", ls=":", lw=1)], labels + [
            "learning rate starts to fall"]
    if plateaus:
        handles, labels = handles + [Line2D([], [], ls="", marker="o", mfc="white", mec="#555555", mew=1.5)], \
            labels + ["plateau reached"]
    legend_above(fig, handles, labels)
    save_png(fig, path)
    return fig


def length_figure(lengths: dict[str, Any], metric: str, path: Path) -> Figure:
    """How much pretraining pays (summary.json "lengths"): left, the gain over scratch of the headline metric
    against pretraining epochs (log scale), one line per pretext task (its colour) and label fraction (its
    marker), 95% intervals over seeds as bars; right, the pretext task's own held-out accuracy (or loss, for a
    task without one) at the end of each pretraining length."""
    fig = new_figure(WIDTH, 3.2)
    ax_gain, ax_pre = fig.subplots(1, 2)
    colors = arm_colors(list(lengths))
    markers = "osD^v<>"
    for task, entry in lengths.items():
        for k, (f, e) in enumerate(entry["fractions"].items()):
            x = [p["epochs"] for p in e["points"]]
            y = [p["gain"] for p in e["points"]]
            err = [[p["gain"] - p["ci95"][0] if p["ci95"] else 0 for p in e["points"]],
                   [p["ci95"][1] - p["gain"] if p["ci95"] else 0 for p in e["points"]]]
            ax_gain.errorbar(x, y, yerr=err, color=colors[task], marker=markers[k % len(markers)], capsize=3,
                             lw=1.3, label=f"{task}, {float(f):.0%} labels")
        key = "accuracy" if any(v["accuracy"] is not None for v in entry["pretext"].values()) else "loss"
        xs = [int(n) for n, v in entry["pretext"].items() if v[key] is not None]
        ax_pre.plot(xs, [entry["pretext"][str(n)][key] for n in xs], color=colors[task], marker="o",
                    label=f"{task} (held-out {key})")
    ax_gain.axhline(0, color="#888888", lw=1, ls=":")
    for ax in (ax_gain, ax_pre):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("pretraining epochs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax_gain.set_title(f"fine-tuned {metric}: pretrained − scratch", fontsize=10)
    ax_pre.set_title("the pretext task at the end of its pretraining", fontsize=10)
    save_png(fig, path)
    return fig

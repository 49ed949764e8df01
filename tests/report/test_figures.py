"""The report's figures read at 1280 px for 1 to 6 arms: the size they are saved at, legends off the data,
no panel's labels over another's, one colour per arm in every figure, curves against optimizer steps."""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from pretextlab.models import make_backbone
from pretextlab.report.backbone import early_features, filter_mosaic
from pretextlab.report.canvas import ARM_COLORS, DPI, WIDTH, arm_colors
from pretextlab.report.figures import curves_caption, fraction_figure, loss_figure, metrics_figure, pretext_figure
from pretextlab.report.figures import run_figure as draw_run
from pretextlab.report.images import MARK, confusion_figure, examples_figure
from pretextlab.report.records import RunSummary
from pretextlab.report.results import PretextRun, Run, Study, read_config, study_config

torch.set_num_threads(1)

ARMS = ["scratch", "context", "rotation", "reconstruction", "simclr", "jigsaw"]  # jigsaw: a task of no fixed colour
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EVALS, PER_EPOCH = 24, 12  # evaluations per run, optimizer steps per epoch (2 evaluations per epoch)


def _csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    path.write_text(",".join(keys) + "\n" + "".join(",".join(str(r.get(k, "")) for k in keys) + "\n" for r in rows))


def _run(root: Path, fraction: float, arm: str, seed: int, steps_csv: bool = True) -> Run:
    """A run as training now writes it: metrics.csv with step, images_seen and wall_time_s at 24 evaluations,
    steps.csv every 10 steps, config.json; steps_csv=False: a run from before steps.csv and the step column."""
    name = f"f{fraction:g}-{arm}-s{seed}"
    gain, rng = 0.05 * ARMS.index(arm), np.random.default_rng(seed)
    rows = []
    for i in range(1, EVALS + 1):
        step = i * PER_EPOCH // 2
        f1 = 0.8 * (1 - math.exp(-i / 6)) + gain + 0.01 * rng.standard_normal()
        rows.append({"epoch": step / PER_EPOCH, "train_loss": 2.3 * math.exp(-i / 10) + 0.3, "val_loss": 2.0 - f1,
                     "val_f1_macro": f1, "val_accuracy": f1 + 0.01, "val_precision_macro": f1,
                     "val_recall_macro": f1, "wall_time_s": 1.5 * i,
                     **({"step": step, "images_seen": 64 * step} if steps_csv else {})})
    _csv(rows, root / name / "metrics.csv")
    if steps_csv:
        _csv([{"step": s, "train_loss": 2.3 * math.exp(-s / 60) + 0.3 + 0.2 * rng.standard_normal()}
              for s in range(10, EVALS * PER_EPOCH // 2 + 1, 10)], root / name / "steps.csv")
    (root / name / "config.json").write_text(json.dumps({"resolved": {"steps_per_epoch": PER_EPOCH,
                                                                      "batch_size": 64}}))
    summary = {"fraction": fraction, "n_train": int(1000 * fraction), "confusion_val": np.eye(10).tolist(),
               "examples": [{"label": i % 10, "pred": i % 10 if (i + ARMS.index(arm)) % 3 else (i + 1) % 10,
                             "confidence": 0.5} for i in range(14)]}
    return Run(name, root / name, fraction, arm, seed, rows, RunSummary.parse(summary), read_config(root / name))


def _study(root: Path, n_arms: int, fractions=(1.0, 0.1), seeds=(0, 1), steps_csv: bool = True) -> Study:
    runs = [_run(root, f, a, s, steps_csv) for f in fractions for a in ARMS[:n_arms] for s in seeds]
    return Study(root, study_config({"fractions": list(fractions), "seeds": list(seeds), "pretexts": ARMS[1:n_arms]}),
                 runs, {})


def _summary(study: Study) -> dict:
    return {"runs": {r.name: {"fraction": r.fraction, "n_train": r.summary.n_train} for r in study.runs}}


def _overlap(a, b, slack: float = 1.0) -> bool:
    """Whether two display boxes share more than a sliver (slack pixels)."""
    return a.x0 + slack < b.x1 and b.x0 + slack < a.x1 and a.y0 + slack < b.y1 and b.y0 + slack < a.y1


def _check_size(fig: Figure, path: Path) -> None:
    """Saved at DPI with the figure's own size (to the pixel), no wider than the report."""
    w, h = Image.open(path).size
    assert abs(w - fig.get_figwidth() * DPI) <= 1 and abs(h - fig.get_figheight() * DPI) <= 1
    assert w <= round(WIDTH * DPI)


def _check_layout(fig: Figure, path: Path) -> None:
    """_check_size; every legend off every panel (its data area and its labels); no panel's titles, tick
    labels or axis labels over another panel."""
    _check_size(fig, path)
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert fig.legends, "a legend for the figure"
    for legend in fig.legends:
        box = legend.get_window_extent(renderer)
        for ax in axes:
            assert not _overlap(box, ax.get_window_extent(renderer)), "legend over a data area"
            assert not _overlap(box, ax.get_tightbbox(renderer)), "legend over a panel's labels"
    for a, b in combinations(axes, 2):
        assert not _overlap(a.get_tightbbox(renderer), b.get_window_extent(renderer)), "labels over a panel"


def _line_colors(fig: Figure) -> dict[str, str]:
    """Arm -> the colour its lines have, over every panel (asserting one colour per arm)."""
    seen: dict[str, set] = {}
    for ax in fig.axes:
        for line in ax.lines:
            if not line.get_label().startswith("_"):
                seen.setdefault(line.get_label(), set()).add(line.get_color())
    assert all(len(c) == 1 for c in seen.values()), seen
    return {a: c.pop() for a, c in seen.items()}


@pytest.mark.parametrize("n_arms", [1, 2, 6])
def test_curve_figures_are_readable_for_1_2_and_6_arms(tmp_path, n_arms):
    study = _study(tmp_path, n_arms)
    expected = arm_colors(ARMS[:n_arms])
    for draw, name in ((loss_figure, "loss.png"), (metrics_figure, "val_metrics.png")):
        fig = draw(study, _summary(study), tmp_path / name)
        _check_layout(fig, tmp_path / name)
        assert len(fig.axes) == 2 * 2  # a row per fraction, two panels: none empty
        assert all(ax.lines for ax in fig.axes)
        assert all(ax.get_xlabel() == "optimizer steps" for ax in fig.axes)
        assert _line_colors(fig) == expected
        assert round(fig.get_figwidth() * DPI) == round(WIDTH * DPI)


@pytest.mark.parametrize("n_arms", [1, 2, 6])
def test_fraction_figure_legend_is_outside_for_1_2_and_6_methods(tmp_path, n_arms):
    methods = ARMS[:n_arms]
    cell = {m: {"f1_macro": {"mean": 0.5 + 0.02 * i, "ci95": [0.45, 0.6]}} for i, m in enumerate(methods)}
    evaluation = {"split": "validation", "cells": {p: {"1": cell, "0.1": cell} for p in ("finetune", "linear")}}
    fig = fraction_figure(evaluation, methods, tmp_path / "f.png")
    _check_layout(fig, tmp_path / "f.png")
    colors = {}
    for ax in fig.axes:
        for c in ax.containers:  # an errorbar per method
            colors.setdefault(c.get_label(), set()).add(c.lines[0].get_color())
    assert colors == {m: {c} for m, c in arm_colors(methods).items()}


def test_one_colour_per_arm_in_every_figure():
    six, two = arm_colors(ARMS), arm_colors(["rotation", "scratch"])
    assert two == {"rotation": ARM_COLORS["rotation"], "scratch": ARM_COLORS["scratch"]}
    assert {a: six[a] for a in ARM_COLORS} == ARM_COLORS  # the fixed mapping, whatever else is drawn
    assert arm_colors(["jigsaw"])["jigsaw"] == six["jigsaw"] and six["jigsaw"] not in ARM_COLORS.values()
    assert len(set(six.values())) == len(ARMS)
    assert arm_colors(["rotation s1", "random init"]) == {"rotation s1": ARM_COLORS["rotation"],
                                                           "random init": ARM_COLORS["scratch"]}


def test_curves_are_against_optimizer_steps_and_the_caption_says_how(tmp_path):
    new, old = _study(tmp_path / "new", 2), _study(tmp_path / "old", 2, steps_csv=False)
    for study in (new, old):
        fig = loss_figure(study, _summary(study), study.path / "loss.png")
        val = fig.axes[1].lines[0]  # validation loss, the first arm: one point per evaluation
        assert list(val.get_xdata()) == [i * PER_EPOCH // 2 for i in range(1, EVALS + 1)]
    smoothed = loss_figure(new, _summary(new), tmp_path / "l.png").axes[0].lines[0]
    assert smoothed.get_xdata()[0] == 10 and len(smoothed.get_xdata()) == EVALS * PER_EPOCH // 20  # steps.csv
    caption = curves_caption(new.runs)
    assert "optimizer steps" in caption and "one step: 64 images" in caption
    assert "steps.csv's loss every 10 steps, smoothed by a centred running mean" in caption
    assert "the series the answers read" in caption
    assert "images_seen and wall_time_s" in caption and "thin lines are each seed to its end" in caption
    caption = curves_caption(old.runs)
    assert "epoch x steps per epoch" in caption and "no steps.csv" in caption and "wall_time_s" in caption


def test_pretext_figure_draws_only_the_panels_a_task_has(tmp_path):
    rows = [{"epoch": e, "step": 50 * e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_psnr": 15 + e}
            for e in range(1, 5)]  # reconstruction: no accuracy
    fig = pretext_figure(PretextRun("reconstruction", tmp_path, rows, None), None, tmp_path / "p.png")
    _check_layout(fig, tmp_path / "p.png")
    assert [ax.get_title() for ax in fig.axes] == ["pretext reconstruction: loss",
                                                   "pretext reconstruction: held-out PSNR (dB)"]
    assert all(ax.lines for ax in fig.axes)
    rows = [{**r, "train_accuracy": 0.3, "val_accuracy": 0.4, "val_knn_accuracy": 0.3} for r in rows]
    fig = pretext_figure(PretextRun("rotation", tmp_path, rows, None), 0.25, tmp_path / "r.png")
    assert len(fig.axes) == 4 and all(ax.lines for ax in fig.axes)  # loss, accuracy, PSNR, k-NN accuracy
    assert {ln.get_color() for ax in fig.axes for ln in ax.lines if ln.get_linestyle() != ":"} == \
        {ARM_COLORS["rotation"]}


def _texts(fig: Figure) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_text() and t.get_visible()]


@pytest.mark.parametrize("n_arms", [1, 2, 6])
def test_examples_are_a_row_per_arm_with_marks_and_no_overlap(tmp_path, n_arms):
    runs = {f"{a} s0": _run(tmp_path, 0.1, a, 0).summary.examples for a in ARMS[:n_arms]}
    images = torch.randint(0, 256, (14, 3, 32, 32), dtype=torch.uint8)
    fig = examples_figure(images, runs, CLASSES, tmp_path / "e.png")
    _check_size(fig, tmp_path / "e.png")
    renderer = fig.canvas.get_renderer()
    texts = _texts(fig)
    for a, b in combinations(texts, 2):
        assert not _overlap(a.get_window_extent(renderer), b.get_window_extent(renderer), 0), \
            (a.get_text(), b.get_text())
    cells = [t for t in texts if t.get_text()[0] in MARK.values()]
    assert len(cells) == n_arms * len(CLASSES)  # one example per class, a cell per arm and example
    rows = {}
    for t in cells:  # the cells of one arm share a row: same height on the page
        rows.setdefault(round(t.axes.get_position().y0, 4), []).append(t)
    assert len(rows) == n_arms and all(len(r) == len(CLASSES) for r in rows.values())
    titles = [t.get_text() for ax in fig.axes for t in [ax.title] if t.get_text()]
    assert titles == CLASSES  # one column per class, in class order
    labels = {t.get_text(): t.get_color() for t in texts if t.get_text() in runs}
    assert labels == {f"{a} s0": arm_colors(ARMS)[a] for a in ARMS[:n_arms]}
    right = [t for t in cells if t.get_text().startswith(MARK[True])]
    assert right and {t.get_color() for t in right} != {t.get_color() for t in cells if t not in right}


@pytest.mark.parametrize("n_arms", [1, 2, 5, 6])
def test_confusion_matrices_in_rows_of_at_most_three(tmp_path, n_arms):
    matrices = {a: np.eye(10) * 5 + 1 for a in ARMS[:n_arms]}
    fig = confusion_figure(matrices, CLASSES, "fraction 0.1", tmp_path / "c.png")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == n_arms  # no empty panel
    assert len({round(ax.get_position().x0, 3) for ax in panels}) == min(3, n_arms)
    assert len(fig.axes) == n_arms + 1  # one colour bar for all
    assert {ax.images[0].get_clim() for ax in panels} == {(0, 1)}
    assert {ax.title.get_color() for ax in panels} == {arm_colors(ARMS)[a] for a in ARMS[:n_arms]}
    assert Image.open(tmp_path / "c.png").size[0] <= round(WIDTH * DPI)
    renderer = fig.canvas.get_renderer()
    for a, b in combinations(panels, 2):
        assert not _overlap(a.get_tightbbox(renderer), b.get_tightbbox(renderer))
    assert [t.get_text() for t in panels[0].get_yticklabels()] == CLASSES


def test_backbone_views():
    torch.manual_seed(0)
    net = make_backbone("fast", 3)
    maps = early_features(net, torch.randn(1, 3, 16, 16))
    shapes = [tuple(t.shape) for t in maps.values()]
    assert shapes == [(1, 24, 16, 16), (1, 48, 8, 8)]  # after the stem, after the first ResBlock
    assert list(maps)[1].startswith("first block (blocks.0)")
    mosaic = filter_mosaic(net.stem[0].weight)
    assert mosaic.shape == (5 * 4 + 1, 5 * 4 + 1, 3) and mosaic.min() >= 0 and mosaic.max() <= 1


def test_run_figure_draws_a_single_runs_curves(tmp_path):
    rows = "epoch,train_loss,val_loss,val_f1_macro,val_precision_macro,val_recall_macro,val_accuracy\n"
    rows += "1,2.0,1.9,0.3,0.3,0.3,0.3\n2,1.5,1.6,0.5,0.5,0.5,0.5\n"
    (tmp_path / "metrics.csv").write_text(rows)
    path = draw_run(tmp_path)
    assert path == tmp_path / "curves.png" and path.stat().st_size > 10_000
    run = _run(tmp_path, 1.0, "scratch", 0)
    path = draw_run(run.path)
    assert Image.open(path).size == (round(WIDTH * DPI), round(3.9 * DPI))

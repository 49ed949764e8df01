"""Time to accuracy: validation macro-F1 against training seconds for a preset's full-label arm.

airbench (Jordan 2024, arXiv 2404.00498) judges a training recipe by the accuracy it reaches per unit of
compute. This is that curve for pretextlab's recipe on this machine: the preset's fine-tuning run from
scratch with every label (the study's 100% scratch arm, seed `seed`), evaluated as the preset evaluates,
with training time counted without the evaluations (metrics.csv's train_time_s). Given the JSON of an
earlier measurement (`before`), it also says what the recipe reaches within the earlier budget and how long
it needs for the earlier accuracy, the two numbers that tell whether a recipe change paid.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

from .. import hw
from ..data import DataConfig
from ..errors import UserError
from ..finetune import finetune
from ..io import load_json
from ..layout import CONFIG, METRICS
from ..report.rules import EPS, first_step
from ..runs import read_csv
from ..study.presets import PRESETS

LEVELS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)  # macro-F1 levels whose first training second is reported
# The two budgets a curve is read against: (curve column, key stem in `compare`, words, number format).
AXES = (("train_time_s", "train_time_s", "training seconds", ".1f"),
        ("images_seen", "images", "training images", ".0f"))


def first_time(curve: list[dict[str, float]], level: float, axis: str = "train_time_s") -> float | None:
    """Training seconds (or, with axis="images_seen", training images) of the first evaluation at or above
    `level` (None: never)."""
    return first_step([(p[axis], p["val_f1_macro"]) for p in curve], level, below=False)


def value_within(curve: list[dict[str, float]], budget: float, axis: str = "train_time_s") -> float | None:
    """Macro-F1 of the last evaluation made within `budget` training seconds (or images) (None: none that early)."""
    within = [p["val_f1_macro"] for p in curve if p[axis] <= budget + EPS]
    return within[-1] if within else None


def compare(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """The recipe now against an earlier measurement: macro-F1 within the old budget, the budget to the old
    macro-F1, and their ratio (> 1: the old accuracy is reached sooner now); in training seconds, which the
    machine's load moves, and in training images, which it does not (the comparison for one architecture)."""
    target = before["final_val_f1_macro"]
    out: dict[str, Any] = {"before_final_val_f1_macro": target}
    for axis, unit, _, _ in AXES:
        budget = before["curve"][-1][axis]
        needed = first_time(after["curve"], target, axis)
        within = value_within(after["curve"], budget, axis)
        out |= {f"before_{unit}": budget, f"val_f1_macro_within_before_{unit}": within,
                f"{unit}_to_before_f1": needed, f"{unit}_ratio": budget / needed if needed else None}
    return out


def time_to_accuracy(data: str, preset: str = "fast", seed: int = 0, precision: str = "auto", device: str = "auto",
                     before: Path | None = None, quiet: bool = False, tta: str = "none") -> dict[str, Any]:
    """Train the preset's full-label scratch run on `data` (in a temporary folder) and return its curve; with
    tta, every point of it scored with test-time augmentation (the training itself is the same, bit for bit)."""
    if preset not in PRESETS:
        raise UserError(f"--preset {preset} is unknown; use one of {', '.join(PRESETS)}")
    earlier = _read_before(before) if before is not None else None
    p = PRESETS[preset]
    cfg = dataclasses.replace(p.finetune, epochs=p.epochs_for(1.0), seed=seed, precision=precision, tta=tta)
    load_before = os.getloadavg()[0]
    threads = hw.setup_threads()
    with tempfile.TemporaryDirectory(prefix="pretextlab-tta-") as tmp:
        run_dir = Path(tmp) / "f1-scratch"
        summary = finetune(DataConfig(source=data, fraction=1.0), cfg, p.backbone, run_dir,
                                   device=device, quiet=quiet)
        rows = read_csv(run_dir / METRICS)
        used = load_json(run_dir / CONFIG)["resolved"]
    curve = [{k: r[k] for k in ("step", "images_seen", "train_time_s", "wall_time_s", "val_f1_macro",
                                "val_accuracy")} for r in rows]
    result: dict[str, Any] = {
        "preset": preset, "backbone": p.backbone, "seed": seed, "tta": tta, "epochs": cfg.epochs,
        "precision": used["precision"],
        "device": used["device"], "threads": threads, "machine": hw.machine_info(),
        "load_avg_1min_at_start": load_before, "data": data, "n_train": summary["n_train"], "n_val": summary["n_val"],
        "curve": curve, "final_val_f1_macro": curve[-1]["val_f1_macro"], "train_time_s": curve[-1]["train_time_s"],
        "wall_time_s": curve[-1]["wall_time_s"], "reached": {f"{v:g}": first_time(curve, v) for v in LEVELS},
    }
    if earlier is not None:
        result["before"] = compare(result, earlier)
    return result


def _read_before(path: Path) -> dict[str, Any]:
    try:
        earlier = load_json(Path(path))
    except (OSError, ValueError) as e:
        raise UserError(f"--before {path} could not be read ({e}); give the JSON an earlier "
                        "`pretextlab bench --time-to-accuracy --out FILE` wrote") from None
    if not isinstance(earlier, dict) or not {"train_time_s", "final_val_f1_macro", "curve"} <= earlier.keys():
        raise UserError(f"--before {path} is not a time-to-accuracy result; give the JSON an earlier "
                        "`pretextlab bench --time-to-accuracy --out FILE` wrote")
    return upgrade(earlier)


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """An earlier time-to-accuracy result as this version writes it, applied once where one is read.

    Compatibility: results written before `--tta` existed have no "tta" key; they were scored without
    test-time augmentation."""
    return {"tta": "none", **record}


def plot_curve(result: dict[str, Any], path: Path, before: dict[str, Any] | None = None) -> None:
    """Validation macro-F1 against training seconds and against training images (and, where given, the
    earlier measurement's, as read from its file) as a PNG: seconds are what a user waits, images what the
    machine's load leaves alone."""
    from ..report.canvas import legend_above, new_figure, save_png

    before = upgrade(before) if before is not None else None
    fig = new_figure(9.0, 3.6)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, name in ((axes[0], "train_time_s", "training seconds (evaluations excluded)"),
                          (axes[1], "images_seen", "training images (thousands)")):
        for label, r, style in (("earlier", before, "--"), ("now", result, "-")):
            if r is not None:
                c = r["curve"]
                ax.plot([p[key] for p in c], [p["val_f1_macro"] for p in c], style, marker=".",
                        label=f"{label}: {r['preset']}{_tta_label(r)}, {r['precision']}, {r['threads']} thread(s)",
                        color="#555555" if label == "earlier" else "#0072B2")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[1].xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}")
    axes[0].set_ylabel("validation macro-F1")
    legend_above(fig, *axes[0].get_legend_handles_labels())
    save_png(fig, path)


def _tta_label(result: dict[str, Any]) -> str:
    return "" if result["tta"] == "none" else f", {result['tta']} TTA"


def format_curve(result: dict[str, Any]) -> str:
    """The curve as a reader checks it: one line per evaluation, then the levels and the comparison."""
    lines = [f"time to accuracy: preset {result['preset']} ({result['backbone']}), 100% labels "
             f"({result['n_train']} images), seed {result['seed']}, {result['epochs']} epochs, "
             f"{result['precision']} on {result['device']}, {result['threads']} thread(s); validation: "
             f"{result['n_val']} images" + (f", scored with {result['tta']} test-time augmentation"
                                            if result["tta"] != "none" else ""),
             f"{'step':>6} {'images':>9} {'train s':>9} {'wall s':>9} {'val macro-F1':>13}"]
    for p in result["curve"]:
        lines.append(f"{p['step']:>6.0f} {p['images_seen']:>9.0f} {p['train_time_s']:>9.1f} "
                     f"{p['wall_time_s']:>9.1f} {p['val_f1_macro']:>13.4f}")
    reached = ", ".join(f"{k} at {v:.0f} s" for k, v in result["reached"].items() if v is not None)
    lines.append(f"first reached (training seconds): {reached or 'none of the levels'}")
    if "before" in result:
        b = result["before"]
        for _, unit, name, fmt in AXES:
            within, needed = b[f"val_f1_macro_within_before_{unit}"], b[f"{unit}_to_before_f1"]
            lines.append(f"against the earlier measurement ({b['before_final_val_f1_macro']:.4f} after "
                         f"{b[f'before_{unit}']:{fmt}} {name}): "
                         + (f"{within:.4f} within that budget; " if within is not None else
                            "no evaluation within that budget; ")
                         + (f"its macro-F1 after {needed:{fmt}} ({b[f'{unit}_ratio']:.2f}x)" if needed else
                            "its macro-F1 never reached"))
    if result["load_avg_1min_at_start"] > 0.5:
        lines.append(f"other processes were using the CPU (1-min load average {result['load_avg_1min_at_start']:.1f})"
                     ": seconds are depressed; compare runs made side by side")
    return "\n".join(lines)

"""The study report: reports of fabricated tiny studies, their tables, conclusions and statistics."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from pretextlab.errors import UserError
from pretextlab.models import Classifier, make_backbone
from pretextlab.report import fraction_conclusions, fraction_table, write_report
from pretextlab.results import compare, load_study, plateau_epoch, summarize_study
from pretextlab.runs import summarize

torch.set_num_threads(1)

CLASSES = ["cat", "dog", "ship"]
# Validation macro-F1 per epoch of each fabricated run: (fraction, arm, seed) -> curve.
CURVES = {
    (1.0, "scratch", 0): [0.3012, 0.4123, 0.4701, 0.4912],
    (1.0, "context", 0): [0.4521, 0.5534, 0.5873, 0.5861],
    (0.1, "scratch", 0): [0.2034, 0.2611, 0.3017, 0.3102],
    (0.1, "context", 0): [0.3345, 0.4158, 0.4406, 0.4437],
}


# ----------------------------------------------------------------------------------------------
# A fabricated study


def _write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def classifier_state() -> dict:
    torch.manual_seed(0)
    return Classifier(make_backbone("fast", 3), len(CLASSES)).state_dict()


def _meta(kind: str) -> dict:
    return {"kind": kind, "backbone": "fast", "channels": 3, "image_size": 16, "classes": CLASSES,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def write_finetune_run(study: Path, fraction: float, arm: str, seed: int, f1: list[float], state: dict) -> dict:
    """A finished fine-tuning run folder as finetune.train_classifier leaves it; returns its summary."""
    d = study / f"f{fraction:g}-{arm}-s{seed}"
    head_start = 0.3 if arm != "scratch" else 0.0  # pretrained: lower training loss
    rows = [{"epoch": e, "train_loss": 2.0 - head_start - 0.3 * e, "train_accuracy": v + 0.05, "val_f1_macro": v,
             "val_precision_macro": v + 0.011, "val_recall_macro": v - 0.012, "val_accuracy": v + 0.013,
             "val_loss": 1.6 - v, "lr": 0.1, "images_per_s": 900.0 + 10 * e, "epoch_time_s": 2.0,
             "wall_time_s": 2.0 * e} for e, v in enumerate(f1, 1)]
    _write_csv(rows, d / "metrics.csv")
    g = torch.Generator().manual_seed(7)
    labels = [i % 3 for i in range(8)]
    summary = {**summarize(rows), "run": d.name, "backbone": "fast", "init": None, "fraction": fraction,
               "seed": seed, "n_train": int(300 * fraction), "n_val": 30, "classes": CLASSES,
               "final": {"f1_macro": f1[-1], "precision_macro": f1[-1], "recall_macro": f1[-1],
                         "accuracy": f1[-1], "loss": 1.0, "n": 30},
               "confusion_val": ([[8, 1, 1], [2, 7, 1], [0, 3, 7]] if arm == "scratch"
                                 else [[9, 1, 0], [1, 9, 0], [0, 1, 9]]),
               "examples": [{"val_index": 4 * i, "label": y, "pred": y if i % 3 else (y + 1) % 3,
                             "confidence": 0.5 + 0.05 * i} for i, y in enumerate(labels)],
               "wall_time_s": rows[-1]["wall_time_s"]}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "config.json").write_text(json.dumps({"kind": "finetune", "backbone": "fast"}))
    (d / "indices.json").write_text(json.dumps({"train": [], "val": []}))
    torch.save(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=g), d / "examples.pt")
    torch.save({"model": state, "meta": _meta("classifier")}, d / "checkpoint.pt")
    return summary


def write_pretext_run(study: Path, state: dict) -> None:
    d = study / "pretrain-context"
    rows = [{"epoch": e, "train_loss": 2.0 - 0.2 * e, "train_accuracy": 0.15 + 0.1 * e, "val_loss": 2.05 - 0.2 * e,
             "val_accuracy": 0.14 + 0.1 * e, "val_knn_accuracy": 0.3 + 0.05 * e, "lr": 0.1, "images_per_s": 1500.0,
             "epoch_time_s": 3.0, "wall_time_s": 3.0 * e} for e in range(1, 5)]
    _write_csv(rows, d / "metrics.csv")
    (d / "summary.json").write_text(json.dumps({"pretext": "context", "chance": 0.125, **summarize(rows),
                                                "wall_time_s": 12.0}))
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.")}
    torch.save({"model": {**backbone, "pair_head.weight": torch.zeros(8, 384)}, "meta": _meta("pretext")},
               d / "checkpoint.pt")
    g = torch.Generator().manual_seed(3)
    torch.save({"first": torch.randint(0, 256, (6, 3, 6, 6), dtype=torch.uint8, generator=g),
                "second": torch.randint(0, 256, (6, 3, 6, 6), dtype=torch.uint8, generator=g),
                "true": torch.tensor([0, 1, 2, 3, 4, 5]), "pred": torch.tensor([0, 1, 5, 3, 7, 5]),
                "positions": ["top-left", "top", "top-right", "left", "right", "bottom-left", "bottom",
                              "bottom-right"]}, d / "samples.pt")


def make_study(root: Path, state: dict, curves: dict = CURVES, seeds: list[int] = [0]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    fractions = sorted({f for f, _, _ in curves}, reverse=True)
    machine = {"python": "3.11.7", "torch": torch.__version__, "cpu": "test CPU", "cores": 2, "threads": 1,
               "cuda": None}
    stage_times = {"pretrain-context": 14.5, **{f"f{f:g}-{a}-s{s}": 9.0 for f, a, s in curves}}
    (root / "study.json").write_text(json.dumps({
        "data": {"source": "synthetic", "val_fraction": 0.1, "split_seed": 0}, "fractions": fractions,
        "seeds": seeds, "pretexts": ["context"], "preset": "fast", "backbone": "fast", "train": {"epochs": 4,
        "label_smoothing": 0.1}, "pretrain": {"epochs": 4}, "budget_rule": "text", "machine": machine,
        "dataset": {"name": "synthetic", "classes": CLASSES, "n_pool": 300, "n_val": 30, "image_size": 16,
                    "channels": 3},
        "stage_times_s": stage_times}))
    for (f, arm, seed), curve in curves.items():
        write_finetune_run(root, f, arm, seed, curve, state)
    write_pretext_run(root, state)
    return root


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, classifier_state) -> Path:
    root = make_study(tmp_path_factory.mktemp("study") / "demo", classifier_state)
    write_report(root)
    return root


FIGURES = ["f1_vs_fraction.png", "loss.png", "val_metrics.png", "examples_f1.png", "examples_f0.1.png",
           "confusion_f0.1.png", "pretext_context.png", "pretext_samples_context.png", "filters_context.png",
           "feature_maps_context.png"]


def test_report_files_exist(finished_study: Path):
    for name in ("report.md", "report.html", "summary.json"):
        assert (finished_study / name).stat().st_size > 0, name
    for name in FIGURES:
        assert (finished_study / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    md = (finished_study / "report.md").read_text()
    for name in FIGURES:
        assert f"](figures/{name})" in md  # relative links: report.md + figures/ can be copied to docs/


def test_report_tables_hold_the_runs_and_their_best_values(finished_study: Path):
    md = (finished_study / "report.md").read_text()
    summary = json.loads((finished_study / "summary.json").read_text())
    assert set(summary["runs"]) == {f"f{f:g}-{a}-s{s}" for f, a, s in CURVES}
    assert "### fraction 1 (300 labels)" in md and "### fraction 0.1 (30 labels)" in md
    for (f, arm, seed), curve in CURVES.items():
        run = json.loads((finished_study / f"f{f:g}-{arm}-s{seed}" / "summary.json").read_text())
        best = run["best"]["f1_macro"]
        assert best["value"] == max(curve)
        assert f"{best['value']:.4f} (ep {best['epoch']})" in md
        assert f"{run['best']['accuracy']['value']:.4f}" in md
        assert summary["runs"][run["run"]]["best"]["f1_macro"] == best
    assert "All runs finished" in md
    assert "plateau epoch is the first epoch e such that no later epoch" in md  # the rule is stated


def test_report_pretrained_minus_scratch(finished_study: Path):
    md = (finished_study / "report.md").read_text()
    summary = json.loads((finished_study / "summary.json").read_text())
    for f in (1.0, 0.1):
        expected = max(CURVES[(f, "context", 0)]) - max(CURVES[(f, "scratch", 0)])
        got = summary["comparison"][f"{f:g}"]["context"]["f1_macro"]
        assert got["pretrained_minus_scratch"] == pytest.approx(expected)
        assert got["paired_std"] is None and got["n_seeds"] == [1, 1]
        assert f"{expected:+.4f}" in md
    # the derived rules per run, checked against the pure functions
    s = summary["runs"]["f1-context-s0"]
    curve = CURVES[(1.0, "context", 0)]
    assert s["plateau_epoch"] == plateau_epoch(curve) == 3
    assert s["time_to_95"] == {"epoch": 3, "wall_time_s": 6.0}  # 0.5534 < 0.95 x 0.5873
    assert s["gap"]["accuracy_train_minus_val"] == pytest.approx(0.05 - 0.013)
    c = summary["comparison"]["1"]["context"]
    assert c["train_loss_first_epoch"]["pretrained_minus_scratch"] == pytest.approx(-0.3)
    assert "Training loss fell faster for context" in md
    assert "Context reached the higher maximum: best validation macro-F1 0.5873 (context) vs 0.4912" in md
    assert "**Pretraining with context** was ahead at fraction 1 (+0.0961), 0.1 (+0.1335)" in md


def test_report_html_is_self_contained(finished_study: Path):
    page = (finished_study / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert 'src="figures/' not in page
    assert "<table>" in page and "Full configuration" in page


def test_report_setup_section(finished_study: Path):
    md = (finished_study / "report.md").read_text()
    assert '"budget_rule": "text"' in md  # study.json pretty-printed
    assert "| pretrain-context | 14.5 |" in md  # stage time, with images/s from metrics.csv
    assert "| 1500 |" in md
    assert "test CPU" in md


def test_report_of_an_incomplete_study(tmp_path: Path, classifier_state):
    root = make_study(tmp_path / "partial", classifier_state)
    shutil.rmtree(root / "f0.1-context-s0")
    (root / "f1-context-s0" / "summary.json").unlink()  # still training
    (root / "pretrain-context" / "samples.pt").unlink()
    (root / "pretrain-context" / "checkpoint.pt").unlink()
    (root / "f1-scratch-s0" / "examples.pt").unlink()
    (root / "figures").mkdir()
    (root / "figures" / "confusion_f0.5.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # from an earlier state
    out = write_report(root)
    assert not (root / "figures" / "confusion_f0.5.png").exists()  # a figure the report no longer shows goes
    md = out.read_text()
    assert "This study is incomplete" in md
    assert "Missing (no finished epoch): `f0.1-context-s0`" in md
    assert "In progress (curves only): `f1-context-s0` (epoch 4)" in md
    assert "Waiting for f0.1-context-s0 (missing or still training)" in md
    assert "no fraction has finished runs of both scratch and context yet" in md
    assert "No pretext samples" in md and "No checkpoint in `pretrain-context/`" in md
    summary = json.loads((root / "summary.json").read_text())
    assert summary["status"]["missing"] == ["f0.1-context-s0"]
    assert set(summary["runs"]) == {"f1-scratch-s0", "f0.1-scratch-s0"}
    assert summary["comparison"] == {}
    assert (root / "report.html").exists() and (root / "figures" / "loss.png").exists()


def test_several_seeds_show_mean_and_std(tmp_path: Path, classifier_state):
    curves = {(0.5, "scratch", 0): [0.30, 0.40], (0.5, "scratch", 1): [0.32, 0.44],
              (0.5, "context", 0): [0.40, 0.50], (0.5, "context", 1): [0.41, 0.50]}
    root = make_study(tmp_path / "seeds", classifier_state, curves, seeds=[0, 1])
    summary = summarize_study(load_study(root))
    agg = summary["aggregate"]["0.5"]["scratch"]["f1_macro"]
    assert agg["mean"] == pytest.approx(0.42) and agg["std"] == pytest.approx(0.0282843, abs=1e-6)
    assert agg["n"] == 2
    c = summary["comparison"]["0.5"]["context"]["f1_macro"]
    assert c["pretrained_minus_scratch"] == pytest.approx(0.08)
    assert c["paired_std"] == pytest.approx(0.0282843, abs=1e-6)  # std of the differences 0.10 and 0.06
    header, rows = fraction_table(summary, 0.5, ["scratch", "context"])
    assert header[1:] == ["scratch (n=2)", "context (n=2)", "context − scratch"]
    assert rows[0][1] == "0.4200 ± 0.0283 (ep 2 ± 0)" and rows[0][3] == "+0.0800 (ep +0)"


def test_empty_folder_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError):
        write_report(tmp_path)
    with pytest.raises(UserError):
        write_report(tmp_path / "nowhere")


def _cmp(**pairs: tuple[float, float]) -> dict:
    """A one-seed comparison from {quantity: (scratch, pretrained)}."""
    return {k: compare({0: a}, {0: b}) for k, (a, b) in pairs.items()}


def test_conclusions_claim_only_what_the_numbers_show():
    close = _cmp(f1_macro=(0.600, 0.603), train_loss_first_epoch=(1.500, 1.498), train_loss_mean=(1.0, 1.004),
                 time_to_95_epoch=(3, 3), time_to_95_wall_time_s=(30.0, 31.0), plateau_epoch=(5, 5))
    text = " ".join(fraction_conclusions(close, "context"))
    assert "Training loss fell about equally fast" in text
    assert "rose equally fast" in text and "about the same epoch" in text
    assert "The maximum was about equal" in text and "+0.0030" in text
    # scratch gets near its own best sooner, but its best is far lower: say so
    apart = _cmp(f1_macro=(0.50, 0.60), train_loss_first_epoch=(1.2, 1.5), train_loss_mean=(1.0, 0.8),
                 time_to_95_epoch=(1, 4), time_to_95_wall_time_s=(10.0, 40.0), plateau_epoch=(2, 6))
    lines = fraction_conclusions(apart, "context")
    assert lines[0].startswith("Training loss: mixed")  # lower after epoch 1 for scratch, lower mean for context
    assert lines[1].startswith("Validation macro-F1 rose faster for scratch") and "less far to go" in lines[1]
    assert lines[2].startswith("Scratch plateaued first")
    assert lines[3].startswith("Context reached the higher maximum") and "+0.1000" in lines[3]


# ----------------------------------------------------------------------------------------------
# Every method under every protocol, over seeds

T2 = 4.302653  # two-sided 95% t critical value, 2 degrees of freedom (printed tables: 4.303)


def write_probes(root: Path, folder: str, f1: dict[tuple[float, int], float]) -> None:
    """A probes.json as study.run_probes leaves it; k-NN gets the linear numbers minus 0.05."""
    results = {f"f{f:g}-s{s}": {"fraction": f, "seed": s, "n_train": int(300 * f),
                                "linear": {"f1_macro": v, "accuracy": v + 0.01},
                                "knn": {"f1_macro": v - 0.05, "accuracy": v - 0.04}, "time_s": 0.1}
               for (f, s), v in f1.items()}
    (root / folder).mkdir(exist_ok=True)
    (root / folder / "probes.json").write_text(json.dumps({"settings": {}, "results": results}))


@pytest.fixture(scope="module")
def probed_study(tmp_path_factory, classifier_state) -> Path:
    """Three seeds at fraction 0.5: context fine-tunes and probes consistently better than scratch;
    at fraction 0.1 only seed 0 was probed."""
    curves = {(0.5, "scratch", s): [0.30, v] for s, v in enumerate((0.40, 0.45, 0.50))}
    curves |= {(0.5, "context", s): [0.35, v] for s, v in enumerate((0.48, 0.50, 0.60))}  # +0.08 +0.05 +0.10
    root = make_study(tmp_path_factory.mktemp("probed") / "demo", classifier_state, curves, seeds=[0, 1, 2])
    write_probes(root, "random-init", {(0.5, 0): 0.30, (0.5, 1): 0.32, (0.5, 2): 0.34, (0.1, 0): 0.25})
    write_probes(root, "pretrain-context", {(0.5, 0): 0.40, (0.5, 1): 0.43, (0.5, 2): 0.44, (0.1, 0): 0.31})
    write_report(root)
    return root


def test_evaluation_cells_and_paired_differences(probed_study: Path):
    ev = json.loads((probed_study / "summary.json").read_text())["evaluation"]
    assert list(ev["protocols"]) == ["finetune", "linear", "knn"]
    ft = ev["cells"]["finetune"]["0.5"]
    assert ft["scratch"]["f1_macro"]["by_seed"] == {"0": 0.40, "1": 0.45, "2": 0.50}  # final, not best
    assert ft["scratch"]["f1_macro"]["mean"] == pytest.approx(0.45)
    half = T2 * 0.05 / 3 ** 0.5  # std 0.05 over three seeds
    assert ft["scratch"]["f1_macro"]["ci95"] == pytest.approx([0.45 - half, 0.45 + half])
    d = ev["vs_baseline"]["finetune"]["0.5"]["context"]["f1_macro"]
    diffs = [0.08, 0.05, 0.10]
    mean, std = sum(diffs) / 3, (sum((x - 0.07666667) ** 2 for x in diffs) / 2) ** 0.5
    assert d["difference"] == pytest.approx(mean) and d["std"] == pytest.approx(std, abs=1e-6)
    assert d["ci95"] == pytest.approx([mean - T2 * std / 3 ** 0.5, mean + T2 * std / 3 ** 0.5], abs=1e-6)
    assert d["significant"] is True and d["seeds"] == [0, 1, 2]
    lin = ev["vs_baseline"]["linear"]["0.5"]["context"]["f1_macro"]
    assert lin["difference"] == pytest.approx(0.10333333) and lin["significant"] is True
    one = ev["vs_baseline"]["knn"]["0.1"]["context"]["f1_macro"]
    assert one["n"] == 1 and one["ci95"] is None and one["significant"] is None
    assert ev["cells"]["knn"]["0.1"]["scratch"]["accuracy"]["mean"] == pytest.approx(0.21)


def test_evaluation_table_and_conclusions_in_the_report(probed_study: Path):
    md = (probed_study / "report.md").read_text()
    assert "| protocol | fraction | scratch / random init | context | context − baseline |" in md
    half = T2 * 0.02 / 3 ** 0.5  # linear probe, random init: 0.30, 0.32, 0.34
    assert f"| linear probe | 0.5 | 0.3200 ± 0.0200 [{0.32 - half:.4f}, {0.32 + half:.4f}] |" in md
    assert "| k-NN | 0.1 | 0.2000 | 0.2600 | +0.0600 (1 seed: no CI) |" in md
    assert "**linear probe, context vs random init** (macro-F1): significantly higher at fraction 0.5 (+0.1033" in md
    assert "differences at fraction 0.1 (+0.0600) come from one seed, so no confidence interval" in md
    assert "**fine-tune, context vs scratch** (macro-F1): significantly higher at fraction 0.5 (+0.0767" in md
    assert "](figures/f1_vs_fraction.png)" in md
    assert "rest on two seeds" not in md  # three seeds or one: no two-seed caution
    assert (probed_study / "figures" / "f1_vs_fraction.png").stat().st_size > 10_000


def test_a_difference_that_changes_sign_across_seeds_is_not_significant(tmp_path: Path, classifier_state):
    curves = {(0.5, "scratch", 0): [0.40], (0.5, "scratch", 1): [0.50],
              (0.5, "context", 0): [0.45], (0.5, "context", 1): [0.48]}  # +0.05, -0.02
    root = make_study(tmp_path / "mixed", classifier_state, curves, seeds=[0, 1])
    write_report(root)
    summary = json.loads((root / "summary.json").read_text())
    best = summary["comparison"]["0.5"]["context"]["f1_macro"]
    assert best["significant"] is False and best["paired_ci95"][0] < 0 < best["paired_ci95"][1]
    md = (root / "report.md").read_text()
    assert "context − baseline" in md and "not significant" in md and "**significant**" not in md
    assert "the difference is significant at no fraction; not significant at 0.5" in md
    assert "paired 95% CI of the difference [" in md and "so not significant" in md


def test_a_two_seed_verdict_carries_a_caution(tmp_path: Path, classifier_state):
    # both seeds lose 0.0012-0.0014: a tiny difference whose one-degree-of-freedom interval excludes zero
    curves = {(1.0, "scratch", 0): [0.8266], (1.0, "scratch", 1): [0.8277],
              (1.0, "context", 0): [0.8254], (1.0, "context", 1): [0.8263]}
    root = make_study(tmp_path / "two", classifier_state, curves, seeds=[0, 1])
    write_report(root)
    best = json.loads((root / "summary.json").read_text())["comparison"]["1"]["context"]["f1_macro"]
    assert best["significant"] is True and best["paired_n"] == 2
    md = (root / "report.md").read_text()
    assert "At fraction 1 the interval rests on two seeds: two seeds give a t interval with one degree of " \
           "freedom (multiplier 12.7)" in md
    assert "Caution: some intervals below rest on two seeds" in md

"""write_report on fabricated studies: every file it writes, what report.md and summary.json say, a study
still in progress, and folders that hold no study."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import markdown
import pytest
from fabricated import CURVES, FIGURES, make_study, write_probes

from pretextlab.errors import UserError
from pretextlab.report import write_report
from pretextlab.report.render import EXTENSIONS
from pretextlab.report.rules import RULES, level_steps, plateau

T2 = 4.302653  # two-sided 95% t critical value, 2 degrees of freedom (printed tables: 4.303)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    """The CURVES study, its report written."""
    root = make_study(tmp_path_factory.mktemp("study") / "demo")
    write_report(root)
    return root


@pytest.fixture(scope="module")
def probed_study(tmp_path_factory) -> Path:
    """Three seeds at fraction 0.5: context fine-tunes and probes consistently better than scratch;
    at fraction 0.1 only seed 0 was probed."""
    curves = {(0.5, "scratch", s): [0.30, v] for s, v in enumerate((0.40, 0.45, 0.50))}
    curves |= {(0.5, "context", s): [0.35, v] for s, v in enumerate((0.48, 0.50, 0.60))}  # +0.08 +0.05 +0.10
    root = make_study(tmp_path_factory.mktemp("probed") / "demo", curves, seeds=[0, 1, 2])
    write_probes(root, "random-init", {(0.5, 0): 0.30, (0.5, 1): 0.32, (0.5, 2): 0.34, (0.1, 0): 0.25})
    write_probes(root, "pretrain-context", {(0.5, 0): 0.40, (0.5, 1): 0.43, (0.5, 2): 0.44, (0.1, 0): 0.31})
    write_report(root)
    return root


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
        assert f"{best['value']:.4f} (step {best['step']})" in md  # the secondary number, with its step
        assert f"{run['best']['accuracy']['value']:.4f}" in md
        assert summary["runs"][run["run"]]["best"]["f1_macro"] == best
    assert "All runs finished" in md
    for name, text in RULES.items():  # every rule is stated, as summary.json records it
        assert summary["rules"][name] == text
        # one-cycle runs: the decaying-schedule plateau rule, neither the constant-phase nor the stopping one;
        # one pretraining length: no length rule
        assert (text in md) == (name not in ("plateau_schedule", "plateau", "lengths"))


def test_report_pretrained_minus_scratch(finished_study: Path):
    md = (finished_study / "report.md").read_text()
    summary = json.loads((finished_study / "summary.json").read_text())
    for f in (1.0, 0.1):
        expected = max(CURVES[(f, "context", 0)]) - max(CURVES[(f, "scratch", 0)])
        got = summary["comparison"][f"{f:g}"]["context"]["f1_macro"]
        assert got["pretrained_minus_scratch"] == pytest.approx(expected)
        assert got["paired_std"] is None and got["n_seeds"] == [1, 1]
        assert f"{expected:+.4f}" in md
    # the rules per run and per pair, checked against the pure functions on the runs' metrics.csv
    s = summary["runs"]["f1-context-s0"]
    points = list(zip([10, 20, 30, 40], CURVES[(1.0, "context", 0)]))
    assert s["curves"]["plateau"] == plateau(points, 40) == {"state": "plateau", "step": 30,
                                                              "rise": pytest.approx(0.5861 - 0.5873)}
    assert s["curves"]["budget"] == 40 and s["curves"]["steps"] == 40 and s["curves"]["schedule"] == "onecycle"
    assert s["gap"]["accuracy_train_minus_val"] == pytest.approx(0.05 - 0.013)
    pair = summary["answers"]["1"]["context"]["by_seed"]["0"]
    scratch = list(zip([10, 20, 30, 40], CURVES[(1.0, "scratch", 0)]))
    assert pair["metric"] == json.loads(json.dumps(level_steps(scratch, points, False, 10)))
    c = summary["comparison"]["1"]["context"]
    assert c["final_f1_macro"]["pretrained_minus_scratch"] == pytest.approx(0.5861 - 0.4912)
    assert "macro-F1 is 0.5861 with context pretraining vs 0.4912 from scratch: +0.0949 for context" in md
    assert ("**Pretraining with context**, on validation macro-F1 of the final model (pretrained minus scratch; one "
            "seed: differences within 0.005 count as no difference, nothing is called significant): was ahead at "
            "fraction 1 (+0.0949), 0.1 (+0.1335).") in md


def test_report_html_is_self_contained(finished_study: Path):
    page = (finished_study / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert 'src="figures/' not in page
    assert "<table>" in page and "<summary>Configuration</summary>" in page


def test_report_html_is_made_from_report_md(finished_study: Path):
    text = (finished_study / "report.md").read_text()
    for name in FIGURES:
        data = base64.b64encode((finished_study / "figures" / name).read_bytes()).decode()
        text = text.replace(f"](figures/{name})", f"](data:image/png;base64,{data})")
    body = markdown.markdown(text, extensions=EXTENSIONS, output_format="html")
    page = (finished_study / "report.html").read_text()
    assert body in page and page.count("<table>") == text.count("\n|---")


def test_report_setup_section(finished_study: Path):
    md = (finished_study / "report.md").read_text()
    assert '"budget_rule": "text"' in md  # study.json pretty-printed
    assert "| pretrain-context | 14.5 |" in md  # stage time, with images/s from metrics.csv
    assert "| 1500 |" in md
    assert "test CPU" in md


def test_report_of_an_incomplete_study(tmp_path: Path):
    root = make_study(tmp_path / "partial")
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
    assert "In progress (curves only): `f1-context-s0` (epoch 4 of 4)" in md
    assert "Waiting for f0.1-context-s0 (missing or still training)" in md
    assert "no fraction has finished runs of both scratch and context yet" in md
    assert "No pretext samples" in md and "No checkpoint in `pretrain-context/`" in md
    summary = json.loads((root / "summary.json").read_text())
    assert summary["status"]["missing"] == ["f0.1-context-s0"]
    assert set(summary["runs"]) == {"f1-scratch-s0", "f0.1-scratch-s0"}
    assert summary["comparison"] == {}
    assert (root / "report.html").exists() and (root / "figures" / "loss.png").exists()


def test_empty_folder_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError):
        write_report(tmp_path)
    with pytest.raises(UserError):
        write_report(tmp_path / "nowhere")


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
    assert ("**linear probe, context vs random init** (validation macro-F1): significantly higher at fraction 0.5 "
            "(+0.1033") in md
    assert "differences at fraction 0.1 (+0.0600) come from one seed, so no confidence interval" in md
    assert ("**fine-tune, context vs scratch** (validation macro-F1): significantly higher at fraction 0.5 "
            "(+0.0767") in md
    assert "](figures/f1_vs_fraction.png)" in md
    assert "rest on two seeds" not in md  # three seeds or one: no two-seed caution
    assert (probed_study / "figures" / "f1_vs_fraction.png").stat().st_size > 10_000


def test_the_report_command_names_both_pages(tmp_path, run_cli):
    root = make_study(tmp_path / "named")
    r = run_cli("report", str(root))
    assert r.returncode == 0
    assert r.stdout.splitlines()[-2:] == [f"answers: {root / 'answers.md'}", f"details: {root / 'report.md'}"]


def test_the_answers_page_of_an_unfinished_study_says_so(tmp_path):
    root = make_study(tmp_path / "unfinished")
    assert "This study is not finished" not in (write_report(root).parent / "answers.md").read_text()
    (root / "f0.1-context-s0" / "summary.json").unlink()  # still training
    page = (write_report(root).parent / "answers.md").read_text()
    assert "**This study is not finished**: 3 of 4 fine-tuning runs are done" in page

"""pretextlab.bench: the quick benchmark runs end to end and reports every field, sane and JSON-clean;
every pretext task is measured against its model alone; the lightly race runs where lightly is installed
and is one line where it is not."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest

from pretextlab.bench import run_bench
from pretextlab.errors import UserError
from pretextlab.pretext import TASKS

BACKBONE_FIELDS = {
    "model_img_s", "pipeline_img_s", "naive_img_s", "overhead", "speedup_vs_naive", "mfu", "mfu_pipeline",
    "gflops_per_image_fwd", "eval_img_s", "naive_eval_img_s", "pretext_model_pairs_s",
    "pretext_pipeline_pairs_s", "pretext_overhead",
}
# 1 - pipeline/model: negative when the pipeline is the faster one, so no lower bound.
SIGNED = {"overhead", "pretext_overhead"}
TASK_FIELDS = {"model_img_s", "pipeline_img_s", "overhead", "steps"}
PEER_KEYS = {"speedup_vs_lightly", "ceiling_vs_lightly", "augment_ms_per_image", "knn_pretextlab", "knn_lightly"}


def test_quick_bench_reports_every_field(capsys, tmp_path):
    out = tmp_path / "bench.json"
    result = run_bench(quick=True, json_out=True, out=out, backbones=("fast",))  # resnet18 adds a minute
    lines = capsys.readouterr().out.strip().splitlines()
    assert "overhead" in "\n".join(lines[:-1])  # the human-readable table comes first
    verdict = next(line for line in lines if "of its model step" in line or "under their model step" in line)
    over = [k for k, v in result["task_overheads"].items() if v > 0.03]
    assert all(k in verdict for k in over) and ("within 3%" in verdict) == (not over)
    reported = json.loads(lines[-1])  # the last stdout line is exactly one JSON object
    assert reported == json.loads(json.dumps(result))
    assert json.loads(out.read_text()) == reported

    assert {"machine", "precision", "threads", "peak_gflops", "backbones", "overhead", "speedup_vs_naive",
            "mfu"} <= set(reported)
    assert reported["precision"] in ("fp32", "bf16")
    assert reported["threads"] >= 1 and reported["machine"]["cpu_capability"]
    peaks = reported["peak_gflops"]
    assert set(peaks) == {"fp32", "bf16"}
    assert math.isfinite(peaks["fp32"]) and peaks["fp32"] > 0
    if peaks["bf16"] is None:  # no native bf16: the reason must be given
        assert any("bf16" in n for n in reported["notes"])
    else:
        assert math.isfinite(peaks["bf16"]) and peaks["bf16"] > 0

    assert list(reported["backbones"]) == ["fast"]
    for name, b in reported["backbones"].items():
        assert BACKBONE_FIELDS <= set(b), (name, BACKBONE_FIELDS - set(b))
        for k in BACKBONE_FIELDS:
            assert isinstance(b[k], float) and math.isfinite(b[k]), (name, k, b[k])
            if k in SIGNED:
                assert b[k] < 1, (name, k, b[k])  # 1 - pipeline/model: below 1 while the pipeline runs at all
            else:
                assert b[k] > 0, (name, k, b[k])
        assert b["overhead"] == 1 - b["pipeline_img_s"] / b["model_img_s"]
        assert b["speedup_vs_naive"] == b["pipeline_img_s"] / b["naive_img_s"]
        assert math.isclose(b["mfu_pipeline"] / b["mfu"], b["pipeline_img_s"] / b["model_img_s"])
    from pretextlab.models import count_flops, make_backbone

    fast = reported["backbones"]["fast"]["gflops_per_image_fwd"]  # the FLOP count of the model as the bench built it
    assert 0 < fast < count_flops(make_backbone("resnet18"), (3, 32, 32)) / 1e9
    for k in ("overhead", "speedup_vs_naive", "mfu"):  # the headline numbers are the default backbone's
        assert reported[k] == reported["backbones"]["fast"][k]

    # every pretext task at its ceiling: model alone vs pipeline, per backbone, and the headline overheads
    assert set(reported["batch_prep_ms"]) == {"classification", *TASKS}
    assert all(v > 0 for v in reported["batch_prep_ms"].values())
    for name, b in reported["backbones"].items():
        assert list(b["tasks"]) == list(TASKS), name
        for task, t in b["tasks"].items():
            assert TASK_FIELDS <= set(t), (name, task)
            assert t["model_img_s"] > 0 and t["pipeline_img_s"] > 0 and t["steps"] >= 1, (name, task, t)
            assert t["overhead"] == 1 - t["pipeline_img_s"] / t["model_img_s"]
        assert b["pretext_overhead"] == b["tasks"]["context"]["overhead"]  # the older keys are context's
        assert "peer" not in b
    tasks, seg = reported["backbones"]["fast"]["tasks"], reported["backbones"]["fast"]["segmentation"]
    assert TASK_FIELDS <= set(seg) and seg["model_img_s"] > 0 and seg["pipeline_img_s"] > 0
    assert seg["overhead"] == 1 - seg["pipeline_img_s"] / seg["model_img_s"] and seg["image_hw"] == [96, 128]
    assert reported["task_overheads"] == {"classification": reported["overhead"], "segmentation": seg["overhead"],
                                          **{k: t["overhead"] for k, t in tasks.items()}}
    assert not PEER_KEYS & set(reported)  # no peer asked for, none raced
    assert any(line.startswith("==> fast") and "other paths' overheads" in line for line in lines)
    assert any(line.startswith("fast segmentation") for line in lines)


def _hide_lightly(monkeypatch) -> None:
    """Make `import lightly...` fail as it does where lightly is not installed."""
    for name in [m for m in sys.modules if m == "lightly" or m.startswith("lightly.")] + ["lightly"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_peer_without_lightly_is_one_line_and_the_rest_runs(monkeypatch, capsys, make_image_folder):
    _hide_lightly(monkeypatch)
    result = run_bench(quick=True, data=str(make_image_folder()), backbones=("fast",), peer="lightly")
    out = capsys.readouterr().out.splitlines()
    said = [line for line in out if "--peer" in line or "install" in line]
    assert said == [out[0]]  # one line, first, before the measurements
    assert "not installed" in said[0] and "pip install 'pretextlab[peers]'" in said[0]
    assert result["peer_skipped"] == said[0]
    assert "peer" not in result and not PEER_KEYS & set(result)
    assert "peer" not in result["backbones"]["fast"]
    assert result["backbones"]["fast"]["pipeline_img_s"] > 0 and set(result["backbones"]["fast"]["tasks"]) == set(TASKS)


def test_peer_race_with_lightly(capsys, make_image_folder):
    pytest.importorskip("lightly.loss")
    result = run_bench(quick=True, data=str(make_image_folder()), backbones=("fast",), peer="lightly", peer_epochs=1,
                       json_out=True)
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert reported == json.loads(json.dumps(result))
    assert PEER_KEYS <= set(reported)
    simclr, race = reported["backbones"]["fast"]["tasks"]["simclr"], reported["backbones"]["fast"]["peer"]
    assert race["img_s"] > 0 and set(race["img_s_by_workers"]) >= {"0", "1", "2"}
    assert race["img_s_by_workers"][str(race["workers"])] == max(race["img_s_by_workers"].values())
    assert reported["speedup_vs_lightly"] == simclr["pipeline_img_s"] / race["img_s"] > 0
    assert reported["ceiling_vs_lightly"] == simclr["model_img_s"] / race["img_s"] > 0
    assert set(reported["augment_ms_per_image"]) == {"pretextlab", "lightly"}
    assert all(v > 0 for v in reported["augment_ms_per_image"].values())
    peer = reported["peer"]
    assert peer["name"] == "lightly" and peer["version"] and peer["epochs"] == 1
    for k in ("knn_pretextlab", "knn_lightly", "knn_untrained"):
        assert 0 <= peer[k] <= 1
    assert peer["train_img_s"]["pretextlab"] > 0 and peer["train_img_s"]["lightly"] > 0
    assert reported["knn_pretextlab"] == peer["knn_pretextlab"] and reported["knn_lightly"] == peer["knn_lightly"]
    d = peer["knn_difference"]  # paired over the same held-out images
    assert d["value"] == pytest.approx(peer["knn_pretextlab"] - peer["knn_lightly"], abs=1e-9)
    assert d["ci95"][0] <= d["value"] <= d["ci95"][1]


@pytest.mark.parametrize("kw, message", [({"peer": "vissl"}, "unknown"), ({"peer_epochs": 1}, "--peer lightly")])
def test_peer_mistakes_are_user_errors(kw, message):
    with pytest.raises(UserError, match=message):
        run_bench(quick=True, backbones=("fast",), **kw)


# ----------------------------------------------------------------------------------------------
# Time to accuracy


def _curve(*points: tuple[float, float]) -> list[dict[str, float]]:
    """Evaluations at (training seconds, macro-F1), 100 training images a second."""
    return [{"train_time_s": t, "images_seen": 100 * t, "val_f1_macro": f} for t, f in points]


def test_time_to_accuracy_rules_read_the_curve():
    from pretextlab.bench.accuracy import compare, first_time, value_within

    old = {"train_time_s": 100.0, "final_val_f1_macro": 0.80, "curve": _curve((50, 0.6), (100, 0.8))}
    new = {"curve": _curve((20, 0.5), (40, 0.81), (90, 0.84), (120, 0.86))}
    assert first_time(new["curve"], 0.8) == 40 and first_time(new["curve"], 0.9) is None
    assert value_within(new["curve"], 100) == 0.84 and value_within(new["curve"], 10) is None
    assert first_time(new["curve"], 0.8, "images_seen") == 4000
    c = compare(new, old)
    assert c["val_f1_macro_within_before_train_time_s"] == 0.84 and c["val_f1_macro_within_before_images"] == 0.84
    assert c["train_time_s_to_before_f1"] == 40 and c["train_time_s_ratio"] == pytest.approx(2.5)
    assert c["images_to_before_f1"] == 4000 and c["images_ratio"] == pytest.approx(2.5)
    slower = {"curve": [dict(p, train_time_s=2 * p["train_time_s"]) for p in new["curve"]]}  # a loaded machine
    c = compare(slower, old)
    assert c["train_time_s_ratio"] == pytest.approx(1.25) and c["images_ratio"] == pytest.approx(2.5)
    assert compare({"curve": _curve((20, 0.5))}, old)["train_time_s_ratio"] is None  # never reached: no ratio


def test_time_to_accuracy_trains_the_full_label_arm_and_compares(make_image_folder, tmp_path):
    from pretextlab.bench.accuracy import format_curve, time_to_accuracy
    from pretextlab.io import save_json

    folder = make_image_folder(n_per_class=10)
    r = time_to_accuracy(str(folder), preset="smoke", precision="fp32", quiet=True)
    curve = r["curve"]
    assert r["n_train"] + r["n_val"] == 30 and r["precision"] == "fp32" and curve
    assert all(0 < p["train_time_s"] <= p["wall_time_s"] for p in curve)  # evaluations are not training time
    assert [p["train_time_s"] for p in curve] == sorted(p["train_time_s"] for p in curve)
    assert r["final_val_f1_macro"] == curve[-1]["val_f1_macro"]
    save_json(r, tmp_path / "before.json")
    again = time_to_accuracy(str(folder), preset="smoke", precision="fp32", before=tmp_path / "before.json",
                             quiet=True)
    assert again["final_val_f1_macro"] == r["final_val_f1_macro"]  # same seed, same numbers
    assert again["before"]["before_final_val_f1_macro"] == r["final_val_f1_macro"]
    assert "against the earlier measurement" in format_curve(again)


def test_an_older_time_to_accuracy_result_reads_as_scored_without_tta(tmp_path):
    from pretextlab.bench.accuracy import plot_curve, upgrade

    new = {"preset": "fast", "precision": "fp32", "threads": 1, "tta": "flip", "curve": _curve((10, 0.5), (20, 0.7))}
    old = {k: v for k, v in new.items() if k != "tta"}  # as written before --tta existed
    assert upgrade(old)["tta"] == "none" and upgrade(new) == new
    plot_curve(new, tmp_path / "curve.png", before=old)
    assert (tmp_path / "curve.png").exists()


def _bench(*args) -> Any:
    """`pretextlab bench ARGS` in this process (typer's runner): a subprocess per case would cost a torch import."""
    from typer.testing import CliRunner

    from pretextlab.cli import app

    return CliRunner().invoke(app, ["bench", *map(str, args)])


def test_time_to_accuracy_mistakes_are_one_line(make_image_folder, tmp_path):
    from pretextlab.errors import UserError

    (tmp_path / "x.json").write_text('{"a": 1}')
    folder = make_image_folder()
    for args, words in ((["--time-to-accuracy"], "give --data"),
                        (["--time-to-accuracy", "--data", folder, "--before", tmp_path / "x.json"],
                         "not a time-to-accuracy result"),
                        (["--time-to-accuracy", "--data", folder, "--preset", "nope"], "unknown")):
        result = _bench(*args)
        assert isinstance(result.exception, UserError) and words in str(result.exception), result.output
        assert "\n" not in str(result.exception)


def test_time_to_accuracy_command_writes_its_curve(make_image_folder, tmp_path):
    folder = make_image_folder(n_per_class=8)
    out = tmp_path / "tta.json"
    proc = _bench("--time-to-accuracy", "--data", folder, "--preset", "smoke", "--out", out)
    assert proc.exit_code == 0, proc.output
    assert "first reached (training seconds)" in proc.output and out.exists() and out.with_suffix(".png").exists()
    again = _bench("--time-to-accuracy", "--data", folder, "--preset", "smoke", "--tta", "flip", "--before", out,
                   "--out", tmp_path / "tta2.json")
    assert again.exit_code == 0, again.output
    assert "against the earlier measurement" in again.output and (tmp_path / "tta2.png").exists()
    assert "scored with flip test-time augmentation" in again.output
    first, second = (json.loads(p.read_text()) for p in (out, tmp_path / "tta2.json"))
    assert first["tta"] == "none" and second["tta"] == "flip"
    assert [p["step"] for p in first["curve"]] == [p["step"] for p in second["curve"]]  # the same training

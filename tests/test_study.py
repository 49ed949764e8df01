"""The study: every stage runs once, an interrupted study resumes where it stopped, the report follows."""

import json

import pytest

import pretextlab.study as study_mod
from pretextlab.errors import UserError
from pretextlab.finetune import DataConfig
from pretextlab.study import PRESETS, run_name, run_study


def _data(folder, cache_dir) -> DataConfig:
    return DataConfig(source=str(folder), val_fraction=0.25, cache_dir=str(cache_dir))


def test_epoch_budget_gives_small_fractions_more_epochs_but_fewer_steps():
    p = PRESETS["fast"]
    e = {f: p.epochs_for(f) for f in (1.0, 0.5, 0.1, 0.01)}
    assert e[1.0] == p.finetune.epochs
    assert e[1.0] < e[0.5] < e[0.1] <= e[0.01]
    assert e[0.1] * 0.1 < e[1.0]  # fewer optimizer steps than the full set
    assert e[0.01] == int(p.finetune.epochs * p.max_epoch_factor)  # capped


def test_study_resumes_after_an_interruption_between_stages(make_image_folder, cache_dir, tmp_path, monkeypatch):
    folder = make_image_folder(n_per_class=16, size=16)
    out = tmp_path / "study"
    real = study_mod.train_classifier
    calls = []

    def interrupt_second(*args, **kw):
        calls.append(kw.get("init"))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(study_mod, "train_classifier", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run_study(_data(folder, cache_dir), out, fractions=(1.0, 0.5), preset="smoke", device="cpu", quiet=True)
    pretrain_summary = out / "pretrain-context" / "summary.json"
    first_run = out / run_name(0.5, "scratch", 0) / "summary.json"  # smallest fraction first
    assert pretrain_summary.exists() and first_run.exists()
    assert not (out / run_name(0.5, "context", 0) / "summary.json").exists()
    stamps = pretrain_summary.stat().st_mtime_ns, first_run.stat().st_mtime_ns

    monkeypatch.setattr(study_mod, "train_classifier", real)
    report = run_study(_data(folder, cache_dir), out, fractions=(1.0, 0.5), preset="smoke", device="cpu", quiet=True)
    assert (pretrain_summary.stat().st_mtime_ns, first_run.stat().st_mtime_ns) == stamps  # not redone
    for f in (1.0, 0.5):
        for arm in ("scratch", "context"):
            s = json.loads((out / run_name(f, arm, 0) / "summary.json").read_text())
            assert s["fraction"] == f
            assert (s["init"] is None) == (arm == "scratch")
    pretrained = json.loads((out / run_name(0.5, "context", 0) / "summary.json").read_text())
    assert pretrained["init"].endswith("pretrain-context/backbone.safetensors")
    # same labelled subset for both arms
    idx = [json.loads((out / run_name(0.5, a, 0) / "indices.json").read_text()) for a in ("scratch", "context")]
    assert idx[0] == idx[1]
    text = report.read_text()
    assert run_name(0.5, "context", 0) in text or "0.5" in text
    assert (out / "report.html").exists() and (out / "summary.json").exists()
    study = json.loads((out / "study.json").read_text())
    assert set(study["stage_times_s"]) >= {"pretrain-context", run_name(1.0, "context", 0)}


def test_study_rejects_bad_input_before_training(make_image_folder, cache_dir, tmp_path):
    folder = make_image_folder(n_per_class=4, size=16)
    with pytest.raises(UserError, match="no labelled example"):
        run_study(_data(folder, cache_dir), tmp_path / "s", fractions=(1.0, 0.01), preset="smoke", device="cpu")
    with pytest.raises(UserError, match="unknown preset"):
        run_study(_data(folder, cache_dir), tmp_path / "s", preset="huge", device="cpu")
    with pytest.raises(UserError, match="unknown pretext"):
        run_study(_data(folder, cache_dir), tmp_path / "s", pretexts=("jigsaw",), preset="smoke", device="cpu")
    assert not (tmp_path / "s" / "pretrain-context").exists()

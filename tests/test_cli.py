"""The `pretextlab` command: normal output through typer's CliRunner, mistakes as a user sees them
(a real subprocess: exit code 2, one 'pretextlab: error:' line on stderr, no traceback)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import SORTED_CLASSES
from PIL import Image
from typer.testing import CliRunner

from pretextlab.cli import app
from pretextlab.finetune import evaluate_checkpoint

runner = CliRunner()
FAST = ["--epochs", "2", "--batch-size", "16", "--lr", "0.05", "--val-fraction", "0.25", "--precision", "fp32",
        "--device", "cpu", "--quiet"]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


# ----------------------------------------------------------------------------------------------
# Normal use


def test_train_end_to_end(make_split_root, tmp_path):
    root = make_split_root(n_train=8, n_test=2)
    out = tmp_path / "run"
    torch.manual_seed(0)
    result = invoke("train", "--data", root, "--out", out, "--cache-dir", tmp_path / "cache", *FAST)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    m = re.fullmatch(re.escape(str(out)) + r": best val macro-F1 (\d\.\d{4}) \(epoch ([12])\), "
                     r"accuracy (\d\.\d{4}); 18 labelled images, \d+ s; test macro-F1 (\d\.\d{4})", lines[0])
    assert m, lines[0]
    summary = json.loads((out / "summary.json").read_text())
    assert float(m.group(1)) == pytest.approx(summary["best"]["f1_macro"]["value"], abs=1e-4)
    assert float(m.group(4)) == pytest.approx(summary["test"]["f1_macro"], abs=1e-4)
    for f in ("config.json", "metrics.csv", "checkpoint.pt", "indices.json", "summary.json"):
        assert (out / f).is_file(), f
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 2
    # the same command again: the finished run is reported, not retrained
    again = invoke("train", "--data", root, "--out", out, "--cache-dir", tmp_path / "cache", *FAST)
    assert again.stdout == result.stdout


@pytest.mark.parametrize("pretext, option, shown", [
    ("rotation", "all_rotations=false", r"pretext val accuracy \d\.\d{4} \(chance 0\.250\)"),
    ("reconstruction", "mask_ratio=0.5", r"pretext val loss \d+\.\d{4}"),  # no accuracy, no chance level
])
def test_pretrain_any_pretext_with_options(make_image_folder, tmp_path, pretext, option, shown):
    out = tmp_path / "pre"
    result = invoke("pretrain", "--data", make_image_folder(size=16), "--pretext", pretext, "--option", option,
                    "--out", out, "--cache-dir", tmp_path / "cache", *FAST)
    assert re.search(shown, result.stdout), result.stdout
    assert (out / "backbone.safetensors").is_file()
    key, value = option.split("=")
    assert json.loads((out / "summary.json").read_text())["options"][key] == json.loads(value)


def test_pretrain_takes_the_older_flags_as_options_of_the_task(make_image_folder, tmp_path):
    """--scale and the other flags of context prediction are its options, passed only where given: the task's
    defaults hold for the rest."""
    out = tmp_path / "pre"
    invoke("pretrain", "--data", make_image_folder(size=16), "--pretext", "context", "--scale", "2", "--no-patch-norm",
           "--out", out, "--cache-dir", tmp_path / "cache", *FAST)
    options = json.loads((out / "summary.json").read_text())["options"]
    assert options["scale"] == 2.0 and options["patch_norm"] is False
    assert options["colour"] == "project" and options["downsample"] == 0.5  # not given: the task's defaults


def test_help_lists_the_registered_tasks():
    from pretextlab.pretext import TASKS as PRETEXTS
    from pretextlab.tasks import TASKS

    for command in ("train", "study"):
        text = invoke(command, "--help").stdout
        assert "--task" in text and all(name in text for name in TASKS), text
    for command in ("pretrain", "study"):
        text = invoke(command, "--help").stdout
        assert all(name in text for name in PRETEXTS), text


def test_evaluate_json(trained_run):
    result = invoke("evaluate", "--checkpoint", trained_run.checkpoint, "--json")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    m = json.loads(lines[0])
    assert set(m) == {"f1_macro", "precision_macro", "recall_macro", "accuracy", "loss", "n"}
    assert m == pytest.approx(evaluate_checkpoint(str(trained_run.checkpoint), None, "val"))
    assert m["n"] == 9


def test_evaluate_text_and_test_split(trained_run):
    result = invoke("evaluate", "--checkpoint", trained_run.checkpoint, "--data", trained_run.data,
                    "--split", "test", "--cache-dir", trained_run.cache_dir)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    pairs = dict(p.split("=") for p in lines[0].split(" "))
    assert set(pairs) == {"f1_macro", "precision_macro", "recall_macro", "accuracy", "loss", "n"}
    assert pairs["n"] == "12"
    assert all(re.fullmatch(r"\d+\.\d{4}", v) for k, v in pairs.items() if k != "n"), lines[0]
    assert float(pairs["accuracy"]) == pytest.approx(trained_run.summary["test"]["accuracy"], abs=1e-4)


def test_predict_prints_a_line_per_image(trained_run):
    files = sorted(str(p) for c in SORTED_CLASSES for p in (trained_run.data / "test" / c).iterdir())[:5]
    result = invoke("predict", *files, "--checkpoint", trained_run.checkpoint)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5
    for f, line in zip(files, lines):
        name, cls, conf = line.split("\t")
        assert name == f and cls in SORTED_CLASSES and 0 < float(conf) <= 1


# ----------------------------------------------------------------------------------------------
# Mistakes, as a user sees them


@pytest.fixture
def folder(make_image_folder):
    return make_image_folder("folder", n_per_class=12)


def train_args(data, tmp_path, *extra):
    return ("train", "--data", data, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
            "--epochs", "1", "--precision", "fp32", "--device", "cpu", "--quiet", *extra)


def test_missing_path(run_cli, assert_user_error, tmp_path):
    proc = run_cli(*train_args(tmp_path / "nope", tmp_path))
    assert_user_error(proc, "nope", "no such file or directory")
    assert not (tmp_path / "run").exists()


def test_empty_dir(run_cli, assert_user_error, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(run_cli(*train_args(tmp_path / "empty", tmp_path)), "no class sub-folders")


def test_class_folder_without_images(run_cli, assert_user_error, folder, tmp_path):
    (folder / "pear").mkdir()
    (folder / "pear" / "readme.txt").write_text("no images here")
    assert_user_error(run_cli(*train_args(folder, tmp_path)), "pear", "no readable images")


@pytest.mark.parametrize("fraction", ["0", "1.5"])
def test_fraction_outside_unit_interval(run_cli, assert_user_error, folder, tmp_path, fraction):
    assert_user_error(run_cli(*train_args(folder, tmp_path, "--fraction", fraction)), "--fraction", "outside (0, 1]")


def test_fraction_leaving_a_class_empty(run_cli, assert_user_error, folder, tmp_path):
    # 12 images per class, 1 held out for validation: 1% of 11 rounds to 0
    line = assert_user_error(run_cli(*train_args(folder, tmp_path, "--fraction", "0.01")), "no labelled example")
    assert "'apple'" in line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_unknown_backbone(run_cli, assert_user_error, folder, tmp_path):
    assert_user_error(run_cli(*train_args(folder, tmp_path, "--backbone", "vgg16")), "unknown backbone 'vgg16'",
                      "resnet18")


@pytest.mark.parametrize("option, fragment", [("temperature", "not KEY=VALUE"), ("warmth=2", "warmth")])
def test_pretrain_bad_option(run_cli, assert_user_error, folder, tmp_path, option, fragment):
    proc = run_cli("pretrain", "--data", folder, "--pretext", "simclr", "--option", option, "--out", tmp_path / "p",
                   "--cache-dir", tmp_path / "cache", "--epochs", "1", "--device", "cpu", "--quiet")
    assert_user_error(proc, fragment)


def test_pretrain_flag_of_another_task(run_cli, assert_user_error, folder, tmp_path):
    proc = run_cli("pretrain", "--data", folder, "--pretext", "rotation", "--scale", "2", "--out", tmp_path / "p",
                   "--cache-dir", tmp_path / "cache", "--epochs", "1", "--device", "cpu", "--quiet")
    assert_user_error(proc, "--option scale: pretext 'rotation' has no such option; it has all_rotations")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("command", ["train", "study"])
def test_unknown_task(run_cli, assert_user_error, folder, tmp_path, command):
    args = train_args(folder, tmp_path, "--task", "detection")[1:]
    proc = run_cli(command, *args, *(["--preset", "smoke", "--dry-run"] if command == "study" else []))
    assert_user_error(proc, "unknown task 'detection'; choose one of: classification, segmentation")
    assert not (tmp_path / "run").exists()


def test_init_from_another_backbone(run_cli, assert_user_error, trained_run, tmp_path):
    proc = run_cli(*train_args(trained_run.data, tmp_path, "--backbone", "fast-wide", "--init",
                               trained_run.checkpoint))
    assert_user_error(proc, "another backbone", "--backbone")


def test_evaluate_on_data_with_other_class_count(run_cli, assert_user_error, trained_run, make_image_folder,
                                                 tmp_path):
    two = make_image_folder("two", classes=("apple", "mango"), n_per_class=3)
    proc = run_cli("evaluate", "--checkpoint", trained_run.checkpoint, "--data", two, "--cache-dir", tmp_path / "c")
    assert_user_error(proc, "3 classes", "has 2")


def test_evaluate_test_split_without_one(run_cli, assert_user_error, trained_run, make_image_folder, tmp_path):
    flat = make_image_folder("flat", n_per_class=3)
    proc = run_cli("evaluate", "--checkpoint", trained_run.checkpoint, "--data", flat, "--split", "test",
                   "--cache-dir", tmp_path / "c")
    assert_user_error(proc, "no test split")


def test_non_checkpoint_file(run_cli, assert_user_error, tmp_path):
    img = tmp_path / "photo.png"
    Image.new("RGB", (12, 12)).save(img)
    proc = run_cli("evaluate", "--checkpoint", img, "--json")
    assert_user_error(proc, "photo.png", "not a pretextlab checkpoint")
    assert proc.stdout == ""


def test_export_of_a_folder_that_is_no_study(run_cli, assert_user_error, tmp_path):
    (tmp_path / "notastudy").mkdir()
    proc = run_cli("export", tmp_path / "notastudy", tmp_path / "dest")
    assert_user_error(proc, "not a study folder")
    assert not (tmp_path / "dest").exists()

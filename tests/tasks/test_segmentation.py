"""pretextlab.tasks.segmentation: splits, batches, loss, the decoder over a backbone, and a segmentation study from
the command line (generated scenes: squares of known classes on noise)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_pairs, write_segnet_root
from PIL import Image

from pretextlab.data import DataConfig
from pretextlab.data.masks import load_segmentation
from pretextlab.tasks import resolve_task
from pretextlab.tasks.segmentation import Segmentation, image_fraction
from pretextlab.train import TrainConfig

USER_MODEL = str(Path(__file__).parents[1] / "fixtures" / "user_backbone.py") + ":TinyNet"


@pytest.fixture(scope="module")
def seg_root(tmp_path_factory) -> Path:
    """12 training and 4 validation scenes of 3 classes; a strip of the first mask unlabelled (255)."""
    root = write_segnet_root(tmp_path_factory.mktemp("seg") / "scenes", n_train=12, n_val=4, h=24, w=32)
    first = root / "trainannot" / "s00.png"
    mask = np.asarray(Image.open(first)).copy()
    mask[0] = 255
    Image.fromarray(mask).save(first)
    return root


def task_on(root: Path, fraction: float = 1.0, seed: int = 0, **data) -> Segmentation:
    d = DataConfig(source=str(root), **data)
    ds = Segmentation.load(d)
    return Segmentation(Segmentation.splits(ds, fraction, seed, d), d, TrainConfig(label_smoothing=0.0))


def test_label_fractions_are_seeded_and_nested():
    small, large = image_fraction(100, 0.1, 3), image_fraction(100, 0.5, 3)
    assert len(small) == 10 and len(large) == 50 and set(small.tolist()) <= set(large.tolist())
    assert image_fraction(100, 0.1, 3).tolist() == small.tolist() != image_fraction(100, 0.1, 4).tolist()
    assert len(image_fraction(5, 0.01, 0)) == 1  # never an empty labelled set


def test_the_source_val_split_is_used_and_one_is_carved_without_it(seg_root, tmp_path):
    t = task_on(seg_root)
    assert len(t.splits.x_val) == 4 and t.splits.indices["val"] == "the source's val split"
    assert t.ignore == 255 and t.num_classes == 3
    write_pairs(tmp_path / "flat" / "images", tmp_path / "flat" / "masks", 10, h=24, w=32)
    carved = task_on(tmp_path / "flat", val_fraction=0.2)
    assert len(carved.splits.x_val) == 2 and len(carved.splits.x_pool) == 8
    assert set(carved.splits.indices["val"]).isdisjoint(carved.splits.indices["train"])


def test_batch_cuts_image_and_mask_alike(seg_root):
    """Each square is painted in its class's colour: after the joint crop and flip, the colour under a pixel still
    names the class its mask says (away from the squares' borders, where bilinear sampling blends)."""
    t = task_on(seg_root)
    x, y = t.batch(torch.arange(8), torch.Generator().manual_seed(0))
    assert x.shape[0] == y.shape[0] == 8 and x.shape[-2:] == y.shape[-2:] == (24, 32) and y.dtype == torch.int64
    rgb = x * t.splits.std.view(1, 3, 1, 1) + t.splits.mean.view(1, 3, 1, 1)
    green, blue = rgb[:, 1] > 0.7, rgb[:, 2] > 0.7  # class 1 is green (30, 200, 30), class 2 blue (30, 30, 220)
    assert green.sum() > 50 and blue.sum() > 50
    assert (y[green & ~blue] == 1).float().mean() > 0.9 and (y[blue & ~green] == 2).float().mean() > 0.9


def test_loss_leaves_out_the_ignore_value():
    from pretextlab.data import Splits

    classes, ignore = ["a", "b"], 255
    x = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    s = Splits(classes, x, torch.zeros(1, 2, 2, dtype=torch.uint8), x, torch.zeros(1, 2, 2, dtype=torch.uint8), x,
               torch.zeros(3), torch.ones(3), ignore_index=ignore)
    t = Segmentation(s, DataConfig(), TrainConfig(label_smoothing=0.0))
    logits = torch.randn(1, 2, 2, 2)
    y = torch.tensor([[[1, ignore], [ignore, ignore]]])
    assert torch.isclose(t.loss(logits, y), F.cross_entropy(logits[:, :, 0, 0], torch.tensor([1])))


def test_task_detection_by_folder_layout(seg_root, make_image_folder):
    assert resolve_task("auto", str(seg_root)) == "segmentation"
    assert resolve_task("auto", str(make_image_folder())) == "classification"
    assert resolve_task("classification", str(seg_root)) == "classification"


def test_camvid_names_its_classes_and_ignores_unlabelled(tmp_path):
    root = write_segnet_root(tmp_path / "CamVid", n_train=2, n_val=1, classes=3, classes_txt=False)
    mask = np.asarray(Image.open(root / "trainannot" / "s00.png")).copy()
    mask[0, 0] = 11  # SegNet's unlabelled
    Image.fromarray(mask).save(root / "trainannot" / "s00.png")
    ds = load_segmentation(root)
    assert ds.classes[:3] == ["sky", "building", "pole"] and len(ds.classes) == 11 and ds.ignore_index == 11


def test_a_segmentation_study_end_to_end_with_a_user_model(seg_root, tmp_path, run_cli):
    """study (task detected) -> answers in mean IoU with a per-class IoU table and mask examples; the pretrained
    weights are checked to have loaded; evaluate and predict read the run back."""
    out = tmp_path / "study"
    r = run_cli("study", "--data", seg_root, "--preset", "smoke", "--fractions", "1,0.5", "--pretext", "context",
                "--backbone", USER_MODEL, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    study = json.loads((out / "study.json").read_text())
    assert study["task"] == "segmentation" and study["protocols"] == ["finetune"]
    assert study["data"]["image_size"] == 48  # the smoke preset's size for segmentation
    summary = json.loads((out / "f1-scratch-s0" / "summary.json").read_text())
    assert set(summary["final"]) >= {"miou", "pixel_accuracy", "dice", "loss"}
    assert set(summary["per_class_iou"]) == {"background", "square1", "square2"}
    loaded = json.loads((out / "f1-context-s0" / "config.json").read_text())["init_loaded"]
    assert loaded["tensors"] == loaded["changed"] > 0  # every backbone tensor came from the pretraining
    answers = (out / "answers.md").read_text()
    assert "mean IoU" in answers and "macro-F1" not in answers and "class (validation IoU)" in answers
    assert "Pixels whose mask value is 255 (unlabelled in the data) are ignored" in answers
    assert (out / "figures" / "examples_f0.5.png").is_file()

    r = run_cli("train", "--data", seg_root, "--backbone", USER_MODEL, "--epochs", "1", "--batch-size", "4",
                "--image-size", "32", "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 0 and "best val mean IoU" in r.stdout and "pixel accuracy" in r.stdout, r.stderr

    r = run_cli("evaluate", "--checkpoint", out / "f1-context-s0", "--backbone", USER_MODEL, "--json")
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)
    assert scores["miou"] == pytest.approx(json.loads((out / "f1-context-s0" / "summary.json").read_text())
                                           ["final"]["miou"], abs=1e-6)

    image = seg_root / "val" / "s00.png"
    r = run_cli("predict", image, "--checkpoint", out / "f1-context-s0", "--backbone", USER_MODEL, "--out",
                tmp_path / "pred")
    assert r.returncode == 0, r.stderr
    mask = Image.open(tmp_path / "pred" / "s00_mask.png")
    assert mask.mode == "P" and mask.size == Image.open(image).size  # the image's own size, class indices
    assert set(np.unique(np.asarray(mask))) <= {0, 1, 2}
    assert Image.open(tmp_path / "pred" / "s00_overlay.png").size == mask.size


def test_a_segmentation_study_with_a_timm_backbone(seg_root, tmp_path, run_cli):
    r = run_cli("study", "--data", seg_root, "--preset", "smoke", "--fractions", "1", "--pretext", "rotation",
                "--backbone", "timm:resnet10t", "--image-size", "32", "--out", tmp_path / "study", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "study" / "f1-rotation-s0" / "summary.json").read_text())["final"]["miou"] >= 0


@pytest.mark.parametrize("args, says", [
    (("--layout", "bogus"), "layout 'bogus' is unknown"),
    (("--ignore-index", "300"), "ignore_index 300 is not a mask value"),
])
def test_bad_segmentation_settings_are_one_line_errors(seg_root, tmp_path, run_cli, args, says):
    r = run_cli("train", "--data", seg_root, "--epochs", "1", "--out", tmp_path / "run", *args)
    assert r.returncode != 0 and says in r.stderr and "Traceback" not in r.stderr

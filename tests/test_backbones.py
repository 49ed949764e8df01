"""pretextlab.models.external: any timm or torchvision model, or the user's own module, through every command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pretextlab.data import DataConfig
from pretextlab.errors import UserError
from pretextlab.finetune import evaluate_checkpoint, load_model, predict_files
from pretextlab.models import feature_map, load_backbone_weights, make_backbone
from pretextlab.study import run_study

USER = str(Path(__file__).with_name("fixtures") / "user_backbone.py")
TASKS = ("context", "rotation", "reconstruction", "simclr")


@pytest.mark.parametrize("spec", ["timm:test_efficientnet", "torchvision:mobilenet_v3_small", f"{USER}:TinyNet"])
def test_a_study_runs_every_pretext_task_on_any_backbone(spec, make_image_folder, cache_dir, tmp_path):
    folder = make_image_folder(n_per_class=8, size=16)
    data = DataConfig(source=str(folder), val_fraction=0.25, cache_dir=str(cache_dir))
    out = run_study(data, tmp_path / "s", fractions=(1.0,), preset="smoke", pretexts=TASKS, backbone=spec,
                    device="cpu", quiet=True, precision="fp32")  # fp32: the same numbers on every CPU
    for task in TASKS:
        assert (out / f"pretrain-{task}-s0" / "backbone.safetensors").exists(), task
        run = json.loads((out / f"f1-{task}-s0" / "summary.json").read_text())
        assert run["backbone"] == spec and 0 <= run["best"]["f1_macro"]["value"] <= 1
    ckpt = out / "f1-rotation-s0" / "checkpoint.pt"
    given = spec if spec.startswith(USER) else None  # a user's file is named again, never taken from the checkpoint
    m = evaluate_checkpoint(str(ckpt), None, "val", backbone=given)
    assert m["accuracy"] == pytest.approx(json.loads((out / "f1-rotation-s0" / "summary.json").read_text())
                                          ["final"]["accuracy"], abs=1e-5)
    image = next((folder / "apple").iterdir())
    [(f, out)] = predict_files(str(ckpt), [str(image)], backbone=given)
    cls, conf = out["class"], out["confidence"]
    assert cls in ("apple", "mango", "zebra") and 0 < conf <= 1


def test_a_checkpoint_of_a_user_module_asks_for_the_file_and_notices_a_change(make_image_folder, cache_dir, tmp_path,
                                                                             caplog):
    folder = make_image_folder(n_per_class=8, size=16)
    user = tmp_path / "net.py"
    user.write_text(Path(USER).read_text())
    data = DataConfig(source=str(folder), val_fraction=0.25, cache_dir=str(cache_dir))
    out = run_study(data, tmp_path / "s", fractions=(1.0,), preset="smoke", pretexts=("rotation",),
                    backbone=f"{user}:TinyNet", device="cpu", quiet=True)
    ckpt = out / "f1-scratch-s0" / "checkpoint.pt"
    with pytest.raises(UserError, match="your own module .*pass --backbone .*never runs code a checkpoint names"):
        load_model(ckpt)
    user.write_text(user.read_text() + "\n# edited\n")
    load_model(ckpt, f"{user}:TinyNet")
    assert "has changed since" in caplog.text


@pytest.mark.parametrize("spec, message", [
    ("timm:no_such_net", "timm has no architecture"),
    ("torchvision:no_such_net", "torchvision has no classification model"),
    ("missing.py:Net", "no such file"),
    (f"{USER}:Nope", "defines no class or function 'Nope'"),
    (f"{USER}:not_a_module", "not an nn.Module"),
    (f"{USER}:wrong_shape", "must return a feature vector"),
    ("vgg", "unknown backbone 'vgg'"),
])
def test_bad_backbones_are_one_line_errors(spec, message, run_cli, assert_user_error, make_image_folder, tmp_path):
    proc = run_cli("train", "--data", make_image_folder(), "--backbone", spec, "--out", tmp_path / "r",
                   "--cache-dir", tmp_path / "c", "--epochs", "1", "--device", "cpu", "--quiet")
    assert_user_error(proc, message)


def test_every_source_meets_the_interface():
    for spec in ("timm:test_vit", "timm:test_efficientnet", "torchvision:resnet18@cifar", f"{USER}:tiny_vector"):
        net = make_backbone(spec, 1)
        for side in (12, 32):  # pretext patches and whole images
            assert net(torch.zeros(2, 1, side, side)).shape == (2, net.out_dim), (spec, side)
        assert len(net.stages) >= (1 if spec.endswith("tiny_vector") else 2), spec
    with pytest.raises(UserError, match="tokens, not a spatial map"):
        feature_map(make_backbone("timm:test_vit", 3), torch.zeros(2, 3, 32, 32))
    # a module that pools inside: its map is the last spatial output before the pooling
    assert feature_map(make_backbone(f"{USER}:tiny_vector", 3), torch.zeros(2, 3, 32, 32)).shape == (2, 16, 32, 32)


def test_cifar_stem_keeps_32px_images_large_and_stages_transfer():
    plain, cifar = make_backbone("torchvision:resnet18", 3), make_backbone("torchvision:resnet18@cifar", 3)
    x = torch.zeros(2, 3, 32, 32)
    assert feature_map(plain, x).shape[-1] == 1 and feature_map(cifar, x).shape[-1] == 4  # 32 / 8 instead of 32 / 32
    a, b = make_backbone("timm:resnet18@cifar", 3), make_backbone("timm:resnet18@cifar", 3)
    load_backbone_weights(b, a.state_dict(), "a", stages=2)  # stem and layer1 from a, the rest b's own
    assert torch.equal(b.net.layer1[0].conv1.weight, a.net.layer1[0].conv1.weight)
    assert not torch.equal(b.net.layer2[0].conv1.weight, a.net.layer2[0].conv1.weight)

"""pretextlab.finetune: evaluation and prediction from a checkpoint, --init, saved split indices."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import COLOURS, SORTED_CLASSES
from PIL import Image

from pretextlab.errors import UserError
from pretextlab.finetune import evaluate_checkpoint, finetune, load_model, predict_files
from pretextlab.models import read_weights
from pretextlab.runs import read_csv

METRIC_KEYS = {"f1_macro", "precision_macro", "recall_macro", "accuracy", "loss", "n"}


def test_evaluate_val_equals_last_epoch(trained_run):
    m = evaluate_checkpoint(str(trained_run.checkpoint), None, "val")
    assert set(m) == METRIC_KEYS
    assert m["n"] == trained_run.summary["n_val"] == 9  # 25% of 3 x 12
    last = read_csv(trained_run.out / "metrics.csv")[-1]
    for k in METRIC_KEYS - {"n"}:
        assert m[k] == pytest.approx(last[f"val_{k}"], abs=1e-5), k
        assert m[k] == pytest.approx(trained_run.summary["final"][k], abs=1e-5), k
    for k in ("f1_macro", "precision_macro", "recall_macro", "accuracy"):
        assert 0 <= m[k] <= 1


def test_evaluate_test_split(trained_run):
    m = evaluate_checkpoint(str(trained_run.checkpoint), str(trained_run.data), "test",
                            cache_dir=str(trained_run.cache_dir))
    assert set(m) == METRIC_KEYS
    assert m["n"] == 12  # 3 classes x 4 test images
    for k in METRIC_KEYS:
        assert m[k] == pytest.approx(trained_run.summary["test"][k], abs=1e-5), k


def test_evaluate_test_split_of_a_source_without_one(trained_run, make_image_folder, cache_dir):
    flat = make_image_folder("flat", n_per_class=4)  # same classes, no test/
    with pytest.raises(UserError, match="no test split"):
        evaluate_checkpoint(str(trained_run.checkpoint), str(flat), "test", cache_dir=str(cache_dir))
    # the val split of that source works: same classes, same channels
    assert evaluate_checkpoint(str(trained_run.checkpoint), str(flat), "val", cache_dir=str(cache_dir))["n"] == 3


def test_evaluate_unknown_split(trained_run):
    with pytest.raises(UserError, match="--split train"):
        evaluate_checkpoint(str(trained_run.checkpoint), None, "train")


@pytest.mark.parametrize("classes", [("apple", "mango"), ("apple", "mango", "zebra", "kiwi"),
                                     ("apple", "mango", "pear")])
def test_evaluate_on_other_classes_is_user_error(trained_run, make_image_folder, cache_dir, classes):
    other = make_image_folder("other", classes=classes, n_per_class=3)
    with pytest.raises(UserError, match=r"knows 3 classes"):
        evaluate_checkpoint(str(trained_run.checkpoint), str(other), "val", cache_dir=str(cache_dir))


def test_evaluate_on_grayscale_data_is_user_error(trained_run, make_image_folder, cache_dir):
    gray = make_image_folder("gray", gray=True, n_per_class=3)
    with pytest.raises(UserError, match=r"3 channels"):
        evaluate_checkpoint(str(trained_run.checkpoint), str(gray), "val", cache_dir=str(cache_dir))


def test_predict_files(trained_run, tmp_path):
    files = []
    for k, colour in enumerate(COLOURS[:3]):
        for size in ((12, 12), (20, 14)):  # native size and a non-square one that needs resizing
            f = tmp_path / f"c{k}-{size[0]}x{size[1]}.png"
            Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).save(f)
            files.append(str(f))
    out = predict_files(str(trained_run.checkpoint), files)
    assert [f for f, _ in out] == files  # one row per image, in order
    for _, row in out:
        cls, conf = row["class"], row["confidence"]
        assert cls in SORTED_CLASSES
        assert 0 < conf <= 1
        assert conf >= 1 / 3 - 1e-6  # the top class of 3 has at least a third of the mass


def test_predict_agrees_with_evaluate(trained_run):
    """Predicting every test image one by one gives the accuracy evaluate reports for the test split."""
    files, truth = [], []
    for c in SORTED_CLASSES:
        for f in sorted((trained_run.data / "test" / c).iterdir()):
            files.append(str(f))
            truth.append(c)
    preds = predict_files(str(trained_run.checkpoint), files)
    acc = np.mean([p["class"] == t for (_, p), t in zip(preds, truth)])
    m = evaluate_checkpoint(str(trained_run.checkpoint), str(trained_run.data), "test",
                            cache_dir=str(trained_run.cache_dir))
    assert acc == pytest.approx(m["accuracy"], abs=1e-6)


def test_predict_bad_files(trained_run, tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="not a readable image"):
        predict_files(str(trained_run.checkpoint), [str(tmp_path / "notes.txt")])
    with pytest.raises(UserError, match="no such file"):
        predict_files(str(trained_run.checkpoint), [str(tmp_path / "missing.png")])


def test_load_model_rejects_non_checkpoints(tmp_path):
    (tmp_path / "a.pt").write_text("not a checkpoint")
    torch.save({"model": {}}, tmp_path / "b.pt")  # a torch file, but no meta
    torch.save({"model": {}, "meta": {"kind": "pretext"}}, tmp_path / "c.pt")
    with pytest.raises(UserError, match="not a pretextlab checkpoint"):
        load_model(tmp_path / "a.pt")
    with pytest.raises(UserError, match="not a pretextlab checkpoint"):
        load_model(tmp_path / "b.pt")
    with pytest.raises(UserError, match="pretext checkpoint, not a fine-tuned model of classification"):
        load_model(tmp_path / "c.pt")
    with pytest.raises(UserError, match="no such file"):
        load_model(tmp_path / "missing.pt")


def test_load_classifier_roundtrip(trained_run):
    model, meta = load_model(trained_run.checkpoint)
    assert not model.training
    assert meta["classes"] == SORTED_CLASSES and meta["backbone"] == "fast" and meta["channels"] == 3
    assert meta["image_size"] == 12 and len(meta["mean"]) == 3
    state = torch.load(trained_run.checkpoint, weights_only=False)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_indices_saved(trained_run):
    idx = json.loads((trained_run.out / "indices.json").read_text())
    assert set(idx) == {"train", "val"}
    tr, va = idx["train"], idx["val"]
    assert len(tr) == trained_run.summary["n_train"] == 27 and len(va) == trained_run.summary["n_val"] == 9
    assert set(tr).isdisjoint(va) and set(tr) | set(va) == set(range(36))
    assert tr == sorted(tr) and va == sorted(va)


def test_init_from_checkpoint_of_another_backbone(trained_run, tiny_train_config, tiny_data_config, tmp_path):
    with pytest.raises(UserError, match="another backbone"):
        finetune(tiny_data_config(trained_run.data, tmp_path / "cache"), tiny_train_config(epochs=1),
                         "fast-wide", tmp_path / "run", init=str(trained_run.checkpoint), device="cpu", quiet=True)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_init_with_missing_or_bad_file(trained_run, tiny_train_config, tiny_data_config, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00junk")
    for init, msg in ((tmp_path / "nope.pt", "no such file"), (tmp_path / "junk.pt", "not a readable checkpoint")):
        with pytest.raises(UserError, match=msg):
            finetune(tiny_data_config(trained_run.data, tmp_path / "cache"), tiny_train_config(epochs=1),
                             "fast", tmp_path / "run", init=str(init), device="cpu", quiet=True)


def test_init_linear_probe_keeps_pretrained_backbone(trained_run, tiny_train_config, tiny_data_config, tmp_path):
    """--init loads the backbone; with --freeze-backbone it (BatchNorm statistics included) stays as loaded."""
    from safetensors.torch import save_file

    pre = torch.load(trained_run.checkpoint, weights_only=False)["model"]
    backbone = {k.removeprefix("backbone."): v.contiguous() for k, v in pre.items() if k.startswith("backbone.")}
    save_file(backbone, str(tmp_path / "backbone.safetensors"))
    assert read_weights(tmp_path / "backbone.safetensors").keys() == backbone.keys()

    summary = finetune(tiny_data_config(trained_run.data, tmp_path / "cache"),
                               tiny_train_config(epochs=1, freeze_backbone=True), "fast", tmp_path / "probe",
                               init=str(tmp_path / "backbone.safetensors"), device="cpu", quiet=True)
    assert summary["init"] == str(tmp_path / "backbone.safetensors")
    after = torch.load(tmp_path / "probe" / "checkpoint.pt", weights_only=False)["model"]
    for k, v in pre.items():
        if k.startswith("backbone."):
            assert torch.equal(after[k], v), k
    assert not torch.equal(after["head.weight"], pre["head.weight"])  # the head did train


def test_pad_larger_than_the_image_is_user_error(trained_run, tiny_train_config, tiny_data_config, tmp_path):
    with pytest.raises(UserError, match="pad"):
        finetune(tiny_data_config(trained_run.data, tmp_path / "cache", pad=12), tiny_train_config(epochs=1),
                         "fast", tmp_path / "run", device="cpu", quiet=True)


def test_examples_show_every_class_once_where_there_are_few():
    from pretextlab.tasks.classification import example_indices

    labels = torch.tensor([2, 2, 0, 1, 1, 0, 2, 1, 0, 0, 2, 1])
    idx = example_indices(labels, 10)
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert {int(labels[i]) for i in idx} == {0, 1, 2} and {0, 2, 3} <= set(idx.tolist())  # the first of each


def test_test_time_augmentation_averages_the_logits_of_its_views(trained_run):
    from pretextlab.tasks.classification import predict_logits, tta_views

    model, meta = load_model(trained_run.checkpoint)
    x = torch.randint(0, 256, (6, 3, 12, 12), dtype=torch.uint8)
    mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    plain, mirror = predict_logits(model, x, mean, std), predict_logits(model, x.flip(3), mean, std)
    assert torch.allclose(predict_logits(model, x, mean, std, tta="flip"), (plain + mirror) / 2, atol=1e-5)
    views = tta_views(x, "flip-translate")
    assert len(views) == 6 and sum(w for w, _ in views) == 1.0
    assert torch.equal(views[2][1][:, :, 1:, 1:], x[:, :, :-1, :-1])  # shifted by one pixel, reflected at the edge
    assert torch.equal(tta_views(x, "none")[0][1], x)
    tta = evaluate_checkpoint(str(trained_run.checkpoint), None, "val", tta="flip")
    assert set(tta) == METRIC_KEYS and tta["n"] == 9
    with pytest.raises(UserError, match="--tta spin is unknown"):
        evaluate_checkpoint(str(trained_run.checkpoint), None, "val", tta="spin")


def test_a_run_with_tta_scores_every_evaluation_with_it_and_trains_the_same(trained_run, tiny_train_config,
                                                                            tiny_data_config, tmp_path):
    """tta changes what an evaluation scores, not the training: the weights equal the plain run's, the last
    row of metrics.csv is `evaluate --tta` of the checkpoint, and the stored config says which views."""
    from pretextlab.io import load_json, load_torch
    from pretextlab.runs import read_csv

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRETEXTLAB_THREADS", "1")
        mp.setenv("PRETEXTLAB_CACHE", str(trained_run.cache_dir))
        dcfg = tiny_data_config(trained_run.data, trained_run.cache_dir)
        finetune(dcfg, tiny_train_config(tta="flip-translate"), "fast", tmp_path / "tta", device="cpu",
                         quiet=True)
        assert load_json(tmp_path / "tta" / "config.json")["train"]["tta"] == "flip-translate"
        assert "tta" not in load_json(trained_run.out / "config.json")["train"]  # the default is not stored
        ours, plain = (load_torch(d / "checkpoint.pt", "cpu")["model"] for d in (tmp_path / "tta", trained_run.out))
        assert all(torch.equal(ours[k], plain[k]) for k in plain)
        last = read_csv(tmp_path / "tta" / "metrics.csv")[-1]
        scored = evaluate_checkpoint(str(tmp_path / "tta" / "checkpoint.pt"), None, "val", tta="flip-translate")
        assert last["val_f1_macro"] == pytest.approx(scored["f1_macro"], abs=1e-6)
        with pytest.raises(UserError, match="--tta spin is unknown"):
            finetune(dcfg, tiny_train_config(tta="spin"), "fast", tmp_path / "bad", device="cpu", quiet=True)
        assert not (tmp_path / "bad").exists()


def test_evaluate_recalibrates_batchnorm(trained_run, tmp_path):
    """Re-estimated statistics depend on the weights only: a checkpoint whose running averages were spoilt
    scores like the original after recalibration, and unlike it before."""
    from pretextlab.io import load_torch

    ckpt = load_torch(trained_run.checkpoint)
    spoilt = {k: (v + 5.0 if k.endswith("running_mean") else v) for k, v in ckpt["model"].items()}
    path = tmp_path / "spoilt.pt"
    torch.save({**ckpt, "model": spoilt}, path)
    original, bad = str(trained_run.checkpoint), str(path)
    as_trained = evaluate_checkpoint(original, None, "val")["loss"]
    assert evaluate_checkpoint(bad, None, "val")["loss"] != pytest.approx(as_trained)
    fixed = evaluate_checkpoint(bad, None, "val", recalibrate_bn=20)
    assert fixed == pytest.approx(evaluate_checkpoint(original, None, "val", recalibrate_bn=20), abs=1e-6)
    assert set(fixed) == METRIC_KEYS
    with pytest.raises(UserError, match="--recalibrate-bn must be >= 0"):
        evaluate_checkpoint(original, None, "val", recalibrate_bn=-1)

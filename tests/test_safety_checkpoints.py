"""Checkpoints, weights and caches as an adversarial (or unlucky) user hands them in: zip bombs, refused pickles,
truncated files, edited metadata, planted cache files, a checkpoint that names where to write, diverging
runs. Each ends in one line (or a rebuilt cache), never a traceback, never torch's advice to load unsafely."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pretextlab import io as io_mod
from pretextlab.data import load_dataset
from pretextlab.errors import UserError
from pretextlab.finetune import evaluate_checkpoint, finetune, load_model, predict_files
from pretextlab.io import load_torch
from pretextlab.models import read_weights
from pretextlab.tasks.classification import Classification


class _Plant:
    """Unpickling this object would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code-ran"


def _one_line_error(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and "weights_only" not in text, text
    return text


def _rezip(src: Path, dst: Path, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None,
           compression: int = zipfile.ZIP_STORED) -> Path:
    """A copy of the torch file `src` with entries replaced (by name suffix), and entries added with `compression`."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        prefix = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            zout.writestr(info, next((v for k, v in replace.items() if info.filename.endswith(k)), zin.read(info)))
        for name, data in add.items():
            zout.writestr(f"{prefix}/{name}", data, compress_type=compression)
    return dst


def _no_torch_load(monkeypatch) -> None:
    def refuse(*a, **kw):
        raise AssertionError("torch.load was called on a file that should have been refused before")

    monkeypatch.setattr(torch, "load", refuse)


def _edited(trained_run, path: Path, edit) -> Path:
    """A copy of the trained checkpoint with edit(state) applied."""
    state = torch.load(trained_run.checkpoint, weights_only=True)
    edit(state)
    torch.save(state, path)
    return path


# ----------------------------------------------------------------------------------------------
# 1. Zip bombs are refused from the zip directory, before torch inflates anything


@pytest.mark.parametrize("rule", ["ratio", "total"])
def test_a_zip_bomb_checkpoint_is_refused_before_it_is_inflated(trained_run, tmp_path, monkeypatch, rule):
    bomb = _rezip(trained_run.checkpoint, tmp_path / "bomb.pt", add={"data/99": b"\0" * (20 * 2**20)},
                  compression=zipfile.ZIP_DEFLATED)  # 20 MiB of zeros: a few KiB deflated
    assert bomb.stat().st_size < trained_run.checkpoint.stat().st_size + 2**20
    if rule == "total":  # the declared total far above the file's size (lowered: the test stays small)
        monkeypatch.setattr(io_mod, "MAX_INFLATE", 2**20)
        monkeypatch.setattr(io_mod, "MAX_RATIO", 10**9)
    _no_torch_load(monkeypatch)
    with pytest.raises(UserError, match="zip bomb") as e:
        load_torch(bomb)
    assert "bomb.pt" in _one_line_error(e)
    with pytest.raises(UserError, match="zip bomb"):
        load_model(bomb)
    with pytest.raises(UserError, match="zip bomb"):
        read_weights(bomb)


def test_a_zip_bomb_is_one_line_through_the_cli(run_cli, assert_user_error, trained_run, tmp_path):
    bomb = _rezip(trained_run.checkpoint, tmp_path / "bomb.pt", add={"data/99": b"\0" * (20 * 2**20)},
                  compression=zipfile.ZIP_DEFLATED)
    assert_user_error(run_cli("evaluate", "--checkpoint", bomb), "bomb.pt", "zip bomb")


def test_a_genuine_checkpoint_passes_the_zip_check(trained_run):
    with zipfile.ZipFile(trained_run.checkpoint) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}  # what the check relies on
    assert load_torch(trained_run.checkpoint)["meta"]["kind"] == "classifier"


# ----------------------------------------------------------------------------------------------
# 2. Refused pickles and damaged files: one line, never torch's advice


def test_a_refused_pickle_opcode_never_advises_weights_only_false(run_cli, assert_user_error, trained_run,
                                                                   tmp_path):
    # INST (opcode 'i') builds an object by calling a class: the weights-only unpickler refuses it, and torch's
    # message then suggests weights_only=False
    evil = _rezip(trained_run.checkpoint, tmp_path / "evil.pt", replace={"data.pkl": b"(i__main__\nC\n."})
    with pytest.raises(UserError, match="holds Python objects.*refused") as e:
        load_torch(evil)
    _one_line_error(e)
    proc = run_cli("evaluate", "--checkpoint", evil)
    assert_user_error(proc, "evil.pt", "refused")
    assert "weights_only" not in proc.stderr


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "legacy"])
def test_a_damaged_checkpoint_is_one_line(run_cli, assert_user_error, trained_run, tmp_path, damage):
    bad = tmp_path / "bad.pt"
    whole = trained_run.checkpoint.read_bytes()
    if damage == "legacy":  # torch's pre-1.6 format: a pickle stream, not a zip
        torch.save({"model": {}}, bad, _use_new_zipfile_serialization=False)
    else:
        bad.write_bytes({"truncated": whole[: len(whole) // 2], "random": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(UserError, match=r"is not a readable checkpoint \(truncated or damaged\?\)") as e:
        load_torch(bad)
    _one_line_error(e)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        read_weights(bad)
    if damage == "truncated":
        img = tmp_path / "x.png"
        Image.new("RGB", (12, 12)).save(img)
        assert_user_error(run_cli("predict", "--checkpoint", bad, img), "bad.pt", "truncated or damaged")


# ----------------------------------------------------------------------------------------------
# 3. Resuming from a damaged checkpoint names it and says what to do


def test_resuming_from_a_damaged_checkpoint_says_what_to_do(make_image_folder, tmp_path, monkeypatch, capsys):
    from pretextlab import cli

    data = make_image_folder(n_per_class=8)
    args = ["--data", str(data), "--epochs", "2", "--batch-size", "16", "--val-fraction", "0.25", "--device", "cpu",
            "--precision", "fp32", "--cache-dir", str(tmp_path / "cache"), "--quiet"]

    def train(out: Path) -> tuple[int, list[str]]:
        """`pretextlab train` through the CLI's main, in this process: exit code and stderr lines."""
        monkeypatch.setattr(sys, "argv", ["pretextlab", "train", "--out", str(out), *args])
        try:
            cli.main()
            code = 0
        except SystemExit as e:
            code = e.code
        return code, capsys.readouterr().err.strip().splitlines()

    assert train(tmp_path / "run")[0] == 0
    (tmp_path / "run" / "summary.json").unlink()  # finished, then its summary removed: the next run resumes

    def truncate(ckpt: Path) -> None:
        whole = ckpt.read_bytes()
        ckpt.write_bytes(whole[: len(whole) // 2])

    def reshape(ckpt: Path) -> None:
        state = torch.load(ckpt, weights_only=True)
        state["model"]["head.weight"] = torch.zeros(7, 5)
        torch.save(state, ckpt)

    def drop_key(ckpt: Path) -> None:
        state = torch.load(ckpt, weights_only=True)
        del state["optimizer"]
        torch.save(state, ckpt)

    for name, damage in (("truncated", truncate), ("shapes", reshape), ("key", drop_key)):
        run = tmp_path / f"run-{name}"
        shutil.copytree(tmp_path / "run", run)
        damage(run / "checkpoint.pt")
        code, err = train(run)
        assert code == 2 and len(err) == 1 and err[0].startswith("pretextlab: error: "), err
        line = err[0]
        assert str(run / "checkpoint.pt") in line and "delete it" in line, line
        assert not (run / "summary.json").exists(), line
    assert "optimizer" in line  # which key is missing


# ----------------------------------------------------------------------------------------------
# 4. --init: only tensors, and only finite ones


def test_init_with_values_that_are_not_tensors_is_one_line(trained_run, tiny_train_config, tiny_data_config,
                                                           tmp_path):
    keys = list(torch.load(trained_run.checkpoint, weights_only=True)["model"])
    for name, model in (("ints", {k: 1 for k in keys}), ("strings", {k: "w" for k in keys}),
                        ("nested", {"backbone": {k: torch.zeros(1) for k in keys}})):
        init = tmp_path / f"{name}.pt"
        torch.save({"model": model}, init)
        with pytest.raises(UserError, match=f"{name}.pt") as e:
            finetune(tiny_data_config(trained_run.data, tmp_path / "cache"), tiny_train_config(epochs=1),
                             "fast", tmp_path / f"run-{name}", init=str(init), device="cpu", quiet=True)
        _one_line_error(e)
        assert not (tmp_path / f"run-{name}" / "checkpoint.pt").exists()


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_init_with_non_finite_weights_is_refused_before_training(run_cli, assert_user_error, trained_run, tmp_path,
                                                                 fmt):
    from safetensors.torch import save_file

    state = torch.load(trained_run.checkpoint, weights_only=True)["model"]
    state["backbone.stem.0.weight"][0, 0, 0, 0] = float("nan")
    state["backbone.stem.1.running_var"][0] = float("inf")
    init = tmp_path / f"diverged.{fmt}"
    if fmt == "safetensors":
        save_file({k.removeprefix("backbone."): v.contiguous() for k, v in state.items()
                   if k.startswith("backbone.")}, str(init))
    else:
        torch.save({"model": state}, init)
    proc = run_cli("train", "--data", trained_run.data, "--init", init, "--out", tmp_path / "run", "--cache-dir",
                   tmp_path / "cache", "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--precision",
                   "fp32", "--quiet")
    assert_user_error(proc, init.name, "holds non-finite weights")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ----------------------------------------------------------------------------------------------
# 5. A checkpoint's meta is checked before use; a run folder stands for its checkpoint.pt


def _meta_edits():
    def drop(key):
        return lambda s: s["meta"].pop(key)

    def replace(value):
        return lambda s: s.__setitem__("meta", value)

    return {"no classes": drop("classes"), "no channels": drop("channels"), "no mean": drop("mean"),
            "no kind": drop("kind"), "meta a string": replace("classifier"), "meta a list": replace([1, 2]),
            "classes not strings": lambda s: s["meta"].__setitem__("classes", [1, 2, 3]),
            "no model": lambda s: s.pop("model")}


def test_a_checkpoint_with_a_broken_meta_is_one_line(run_cli, assert_user_error, trained_run, tmp_path):
    img = tmp_path / "x.png"
    Image.new("RGB", (12, 12)).save(img)
    for i, (name, edit) in enumerate(_meta_edits().items()):
        ckpt = _edited(trained_run, tmp_path / f"broken-{i}.pt", edit)
        for call in (lambda: evaluate_checkpoint(str(ckpt), None), lambda: predict_files(str(ckpt), [str(img)])):
            with pytest.raises(UserError, match="is not a pretextlab checkpoint") as e:
                call()
            assert "pass a run's checkpoint.pt" in _one_line_error(e), name
    assert_user_error(run_cli("evaluate", "--checkpoint", tmp_path / "broken-0.pt"), "misses 'classes'")
    assert_user_error(run_cli("predict", "--checkpoint", tmp_path / "broken-4.pt", img), "not a pretextlab checkpoint")


def test_a_checkpoint_whose_data_record_is_broken_is_one_line_for_evaluate(trained_run, tmp_path):
    ckpt = _edited(trained_run, tmp_path / "nodata.pt", lambda s: s["meta"]["data"].pop("split_seed"))
    with pytest.raises(UserError, match="misses data.split_seed") as e:
        evaluate_checkpoint(str(ckpt), None)
    _one_line_error(e)
    ckpt = _edited(trained_run, tmp_path / "datastr.pt", lambda s: s["meta"].__setitem__("data", "x"))
    with pytest.raises(UserError, match="misses data.val_fraction") as e:
        evaluate_checkpoint(str(ckpt), None)
    _one_line_error(e)


def test_a_run_folder_stands_for_its_checkpoint(run_cli, assert_user_error, trained_run, tmp_path):
    assert evaluate_checkpoint(str(trained_run.out), None) == evaluate_checkpoint(str(trained_run.checkpoint), None)
    img = tmp_path / "x.png"
    Image.new("RGB", (12, 12), (220, 30, 30)).save(img)
    assert predict_files(str(trained_run.out), [str(img)]) == predict_files(str(trained_run.checkpoint), [str(img)])
    (tmp_path / "empty").mkdir()
    assert_user_error(run_cli("evaluate", "--checkpoint", tmp_path / "empty"), "empty", "is a folder")


# ----------------------------------------------------------------------------------------------
# 6. Nothing in a checkpoint decides where files are written


def test_a_checkpoint_never_decides_where_the_cache_is_written(trained_run, tmp_path):
    evil = tmp_path / "evil"
    ckpt = _edited(trained_run, tmp_path / "elsewhere.pt", lambda s: s["meta"]["data"].update(cache_dir=str(evil)))
    m = evaluate_checkpoint(str(ckpt), None)
    assert m["n"] == trained_run.summary["n_val"]
    assert not evil.exists()
    assert list((tmp_path / "env-cache").glob("root-*"))  # the default cache (PRETEXTLAB_CACHE) was used


# ----------------------------------------------------------------------------------------------
# 7. The stream cache never unpickles: a planted object array means a damaged cache, rebuilt


@pytest.mark.parametrize("planted", ["train-00000.npy", "train-00000.labels.npy"])
def test_a_planted_object_array_in_the_stream_cache_is_rebuilt_not_unpickled(make_image_folder, cache_dir, marker,
                                                                              caplog, planted):
    root = make_image_folder(n_per_class=3)
    first = load_dataset(str(root), cache_dir=cache_dir, storage="stream")
    images, labels = first.train.images[torch.arange(len(first.train))], first.train.labels.clone()
    (folder,) = cache_dir.glob("*.shards")
    np.save(folder / planted, np.array([_Plant(marker), 1], dtype=object), allow_pickle=True)
    with caplog.at_level(logging.WARNING):
        again = load_dataset(str(root), cache_dir=cache_dir, storage="stream")
    assert not marker.exists()
    assert torch.equal(again.train.images[torch.arange(len(again.train))], images)
    assert torch.equal(again.train.labels, labels)
    assert "damaged" in caplog.text and "rebuilding" in caplog.text
    assert np.load(folder / planted, allow_pickle=False).dtype != object  # rewritten


def test_a_truncated_shard_is_rebuilt(make_image_folder, cache_dir):
    root = make_image_folder(n_per_class=3)
    first = load_dataset(str(root), cache_dir=cache_dir, storage="stream")
    images = first.train.images[torch.arange(len(first.train))]  # read now: the shard is cut in place below
    (folder,) = cache_dir.glob("*.shards")
    shard = folder / "train-00000.npy"
    shard.write_bytes(shard.read_bytes()[:-10])
    again = load_dataset(str(root), cache_dir=cache_dir, storage="stream")
    assert torch.equal(again.train.images[torch.arange(len(again.train))], images)


# ----------------------------------------------------------------------------------------------
# 8. A diverging run stops at once, keeping its last good checkpoint


def test_a_diverging_run_stops_at_once(run_cli, assert_user_error, make_image_folder, tmp_path):
    proc = run_cli("train", "--data", make_image_folder(n_per_class=8), "--out", tmp_path / "run", "--lr", "1e30",
                   "--epochs", "3", "--batch-size", "8", "--val-fraction", "0.25", "--device", "cpu", "--precision",
                   "fp32", "--cache-dir", tmp_path / "cache", "--quiet")
    line = assert_user_error(proc, "the training loss became", "at step", "lower --lr")
    assert "best val macro-F1" not in proc.stdout, line
    assert not (tmp_path / "run" / "summary.json").exists()


def test_divergence_keeps_the_last_good_checkpoint(tiny_dataset, tiny_data_config, tiny_train_config, tmp_path,
                                                   monkeypatch):
    out = tmp_path / "run"
    cfg = tiny_train_config(epochs=3)
    steps_per_epoch = 3  # 45 training images (60, 25% held out), batches of 16
    calls = {"n": 0, "good": None}
    real_loss = Classification.loss

    def loss(self, out_, y):
        calls["n"] += 1
        value = real_loss(self, out_, y)
        return value * float("nan") if calls["n"] > steps_per_epoch else value  # the second epoch diverges

    def after(epoch: int, row: dict) -> None:
        calls["good"] = hashlib.sha256((out / "checkpoint.pt").read_bytes()).hexdigest()

    monkeypatch.setattr(Classification, "loss", loss)
    # a short run checks every step's loss: the first non-finite step is named
    with pytest.raises(UserError, match=r"the training loss became nan at step 4; lower --lr") as e:
        finetune(tiny_data_config("tiny", tmp_path / "cache"), cfg, "fast", out, dataset=tiny_dataset,
                         device="cpu", quiet=True, on_epoch_end=after)
    assert "checkpoint.pt" in _one_line_error(e)
    assert calls["good"] == hashlib.sha256((out / "checkpoint.pt").read_bytes()).hexdigest()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 0
    assert not (out / "summary.json").exists()

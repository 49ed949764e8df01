"""Safe by default, tried as an adversarial user would: crafted files run no code, a folder has one
writer, the same command gives the same numbers (precision held), refusals leave everything as it
was, and every mistake ends in one line."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image_folder
from PIL import Image

from pretextlab import io as io_mod
from pretextlab.data import DataConfig, load_dataset
from pretextlab.errors import UserError
from pretextlab.finetune import finetune
from pretextlab.runs import OWNER, writer_lock
from pretextlab.study import export_study, run_study


class _Plant:
    """Unpickling this object would create the marker file: a checkpoint that runs code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path: Path, marker: Path, like: Path | None = None) -> Path:
    """A torch file holding a real checkpoint's contents (if `like`) plus an object that runs code."""
    state = torch.load(like, weights_only=True) if like else {"model": {}}
    state["meta" if "meta" not in state else "plant"] = _Plant(marker)
    torch.save(state, path)
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code-ran"


def _smoke(folder: Path, cache: Path, **kw) -> DataConfig:
    return DataConfig(source=str(folder), val_fraction=0.25, cache_dir=str(cache), **kw)


# ----------------------------------------------------------------------------------------------
# No code from a file a user hands in


@pytest.mark.parametrize("entry", ["evaluate", "predict", "train --init"])
def test_a_malicious_checkpoint_runs_no_code_through_the_cli(run_cli_subprocess, assert_user_error, trained_run,
                                                             tmp_path, marker, entry):
    evil = _malicious(tmp_path / "evil.pt", marker, like=trained_run.checkpoint)
    img = tmp_path / "x.png"
    Image.new("RGB", (12, 12)).save(img)
    args = {"evaluate": ["evaluate", "--checkpoint", evil],
            "predict": ["predict", "--checkpoint", evil, img],
            "train --init": ["train", "--data", trained_run.data, "--init", evil, "--out", tmp_path / "run",
                             "--cache-dir", tmp_path / "cache", "--epochs", "1", "--device", "cpu", "--quiet"]}[entry]
    assert_user_error(run_cli_subprocess(*args), "evil.pt", "refused")
    assert not marker.exists()


def test_a_replaced_checkpoint_is_not_resumed_from(tiny_dataset, tiny_data_config, tiny_train_config, tmp_path,
                                                   marker):
    out = tmp_path / "run"
    cfg = tiny_train_config(epochs=2)

    def stop(epoch: int, row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_data_config("tiny", tmp_path / "c"), cfg, "fast", out, dataset=tiny_dataset,
                         device="cpu", quiet=True, on_epoch_end=stop)
    _malicious(out / "checkpoint.pt", marker, like=out / "checkpoint.pt")
    with pytest.raises(UserError, match="refused") as e:
        finetune(tiny_data_config("tiny", tmp_path / "c"), cfg, "fast", out, dataset=tiny_dataset,
                         device="cpu", quiet=True)
    assert "\n" not in str(e.value) and not marker.exists()


def test_a_replaced_dataset_cache_is_rebuilt_not_run(make_image_folder, cache_dir, marker):
    root = make_image_folder(n_per_class=3)
    first = load_dataset(str(root), cache_dir=cache_dir)
    with open(first.cache_file, "wb") as f:
        pickle.dump(_Plant(marker), f)
    again = load_dataset(str(root), cache_dir=cache_dir)
    assert torch.equal(again.train.images, first.train.images) and not marker.exists()


def test_a_crafted_cifar_pickle_is_refused(tmp_path, marker):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["a", "b"]}, f)
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({"data": _Plant(marker), "labels": [0]}, f)
    with pytest.raises(UserError, match="refused"):
        load_dataset(str(root), cache_dir=tmp_path / "cache")
    assert not marker.exists()


def test_a_genuine_cifar_pickle_still_loads(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["a", "b"]}, f)
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8), "labels": [0, 1, 0, 1, 0, 1]}, f)
    ds = load_dataset(str(root), cache_dir=tmp_path / "cache")
    assert ds.train.images.shape == (6, 3, 32, 32) and ds.classes == ["a", "b"]


# ----------------------------------------------------------------------------------------------
# One writer per folder


def test_a_second_writer_is_refused_with_the_holders_pid(run_cli, assert_user_error, make_image_folder, tmp_path):
    out = tmp_path / "run"
    with writer_lock(out):
        assert json.loads((out / OWNER).read_text())["pid"] == os.getpid()
        proc = run_cli("train", "--data", make_image_folder(), "--out", out, "--cache-dir", tmp_path / "cache",
                       "--epochs", "1", "--device", "cpu", "--quiet")
        assert_user_error(proc, str(out), f"pid {os.getpid()}")
        assert sorted(p.name for p in out.iterdir()) == [".lock", ".lock.owner"]  # the refused one wrote nothing
    assert not out.exists()  # made by the lock, left empty: removed again
    with writer_lock(out):  # released on exit: the next writer gets it
        (out / "a.json").write_text("{}")
    assert (out / "a.json").exists() and not (out / OWNER).exists()


def test_stale_temp_files_are_removed_when_a_run_starts(tiny_dataset, tiny_data_config, tiny_train_config, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".checkpoint.pt.k3j2.tmp").write_bytes(b"half a checkpoint")  # left by a kill -9 during a save
    finetune(tiny_data_config("tiny", tmp_path / "c"), tiny_train_config(epochs=1), "fast", out,
                     dataset=tiny_dataset, device="cpu", quiet=True)
    assert not list(out.glob(".*.tmp")) and (out / "summary.json").exists()


# ----------------------------------------------------------------------------------------------
# The same command, the same numbers: precision decided once


def test_a_run_records_its_precision_and_is_held_to_it_on_resume(tiny_dataset, tiny_data_config,
                                                                 tiny_train_config, tmp_path, monkeypatch):
    out = tmp_path / "run"

    def stop(epoch: int, row: dict) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("pretextlab.hw.pick_precision", lambda name, device: "fp32")  # what `auto` measured first
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_data_config("tiny", tmp_path / "c"), tiny_train_config(epochs=2, precision="auto"),
                         "fast", out, dataset=tiny_dataset, device="cpu", quiet=True, on_epoch_end=stop)
    assert json.loads((out / "config.json").read_text())["resolved"]["precision"] == "fp32"
    # another process whose measurement would now say bf16: the run resumes in fp32 all the same
    monkeypatch.setattr("pretextlab.hw.pick_precision", lambda name, device: "bf16")
    with pytest.raises(UserError, match="trained in fp32.*--precision fp32"):
        finetune(tiny_data_config("tiny", tmp_path / "c"), tiny_train_config(epochs=2, precision="bf16"),
                         "fast", out, dataset=tiny_dataset, device="cpu", quiet=True)
    finetune(tiny_data_config("tiny", tmp_path / "c"), tiny_train_config(epochs=2, precision="auto"),
                     "fast", out, dataset=tiny_dataset, device="cpu", quiet=True)
    assert json.loads((out / "config.json").read_text())["resolved"]["precision"] == "fp32"


def test_a_study_decides_its_precision_once_and_a_refused_rerun_leaves_it_untouched(make_image_folder, tmp_path,
                                                                                    monkeypatch):
    folder, out = make_image_folder(n_per_class=8, size=16), tmp_path / "study"
    monkeypatch.setattr("pretextlab.hw.pick_precision", lambda name, device: "fp32")
    run_study(_smoke(folder, tmp_path / "c"), out, fractions=(1.0,), preset="smoke", device="cpu", quiet=True)
    study = (out / "study.json").read_bytes()
    assert json.loads(study)["precision"] == "fp32"
    assert {json.loads((d / "config.json").read_text())["resolved"]["precision"]
            for d in out.iterdir() if (d / "config.json").exists()} == {"fp32"}
    monkeypatch.setattr("pretextlab.hw.pick_precision", lambda name, device: "bf16")  # a flipped measurement
    run_study(_smoke(folder, tmp_path / "c"), out, fractions=(1.0,), preset="smoke", device="cpu", quiet=True)
    assert json.loads((out / "study.json").read_text())["precision"] == "fp32"
    study = (out / "study.json").read_bytes()
    with pytest.raises(UserError, match="study in fp32.*--precision fp32"):
        run_study(_smoke(folder, tmp_path / "c"), out, fractions=(1.0,), preset="smoke", device="cpu", quiet=True,
                  precision="bf16")
    with pytest.raises(UserError, match=r"other settings \(.*preset"):
        run_study(_smoke(folder, tmp_path / "c"), out, fractions=(1.0,), preset="fast", device="cpu", quiet=True)
    assert (out / "study.json").read_bytes() == study


# ----------------------------------------------------------------------------------------------
# export copies the study's own files only


def test_export_refuses_a_link_out_of_the_study_and_a_non_empty_dest(make_image_folder, tmp_path):
    folder, out = make_image_folder(n_per_class=8, size=16), tmp_path / "study"
    run_study(_smoke(folder, tmp_path / "c"), out, fractions=(1.0,), preset="smoke", device="cpu", quiet=True)
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": "hunter2"}')
    (out / "f1-scratch-s0" / "leak.json").symlink_to(secret)
    with pytest.raises(UserError, match="leak.json is a link to .*outside the study"):
        export_study(out, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    (out / "f1-scratch-s0" / "leak.json").unlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / "study.json").write_text("{}")
    with pytest.raises(UserError, match="not empty.*--force"):
        export_study(out, other)
    assert (other / "study.json").read_text() == "{}"
    files, _ = export_study(out, other, force=True)
    assert files > 0 and json.loads((other / "study.json").read_text())["preset"] == "smoke"


# ----------------------------------------------------------------------------------------------
# One line for every mistake


def test_single_class_data(run_cli, assert_user_error, make_image_folder, tmp_path):
    one = make_image_folder("one", classes=("apple",), n_per_class=6)
    proc = run_cli("study", "--data", one, "--preset", "smoke", "--out", tmp_path / "s", "--cache-dir",
                   tmp_path / "cache", "--device", "cpu", "--quiet")
    assert_user_error(proc, "1 class", "at least two")
    assert not (tmp_path / "s").exists()  # refused before pretraining, nothing written


def test_out_that_is_a_file(run_cli, assert_user_error, make_image_folder, tmp_path):
    (tmp_path / "taken").write_text("a file")
    proc = run_cli("train", "--data", make_image_folder(), "--out", tmp_path / "taken", "--cache-dir",
                   tmp_path / "cache", "--epochs", "1", "--device", "cpu", "--quiet")
    assert_user_error(proc, "taken is a file")
    dest = tmp_path / "dest-file"
    dest.write_text("x")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.json").write_text("{}")
    assert_user_error(run_cli("export", tmp_path / "s", dest), "is a file")


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 644544 "
                                                  "vs 644440")])
def test_a_full_disk_says_so_and_which_file(tmp_path, monkeypatch, failure):
    def fail(fd: int) -> None:
        raise failure

    monkeypatch.setattr(io_mod.os, "fsync", fail)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    with pytest.raises(UserError, match=r"cannot write .*checkpoint.pt: the disk is full") as e:
        io_mod.save_torch({"x": torch.zeros(3)}, tmp_path / "checkpoint.pt")
    assert isinstance(e.value, OSError)  # callers that can do without the file (the cache) still go on
    assert not list(tmp_path.iterdir())  # no temp file left behind


def test_a_read_only_out_says_so(run_cli, assert_user_error, make_image_folder, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere: simulate with a folder under a file
        (tmp_path / "ro").write_text("x")
        out = tmp_path / "ro" / "run"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        out = tmp_path / "ro" / "run"
    proc = run_cli("train", "--data", make_image_folder(), "--out", out, "--cache-dir", tmp_path / "cache",
                   "--epochs", "1", "--device", "cpu", "--quiet")
    assert_user_error(proc, "cannot write")


def _bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid PNG whose header declares side x side pixels (400 MPixel): a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_skipped_in_a_folder_and_refused_by_predict(run_cli, assert_user_error,
                                                                            make_image_folder, cache_dir,
                                                                            trained_run, tmp_path):
    root = make_image_folder(n_per_class=4)
    _bomb_png(root / "apple" / "bomb.png")
    ds = load_dataset(str(root), cache_dir=cache_dir)
    assert len(ds.train) == 12 and ds.skipped == 1
    proc = run_cli("predict", "--checkpoint", trained_run.checkpoint, _bomb_png(tmp_path / "bomb.png"))
    assert_user_error(proc, "bomb.png", "decompression bomb")


def test_an_empty_item_in_a_list_is_refused(run_cli, assert_user_error, make_image_folder, tmp_path):
    proc = run_cli("study", "--data", make_image_folder(), "--fractions", "0.1,,0.5", "--out", tmp_path / "s")
    assert_user_error(proc, "--fractions", "0.1,,0.5")


def test_ctrl_c_says_how_to_resume(make_image_folder, tmp_path):
    import signal
    import subprocess
    import time

    env = {**os.environ, "PRETEXTLAB_CACHE": str(tmp_path / "cache")}
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.Popen([sys.executable, "-m", "pretextlab.cli", "train", "--data",
                             str(write_image_folder(tmp_path / "imgs", n_per_class=40, size=32)), "--out",
                             str(tmp_path / "run"), "--epochs", "500", "--batch-size", "8", "--device", "cpu",
                             "--quiet"], stderr=subprocess.PIPE, text=True, env=env,
                            # a test worker may ignore SIGINT, and a child would inherit that: restore the default
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while not (tmp_path / "run" / "metrics.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted; run the same command again to resume" in err


# ----------------------------------------------------------------------------------------------
# No code runs unless the user names it on the command line; no file is written outside --out


def _study_naming(folder: Path, data: Path, backbone: str) -> Path:
    """A finished-looking study folder whose study.json names `backbone` (e.g. a file of someone else's)."""
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps({
        "data": {"source": str(data), "val_fraction": 0.25}, "fractions": [1.0], "seeds": [0], "preset": "smoke",
        "pretexts": ["context"], "backbone": backbone, "pretraining": "per-seed"}))
    (folder / "summary.json").write_text("{}")
    return folder


def test_a_study_folder_handed_over_runs_no_python_file(run_cli, assert_user_error, make_image_folder, tmp_path,
                                                        marker):
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\nfrom torch import nn\nNet = nn.Identity\n")
    data = make_image_folder(n_per_class=4, size=16)
    handed = _study_naming(tmp_path / "handed", data, f"{evil}:Net")
    proc = run_cli("study", "--replicate-of", handed, "--seeds", "1", "--dry-run", "--out", tmp_path / "x",
                   "--device", "cpu", "--cache-dir", tmp_path / "cache")
    assert_user_error(proc, "evil.py:Net", "--backbone", "never runs code a study folder names")
    assert not marker.exists()
    # named on the command line, the user's own file is what runs
    mine = Path(__file__).parent / "fixtures" / "user_backbone.py"
    ok = _study_naming(tmp_path / "mine", data, f"{mine}:TinyNet")
    proc = run_cli("study", "--replicate-of", ok, "--backbone", f"{mine}:TinyNet", "--seeds", "1", "--dry-run",
                   "--out", tmp_path / "y", "--device", "cpu", "--cache-dir", tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr


def _bare_study(folder: Path) -> Path:
    (folder / "f1-scratch-s0").mkdir(parents=True)
    (folder / "study.json").write_text('{"preset": "smoke"}')
    (folder / "report.md").write_text("# report")
    (folder / "f1-scratch-s0" / "metrics.csv").write_text("step,val_loss\n1,0.5\n")
    return folder


def test_export_never_writes_through_a_link_in_dest(tmp_path):
    study = _bare_study(tmp_path / "study")
    outside = tmp_path / "outside.md"
    outside.write_text("mine")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "report.md").symlink_to(outside)
    with pytest.raises(UserError, match="report.md is a link"):
        export_study(study, dest, force=True)
    assert outside.read_text() == "mine"
    (dest / "report.md").unlink()
    (tmp_path / "elsewhere").mkdir()
    (dest / "f1-scratch-s0").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="f1-scratch-s0 is a link"):
        export_study(study, dest, force=True)
    assert not any((tmp_path / "elsewhere").iterdir())


def test_export_refuses_a_hard_link_to_a_file_outside_the_study(tmp_path):
    study = _bare_study(tmp_path / "study")
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": "hunter2"}')
    os.link(secret, study / "f1-scratch-s0" / "notes.json")
    with pytest.raises(UserError, match="notes.json is a hard link"):
        export_study(study, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


# ----------------------------------------------------------------------------------------------
# Nothing a user made is overwritten; data that changed under a run is noticed


def test_train_refuses_an_out_holding_files_it_did_not_write(run_cli, assert_user_error, make_image_folder,
                                                            tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "settings"}')
    (out / "metrics.csv").write_text("a,b\n1,2\n")
    proc = run_cli("train", "--data", make_image_folder(), "--out", out, "--cache-dir", tmp_path / "cache",
                   "--epochs", "1", "--device", "cpu", "--quiet")
    assert_user_error(proc, "holds files pretextlab did not write", "config.json, metrics.csv")
    assert (out / "config.json").read_text() == '{"my": "settings"}' and sorted(os.listdir(out)) == [
        "config.json", "metrics.csv"]


@pytest.mark.parametrize("command", ["train", "study"])
def test_an_out_inside_the_data_is_refused(run_cli, assert_user_error, make_image_folder, tmp_path, command):
    data = make_image_folder()
    proc = run_cli(command, "--data", data, "--out", data / "run1", "--cache-dir", tmp_path / "cache",
                   "--device", "cpu", "--quiet")
    assert_user_error(proc, "is inside --data", "put --out outside the data folder")
    assert not (data / "run1").exists()


def test_a_resumed_run_refuses_images_added_since_it_began(make_image_folder, tiny_data_config, tiny_train_config,
                                                          cache_dir, tmp_path):
    data, out = make_image_folder(n_per_class=8), tmp_path / "run"
    finetune(tiny_data_config(data, cache_dir), tiny_train_config(epochs=2), "fast", out, device="cpu",
                     quiet=True)
    (out / "summary.json").unlink()  # as if stopped after its last checkpoint
    write_image_folder(data, classes=("apple",), n_per_class=12, seed=5)  # four more apples
    indices = (out / "indices.json").read_text()
    with pytest.raises(UserError, match=r"differ from those the run in .* began with \(then 3 classes, 24 images, "
                                        r"now 3 classes, 28 images\)"):
        finetune(tiny_data_config(data, cache_dir), tiny_train_config(epochs=2), "fast", out, device="cpu",
                         quiet=True)
    assert (out / "indices.json").read_text() == indices


def test_a_class_added_under_a_finished_study_is_refused_and_the_study_kept(make_image_folder, tmp_path):
    data, out = make_image_folder(n_per_class=8, size=16), tmp_path / "study"
    run_study(_smoke(data, tmp_path / "c"), out, fractions=(1.0,), preset="smoke", device="cpu", quiet=True)
    before = (out / "study.json").read_bytes()
    write_image_folder(data, classes=("kiwi",), n_per_class=8, size=16)
    with pytest.raises(UserError, match=r"the study in .* began with \(then 3 classes, 24 images, now 4 classes"):
        run_study(_smoke(data, tmp_path / "c"), out, fractions=(1.0,), preset="smoke", device="cpu", quiet=True)
    assert (out / "study.json").read_bytes() == before
    shutil.rmtree(data / "kiwi")  # restored: the study goes on (here: it is finished, nothing to do)
    run_study(_smoke(data, tmp_path / "c"), out, fractions=(1.0,), preset="smoke", device="cpu", quiet=True)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path, cache_dir):
    rng = np.random.default_rng(0)
    for name in ("dark", "light"):
        for kind in ("8bit", "16bit"):
            (tmp_path / kind / name).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            eight = rng.integers(0, 120, (10, 10)) + (120 if name == "light" else 0)
            Image.fromarray(eight.astype(np.uint8)).save(tmp_path / "8bit" / name / f"{i}.png")
            Image.fromarray((eight * 257).astype(np.uint16)).save(tmp_path / "16bit" / name / f"{i}.png")
    assert Image.open(tmp_path / "16bit" / "dark" / "0.png").mode == "I;16"
    eight = load_dataset(str(tmp_path / "8bit"), cache_dir=cache_dir)
    sixteen = load_dataset(str(tmp_path / "16bit"), cache_dir=cache_dir)
    assert torch.equal(eight.train.images, sixteen.train.images)


# ----------------------------------------------------------------------------------------------
# Unknown choices and non-finite values are refused before any work


@pytest.mark.parametrize("args, message", [
    (["--precision", "fp8"], "--precision fp8 is unknown; use auto, fp32, bf16, fp16"),
    (["--lr", "nan"], "--lr nan is not a finite number"),
    (["--lr", "inf"], "--lr inf is not a finite number"),
    (["--momentum", "nan"], "--momentum nan is not a finite number"),
    (["--weight-decay", "nan"], "--weight-decay nan is not a finite number"),
    (["--backbone-lr-scale", "nan"], "--backbone-lr-scale nan is not a finite number"),
    (["--warmup", "2"], "--warmup 2 is the share of the steps spent warming up, in [0, 1)"),
    (["--label-smoothing", "5"], "--label-smoothing 5 must be in [0, 1)"),
    (["--seed", "99999999999999999999999"], "--seed 99999999999999999999999 is out of range"),
    (["--device", "tpu"], "--device tpu is unknown; use auto, cpu or cuda"),
])
def test_train_refuses_bad_values_in_one_line(make_image_folder, tmp_path, args, message):
    from typer.testing import CliRunner

    from pretextlab.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(make_image_folder(n_per_class=4)), "--out", str(out),
                                      "--cache-dir", str(tmp_path / "cache"), "--quiet", *args])
    assert isinstance(result.exception, UserError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["study", "--seeds", "99999999999999999999999"], "--seeds 99999999999999999999999 is out of range"),
    (["study", "--precision", "fp8"], "--precision fp8 is unknown"),
    (["pretrain", "--pretext", "simclr", "--option", "temperature=abc"],
     "--option temperature=abc: pretext 'simclr' takes a number for temperature (default 0.5)"),
    (["pretrain", "--pretext", "rotation", "--option", "spin=2"], "--option spin: pretext 'rotation' has no such"),
])
def test_study_and_pretrain_refuse_bad_values_in_one_line(make_image_folder, tmp_path, args, message):
    from typer.testing import CliRunner

    from pretextlab.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, [*args, "--data", str(make_image_folder(n_per_class=4, size=16)), "--out",
                                      str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet"])
    assert isinstance(result.exception, UserError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists()


def test_many_tiny_classes_say_how_large_validation_became(caplog):
    from pretextlab.data import stratified_split

    stratified_split(torch.arange(500).repeat_interleave(2), 0.1, 0)
    assert "--val-fraction 0.1 holds out 50% of the images" in caplog.text


def test_a_checkpoint_evaluated_from_another_folder_refuses_other_images(tiny_data_config, tiny_train_config,
                                                                         cache_dir, tmp_path, monkeypatch, caplog):
    from pretextlab.finetune import evaluate_checkpoint

    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    write_image_folder(Path("imgs"), n_per_class=8)
    finetune(tiny_data_config("imgs", cache_dir), tiny_train_config(epochs=1), "fast", tmp_path / "run",
                     device="cpu", quiet=True)
    ckpt = str(tmp_path / "run" / "checkpoint.pt")
    assert evaluate_checkpoint(ckpt, None)["accuracy"] >= 0  # where it was trained: the same images
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    write_image_folder(Path("imgs"), n_per_class=9, seed=3)  # a same-named folder of other images
    with pytest.raises(UserError, match=r"differ from those .*checkpoint.pt was trained on at imgs \(then 3 classes, "
                                        r"24 images, now 3 classes, 27 images\)"):
        evaluate_checkpoint(ckpt, None)
    evaluate_checkpoint(ckpt, "imgs")  # named by the user: scored, with a warning
    assert "holds other images than" in caplog.text

"""Shared fixtures: tiny synthetic image folders and datasets, and one tiny trained run.

Everything is small on purpose (8-16 px images, a few dozen of them, 1-3 epochs): the suite runs
next to long training jobs on a 2-core machine, so it uses one thread and never the network, and
all caches and runs live under pytest's tmp dirs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pretextlab.data import Splits, channel_stats
from pretextlab.data.sources import Dataset, ImageSet

# Class k is a solid, clearly distinct colour (plus a little noise): separable at a glance, and
# still separable after random crops and flips.
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 220, 30)]
GRAYS = [30, 130, 230]
# Deliberately not created in sorted order: loading must sort them.
CLASSES = ("zebra", "apple", "mango")
SORTED_CLASSES = sorted(CLASSES)  # ["apple", "mango", "zebra"]


def class_image(k: int, width: int, height: int, rng: np.random.Generator, gray: bool = False) -> np.ndarray:
    """A uint8 HxW(x3) array for class index k."""
    if gray:
        base = np.full((height, width), GRAYS[k % len(GRAYS)], dtype=np.int16)
    else:
        base = np.empty((height, width, 3), dtype=np.int16)
        base[:] = COLOURS[k % len(COLOURS)]
    noise = rng.integers(-20, 21, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_image_folder(root: Path, classes=CLASSES, n_per_class: int = 12, size: int | tuple[int, int] = 12,
                       fmt: str = "png", gray: bool = False, seed: int = 0) -> Path:
    """An ImageFolder layout root/<class>/<i>.<fmt>; class folder `c` gets the colour of its index in
    `sorted(classes)`, so label i of the loaded dataset always means colour i."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    order = sorted(classes)
    w, h = (size, size) if isinstance(size, int) else size
    for c in classes:
        d = root / c
        d.mkdir(exist_ok=True)
        k = order.index(c)
        for i in range(n_per_class):
            Image.fromarray(class_image(k, w, h, rng, gray)).save(d / f"{i:03d}.{fmt}")
    return root


def write_split_root(root: Path, classes=CLASSES, n_train: int = 12, n_test: int = 4, size: int = 12,
                     seed: int = 0) -> Path:
    """root/train/<class>/... and root/test/<class>/..."""
    write_image_folder(root / "train", classes, n_train, size, seed=seed)
    write_image_folder(root / "test", classes, n_test, size, seed=seed + 1)
    return root


def tiny_dataset_tensors(n_per_class: int = 20, size: int = 12, n_classes: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(n_classes):
        for _ in range(n_per_class):
            xs.append(class_image(k, size, size, rng))
            ys.append(k)
    x = torch.as_tensor(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
    return Dataset("tiny", [f"c{k}" for k in range(n_classes)], ImageSet(x, torch.tensor(ys)))


# ----------------------------------------------------------------------------------------------
# Environment: one thread, caches in tmp, cwd in tmp.


# A palette whose colours are not the indices: a loader that used colours would get other labels.
PALETTE = [c for i in range(256) for c in (255 - i, (i * 37) % 256, (i * 91) % 256)]


def scene(rng: np.random.Generator, h: int = 24, w: int = 32, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Dark noise (class 0) with one 8x8 square of class k, in COLOURS[k], for k = 1 .. classes-1."""
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for k in range(1, classes):
        y0, x0 = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
        img[y0:y0 + 8, x0:x0 + 8] = COLOURS[k % len(COLOURS)]
        mask[y0:y0 + 8, x0:x0 + 8] = k
    return img, mask


def save_mask(mask: np.ndarray, path: Path, mode: str = "L") -> None:
    """mask as an 8-bit grayscale (L) or palette (P) PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask)
    if mode == "P":
        im.putpalette(PALETTE)
        assert im.mode == "P"
    im.save(path)


def write_pairs(images: Path, masks: Path, n: int = 4, seed: int = 0, mode: str = "L", **kw) -> list:
    """n scenes as images/<i>.png and masks/<i>.png; returns [(img, mask)] in file order."""
    rng = np.random.default_rng(seed)
    images.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img, mask = scene(rng, **kw)
        Image.fromarray(img).save(images / f"s{i:02d}.png")
        save_mask(mask, masks / f"s{i:02d}.png", mode)
        out.append((img, mask))
    return out


def write_segnet_root(root: Path, n_train: int = 12, n_val: int = 4, h: int = 24, w: int = 32, classes: int = 3,
                      classes_txt: bool = True) -> Path:
    """A SegNet-layout root of generated scenes (train/ + trainannot/, val/ + valannot/), with classes.txt."""
    write_pairs(root / "train", root / "trainannot", n_train, seed=0, h=h, w=w, classes=classes)
    write_pairs(root / "val", root / "valannot", n_val, seed=1, h=h, w=w, classes=classes)
    if classes_txt:
        (root / "classes.txt").write_text("\n".join(["background", *(f"square{k}" for k in range(1, classes))]) + "\n")
    return root


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PRETEXTLAB_THREADS", "1")
    monkeypatch.setenv("PRETEXTLAB_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for CLI subprocesses
    monkeypatch.chdir(tmp_path)  # a forgotten --out lands in tmp, not in the repo
    yield


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_image_folder(tmp_path):
    """Factory: make_image_folder(name, **kw) writes an ImageFolder under tmp_path and returns it."""

    def make(name: str = "imgs", **kw) -> Path:
        return write_image_folder(tmp_path / name, **kw)

    return make


@pytest.fixture
def make_split_root(tmp_path):
    def make(name: str = "root", **kw) -> Path:
        return write_split_root(tmp_path / name, **kw)

    return make


@pytest.fixture
def tiny_dataset() -> Dataset:
    """3 classes x 20 colour images of 12x12, built in memory (no files, no cache)."""
    return tiny_dataset_tensors()


# ----------------------------------------------------------------------------------------------
# Tiny training runs


def _tiny_train_config(**kw):
    from pretextlab.train import TrainConfig

    base = dict(epochs=2, batch_size=16, lr=0.05, precision="fp32", warmup=0.2)
    base.update(kw)
    return TrainConfig(**base)


def _tiny_data_config(source, cache_dir, **kw):
    from pretextlab.finetune import DataConfig

    base = dict(source=str(source), val_fraction=0.25, cache_dir=str(cache_dir))
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture
def tiny_train_config():
    """Factory: a TrainConfig for tiny runs (2 epochs, batch 16, fp32), overridable by keyword."""
    return _tiny_train_config


@pytest.fixture
def tiny_data_config():
    """Factory: tiny_data_config(source, cache_dir, **kw) -> DataConfig with a 25% validation split."""
    return _tiny_data_config


@dataclass
class TrainedRun:
    out: Path  # run folder
    checkpoint: Path
    data: Path  # a root with train/ and test/
    cache_dir: Path
    summary: dict


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """One 'fast' classifier trained for 2 epochs on a 3-class train/test root (shared, read-only)."""
    from pretextlab.finetune import finetune

    base = tmp_path_factory.mktemp("trained")
    data = write_split_root(base / "root", n_train=12, n_test=4)
    cache = base / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRETEXTLAB_THREADS", "1")
        mp.setenv("PRETEXTLAB_CACHE", str(cache))
        torch.manual_seed(0)
        summary = finetune(_tiny_data_config(data, cache), _tiny_train_config(), "fast", base / "run",
                                   device="cpu", quiet=True)
    return TrainedRun(base / "run", base / "run" / "checkpoint.pt", data, cache, summary)


# ----------------------------------------------------------------------------------------------
# The CLI as a user runs it


def _cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """`pretextlab ARGS` through the CLI's main() in this process, with stdout, stderr and the log lines (as
    main configures them: the bare message on stderr) captured: what a user sees, without a torch import per
    call. The suite's few true subprocess checks use run_cli_subprocess."""
    import contextlib
    import io
    import logging

    from pretextlab import cli

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root, level = logging.getLogger(), logging.getLogger().level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    argv, code = sys.argv, 0
    sys.argv = ["pretextlab", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        root.removeHandler(handler)
        root.setLevel(level)
    return subprocess.CompletedProcess(["pretextlab", *map(str, args)], code, out.getvalue(), err.getvalue())


@pytest.fixture
def run_cli():
    """run_cli(*args) -> CompletedProcess of `pretextlab args`, run in this process (see _cli_in_process)."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return _cli_in_process(*args)

    return run


@pytest.fixture
def run_cli_subprocess():
    """run_cli_subprocess(*args) -> CompletedProcess of `python -m pretextlab.cli args` in a new process
    (inherits the test env): the entry point as installed, and anything a process must be alone for."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.pop("PYTHONWARNINGS", None)
        return subprocess.run([sys.executable, "-m", "pretextlab.cli", *map(str, args)], capture_output=True,
                              text=True, env=env, timeout=timeout)

    return run


def _assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, exactly one stderr line 'pretextlab: error: ...', no traceback; returns the line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pretextlab: error: "), lines[0]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture
def assert_user_error():
    """assert_user_error(proc, *fragments): what a user must see for a mistake they can fix."""
    return _assert_user_error


# ----------------------------------------------------------------------------------------------
# Pretext tasks: unlabelled synthetic images, a few training steps, a whole pretraining run


def _splits_of(x: torch.Tensor, n_val: int = 16) -> Splits:
    mean, std = channel_stats(x)
    y = torch.arange(len(x)) % 2
    return Splits(["a", "b"], x, y, x[:n_val], y[:n_val], x, mean, std)


def _gradient_images(n: int, size: int, seed: int = 0, noise: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    base = torch.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // size])
    x = base[None] + torch.randint(-noise, noise + 1, (n, 3, size, size), generator=g)
    return x.clamp(0, 255).to(torch.uint8)


@pytest.fixture
def splits_of():
    """splits_of(x, n_val=16) -> Splits with every image in the pool and the first n_val as validation."""
    return _splits_of


@pytest.fixture
def gradient_images():
    """gradient_images(n, size, seed=0, noise=20) -> uint8 images sharing one orientation (red grows to
    the right, green downwards) plus noise: which way is up is visible, yet no two images are equal."""
    return _gradient_images


def _train_a_little(task, model: torch.nn.Module, steps: int, batch_size: int = 32, lr: float = 3e-3) -> None:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        inp, target = task.batch(torch.randint(0, task.n_train, (batch_size,), generator=g), g)
        loss = task.loss(model(inp), target)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture
def train_a_little():
    """train_a_little(task, model, steps, batch_size=32, lr=3e-3): Adam on random batches of the pool."""
    return _train_a_little


@pytest.fixture
def pretrain_and_finetune(tmp_path, tiny_dataset, tiny_data_config, tiny_train_config):
    """pretrain_and_finetune(task, options) -> pretraining summary, after checking that the run wrote
    backbone.safetensors that fine-tuning loads, and samples the report can draw."""
    from pretextlab.finetune import finetune
    from pretextlab.io import load_json
    from pretextlab.pretext import pretrain
    from pretextlab.report.figures import samples_figure

    def run(task: str, options: dict | None = None, dataset: Dataset | None = None) -> dict:
        ds = dataset or tiny_dataset
        data = tiny_data_config("tiny", tmp_path / "cache")
        out = tmp_path / f"pretrain-{task}"
        summary = pretrain(task, data, tiny_train_config(epochs=1, lr=0.02), "fast", out, options, dataset=ds,
                           device="cpu", quiet=True, knn_images=100)
        assert (out / "backbone.safetensors").exists() and (out / "summary.json").exists()
        assert summary["pretext"] == task and set(summary["knn_accuracy"]) == {"pretrained", "random"}
        assert torch.isfinite(torch.tensor(summary["last"]["val_loss"]))
        assert 0 <= summary["last"].get("train_accuracy", 0) <= 1
        assert load_json(out / "config.json")["options"] == summary["options"]

        samples = torch.load(out / "samples.pt", weights_only=False)
        samples_figure(samples, task, tmp_path / f"samples_{task}.png")
        assert (tmp_path / f"samples_{task}.png").stat().st_size > 1000

        tuned = finetune(data, tiny_train_config(epochs=1), "fast", tmp_path / f"ft-{task}",
                                 init=str(out / "backbone.safetensors"), dataset=ds, device="cpu", quiet=True)
        assert tuned["init"].endswith("backbone.safetensors") and tuned["epochs"] == 1
        return summary

    return run

"""Shared by the pretext task tests: a whole pretraining run on the tiny dataset, handed to fine-tuning."""

from __future__ import annotations

import pytest
import torch

from pretextlab.data import Dataset, Splits, channel_stats


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
    from pretextlab.finetune import train_classifier
    from pretextlab.io import load_json
    from pretextlab.pretext import pretrain
    from pretextlab.report import samples_figure

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

        tuned = train_classifier(data, tiny_train_config(epochs=1), "fast", tmp_path / f"ft-{task}",
                                 init=str(out / "backbone.safetensors"), dataset=ds, device="cpu", quiet=True)
        assert tuned["init"].endswith("backbone.safetensors") and tuned["epochs"] == 1
        return summary

    return run

"""pretextlab.data.shards: memory-mapped uint8 shards, indexed like the tensor they replace, and the
streaming path giving the in-memory path's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import comparable, deterministic

from pretextlab.data import load_dataset, shards
from pretextlab.data.shards import ShardedImages
from pretextlab.data.sources import FolderScan
from pretextlab.errors import UserError
from pretextlab.finetune import finetune
from pretextlab.pretext import pretrain
from pretextlab.runs import read_csv


def _write(folder, x: torch.Tensor, per_shard: int, monkeypatch, read) -> list[str]:
    monkeypatch.setattr(shards, "SHARD_BYTES", per_shard * x[0].numel())
    return shards.write_part(folder, "train", len(x), x[0].numel(), read)


def test_sharded_images_index_like_the_tensor(tmp_path, monkeypatch):
    x = torch.randint(0, 256, (50, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    names = _write(tmp_path, x, 7, monkeypatch, _reader(x, []))
    assert len(names) == 8  # 7 images a shard
    s = ShardedImages([tmp_path / f"{n}.npy" for n in names])
    assert s.shape == x.shape and len(s) == 50 and s.device == torch.device("cpu")

    idx = torch.tensor([49, 0, 7, 7, 13, 6, 21])  # across shards, unsorted, repeated
    assert torch.equal(s[idx], x[idx]) and torch.equal(s[idx.numpy()], x[idx]) and torch.equal(s[3], x[3])
    view = s[10:40]  # slicing is lazy, as for a tensor
    assert isinstance(view, ShardedImages) and view.shape == x[10:40].shape
    assert torch.equal(view[torch.tensor([0, 29, 5])], x[10:40][[0, 29, 5]])
    sub = s.rows(torch.tensor([48, 2, 30]))
    assert torch.equal(sub[torch.tensor([2, 0])], x[[30, 48]])
    assert torch.equal(torch.cat(list(view.split(8))), x[10:40])
    assert [len(c) for c in view.split(8)] == [8, 8, 8, 6]
    assert s.to("cpu")[idx].device == torch.device("cpu")


def _reader(x: torch.Tensor, asked: list[int], fail_from: int | None = None):
    """Rows of x with their row numbers as labels; logs each shard's start, fails from `fail_from` on."""

    def read(a: int, b: int):
        if fail_from is not None and a >= fail_from:
            raise KeyboardInterrupt
        asked.append(a)
        return x[a:b].numpy(), np.arange(a, b)

    return read


def test_interrupted_build_resumes_at_the_first_missing_shard(tmp_path, monkeypatch):
    x = torch.arange(20 * 3, dtype=torch.uint8).view(20, 3, 1, 1)
    asked: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, x, 4, monkeypatch, _reader(x, asked, fail_from=10))
    assert asked == [0, 4, 8] and not shards.is_complete(tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))  # every shard on disk is whole

    asked.clear()
    names = _write(tmp_path, x, 4, monkeypatch, _reader(x, asked))
    assert asked == [12, 16]  # only the shards that were missing
    assert torch.equal(ShardedImages([tmp_path / f"{n}.npy" for n in names])[torch.arange(20)], x)


def test_stream_dataset_equals_memory_dataset(make_split_root, cache_dir, monkeypatch):
    root = make_split_root(n_train=5, n_test=2)
    (root / "train" / "apple" / "broken.png").write_bytes(b"not an image")
    memory = load_dataset(str(root), cache_dir=cache_dir, storage="memory")
    stream = load_dataset(str(root), cache_dir=cache_dir, storage="stream")
    assert (memory.storage, stream.storage) == ("memory", "stream")
    assert stream.cache_file.endswith(".shards") and shards.is_complete(Path(stream.cache_file))
    assert (stream.name, stream.classes, stream.skipped) == (memory.name, memory.classes, memory.skipped) == \
        (root.name, ["apple", "mango", "zebra"], 1)
    for a, b in ((memory.train, stream.train), (memory.test, stream.test)):
        assert torch.equal(b.images[torch.arange(len(b))], a.images) and torch.equal(b.labels, a.labels)

    # A second load reads the shards: nothing is decoded again.
    monkeypatch.setattr(FolderScan, "decode", lambda *a: pytest.fail("decoded again"))
    again = load_dataset(str(root), cache_dir=cache_dir, storage="stream")
    assert torch.equal(again.train.images[torch.arange(15)], memory.train.images)


def test_auto_streams_above_the_threshold_then_keeps_what_is_cached(make_image_folder, cache_dir, monkeypatch):
    root = make_image_folder(n_per_class=3)  # 9 images of 12x12x3 = 3888 bytes
    monkeypatch.setenv("PRETEXTLAB_STREAM_GB", str(3000 / 2**30))
    assert load_dataset(str(root), cache_dir=cache_dir).storage == "stream"
    monkeypatch.delenv("PRETEXTLAB_STREAM_GB")  # now far below the threshold: the shards are still used
    assert load_dataset(str(root), cache_dir=cache_dir).storage == "stream"
    assert load_dataset(str(root), cache_dir=cache_dir, storage="memory").storage == "memory"
    assert load_dataset(str(root), cache_dir=cache_dir).storage == "memory"  # a .pt cache wins
    monkeypatch.setenv("PRETEXTLAB_STREAM_GB", str(5000 / 2**30))
    assert load_dataset(str(make_image_folder("other", n_per_class=3)), cache_dir=cache_dir).storage == "memory"


def test_storage_mistakes_are_user_errors(make_image_folder, cache_dir, monkeypatch):
    root = make_image_folder(n_per_class=2)
    with pytest.raises(UserError, match="--storage disk is unknown"):
        load_dataset(str(root), cache_dir=cache_dir, storage="disk")
    monkeypatch.setenv("PRETEXTLAB_STREAM_GB", "lots")
    with pytest.raises(UserError, match="PRETEXTLAB_STREAM_GB=lots"):
        load_dataset(str(root), cache_dir=cache_dir)


def test_streaming_gives_the_in_memory_metrics(make_split_root, tiny_data_config, tiny_train_config, tmp_path):
    root = make_split_root(n_train=12, n_test=3)
    cfg = tiny_train_config(epochs=2)
    runs = {}
    for storage in ("memory", "stream"):
        dcfg = tiny_data_config(root, tmp_path / "cache", storage=storage)
        out = tmp_path / storage
        torch.manual_seed(0)
        pre = pretrain("context", dcfg, cfg, "fast", out / "pre", device="cpu", quiet=True, knn_images=20)
        torch.manual_seed(0)
        fine = finetune(dcfg, cfg, "fast", out / "run", init=str(out / "pre" / "backbone.safetensors"),
                                device="cpu", quiet=True)
        config = json.loads((out / "run" / "config.json").read_text())
        assert config["resolved"]["storage"] == storage and "storage" not in config["data"]
        runs[storage] = (pre, fine, [deterministic(read_csv(out / r / "metrics.csv")) for r in ("pre", "run")])
    (pre_m, fine_m, rows_m), (pre_s, fine_s, rows_s) = runs["memory"], runs["stream"]
    assert rows_s == rows_m
    fine_s["init"] = fine_m["init"]  # the one difference: where each arm's pretrained weights are
    assert comparable(fine_s) == comparable(fine_m) and "test" in fine_s
    assert pre_s["knn_accuracy"] == pre_m["knn_accuracy"] and pre_s["best"] == pre_m["best"]

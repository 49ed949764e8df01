"""pretextlab.dist: data-parallel pretraining and fine-tuning under `torchrun --nproc_per_node 2` (gloo, CPU).

One torchrun job (tests/dist_worker.py) runs a pretraining, a fine-tuning and an interrupted then
resumed fine-tuning on a tiny image folder; the tests below check what it left behind against
single-process evaluations of the same checkpoints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_image_folder
from dist_worker import RUNS, rebuilt_task, scored_in_evaluation
from test_train import comparable, deterministic

from pretextlab import dist
from pretextlab.data import DataConfig
from pretextlab.errors import UserError
from pretextlab.finetune import evaluate_checkpoint, finetune
from pretextlab.runs import read_csv
from pretextlab.train import TrainConfig

WORKER = Path(__file__).with_name("dist_worker.py")
N_POOL = 36  # 3 classes x 16 images, a quarter held out: 3 batches of 12 per epoch, 6 per rank
N_VAL = 12


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    """The output folder of one finished 2-process torchrun job."""
    out = tmp_path_factory.mktemp("dist")
    data = write_image_folder(out / "imgs", n_per_class=16, size=12)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PRETEXTLAB_THREADS": "1", "PRETEXTLAB_CACHE": str(out / "cache"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(WORKER), str(data), str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"torchrun exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return out


def _config(out: Path, run: str) -> dict:
    return json.loads((out / run / "config.json").read_text())


@pytest.mark.parametrize("run, n", [("pretrain", N_POOL), ("finetune", N_POOL)])
def test_ranks_see_disjoint_shards_covering_the_data(job, run, n):
    seen = [json.loads((job / f"seen-rank{r}.json").read_text())[run] for r in (0, 1)]
    steps = _config(job, run)["resolved"]["steps_per_epoch"]
    assert steps == 3 and len(seen[0]) == len(seen[1]) == 2 * steps  # 2 epochs, every step on both ranks
    for epoch in range(2):
        parts = [[i for batch in s[epoch * steps:(epoch + 1) * steps] for i in batch] for s in seen]
        assert all(len(batch) == 6 for s in seen for batch in s)  # the global batch of 12, halved
        assert not set(parts[0]) & set(parts[1])
        assert sorted(parts[0] + parts[1]) == list(range(n))


def test_finetune_metrics_equal_a_single_process_evaluation(job):
    last = read_csv(job / "finetune" / "metrics.csv")[-1]
    single = evaluate_checkpoint(str(job / "finetune" / "checkpoint.pt"), None, "val")
    final = json.loads((job / "finetune" / "summary.json").read_text())["final"]
    assert single["n"] == final["n"] == N_VAL
    for k in ("f1_macro", "precision_macro", "recall_macro", "accuracy", "loss"):
        assert last[f"val_{k}"] == pytest.approx(single[k], rel=1e-5, abs=1e-6), k
        assert final[k] == pytest.approx(single[k], rel=1e-5, abs=1e-6), k


@pytest.mark.parametrize("task_name, run", list(RUNS.items()))
def test_pretrain_metrics_equal_a_single_process_evaluation(job, task_name, run):
    """Each rank scored only its share of the held-out examples; combined, they equal one process scoring all."""
    task, model = rebuilt_task(job / run, task_name)
    model.load_state_dict(torch.load(job / run / "checkpoint.pt", weights_only=False)["model"])
    single = task.evaluate(model)
    last = read_csv(job / run / "metrics.csv")[-1]
    assert set(single) >= {"loss"} and all(f"val_{k}" in last for k in single)
    for k, v in single.items():  # a loss averaged over 12 images: not matched by chance
        assert last[f"val_{k}"] == pytest.approx(v, rel=1e-5, abs=1e-6), k


def test_each_rank_evaluates_only_its_share(job):
    """Held-out pretext evaluation is split over the ranks, not repeated on each."""
    ranks = [json.loads((job / f"seen-rank{r}.json").read_text())["scored"] for r in (0, 1)]
    single = scored_in_evaluation(job)
    for task_name, n in single.items():
        assert ranks[0][task_name] + ranks[1][task_name] == n and 0 < ranks[0][task_name] < n, task_name


def test_only_rank_0_wrote_one_set_of_files(job):
    expected = {
        "pretrain": {"backbone.safetensors", "checkpoint.pt", "config.json", "metrics.csv", "samples.pt",
                     "summary.json", "tb", ".lock", "steps.csv"},
        "finetune": {"checkpoint.pt", "config.json", "examples.pt", "indices.json", "metrics.csv", "summary.json",
                     "tb", ".lock", "steps.csv"},
    }
    for run, files in expected.items():
        assert {p.name for p in (job / run).iterdir()} == files, run
        assert len(list((job / run / "tb").iterdir())) == 1  # one TensorBoard writer, not one per rank
        assert len(read_csv(job / run / "metrics.csv")) == 2
        resolved = _config(job, run)["resolved"]
        assert resolved["world_size"] == 2 and resolved["batch_size"] == 12 and resolved["storage"] == "memory"
        assert torch.load(job / run / "checkpoint.pt", weights_only=False)["world_size"] == 2


def test_resumed_run_equals_the_uninterrupted_one(job):
    assert len(read_csv(job / "interrupted" / "metrics.csv")) == 1
    assert deterministic(read_csv(job / "resumed" / "metrics.csv")) == \
        deterministic(read_csv(job / "finetune" / "metrics.csv"))
    a, b = (json.loads((job / run / "summary.json").read_text()) for run in ("finetune", "resumed"))
    a["run"] = b["run"]
    assert comparable(a) == comparable(b)


def test_resume_with_another_world_size_is_user_error(job):
    config = _config(job, "interrupted")
    data = DataConfig(**config["data"])
    cfg = TrainConfig(**config["train"])
    with pytest.raises(UserError, match="trained by 2 process"):
        finetune(data, cfg, "fast", job / "interrupted", init=config["init"], device="cpu", quiet=True)


# ----------------------------------------------------------------------------------------------
# The arithmetic of sharding, for world sizes this machine cannot run


def _pretend(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(dist, "rank", lambda: rank)
    monkeypatch.setattr(dist, "world_size", lambda: world)


def test_uneven_batch_is_rounded_down_to_whole_rank_batches(monkeypatch, caplog):
    _pretend(monkeypatch, 0, 3)
    assert dist.global_batch(255) == 255
    assert dist.global_batch(256) == 255 and "85 per process" in caplog.text
    with pytest.raises(UserError, match="cannot be split over 3"):
        dist.global_batch(2)


def test_shards_of_three_ranks(monkeypatch):
    order = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    parts, seeds = [], set()
    for r in range(3):
        _pretend(monkeypatch, r, 3)
        mine, per, g = dist.shard(order, 2, 12, torch.Generator().manual_seed(5))
        assert per == 4 and len(mine) == 8
        assert mine[:4].tolist() == order[4 * r:4 * r + 4].tolist()  # its third of the first global batch
        parts.append(mine.tolist())
        seeds.add(g.initial_seed())
        assert dist.shard_slice(10) == slice(10 * r // 3, 10 * (r + 1) // 3)
    assert sorted(sum(parts, [])) == list(range(24))
    assert len(seeds) == 3 and 5 in seeds  # rank 0 keeps the epoch's stream, the others get their own


def test_backend_choice_and_mistakes(monkeypatch):
    cpu = torch.device("cpu")
    assert dist.backend(cpu) == "gloo"
    monkeypatch.setenv("PRETEXTLAB_DIST_BACKEND", "nccl")
    with pytest.raises(UserError, match="nccl needs CUDA"):
        dist.backend(cpu)
    monkeypatch.setenv("PRETEXTLAB_DIST_BACKEND", "mpi")
    with pytest.raises(UserError, match="unknown"):
        dist.backend(cpu)


def test_without_torchrun_nothing_changes(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.init(torch.device("cpu")) == torch.device("cpu") and dist.world_size() == 1 and dist.is_main()
    t = torch.arange(5.0)
    assert dist.all_sum(t) is t and dist.mean(torch.tensor(0.25), 4) == (0.25, 4)
    assert dist.gather_rows(t, slice(0, 5), torch.tensor([4, 1])).tolist() == [4.0, 1.0]

"""pretextlab.train: the schedule, the training loop's outputs, and exact resumption."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pretextlab.errors import UserError
from pretextlab.finetune import finetune
from pretextlab.runs import read_csv, settings_diff
from pretextlab.train import (
    TrainConfig,
    best_index,
    epoch_order,
    eval_steps,
    lr_factor,
    plateaued,
    stable_end,
    train_settings,
)

TIMING = {"images_per_s", "epoch_time_s", "wall_time_s", "train_time_s"}  # wall-clock columns: never reproducible


def deterministic(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def comparable(summary: dict) -> dict:
    s = {k: v for k, v in summary.items() if k not in ("wall_time_s", "process_time_s")}
    s["last"] = {k: v for k, v in s["last"].items() if k not in TIMING}
    return s


# ----------------------------------------------------------------------------------------------
# Schedule


def test_lr_onecycle():
    total = 100
    f = [lr_factor(s, total, "onecycle", 0.2) for s in range(total + 1)]
    warm = f[:20]
    assert all(a < b for a, b in zip(warm, warm[1:]))  # warm-up rises...
    assert warm[0] == pytest.approx(1 / 20) and f[19] == pytest.approx(1.0)  # ...to the peak
    decay = f[20:]
    assert decay[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(decay, decay[1:]))  # then falls linearly
    steps = [a - b for a, b in zip(decay, decay[1:])]
    assert max(steps) == pytest.approx(min(steps)) == pytest.approx(1 / 80)
    assert f[60] == pytest.approx(0.5)
    assert f[total - 1] == pytest.approx(1 / 80)  # the last step is near 0
    assert f[total] == pytest.approx(0.0)  # the value after the final scheduler step


def test_lr_cosine():
    total = 100
    f = [lr_factor(s, total, "cosine", 0.1) for s in range(total + 1)]
    assert all(a < b for a, b in zip(f[:10], f[1:10]))
    assert f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    tail = f[10:]
    assert all(a >= b for a, b in zip(tail, tail[1:]))
    assert f[55] == pytest.approx(0.5)  # half-way through the decay
    assert f[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 90)))
    assert f[total - 1] < 0.001 and f[total] == pytest.approx(0.0)


def test_lr_constant_and_no_warmup():
    assert [lr_factor(s, 10, "constant", 0.5) for s in range(10)] == [0.2, 0.4, 0.6, 0.8, 1.0] + [1.0] * 5
    assert lr_factor(0, 10, "onecycle", 0.0) == 1.0
    assert lr_factor(5, 10, "onecycle", 0.0) == pytest.approx(0.5)


@pytest.mark.parametrize("kw, word", [({"optimizer": "lion"}, "--optimizer"), ({"schedule": "step"}, "--schedule"),
                                      ({"epochs": 0}, "--epochs"), ({"batch_size": 1}, "--batch-size"),
                                      ({"lr": 0.0}, "--lr")])
def test_train_config_validation(kw, word):
    with pytest.raises(UserError, match=word):
        TrainConfig(**kw)


def test_epoch_order_pads_to_whole_batches():
    g = torch.Generator().manual_seed(0)
    order, steps, bs = epoch_order(10, 4, g)
    assert (steps, bs) == (3, 4) and len(order) == 12
    assert sorted(order[:10].tolist()) == list(range(10))  # a permutation, then wrapped
    assert order[10:].tolist() == order[:2].tolist()
    assert epoch_order(5, 256, g)[1:] == (1, 5)  # batch larger than the data: one batch of all


# ----------------------------------------------------------------------------------------------
# A run


def test_short_run_learns_and_writes_its_files(tiny_dataset, tiny_train_config, tiny_data_config, tmp_path):
    out = tmp_path / "run"
    torch.manual_seed(0)
    summary = finetune(tiny_data_config("tiny", tmp_path / "cache"), tiny_train_config(epochs=3), "fast",
                               out, dataset=tiny_dataset, device="cpu", quiet=True)

    rows = read_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["train_loss"] < 0.8 * rows[0]["train_loss"]
    assert rows[-1]["train_accuracy"] >= rows[0]["train_accuracy"]
    for r in rows:
        assert {"train_loss", "train_accuracy", "val_loss", "val_f1_macro", "val_accuracy", "val_precision_macro",
                "val_recall_macro", "lr", "images_per_s", "wall_time_s"} <= set(r)
        assert 0 <= r["val_f1_macro"] <= 1
    assert rows[-1]["lr"] == pytest.approx(0.0)  # onecycle ends at 0

    config = json.loads((out / "config.json").read_text())
    assert config["backbone"] == "fast" and config["kind"] == "finetune"
    assert config["train"]["epochs"] == 3 and config["train"]["batch_size"] == 16
    assert config["n_train"] == 45 and config["n_val"] == 15
    assert config["resolved"]["steps_per_epoch"] == 3 and config["resolved"]["precision"] == "fp32"

    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())

    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 3
    assert ckpt["meta"]["classes"] == ["c0", "c1", "c2"] and ckpt["meta"]["kind"] == "classifier"
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())  # atomic writes leave nothing behind

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["epochs"] == 3 and on_disk["n_train"] == 45
    assert on_disk["best"]["f1_macro"]["value"] == max(r["val_f1_macro"] for r in rows)
    assert on_disk["best"]["loss"]["value"] == min(r["val_loss"] for r in rows)
    assert on_disk["last"]["val_loss"] == pytest.approx(rows[-1]["val_loss"])
    assert sum(map(sum, on_disk["confusion_val"])) == 15
    assert summary["final"]["n"] == 15 and "test" not in summary

    # a finished run is returned, not retrained
    assert finetune(tiny_data_config("tiny", tmp_path / "cache"), tiny_train_config(epochs=3), "fast", out,
                            dataset=tiny_dataset, device="cpu", quiet=True)["best"] == on_disk["best"]
    assert len(read_csv(out / "metrics.csv")) == 3


def _run(ds, tdc, ttc, out, global_seed: int | None, ema: float = 0.0, **kw):
    if global_seed is not None:
        torch.manual_seed(global_seed)
    return finetune(tdc("tiny", out.parent / "cache"), ttc(epochs=3, ema=ema), "fast", out, dataset=ds,
                            device="cpu", quiet=True, **kw)


def _stop_after_first_epoch(epoch: int, row: dict) -> None:
    if epoch == 0:
        raise KeyboardInterrupt


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_gives_the_uninterrupted_run(tiny_dataset, tiny_train_config, tiny_data_config, tmp_path, ema):
    # The global RNG is pinned before each call because finetune builds the model before
    # fit() seeds torch (see test_same_seed_gives_same_run): this test isolates resumption.
    a = _run(tiny_dataset, tiny_data_config, tiny_train_config, tmp_path / "A" / "run", global_seed=11, ema=ema)

    out_b = tmp_path / "B" / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_dataset, tiny_data_config, tiny_train_config, out_b, global_seed=11, ema=ema,
             on_epoch_end=_stop_after_first_epoch)
    assert len(read_csv(out_b / "metrics.csv")) == 1
    assert torch.load(out_b / "checkpoint.pt", weights_only=False)["epoch"] == 0
    assert not (out_b / "summary.json").exists()

    # the resumed process's global RNG is elsewhere: the checkpoint must carry everything
    b = _run(tiny_dataset, tiny_data_config, tiny_train_config, out_b, global_seed=999, ema=ema)

    rows_a, rows_b = read_csv(tmp_path / "A" / "run" / "metrics.csv"), read_csv(out_b / "metrics.csv")
    assert len(rows_b) == 3
    assert deterministic(rows_b) == deterministic(rows_a)  # bit-identical numbers
    assert rows_b[-1]["wall_time_s"] >= rows_b[0]["wall_time_s"]
    assert comparable(b) == comparable(a)
    assert torch.equal(torch.load(tmp_path / "A" / "run" / "examples.pt"), torch.load(out_b / "examples.pt"))


def test_weight_average_is_what_is_scored_and_kept(make_image_folder, tiny_train_config, tiny_data_config,
                                                    tmp_path):
    """With --ema every evaluation scores the averaged weights, and the checkpoint holds them (so evaluate
    gives the run's last numbers) beside the last step's weights that training resumes from."""
    from pretextlab.finetune import evaluate_checkpoint

    data = tiny_data_config(make_image_folder(size=12), tmp_path / "cache")
    rows = {}
    for ema in (0.0, 0.9):
        torch.manual_seed(11)
        finetune(data, tiny_train_config(epochs=3, ema=ema), "fast", tmp_path / str(ema), device="cpu",
                         quiet=True)
        rows[ema] = read_csv(tmp_path / str(ema) / "metrics.csv")
    assert [r["train_loss"] for r in rows[0.9]] == [r["train_loss"] for r in rows[0.0]]  # the same training...
    assert [r["val_loss"] for r in rows[0.9]] != [r["val_loss"] for r in rows[0.0]]  # ...scored on other weights
    checkpoint = tmp_path / "0.9" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=False)
    assert state["ema_steps"] == rows[0.9][-1]["step"]
    assert any(not torch.equal(state["model"][k], state["training_model"][k]) for k in state["model"])
    m = evaluate_checkpoint(str(checkpoint), None, "val")
    assert m["loss"] == pytest.approx(rows[0.9][-1]["val_loss"], abs=1e-5)
    with pytest.raises(UserError, match="--ema"):
        TrainConfig(ema=1.0)


def test_same_seed_gives_same_run(tiny_dataset, tiny_train_config, tiny_data_config, tmp_path):
    torch.manual_seed(1)
    a = _run(tiny_dataset, tiny_data_config, tiny_train_config, tmp_path / "A" / "run", global_seed=None)
    b = _run(tiny_dataset, tiny_data_config, tiny_train_config, tmp_path / "B" / "run", global_seed=None)
    assert deterministic(read_csv(tmp_path / "A" / "run" / "metrics.csv")) == \
        deterministic(read_csv(tmp_path / "B" / "run" / "metrics.csv"))
    assert comparable(a) == comparable(b)


@pytest.mark.parametrize("change", [{"train": {"lr": 0.1}}, {"train": {"epochs": 4}}, {"data": {"fraction": 0.5}},
                                    {"backbone": "fast-wide"}])
def test_resume_with_other_settings_is_user_error(tiny_dataset, tiny_train_config, tiny_data_config, tmp_path,
                                                  change):
    out = tmp_path / "run"
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_data_config("tiny", cache), tiny_train_config(epochs=3), "fast", out,
                         dataset=tiny_dataset, device="cpu", quiet=True, on_epoch_end=_stop_after_first_epoch)
    before = (out / "metrics.csv").read_text()
    with pytest.raises(UserError, match="other settings"):
        finetune(tiny_data_config("tiny", cache, **change.get("data", {})),
                         tiny_train_config(**{"epochs": 3, **change.get("train", {})}), change.get("backbone", "fast"),
                         out, dataset=tiny_dataset, device="cpu", quiet=True)
    assert (out / "metrics.csv").read_text() == before  # the interrupted run is left as it was


def test_finished_run_with_other_settings_is_user_error(tiny_dataset, tiny_train_config, tiny_data_config, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    finetune(tiny_data_config("tiny", cache), tiny_train_config(epochs=1), "fast", out,
                     dataset=tiny_dataset, device="cpu", quiet=True)
    with pytest.raises(UserError, match="other settings"):
        finetune(tiny_data_config("tiny", cache), tiny_train_config(epochs=2), "fast", out,
                         dataset=tiny_dataset, device="cpu", quiet=True)


def test_settings_diff_follows_a_moved_study_folder(tmp_path):
    old = {"init": "studies/a/pretrain-rotation/backbone.safetensors", "train": {"epochs": 4}}
    run = tmp_path / "b" / "f1-rotation-s0"  # the run's folder, now in study b
    own = {**old, "init": str(tmp_path / "b" / "pretrain-rotation" / "backbone.safetensors")}
    assert settings_diff(old, own, run) == []  # study b's own backbone, named under the old --out
    assert settings_diff(old, {**own, "train": {"epochs": 5}}, run) == ["train.epochs"]
    for other in (tmp_path / "c" / "pretrain-rotation" / "backbone.safetensors",  # another study's backbone
                  tmp_path / "b" / "pretrain-simclr" / "backbone.safetensors",  # another task's
                  tmp_path / "runs" / "x" / "backbone.safetensors"):
        assert settings_diff(old, {**old, "init": str(other)}, run) == ["init"], other


# ----------------------------------------------------------------------------------------------
# Fine evaluation grid and the plateau schedule


def test_eval_steps_are_evenly_spaced_and_include_every_epoch_end():
    assert eval_steps(12, 4, 0) == [4, 8, 12]  # one per epoch
    assert eval_steps(40, 10, 8) == [5, 10, 15, 20, 25, 30, 35, 40]  # two per epoch: at least 8
    assert len(eval_steps(234, 18, 24)) == 26  # 13 epochs (the fast preset at 10%): two per epoch
    assert len(eval_steps(704, 176, 24)) == 24  # 4 epochs (at 100%): six per epoch
    assert eval_steps(3, 1, 20) == [1, 2, 3]  # never more evaluations than steps


@pytest.mark.parametrize("curve, patience, stops", [
    ([0.1, 0.2, 0.3, 0.4], 2, False),  # still rising
    ([0.1, 0.5, 0.5, 0.5], 2, True),  # flat for two evaluations after its best
    ([0.1, 0.5, 0.5004, 0.5008], 2, True),  # creeping up by less than MIN_DELTA counts as flat
    ([0.1, 0.5, 0.4, 0.6], 2, False),  # a new best resets the count
    ([0.5, 0.4, 0.3], 2, True),  # falling: the best was the first
])
def test_plateau_rule_on_hand_made_curves(curve, patience, stops):
    history = [{"val_f1_macro": v} for v in curve]
    assert plateaued(history, ("f1_macro", "max"), patience) == stops
    assert plateaued([{"val_loss": -v} for v in curve], ("loss", "min"), patience) == stops


def test_fine_evaluations_log_every_interval_and_resume_exactly(tiny_dataset, tiny_train_config, tiny_data_config,
                                                               tmp_path):
    cfg = tiny_train_config(epochs=3, evals=7)
    a = tmp_path / "A" / "run"
    torch.manual_seed(3)
    finetune(tiny_data_config("tiny", tmp_path / "c"), cfg, "fast", a, dataset=tiny_dataset, device="cpu",
                     quiet=True)
    rows = read_csv(a / "metrics.csv")
    steps = json.loads((a / "config.json").read_text())["resolved"]["steps_per_epoch"]
    assert [int(r["step"]) for r in rows] == eval_steps(3 * steps, steps, 7) and len(rows) > 3
    assert all("val_f1_macro" in r and "train_loss" in r for r in rows)
    assert [r["images_seen"] for r in rows] == sorted(r["images_seen"] for r in rows)
    b = tmp_path / "B" / "run"
    torch.manual_seed(3)
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_data_config("tiny", tmp_path / "c"), cfg, "fast", b, dataset=tiny_dataset,
                         device="cpu", quiet=True, on_epoch_end=_stop_after_first_epoch)
    torch.manual_seed(999)
    finetune(tiny_data_config("tiny", tmp_path / "c"), cfg, "fast", b, dataset=tiny_dataset, device="cpu",
                     quiet=True)
    assert deterministic(read_csv(b / "metrics.csv")) == deterministic(rows)
    assert read_csv(b / "steps.csv") == read_csv(a / "steps.csv")


def test_plateau_schedule_stops_early_at_a_constant_rate(tiny_dataset, tiny_train_config, tiny_data_config,
                                                        tmp_path):
    cfg = tiny_train_config(epochs=40, schedule="plateau", patience=2, warmup=0.0, lr=0.05)
    out = tmp_path / "run"
    torch.manual_seed(0)
    s = finetune(tiny_data_config("tiny", tmp_path / "c"), cfg, "fast", out, dataset=tiny_dataset,
                         device="cpu", quiet=True)
    rows = read_csv(out / "metrics.csv")
    assert len(rows) < 40 and s["epochs"] == len(rows)  # stopped before the maximum budget
    assert s["stopped_early"] and s["steps"] == int(rows[-1]["step"]) < s["planned_steps"]
    assert plateaued(rows, ("f1_macro", "max"), 2) and not plateaued(rows[:-1], ("f1_macro", "max"), 2)
    assert {r["lr"] for r in rows} == {0.05}  # constant
    assert torch.load(out / "checkpoint.pt", weights_only=True)["stopped"]
    best = rows[best_index(rows, ("f1_macro", "max"))]
    assert best is not rows[-1] and s["kept"] == "best"  # early stopping keeps the best evaluation's weights:
    assert s["final"]["f1_macro"] == pytest.approx(float(best["val_f1_macro"]), abs=1e-6)  # the final model is it
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # evaluate and predict load the kept weights
    assert all(torch.equal(v, state["best_model"][k]) for k, v in state["model"].items())
    again = finetune(tiny_data_config("tiny", tmp_path / "c"), cfg, "fast", out, dataset=tiny_dataset,
                             device="cpu", quiet=True)
    assert again["epochs"] == s["epochs"]  # finished: not trained further


def test_wsd_warms_up_holds_then_falls_to_zero_over_its_cooldown():
    """Warm-up, stable, decay (Hagele et al. 2024): a plateau can be read in the stable phase."""
    f = [lr_factor(s, 20, "wsd", 0.2, 0.25) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and set(f[4:15]) == {1.0}  # the stable phase ends at step 15
    assert f[15:] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])  # linear to zero over the last 25%
    assert stable_end(20, "wsd", 0.25) == 15 and stable_end(20, "onecycle", 0.25) == 20
    with pytest.raises(UserError, match="--cooldown"):
        TrainConfig(schedule="wsd", warmup=0.5, cooldown=0.6)
    assert "cooldown" not in train_settings(TrainConfig(schedule="wsd"))  # the default: older configs compare equal


def test_an_interrupted_plateau_run_resumes_to_the_same_kept_model(tiny_dataset, tiny_train_config,
                                                                   tiny_data_config, tmp_path):
    """Early stopping's best weights travel in the checkpoint: a resumed run keeps the same best model."""
    cfg = tiny_train_config(epochs=12, schedule="plateau", patience=3, warmup=0.0, lr=0.05)

    def run(out, **kw):
        torch.manual_seed(5)
        return finetune(tiny_data_config("tiny", tmp_path / "c"), cfg, "fast", out, dataset=tiny_dataset,
                        device="cpu", quiet=True, **kw)

    a = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", on_epoch_end=_stop_after_first_epoch)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["best_model"] is not None
    b = run(tmp_path / "b")
    assert b["final"] == a["final"] and b["steps"] == a["steps"] and b["kept"] == "best"
    assert deterministic(read_csv(tmp_path / "b" / "metrics.csv")) == deterministic(read_csv(tmp_path / "a" /
                                                                                             "metrics.csv"))


def test_plateau_needs_patience_and_patience_needs_plateau():
    with pytest.raises(UserError, match="--schedule plateau needs --patience"):
        TrainConfig(schedule="plateau")
    with pytest.raises(UserError, match="--schedule plateau needs --patience"):
        TrainConfig(patience=3)


def test_fields_added_later_stay_out_of_old_configs():
    """Runs stored before `evals` and `patience` existed still compare equal under their default."""
    assert "evals" not in train_settings(TrainConfig()) and "patience" not in train_settings(TrainConfig())
    assert train_settings(TrainConfig(evals=24))["evals"] == 24

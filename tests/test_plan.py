"""pretextlab.study.plan: the plan and ETA a study prints before it starts, and how close the ETA comes."""

from __future__ import annotations

import json

from pretextlab.data import DataConfig
from pretextlab.study import plan, run_study


def test_dry_run_prints_the_plan_and_writes_nothing(run_cli, make_image_folder, tmp_path):
    proc = run_cli("study", "--data", make_image_folder(n_per_class=8, size=16), "--preset", "smoke", "--seeds", "0,1",
                   "--pretext", "context,rotation", "--out", tmp_path / "s", "--cache-dir", tmp_path / "c",
                   "--device", "cpu", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "plan: 4 pretraining(s), 6 probe stage(s), 18 fine-tuning run(s); 0 of 28 stages already finished" \
        in proc.stderr
    assert "estimated time left on this machine:" in proc.stderr and "training images/s for fast" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_a_smoke_study_takes_within_a_factor_of_two_of_its_estimate(make_image_folder, cache_dir, tmp_path):
    folder = make_image_folder(n_per_class=24, size=32)
    out = run_study(DataConfig(source=str(folder), val_fraction=0.25, cache_dir=str(cache_dir)), tmp_path / "s",
                    fractions=(1.0, 0.5), preset="smoke", device="cpu", quiet=True, epochs=3)
    study = json.loads((out / "study.json").read_text())
    estimate, actual = study["estimate"]["estimated_s"], study["total_time_s"]
    assert study["overrides"] == {"epochs": 3} and study["train"]["epochs"] == 3
    assert actual / 2 <= estimate <= actual * 2, (estimate, actual)
    # resumed when finished: nothing left, and the first estimate is kept
    run_study(DataConfig(source=str(folder), val_fraction=0.25, cache_dir=str(cache_dir)), out, fractions=(1.0, 0.5),
              preset="smoke", device="cpu", quiet=True, epochs=3)
    assert json.loads((out / "study.json").read_text())["estimate"] == study["estimate"]


def test_work_grows_with_what_a_stage_does():
    from pretextlab.pretext import TASKS

    def work(task: str, epochs: int, **options) -> float:
        return plan.pretrain_work(TASKS[task][0].work_per_image(options), epochs, 1000, 100)

    assert work("simclr", 1) > work("context", 1)
    assert work("rotation", 2, all_rotations=True) > work("rotation", 2, all_rotations=False)
    assert plan.finetune_work(10, 500, 24, 100, 0) > plan.finetune_work(5, 500, 24, 100, 0)
    stages = [plan.Stage("a", "pretrain", 1000, False), plan.Stage("b", "finetune", 3000, True)]
    assert plan.estimate_s(stages, 100.0) == 10 + plan.STAGE_OVERHEAD_S  # done stages cost nothing
    assert plan.duration(3725) == "1 h 02 min" and plan.duration(75) == "1 min 15 s"

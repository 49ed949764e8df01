"""A pretext task and a downstream task registered from this file alone (no edit anywhere else) run a
smoke study and its report: the study, plan, CLI-facing checks, driver and report take tasks from the
registries, and name none."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretextlab import pretext, tasks
from pretextlab.data import DataConfig, Splits
from pretextlab.data.augment import normalize, take
from pretextlab.models import Classifier, evaluating
from pretextlab.pretext.common import loss_and_accuracy
from pretextlab.report import write_report
from pretextlab.study import run_study
from pretextlab.tasks.classification import Classification


@dataclass
class MirrorOptions:
    flip_share: float = 0.5  # share of images shown mirrored


class Mirror:
    """Toy pretext task: was the image mirrored left-right? (2-way, chance 1/2)."""

    name = "mirror"
    chance = 1 / 2

    @staticmethod
    def work_per_image(options: dict) -> float:
        return 1.0

    def __init__(self, splits: Splits, options: MirrorOptions | None = None, precision: str = "fp32"):
        self.splits, self.options, self.precision = splits, options or MirrorOptions(), precision
        self.n_train = len(splits.x_pool)

    def make_model(self, backbone: nn.Module) -> nn.Module:
        return Classifier(backbone, 2)

    def _mirrored(self, x: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        k = (torch.rand(len(x), generator=g) < self.options.flip_share).long()
        return torch.where(k[:, None, None, None].bool(), x.flip(3), x), k

    def batch(self, idx: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        x, k = self._mirrored(take(self.splits.x_pool, idx), g)
        return normalize(x, self.splits.mean, self.splits.std), k

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(out.float(), target)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        x, k = self._mirrored(self.splits.x_val, torch.Generator().manual_seed(1))
        with evaluating(model):
            return loss_and_accuracy(model(normalize(x, self.splits.mean, self.splits.std)).float(), k)

    def samples(self, model: nn.Module, k: int = 8) -> dict:
        x, truth = self._mirrored(self.splits.x_val[:k], torch.Generator().manual_seed(2))
        with evaluating(model):
            pred = model(normalize(x, self.splits.mean, self.splits.std)).argmax(1)
        return {"first": x.cpu(), "true": truth, "pred": pred.cpu(), "positions": ["as is", "mirrored"]}


class WideHeadClassification(Classification):
    """Toy downstream task: classification with a two-layer head (its own name, head and checkpoint kind)."""

    name = "wide-head-classification"
    checkpoint_kind = "wide-head-classifier"

    def make_model(self, backbone: nn.Module) -> nn.Module:
        return self.rebuild(backbone, self.meta())

    @staticmethod
    def rebuild(backbone: nn.Module, meta: dict) -> nn.Module:
        model = Classifier(backbone, len(meta["classes"]))
        model.head = nn.Sequential(nn.Linear(backbone.out_dim, 32), nn.ReLU(), nn.Linear(32, len(meta["classes"])))
        return model


def test_a_toy_pretext_task_and_a_toy_downstream_task_run_a_study_and_its_report(make_image_folder, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setitem(pretext.TASKS, "mirror", (Mirror, MirrorOptions))
    monkeypatch.setitem(tasks.TASKS, WideHeadClassification.name, WideHeadClassification)
    data = DataConfig(source=str(make_image_folder(n_per_class=8, size=16)), val_fraction=0.25,
                      cache_dir=str(tmp_path / "cache"))
    out = run_study(data, tmp_path / "study", fractions=(1.0,), preset="smoke", pretexts=("mirror",), device="cpu",
                    quiet=True, task=WideHeadClassification.name)
    study = json.loads((out / "study.json").read_text())
    assert study["task"] == WideHeadClassification.name and study["pretexts"] == ["mirror"]
    run = json.loads((out / "f1-mirror-s0" / "summary.json").read_text())
    assert run["init"].endswith("pretrain-mirror-s0/backbone.safetensors") and "f1_macro" in run["final"]
    pretrained = json.loads((out / "pretrain-mirror-s0" / "summary.json").read_text())
    assert pretrained["pretext"] == "mirror" and pretrained["chance"] == 0.5
    state = torch.load(out / "f1-mirror-s0" / "checkpoint.pt", weights_only=True)
    assert state["meta"]["kind"] == "wide-head-classifier" and "head.2.weight" in state["model"]
    report = write_report(out)
    text = report.read_text()
    assert "mirror" in text and report.with_suffix(".html").exists()

    from pretextlab.finetune import evaluate_checkpoint

    scored = evaluate_checkpoint(str(out / "f1-mirror-s0"), None, cache_dir=str(tmp_path / "cache"))
    assert abs(scored["accuracy"] - run["final"]["accuracy"]) < 1e-5  # rebuilt by the task from the checkpoint

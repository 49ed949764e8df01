"""Cheap evaluations of a frozen backbone: a linear probe and k-NN on its features.

Both are the standard ways self-supervised papers read out what a backbone learnt without letting
the labels change it: k-NN (cosine similarity, k=200, votes weighted by exp(sim / 0.07)) follows
Wu et al. 2018 (arXiv 1805.01978); the linear probe is L2-regularised multinomial logistic
regression on frozen features, fit with L-BFGS, as in Kornblith et al. 2019 (arXiv 1805.08974) and
SimCLR's transfer evaluation (Chen et al. 2020, arXiv 2002.05709).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import hw
from .data.augment import normalize
from .models import evaluating

PROTOCOLS = ("linear", "knn")
KNN_K, KNN_TEMPERATURE = 200, 0.07
LBFGS_MAX_ITER = 500


def spread_subset(x: Tensor, n: int, seed: int = 0) -> Tensor:
    """A seeded random subset of n rows: stored data is often sorted by class, so x[:n] is not a sample."""
    if n >= len(x):
        return x
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n].sort().values.to(x.device)]


@torch.no_grad()
def recalibrate_bn(backbone: nn.Module, x: Tensor, mean: Tensor, std: Tensor, batch_size: int = 500,
                   max_images: int = 5000) -> None:
    """Re-estimate BatchNorm running statistics on whole images.

    A backbone pretrained on small patches carries the patches' statistics; evaluated frozen on
    whole images they no longer match and features look worse than they are. Running averages with a
    small momentum (torchvision's MobileNetV3: 0.01) also lag weights that a constant learning rate
    keeps moving, which can make a well-trained network look near chance (precise BatchNorm: Wu and
    Johnson 2021, "Rethinking 'Batch' in BatchNorm", arXiv 2105.07576).
    """
    bns = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was, momenta = backbone.training, [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    backbone.train()
    device = next(backbone.parameters()).device
    for chunk in spread_subset(x, max_images).split(batch_size):
        backbone(normalize(chunk.to(device), mean, std, channels_last=True))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    backbone.train(was)


def features(backbone: nn.Module, x: Tensor, mean: Tensor, std: Tensor, batch_size: int = 1000,
             precision: str = "fp32") -> Tensor:
    """Pooled features of uint8 images x, in eval mode (BatchNorm on its running statistics), under the
    study's precision: in fp32 a probe of a deep backbone costs as much as a bf16 fine-tuning run."""
    device = next(backbone.parameters()).device
    with evaluating(backbone), hw.autocast(device, precision):
        return torch.cat([backbone(normalize(c.to(device), mean, std, channels_last=True)).float()
                          for c in x.split(batch_size)])


@torch.no_grad()
def knn_predict(train_f: Tensor, train_y: Tensor, test_f: Tensor, num_classes: int, k: int = KNN_K,
                temperature: float = KNN_TEMPERATURE, chunk: int = 1000) -> Tensor:
    """Weighted k-NN class prediction by cosine similarity."""
    train_f = F.normalize(train_f, dim=1)
    test_f = F.normalize(test_f, dim=1)
    k = min(k, len(train_f))
    preds = []
    for c in test_f.split(chunk):
        sim, idx = (c @ train_f.T).topk(k, dim=1)
        votes = torch.zeros(len(c), num_classes, device=c.device)
        votes.scatter_add_(1, train_y[idx], (sim / temperature).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_hits(backbone: nn.Module, x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor,
             mean: Tensor, std: Tensor, num_classes: int, k: int = KNN_K) -> Tensor:
    """Whether k-NN classifies each validation image rightly (float 0/1), with BatchNorm re-estimated on whole
    images first: per image, so that two backbones scored on the same images can be compared pairwise."""
    train_f, val_f = frozen_features(backbone, x_train, x_val, mean, std)
    pred = knn_predict(train_f, y_train.to(train_f.device), val_f, num_classes, k)
    return (pred.cpu() == y_val.cpu()).float()


def knn_accuracy(backbone: nn.Module, x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor,
                 mean: Tensor, std: Tensor, num_classes: int, k: int = KNN_K) -> float:
    """k-NN accuracy on the validation images (the mean of knn_hits)."""
    return float(knn_hits(backbone, x_train, y_train, x_val, y_val, mean, std, num_classes, k).mean())


def linear_probe(train_f: Tensor, train_y: Tensor, test_f: Tensor, num_classes: int,
                 max_iter: int = LBFGS_MAX_ITER) -> Tensor:
    """Logits on test_f of a softmax classifier fit on (train_f, train_y); the features stay fixed.

    Why full-batch L-BFGS on cached features: the objective is convex, so a deterministic
    quasi-Newton solver reaches its optimum in a few hundred cheap iterations with no learning
    rate, schedule or augmentation to tune, and the backbone runs once instead of every epoch.
    Starting from zero weights makes the result independent of any seed. Features are
    standardised with the labelled subset's statistics so one regularisation strength suits every
    backbone; that strength is scikit-learn's default (C = 1: 1/2 ||W||^2 against the summed loss,
    i.e. 1 / (2n) ||W||^2 against the mean), so a small label set is regularised more, as a fixed
    prior on W would be. The validation split is never used to tune it.
    """
    # a backbone that diverged gives inf/NaN features: those read as 0 (no information), not a crash
    train_f, test_f = torch.nan_to_num(train_f, 0.0, 0.0, 0.0), torch.nan_to_num(test_f, 0.0, 0.0, 0.0)
    mu, sd = train_f.mean(0), train_f.std(0, correction=0)
    # a feature constant on the labelled set tells nothing: zeroed, not blown up by 1 / sd
    live = torch.isfinite(sd) & (sd > 1e-6)
    mu, sd = torch.where(live, mu, 0.0), torch.where(live, sd, float("inf"))
    x = (train_f - mu) / sd
    w = torch.zeros(x.shape[1], num_classes, device=x.device, requires_grad=True)
    b = torch.zeros(num_classes, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20, tolerance_grad=1e-6,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")
    l2 = 1 / (2 * len(x))

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, train_y) + l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return ((test_f - mu) / sd) @ w.detach() + b.detach()


def probe_metrics(pred: Tensor, y: Tensor, num_classes: int) -> dict[str, float]:
    """Macro-F1, macro precision, macro recall and accuracy of predicted classes (torchmetrics)."""
    from .metrics import metric_collection

    return {k: float(v) for k, v in metric_collection(num_classes).to(y.device)(pred, y).items()}


def evaluate_frozen(train_f: Tensor, train_y: Tensor, val_f: Tensor, val_y: Tensor, num_classes: int,
                    test: tuple[Tensor, Tensor] | None = None) -> dict[str, Any]:
    """Both protocols on cached features, the labelled subset as training set / memory bank; with a test
    split (features, labels), the same fitted probe also scores it, under "test"."""
    parts = {"val": (val_f, val_y), **({"test": test} if test is not None else {})}
    sizes = [len(y) for _, y in parts.values()]
    every = torch.cat([f for f, _ in parts.values()])
    linear = linear_probe(train_f, train_y, every, num_classes).argmax(1).split(sizes)
    knn = knn_predict(train_f, train_y, every, num_classes).split(sizes)
    scores = {name: {"linear": probe_metrics(lin, y, num_classes), "knn": probe_metrics(nn_, y, num_classes)}
              for (name, (_, y)), lin, nn_ in zip(parts.items(), linear, knn)}
    return {**scores["val"], **({"test": scores["test"]} if "test" in scores else {})}


def frozen_features(backbone: nn.Module, x_pool: Tensor, x_val: Tensor, mean: Tensor,
                    std: Tensor, precision: str = "fp32") -> tuple[Tensor, Tensor]:
    """Features of every pool and validation image, once, without augmentation, after re-estimating
    BatchNorm statistics on whole pool images (for a backbone pretrain() already recalibrated on the
    same pool this recomputes the same statistics)."""
    recalibrate_bn(backbone, x_pool, mean, std)
    return (features(backbone, x_pool, mean, std, precision=precision),
            features(backbone, x_val, mean, std, precision=precision))


def probe_settings() -> dict[str, Any]:
    """What decides the probes' numbers, stored with them so a changed protocol is not mixed in."""
    return {"linear": {"solver": "lbfgs", "max_iter": LBFGS_MAX_ITER, "l2": "1/(2n) ||W||^2, standardised features"},
            "knn": {"k": KNN_K, "temperature": KNN_TEMPERATURE, "similarity": "cosine"}}

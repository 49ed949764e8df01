"""Cheap evaluations of a frozen backbone: k-NN accuracy on its features.

k-NN (cosine similarity, k=200, votes weighted by exp(sim / 0.07)) follows Wu et al. 2018
(arXiv 1805.01978), the protocol most self-supervised papers report.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import normalize


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
    whole images they no longer match and features look worse than they are.
    """
    bns = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was = backbone.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    backbone.train()
    device = next(backbone.parameters()).device
    for chunk in spread_subset(x, max_images).split(batch_size):
        backbone(normalize(chunk.to(device), mean, std, channels_last=True))
    for m in bns:
        m.momentum = 0.1
    backbone.train(was)


@torch.no_grad()
def features(backbone: nn.Module, x: Tensor, mean: Tensor, std: Tensor, batch_size: int = 1000) -> Tensor:
    was = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    out = torch.cat([backbone(normalize(c.to(device), mean, std, channels_last=True)).float()
                     for c in x.split(batch_size)])
    backbone.train(was)
    return out


@torch.no_grad()
def knn_predict(train_f: Tensor, train_y: Tensor, test_f: Tensor, num_classes: int, k: int = 200,
                temperature: float = 0.07, chunk: int = 1000) -> Tensor:
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


def knn_accuracy(backbone: nn.Module, x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor,
                 mean: Tensor, std: Tensor, num_classes: int, k: int = 200) -> float:
    """k-NN accuracy on the validation images, with BatchNorm re-estimated on whole images first."""
    recalibrate_bn(backbone, x_train, mean, std)
    pred = knn_predict(features(backbone, x_train, mean, std), y_train.to(x_train.device),
                       features(backbone, x_val, mean, std), num_classes, k)
    return float((pred.cpu() == y_val.cpu()).float().mean())

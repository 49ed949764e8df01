"""The report's figures: backbone views (filters, early feature maps) and a single run's curves."""

from __future__ import annotations

import torch

from pretextlab.models import make_backbone
from pretextlab.report.backbone import early_features, filter_mosaic
from pretextlab.report.figures import run_figure

torch.set_num_threads(1)


def test_backbone_views():
    torch.manual_seed(0)
    net = make_backbone("fast", 3)
    maps = early_features(net, torch.randn(1, 3, 16, 16))
    shapes = [tuple(t.shape) for t in maps.values()]
    assert shapes == [(1, 24, 16, 16), (1, 48, 8, 8)]  # after the stem, after the first ResBlock
    assert list(maps)[1].startswith("first block (blocks.0)")
    mosaic = filter_mosaic(net.stem[0].weight)
    assert mosaic.shape == (5 * 4 + 1, 5 * 4 + 1, 3) and mosaic.min() >= 0 and mosaic.max() <= 1


def test_run_figure_draws_a_single_runs_curves(tmp_path):
    rows = "epoch,train_loss,val_loss,val_f1_macro,val_precision_macro,val_recall_macro,val_accuracy\n"
    rows += "1,2.0,1.9,0.3,0.3,0.3,0.3\n2,1.5,1.6,0.5,0.5,0.5,0.5\n"
    (tmp_path / "metrics.csv").write_text(rows)
    path = run_figure(tmp_path)
    assert path == tmp_path / "curves.png" and path.stat().st_size > 10_000

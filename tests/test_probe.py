"""k-NN probe and BatchNorm re-estimation."""

import torch

from pretextlab.models import make_backbone
from pretextlab.probe import knn_predict, recalibrate_bn, spread_subset


def test_knn_is_perfect_on_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(4) * 10
    train_y = torch.arange(4).repeat(50)
    train_f = centres[train_y] + torch.randn(200, 4, generator=g)
    test_y = torch.arange(4).repeat(10)
    test_f = centres[test_y] + torch.randn(40, 4, generator=g)
    assert torch.equal(knn_predict(train_f, train_y, test_f, 4, k=20), test_y)


def test_knn_votes_by_similarity():
    train_f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    train_y = torch.tensor([0, 1, 1])
    # the query is almost exactly class 0's direction: one very similar neighbour beats two far ones
    assert knn_predict(train_f, train_y, torch.tensor([[1.0, 0.05]]), 2, k=3).item() == 0


def test_spread_subset_is_a_seeded_sample_not_a_prefix():
    x = torch.arange(1000)[:, None]
    s = spread_subset(x, 100)
    assert len(s) == 100 and s.max() > 500  # a prefix would stop at 99
    assert torch.equal(s, spread_subset(x, 100))
    assert torch.equal(spread_subset(x, 5000), x)


def test_recalibrate_bn_sets_statistics_of_the_given_images():
    net = make_backbone("fast")
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    recalibrate_bn(net, x, mean, std)
    bn = net.stem[1]
    conv_out = net.stem[0]((x.float() / 255 - 0.5) / 0.25)
    assert torch.allclose(bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-4)
    assert bn.momentum == 0.1 and net.training

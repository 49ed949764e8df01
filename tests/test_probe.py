"""k-NN probe, linear probe and BatchNorm re-estimation: what the frozen-backbone protocols rest on."""

import torch

from pretextlab.models import Classifier, make_backbone, random_backbone
from pretextlab.probe import evaluate_frozen, frozen_features, knn_predict, linear_probe, recalibrate_bn, spread_subset


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


# ----------------------------------------------------------------------------------------------
# Linear probe and the frozen-backbone protocols


def _blobs(n_per_class: int, dim: int, classes: int, seed: int, spread: float = 1.0):
    """Gaussian blobs around well separated class centres."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat(n_per_class)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 5
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


def test_linear_probe_separates_blobs_and_is_deterministic():
    train_f, train_y = _blobs(30, 16, 5, seed=0)
    val_f, val_y = _blobs(10, 16, 5, seed=1)
    logits = linear_probe(train_f, train_y, val_f, 5)
    assert logits.shape == (50, 5)
    assert torch.equal(logits.argmax(1), val_y)
    assert torch.equal(logits, linear_probe(train_f, train_y, val_f, 5))  # zero init, full batch: no seed


def test_linear_probe_beats_knn_where_only_a_direction_matters():
    # class = sign of feature 0; the other 15 features are large noise that swamps cosine similarity
    g = torch.Generator().manual_seed(0)
    f = torch.randn(400, 16, generator=g) * torch.tensor([0.5] + [5.0] * 15)
    y = (f[:, 0] > 0).long()
    res = evaluate_frozen(f[:300], y[:300], f[300:], y[300:], 2)
    assert res["linear"]["accuracy"] > 0.95
    assert res["knn"]["accuracy"] < 0.8
    assert set(res["linear"]) == {"f1_macro", "precision_macro", "recall_macro", "accuracy"}


def test_knn_protocol_is_perfect_on_separable_features():
    train_f, train_y = _blobs(40, 8, 4, seed=2, spread=0.5)
    val_f, val_y = _blobs(10, 8, 4, seed=3, spread=0.5)
    res = evaluate_frozen(train_f, train_y, val_f, val_y, 4)  # k = 200 > 160 labelled: the whole bank
    assert res["knn"] == {"f1_macro": 1.0, "precision_macro": 1.0, "recall_macro": 1.0, "accuracy": 1.0}


def test_probes_leave_the_backbone_unchanged():
    net = random_backbone("fast", 3, seed=1)
    x = torch.randint(0, 256, (48, 3, 12, 12), dtype=torch.uint8)
    y = torch.arange(3).repeat(16)
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    recalibrate_bn(net, x, mean, std)  # the one change a probe allows, before anything is measured
    before = {k: v.clone() for k, v in net.state_dict().items()}  # weights and BN buffers
    pool_f, val_f = frozen_features(net, x, x[:12], mean, std)
    evaluate_frozen(pool_f, y, val_f, y[:12], 3)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in net.parameters())
    assert not net.training  # handed back in the mode it came in


def test_random_backbone_is_the_scratch_runs_starting_point():
    torch.manual_seed(1)
    scratch = Classifier(make_backbone("fast", 3), 3).backbone.state_dict()
    state = torch.random.get_rng_state()
    net = random_backbone("fast", 3, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in scratch.items())
    other = random_backbone("fast", 3, seed=2).state_dict()
    assert not torch.equal(other["stem.0.weight"], net.state_dict()["stem.0.weight"])


def test_a_feature_constant_on_the_labelled_set_is_ignored_not_blown_up():
    """A dead unit (all but constant on the labelled images) that fires on validation images must not
    reach the logits as (value - mean) / 1e-6."""
    g = torch.Generator().manual_seed(0)
    train_f, train_y = torch.randn(60, 4, generator=g), torch.arange(60) % 3
    train_f[:, 3] = 1e-8 * torch.randn(60, generator=g)  # all but constant
    val_f = torch.randn(30, 4, generator=g)
    val_f[:, 3] = 1e4
    logits = linear_probe(train_f, train_y, val_f, 3)
    reference = linear_probe(train_f[:, :3], train_y, val_f[:, :3], 3)
    assert torch.isfinite(logits).all() and torch.allclose(logits, reference, atol=1e-4)


def test_features_of_a_diverged_backbone_give_a_probe_not_a_crash():
    g = torch.Generator().manual_seed(0)
    train_f, train_y = torch.randn(40, 3, generator=g), torch.arange(40) % 2
    train_f[:, 0], train_f[5, 1] = float("nan"), float("inf")
    logits = linear_probe(train_f, train_y, torch.randn(10, 3, generator=g), 2)
    assert torch.isfinite(logits).all()

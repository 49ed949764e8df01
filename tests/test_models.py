"""pretextlab.models: backbones by name, the classifier, strict loading of pretrained weights."""

from __future__ import annotations

import pytest
import torch

from pretextlab.errors import UserError
from pretextlab.models import (
    BACKBONES,
    Classifier,
    FastNet,
    count_flops,
    feature_map,
    load_backbone_weights,
    make_backbone,
)

EXPECTED_DIMS = {"fast": 192, "fast-wide": 256, "resnet18": 512, "resnet34": 512, "resnet50": 2048,
                 "mobilenet_v3_large": 960}


def test_backbone_registry():
    assert set(BACKBONES) == set(EXPECTED_DIMS)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_forward(name, channels):
    torch.manual_seed(0)
    net = make_backbone(name, channels)
    assert net.out_dim == EXPECTED_DIMS[name]
    with torch.no_grad():
        out = net(torch.randn(2, channels, 32, 32))
    assert out.shape == (2, net.out_dim)
    assert torch.isfinite(out).all()
    assert not torch.equal(out[0], out[1])  # the features depend on the input


@pytest.mark.parametrize("shape", [(16, 16), (8, 8), (12, 20), (48, 48)])
def test_fastnet_accepts_other_input_sizes(shape):
    net = FastNet(3)
    with torch.no_grad():
        assert net(torch.randn(3, 3, *shape)).shape == (3, 192)


def test_fastnet_channels_last_gives_same_features():
    torch.manual_seed(0)
    net = FastNet(3).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = net(x)
        net.to(memory_format=torch.channels_last)
        out = net(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-5)


def test_unknown_backbone():
    with pytest.raises(UserError, match="unknown backbone 'vgg'.*fast.*resnet18"):
        make_backbone("vgg")


def test_classifier_forward():
    model = Classifier(make_backbone("fast", 3), 5)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    assert model.head.in_features == 192 and model.head.out_features == 5


def test_load_backbone_weights_same_backbone():
    torch.manual_seed(0)
    src = Classifier(make_backbone("fast", 3), 4)  # a classifier's state dict: backbone.* and head.*
    torch.manual_seed(1)
    dst = make_backbone("fast", 3)
    assert not torch.equal(dst.stem[0].weight, src.backbone.stem[0].weight)
    load_backbone_weights(dst, src.state_dict(), "ckpt.pt")
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    # a bare backbone state dict (e.g. from .safetensors) loads too
    dst2 = make_backbone("fast", 3)
    load_backbone_weights(dst2, src.backbone.state_dict(), "backbone.safetensors")
    assert torch.equal(dst2.stem[0].weight, src.backbone.stem[0].weight)


@pytest.mark.parametrize("other, channels", [("fast-wide", 3), ("resnet18", 3), ("fast", 1)])
def test_load_backbone_weights_of_another_backbone(other, channels):
    state = Classifier(make_backbone(other, channels), 3).state_dict()
    dst = make_backbone("fast", 3)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(UserError, match="other.ckpt.*another backbone"):
        load_backbone_weights(dst, state, "other.ckpt")
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # nothing half-loaded


def test_load_backbone_weights_with_extra_keys():
    state = make_backbone("fast", 3).state_dict()
    state["projector.weight"] = torch.zeros(3)
    with pytest.raises(UserError):
        load_backbone_weights(make_backbone("fast", 3), state, "x")


def test_count_flops_scales_with_area():
    net = FastNet(3)
    f32 = count_flops(net, (3, 32, 32))
    f16 = count_flops(net, (3, 16, 16))
    assert f32 > 0 and f16 > 0
    assert 3.5 < f32 / f16 < 4.5  # convolutions dominate: FLOPs ~ pixels
    assert net.training  # restored


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_parameter_belongs_to_one_stage(name):
    net = make_backbone(name, 3)
    prefixes = [f"{p}." for stage in net.stages for p in stage]
    for key in net.state_dict():
        assert sum(key.startswith(p) for p in prefixes) == 1, key


def test_load_backbone_weights_first_stages_only():
    torch.manual_seed(0)
    src, dst = make_backbone("fast", 3), make_backbone("fast", 3)
    fresh = {k: v.clone() for k, v in dst.state_dict().items()}
    load_backbone_weights(dst, src.state_dict(), "pre.safetensors", stages=2)
    for k, v in dst.state_dict().items():
        expected = src.state_dict()[k] if k.startswith(("stem.", "blocks.0.")) else fresh[k]
        assert torch.equal(v, expected), k
    assert not torch.equal(dst.state_dict()["blocks.1.conv.0.weight"], src.state_dict()["blocks.1.conv.0.weight"])


@pytest.mark.parametrize("stages", [5, 99])
def test_load_backbone_weights_too_many_stages(stages):
    net = make_backbone("fast", 3)
    with pytest.raises(UserError, match="--transfer-stages"):
        load_backbone_weights(net, make_backbone("fast", 3).state_dict(), "x", stages=stages)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_feature_map_is_the_map_the_backbone_pools(name):
    """Global pooling of feature_map gives the backbone's own output: it is the last spatial map."""
    torch.manual_seed(0)
    net = make_backbone(name, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        m, out = feature_map(net, x), net(x)
    assert m.ndim == 4 and m.shape[:2] == (2, net.out_dim)
    pooled = (m.amax((2, 3)) + m.mean((2, 3))) * 0.125 if isinstance(net, FastNet) else m.mean((2, 3))
    assert torch.allclose(pooled, out, atol=1e-5)
    if name.startswith("fast") or name.startswith("resnet"):
        assert m.shape[-1] == 4  # three halvings of 32 px


def test_feature_map_of_an_unknown_module():
    with pytest.raises(TypeError, match="no feature map for a Linear"):
        feature_map(torch.nn.Linear(2, 2), torch.zeros(1, 2))


# --- the segmentation decoder over a backbone's multi-scale maps --------------------------------------------


@pytest.mark.parametrize("spec, levels", [("fast", 3), ("resnet18", 3), ("timm:resnet10t", 4), ("user", 1)])
def test_pyramid_taps_find_the_multi_scale_maps(spec, levels):
    from pathlib import Path

    from pretextlab.models.heads import Segmenter, pyramid_taps

    if spec == "user":  # the user's own file: one map, below the input's resolution
        spec = f"{Path(__file__).parent / 'fixtures' / 'user_backbone.py'}:TinyNet"
    b = make_backbone(spec, 3)
    taps = pyramid_taps(b, 3)
    assert len(taps) == levels
    m = Segmenter(b, 5, 3)
    assert m(torch.zeros(2, 3, 40, 56)).shape == (2, 5, 40, 56)  # logits at the input's size, any aspect


def test_the_decoder_is_the_seeds_and_only_the_backbone_differs():
    """Two builds under one seed give one decoder; loading pretrained weights changes the backbone alone."""
    from pretextlab.models import load_backbone_weights
    from pretextlab.models.heads import Segmenter

    def build(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return Segmenter(make_backbone("fast", 3), 4, 3)

    a, b = build(0), build(0)
    trained = {k: v + 1 for k, v in make_backbone("fast", 3).state_dict().items() if v.is_floating_point()}
    state = {**b.backbone.state_dict(), **trained}
    assert load_backbone_weights(b.backbone, state, "test") == {"tensors": len(state), "changed": len(trained)}
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        same = torch.equal(pa, pb)
        assert same != (name.startswith("backbone.") and name.removeprefix("backbone.") in trained), name

"""The shared hash layer: output properties of each activation, scale, state-dict round trip."""

import math

import pytest
import torch

from cxrhash.methods import METHODS, EpochInfo
from cxrhash.methods.continuation import hashnet_scale
from cxrhash.models import AttentionFusionNet
from cxrhash.models.deep_hash import DeepHashNet
from cxrhash.models.hash_head import HASH_ACTIVATIONS, HashHead, HashLayer
from cxrhash.models.output import binarize


def _features(n=16, d=20, scale=1.0):
    torch.manual_seed(0)
    return torch.randn(n, d) * scale


def test_identity_is_the_linear_layer():
    layer = HashLayer(20, 8, "identity")
    x = _features()
    torch.testing.assert_close(layer(x), x @ layer.weight.T + layer.bias)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_tanh_is_bounded_and_uses_the_scale(scale):
    layer = HashLayer(20, 8, "tanh")
    layer.set_scale(scale)
    x = _features(scale=100.0)
    h = x @ layer.weight.T + layer.bias
    f = layer(x)
    torch.testing.assert_close(f, torch.tanh(scale * h))
    assert f.abs().max() <= 1.0
    with pytest.raises(ValueError, match="scale"):
        layer.set_scale(0.0)
    with pytest.raises(ValueError, match="scale"):
        layer.set_scale(math.inf)


@pytest.mark.parametrize("bits", [8, 64])
def test_normalize_lies_on_the_code_sphere_whatever_the_weight_scale(bits):
    layer = HashLayer(20, bits, "normalize")
    x = _features()
    f = layer(x)
    torch.testing.assert_close(f.norm(dim=1), torch.full((16,), math.sqrt(bits)))
    # every ±1 code has norm √k; D ≤ 2√k, so L_c and L_r are bounded
    assert f.abs().max() <= math.sqrt(bits) + 1e-5
    with torch.no_grad():
        layer.weight.mul_(1000.0)
        layer.bias.mul_(1000.0)
    torch.testing.assert_close(layer(x), f)  # invariant to the scale of h
    assert torch.equal(binarize(f), binarize(x @ layer.weight.T + layer.bias))


@pytest.mark.parametrize(("activation", "radius"), [("ball", 1.0), ("ball2", 2.0)])
def test_ball_is_identity_inside_and_its_sphere_outside(activation, radius):
    layer = HashLayer(20, 8, activation)
    x = _features()
    h = x @ layer.weight.T + layer.bias
    assert h.norm(dim=1).max() < math.sqrt(8)  # default init: outputs well inside the ball
    torch.testing.assert_close(layer(x), h)
    with torch.no_grad():
        layer.weight.mul_(100.0)
        layer.bias.mul_(100.0)
    f = layer(x)
    torch.testing.assert_close(f.norm(dim=1), torch.full((16,), radius * math.sqrt(8)))
    assert torch.equal(binarize(f), binarize(100.0 * h))


@pytest.mark.parametrize("activation", ["normalize", "ball", "ball2"])
def test_normalize_is_finite_at_zero_preactivation(activation):
    layer = HashLayer(4, 6, activation)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    x = torch.randn(3, 4, requires_grad=True)
    f = layer(x)
    f.sum().backward()
    assert torch.isfinite(f).all() and torch.isfinite(x.grad).all()


def test_batchnorm_standardises_each_unit_and_uses_running_stats_in_eval():
    layer = HashLayer(20, 8, "batchnorm")
    x = _features(n=64, scale=50.0)
    f = layer(x)
    torch.testing.assert_close(f.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(f.var(0, unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
    assert not any(n.startswith("norm.weight") for n, _ in layer.named_parameters())
    layer.eval()
    h = x @ layer.weight.T + layer.bias
    rm, rv = layer.norm.running_mean, layer.norm.running_var
    torch.testing.assert_close(layer(x), (h - rm) / torch.sqrt(rv + layer.norm.eps))


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="identity, tanh"):
        HashLayer(4, 4, "sigmoid")


@pytest.mark.parametrize("activation", HASH_ACTIVATIONS)
def test_attention_fusion_state_dict_round_trip(activation):
    torch.manual_seed(0)
    kw = dict(bits=12, num_classes=3, backbone="test-cnn", refine_width=32)
    net = AttentionFusionNet(hash_activation=activation, **kw)
    x = torch.rand(4, 1, 32, 32)
    net.train()
    net(x)  # moves batch-norm running statistics away from their initial values
    net.head.set_scale(2.5)
    net.eval()
    torch.manual_seed(1)
    other = AttentionFusionNet(hash_activation=activation, **kw).eval()
    other.load_state_dict(net.state_dict())
    with torch.no_grad():
        a, b = net(x), other(x)
    torch.testing.assert_close(a.hash, b.hash)
    torch.testing.assert_close(a.logits, b.logits)
    assert float(other.head.scale) == 2.5
    assert torch.equal(net.encode(x), other.encode(x))


def test_checkpoints_from_before_the_shared_head_still_load():
    """Old attention-fusion keys ``hash_layer.*``/``classifier.*``; old HashHead ``scale``."""
    torch.manual_seed(0)
    kw = dict(bits=12, num_classes=3, backbone="test-cnn", refine_width=32)
    net = AttentionFusionNet(**kw).eval()
    old = {
        k.replace("head.", ""): v
        for k, v in net.state_dict().items()
        if not k.endswith("scale") and ".rotation." not in k  # neither existed then
    }
    assert "hash_layer.weight" in old and "classifier.bias" in old
    other = AttentionFusionNet(**kw).eval()
    other.load_state_dict(old)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x).hash, other(x).hash)
    deep = DeepHashNet(bits=8, num_classes=3, backbone="test-cnn", activation="tanh")
    sd = deep.state_dict()
    sd["head.scale"] = sd.pop("head.hash_layer.scale") * 0 + 4.0
    deep.load_state_dict(sd)
    assert float(deep.head.scale) == 4.0


def test_every_network_uses_the_one_hash_head():
    af = AttentionFusionNet(bits=8, num_classes=3, backbone="test-cnn", refine_width=16)
    deep = DeepHashNet(bits=8, num_classes=3, backbone="test-cnn")
    for net in (af, deep):
        heads = [m for m in net.modules() if isinstance(m, HashHead)]
        assert len(heads) == 1 and isinstance(heads[0].hash_layer, HashLayer)


def test_attention_fusion_continuation_raises_the_scale_per_epoch():
    from cxrhash.config import make_config

    method = METHODS.get("attention-fusion")
    cfg = make_config("test", hash_activation="tanh-continuation")
    net = method.build_model(cfg, 3)
    method.on_epoch(net, EpochInfo(epoch=4, epochs=12, steps_per_epoch=50), cfg)
    assert float(net.head.scale) == pytest.approx(hashnet_scale(200))
    cfg = make_config("test", hash_activation="tanh")
    net = method.build_model(cfg, 3)
    method.on_epoch(net, EpochInfo(epoch=4, epochs=12, steps_per_epoch=50), cfg)
    assert float(net.head.scale) == 1.0  # plain tanh keeps β = 1

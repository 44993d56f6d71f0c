"""Every hashing network is its own feature path followed by the one shared head."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cxrhash.config import make_config
from cxrhash.methods import METHODS
from cxrhash.models.hash_model import Features, HashModel


@pytest.mark.parametrize("name", METHODS.names())
def test_forward_is_the_head_on_the_features(name: str) -> None:
    torch.manual_seed(0)
    model = METHODS.get(name).build_model(make_config("test", method=name), 3).eval()
    assert isinstance(model, HashModel)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        split = model.forward_head(features)
        whole = model(x)
    assert isinstance(features, Features) and features.pooled.shape[0] == 3
    assert split.features.shape == (3, model.fc[0].out_features)
    assert split.hash.shape == (3, model.bits)
    for field in dataclasses.fields(whole):
        a, b = getattr(whole, field.name), getattr(split, field.name)
        assert (a is None) == (b is None), field.name
        if a is not None:
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_the_head_reports_the_feature_paths_own_logits_and_maps() -> None:
    torch.manual_seed(0)
    model = METHODS.get("dsh").build_model(make_config("test", method="dsh"), 3).eval()
    pooled = torch.rand(2, model.fc[0].in_features)
    own, maps = torch.randn(2, 3), torch.rand(2, 1, 4, 4)
    with torch.no_grad():
        plain = model.forward_head(Features(pooled))
        guided = model.forward_head(Features(pooled, attention=maps, logits=own, aux_logits=own))
    torch.testing.assert_close(guided.hash, plain.hash)
    assert guided.logits is own and guided.aux_logits is own and guided.attention is maps
    assert plain.logits.shape == (2, 3) and plain.attention is None
    assert plain.hash_weight is model.head.hash_layer.weight  # DeepHashNet: for DH/DRH

import math

import pytest
import torch

from cxrhash.losses import (
    LOSSES,
    attention_fusion_loss,
    contrastive_loss,
    multilabel_bce,
    pair_similarity,
    quantization_regularizer,
)
from cxrhash.models.output import HashOutput


def test_joint_loss_is_weighted_sum_of_parts():
    torch.manual_seed(0)
    f = torch.tanh(torch.randn(5, 8, dtype=torch.float64))
    logits = torch.randn(5, 3, dtype=torch.float64)
    labels = (torch.rand(5, 3) < 0.5).double()
    labels[1, 2] = math.nan
    out = HashOutput(hash=f, logits=logits, features=torch.zeros(5, 4))
    total, parts = attention_fusion_loss(out, labels, alpha=0.3, beta=0.7, margin=2.0)
    l_c = contrastive_loss(f, pair_similarity(labels), 2.0).item()
    l_r = quantization_regularizer(f).item()
    l_cb = multilabel_bce(logits, labels).item()
    assert total.item() == pytest.approx(l_c + 0.3 * l_r + 0.7 * l_cb, rel=1e-12)
    assert parts == pytest.approx(
        {"contrastive": l_c, "quantization": l_r, "bce": l_cb, "total": total.item()}
    )
    default_total, _ = attention_fusion_loss(out, labels)
    m = math.sqrt(8)
    expected = contrastive_loss(f, pair_similarity(labels), m) + 0.5 * l_r + 0.5 * l_cb
    assert default_total.item() == pytest.approx(expected.item(), rel=1e-12)


def test_registry_names():
    assert LOSSES.get("attention-fusion") is attention_fusion_loss
    assert {"contrastive", "quantization", "multilabel-bce"} <= set(LOSSES.names())

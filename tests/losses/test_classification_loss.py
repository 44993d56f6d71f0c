import math

import pytest
import torch

from cxrhash.losses.classification import multilabel_bce

NAN = math.nan


def _loop_bce(logits, labels):
    total = 0.0
    for zs, ys in zip(logits, labels, strict=True):
        for z, y in zip(zs, ys, strict=True):
            if math.isnan(y):
                continue
            p = 1 / (1 + math.exp(-z))
            total -= y * math.log(p) + (1 - y) * math.log(1 - p)
    return total / len(logits)


def test_matches_loop_with_nan_masked():
    torch.manual_seed(0)
    logits = 2 * torch.randn(4, 5, dtype=torch.float64)
    labels = (torch.rand(4, 5) < 0.5).double()
    labels[0, 1] = labels[2, 4] = labels[3, 0] = NAN
    got = multilabel_bce(logits, labels)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(_loop_bce(logits.tolist(), labels.tolist()), rel=1e-12)


def test_nan_labels_contribute_nothing_and_large_logits_are_stable():
    logits = torch.tensor([[100.0, -3.0], [-100.0, 0.0]], requires_grad=True)
    labels = torch.tensor([[1.0, NAN], [0.0, NAN]])
    loss = multilabel_bce(logits, labels)
    assert loss.item() == pytest.approx(0.0, abs=1e-30)
    loss.backward()
    assert logits.grad[:, 1].abs().sum() == 0
    half = multilabel_bce(torch.zeros(1, 3), torch.tensor([[1.0, 0.0, NAN]]))
    assert half.item() == pytest.approx(2 * math.log(2))  # summed over the 2 known classes
    with pytest.raises(ValueError, match="same shape"):
        multilabel_bce(torch.zeros(2, 3), torch.zeros(2, 4))

import math

import pytest
import torch

from cxrhash.losses.contrastive import contrastive_loss, default_margin
from cxrhash.losses.pairs import pair_similarity


def _loop_loss(f, sim, m):
    terms = []
    for i in range(len(f)):
        for j in range(i + 1, len(f)):
            d = math.sqrt(sum((a - b) ** 2 for a, b in zip(f[i], f[j], strict=True)))
            y = 1 - sim[i][j]
            terms.append(0.5 * (1 - y) * d**2 + 0.5 * y * max(0.0, m - d) ** 2)
    return sum(terms) / len(terms)


@pytest.mark.parametrize("margin", [None, 1.0, 5.0])
def test_matches_loop_over_pairs(margin):
    torch.manual_seed(0)
    f = torch.tanh(torch.randn(6, 8, dtype=torch.float64))
    labels = (torch.rand(6, 3) < 0.4).double()
    sim = pair_similarity(labels)
    m = math.sqrt(8) if margin is None else margin
    expected = _loop_loss(f.tolist(), sim.tolist(), m)
    assert contrastive_loss(f, sim, margin).item() == pytest.approx(expected, rel=1e-9)


def test_hand_worked_two_items():
    f = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 1.0, 1.0]], dtype=torch.float64)  # D = 2
    similar = torch.ones(2, 2, dtype=torch.float64)
    dissimilar = torch.eye(2, dtype=torch.float64)
    assert contrastive_loss(f, similar).item() == pytest.approx(0.5 * 4)  # ½·D²
    assert contrastive_loss(f, dissimilar, margin=3.0).item() == pytest.approx(0.5 * 1.0)
    assert contrastive_loss(f, dissimilar, margin=2.0).item() == 0.0  # D = m: hinge inactive
    assert default_margin(16) == 4.0


def test_gradient_finite_for_identical_outputs():
    f = torch.tensor([[0.3, -0.2], [0.3, -0.2], [0.1, 0.5]], requires_grad=True)
    sim = torch.eye(3)  # all pairs dissimilar, so the hinge sees D = 0
    contrastive_loss(f, sim).backward()
    assert torch.isfinite(f.grad).all()


def test_single_item_gives_zero_not_nan():
    f = torch.randn(1, 4, requires_grad=True)
    loss = contrastive_loss(f, torch.ones(1, 1))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    with pytest.raises(ValueError, match="2×2"):
        contrastive_loss(torch.randn(2, 4), torch.ones(3, 3))

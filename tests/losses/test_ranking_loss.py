"""OSDH's order-sensitive ranking loss against a triple loop over (q, i, j)."""

from __future__ import annotations

import itertools

import pytest
import torch

from cxrhash.losses.ranking import order_sensitive_ranking_loss, relaxed_hamming


def _loop(u: torch.Tensor, y: torch.Tensor, rho: float) -> float:
    b, k = u.shape
    total, count = 0.0, 0
    for q, i, j in itertools.product(range(b), repeat=3):
        if len({q, i, j}) < 3:
            continue
        ri = float((y[q] * y[i]).sum())
        rj = float((y[q] * y[j]).sum())
        if ri <= rj:
            continue
        dqi = 0.5 * (k - float(u[q] @ u[i]))
        dqj = 0.5 * (k - float(u[q] @ u[j]))
        total += (2**ri - 2**rj) * max(0.0, dqi - dqj + rho)
        count += 1
    return total / count


def test_matches_a_loop_over_triplets() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.tanh(torch.randn(7, 6, generator=g, dtype=torch.float64))
    y = (torch.rand(7, 4, generator=g) > 0.5).double()
    got = order_sensitive_ranking_loss(u, y, rho=2.0)
    assert float(got) == pytest.approx(_loop(u, y, 2.0), rel=1e-9)


def test_relaxed_hamming_is_the_hamming_distance_on_signs() -> None:
    g = torch.Generator().manual_seed(1)
    b = torch.where(torch.randn(5, 9, generator=g) > 0, 1.0, -1.0)
    bits = b > 0
    ham = (bits.unsqueeze(1) != bits.unsqueeze(0)).sum(-1).float()
    assert torch.equal(relaxed_hamming(b), ham)


def test_zero_when_every_pair_is_well_ordered_and_gradients_flow() -> None:
    # q=0 shares 2 labels with 1 and none with 2; codes order them correctly by > ρ
    y = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    u = torch.tensor([[1.0] * 8, [1.0] * 8, [-1.0] * 8], requires_grad=True)
    loss = order_sensitive_ranking_loss(u, y, rho=5.0)
    assert float(loss.detach()) == 0.0
    # swap the codes of 1 and 2: now the more relevant item is farther → positive loss
    u2 = torch.tensor([[1.0] * 8, [-1.0] * 8, [1.0] * 8], requires_grad=True)
    loss2 = order_sensitive_ranking_loss(u2, y, rho=5.0)
    assert float(loss2.detach()) > 0
    loss2.backward()
    assert u2.grad is not None and u2.grad.abs().sum() > 0


def test_no_triplet_gives_an_attached_zero() -> None:
    u = torch.randn(4, 8, requires_grad=True)
    loss = order_sensitive_ranking_loss(u, torch.ones(4, 3))
    assert float(loss) == 0.0 and loss.requires_grad

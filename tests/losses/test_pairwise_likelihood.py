"""Bayesian pairwise likelihood (DPSH / HashNet / semantic-attention) against per-pair loops."""

from __future__ import annotations

import math

import pytest
import torch

from cxrhash.losses.pairs import pair_similarity
from cxrhash.losses.pairwise_likelihood import (
    balanced_pair_weights,
    pairwise_likelihood_loss,
    sign_quantization_loss,
)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [1, 1]], dtype=torch.float64)
    return u, y


def _loop(u: torch.Tensor, s: torch.Tensor, scale: float, balanced: bool) -> float:
    b = len(u)
    pairs = [(i, j) for i in range(b) for j in range(i + 1, b)]
    n_pos = sum(float(s[i, j]) for i, j in pairs)
    n_neg = len(pairs) - n_pos
    total = 0.0
    for i, j in pairs:
        om = scale * float(u[i] @ u[j])
        p = 1 / (1 + math.exp(-om))
        nll = -math.log(p) if s[i, j] > 0.5 else -math.log(1 - p)
        if balanced:
            nll *= len(pairs) / n_pos if s[i, j] > 0.5 else len(pairs) / n_neg
        total += nll
    return total / len(pairs)


@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("scale", [0.5, 10 / 5])
def test_matches_the_per_pair_likelihood(balanced: bool, scale: float) -> None:
    u, y = _batch()
    s = pair_similarity(y)
    got = pairwise_likelihood_loss(u, s, omega_scale=scale, balanced=balanced)
    assert float(got) == pytest.approx(_loop(u, s, scale, balanced), rel=1e-9)


def test_balanced_weights_make_both_sides_contribute_equally() -> None:
    _, y = _batch()
    s = pair_similarity(y)
    w = balanced_pair_weights(s)
    i, j = torch.triu_indices(6, 6, offset=1)
    pos = s[i, j] > 0.5
    assert float((w[i, j] * pos).sum()) == pytest.approx(float((w[i, j] * ~pos).sum()))
    assert float((w[i, j] * pos).sum()) == pytest.approx(len(i))


def test_sign_quantization_is_distance_to_the_sign() -> None:
    u = torch.tensor([[0.5, -2.0], [0.0, 1.0]])
    # row 0: (1-0.5)² + (-1+2)² = 1.25; row 1: (1-0)² + 0 = 1
    assert float(sign_quantization_loss(u)) == pytest.approx((1.25 + 1.0) / 2)

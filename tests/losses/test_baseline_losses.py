"""DSH/DRH squared contrastive, ATH triplet likelihood and code regularisers vs direct loops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from cxrhash.losses.code_regularizers import (
    bit_balance_loss,
    log_cosh_quantization,
    variance_loss,
    weight_orthogonality_loss,
)
from cxrhash.losses.pairs import pair_similarity
from cxrhash.losses.squared_contrastive import squared_contrastive_loss
from cxrhash.losses.triplet import triplet_likelihood_loss

Y = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0]], dtype=torch.float64)


def _u(seed: int = 0) -> torch.Tensor:
    return torch.randn(5, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_squared_contrastive_matches_pair_loop() -> None:
    u, s, m = _u(), pair_similarity(Y), 8.0
    vals = []
    for i, j in itertools.combinations(range(5), 2):
        d2 = float(((u[i] - u[j]) ** 2).sum())
        vals.append(0.5 * d2 if s[i, j] > 0.5 else 0.5 * max(m - d2, 0.0))
    assert float(squared_contrastive_loss(u, s, m)) == pytest.approx(sum(vals) / len(vals))


def test_triplet_likelihood_matches_triplet_loop() -> None:
    u, s, margin = _u(1), pair_similarity(Y), 1.0
    vals = []
    for a, p, n in itertools.product(range(5), repeat=3):
        if a == p or s[a, p] < 0.5 or s[a, n] > 0.5:
            continue
        x = 0.5 * float(u[a] @ u[p]) - 0.5 * float(u[a] @ u[n]) - margin
        vals.append(-math.log(1 / (1 + math.exp(-x))))
    assert float(triplet_likelihood_loss(u, s, margin)) == pytest.approx(sum(vals) / len(vals))


def test_bit_balance_is_zero_for_balanced_codes_and_positive_otherwise() -> None:
    balanced = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    assert float(bit_balance_loss(balanced)) == 0.0
    skewed = torch.tensor([[1.0, 1.0], [1.0, -1.0]])  # bit 0 mean 1, bit 1 mean 0
    assert float(bit_balance_loss(skewed)) == pytest.approx(1.0)


def test_orthogonality_zero_for_orthonormal_rows() -> None:
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    assert float(weight_orthogonality_loss(q[:3])) == pytest.approx(0.0, abs=1e-12)
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # gram [[1,1],[1,1]] → off-diagonals 1
    assert float(weight_orthogonality_loss(w)) == pytest.approx(2.0)


def test_log_cosh_quantization_matches_formula_and_is_stable() -> None:
    u = torch.tensor([[0.2, -3.0], [50.0, 1.0]], dtype=torch.float64)
    expect = [math.log(math.cosh(abs(x) - 1)) for x in (0.2, -3.0)]
    expect2 = [(50.0 - 1) - math.log(2.0), 0.0]  # log cosh(49) without overflow
    got = float(log_cosh_quantization(u))
    assert got == pytest.approx((sum(expect) + sum(expect2)) / 2)


def test_variance_loss_is_minus_total_variance() -> None:
    u = torch.tensor([[1.0, 0.0], [-1.0, 2.0], [0.0, 1.0]])
    c = u - u.mean(0)
    assert float(variance_loss(u)) == pytest.approx(-float((c**2).sum()) / 3)

import pytest
import torch

from cxrhash.losses.quantization import quantization_regularizer


def test_matches_loop_sum_over_bits_mean_over_samples():
    torch.manual_seed(0)
    f = 1.5 * torch.randn(5, 7, dtype=torch.float64)
    per_sample = [sum(abs(abs(v) - 1.0) for v in row) for row in f.tolist()]
    expected = sum(per_sample) / len(per_sample)
    assert quantization_regularizer(f).item() == pytest.approx(expected, rel=1e-12)


def test_hand_worked_and_zero_at_binary_codes():
    f = torch.tensor([[0.5, -1.0, 2.0], [0.0, 1.0, -1.0]])
    assert quantization_regularizer(f).item() == pytest.approx(((0.5 + 0 + 1) + (1 + 0 + 0)) / 2)
    assert quantization_regularizer(torch.tensor([[1.0, -1.0]])).item() == 0.0

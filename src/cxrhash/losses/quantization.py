"""Quantisation regulariser L_r of SPEC §1 (eq. 10)."""

from __future__ import annotations

from torch import Tensor


def quantization_regularizer(f: Tensor) -> Tensor:
    """L_r = ‖ |f| − 1 ‖₁, pushing each relaxed output toward ±1.

    The L1 norm sums over the k bits of a sample; the loss is the mean of that
    per-sample norm over the batch (0 for an empty batch).

    Args:
        f: B×k relaxed hash outputs.

    Returns:
        Scalar loss.
    """
    if f.ndim != 2:
        raise ValueError(f"f must be a B×k matrix, got shape {tuple(f.shape)}")
    if f.shape[0] == 0:
        return f.sum() * 0.0
    return (f.abs() - 1.0).abs().sum(dim=1).mean()

"""Multi-label binary cross-entropy L_cb of SPEC §1 (eq. 11), with unknown labels masked."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def multilabel_bce(logits: Tensor, labels: Tensor) -> Tensor:
    """L_cb = −Σ_c [y_c ln ŷ_c + (1−y_c) ln(1−ŷ_c)], ŷ = σ(logits).

    Summed over classes, averaged over samples. NaN (unknown) labels contribute
    nothing. Computed from logits with ``binary_cross_entropy_with_logits`` for
    numerical stability.

    Args:
        logits: B×C classifier logits.
        labels: B×C targets in {0, 1} or NaN.

    Returns:
        Scalar loss (0 for an empty batch).
    """
    if logits.shape != labels.shape or logits.ndim != 2:
        raise ValueError(
            f"logits and labels must both be B×C with the same shape, got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    known = ~torch.isnan(labels)
    target = torch.where(known, labels, torch.zeros_like(labels)).to(logits.dtype)
    per_item = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (per_item * known).sum(dim=1).mean()

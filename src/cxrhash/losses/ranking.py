"""OSDH's order-sensitive ranking loss over multi-level similarity (SPEC §2, Chen 2018 eq. 2)."""

from __future__ import annotations

import torch
from torch import Tensor

from cxrhash.losses.pairs import pair_levels


def relaxed_hamming(u: Tensor) -> Tensor:
    """D(b_i, b_j) = ½(k − ⟨u_i, u_j⟩), the Hamming distance for u ∈ {−1, 1}^k (B×B)."""
    return 0.5 * (u.shape[1] - u @ u.T)


def order_sensitive_ranking_loss(u: Tensor, labels: Tensor, rho: float = 5.0) -> Tensor:
    """Σ_q Σ_{i,j: r_qi > r_qj} (2^{r_qi} − 2^{r_qj})/Z · max(0, D(u_q,u_i) − D(u_q,u_j) + ρ).

    Every item of the batch is a query q; its ranking list is the rest of the
    batch (i, j ≠ q), with similarity level r = |Y_q ∩ Y_i|. The paper leaves Z
    as "a constant related to the length of the ranking list"; here Z is the
    number of ordered triplets (q, i, j) with r_qi > r_qj in the batch, so the
    term is a weighted mean over triplets and does not grow with the batch size.

    Args:
        u: B×k relaxed codes (tanh(α·h) for OSDH).
        labels: B×C multi-hot labels (NaN counts as absent).
        rho: margin ρ between the two Hamming distances (the paper: 5).

    Returns:
        Scalar loss; 0 (attached to the graph) when no triplet has r_i > r_j.
    """
    if u.ndim != 2 or labels.ndim != 2 or u.shape[0] != labels.shape[0]:
        raise ValueError(
            f"u (B×k) and labels (B×C) must share B, got {tuple(u.shape)} and {tuple(labels.shape)}"
        )
    r = pair_levels(labels).to(u.dtype)
    dist = relaxed_hamming(u)
    # [q, i, j]: r_qi > r_qj with q, i, j distinct
    b = u.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=u.device)
    not_q = ~eye
    valid = (r.unsqueeze(2) > r.unsqueeze(1)) & not_q.unsqueeze(2) & not_q.unsqueeze(1)
    valid &= ~eye.unsqueeze(0)
    n = valid.sum()
    if n == 0:
        return u.sum() * 0.0
    weight = torch.pow(2.0, r).unsqueeze(2) - torch.pow(2.0, r).unsqueeze(1)
    hinge = torch.clamp(dist.unsqueeze(2) - dist.unsqueeze(1) + rho, min=0.0)
    return (weight * hinge * valid).sum() / n

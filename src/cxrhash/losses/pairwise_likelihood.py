"""Bayesian pairwise likelihood of DPSH / HashNet / semantic-attention (SPEC §3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cxrhash.losses.pairs import check_pair_matrix, upper_pairs


def balanced_pair_weights(sim: Tensor) -> Tensor:
    """w_ij = |S|/|S₊| for similar pairs and |S|/|S₋| for dissimilar ones (B×B).

    Over the pairs i < j of the batch; with this weighting the positive and the
    negative pairs contribute equally however imbalanced they are. A side with
    no pair gets weight 0 (nothing to weigh).
    """
    i, j = upper_pairs(sim.shape[0], device=sim.device)
    s = sim[i, j]
    total = s.numel()
    n_pos = float((s > 0.5).sum())
    n_neg = total - n_pos
    w_pos = total / n_pos if n_pos else 0.0
    w_neg = total / n_neg if n_neg else 0.0
    return torch.where(sim > 0.5, torch.full_like(sim, w_pos), torch.full_like(sim, w_neg))


def pairwise_likelihood_loss(
    u: Tensor, sim: Tensor, *, omega_scale: float = 0.5, balanced: bool = False
) -> Tensor:
    """Mean over pairs i < j of −w_ij·log p(s_ij | u_i, u_j) with Ω_ij = omega_scale·⟨u_i, u_j⟩.

    p(s | u_i, u_j) = σ(Ω)^s (1 − σ(Ω))^{1−s}, so −log p = log(1 + e^Ω) − s·Ω
    (computed as ``softplus(Ω) − s·Ω`` for stability). DPSH and the
    semantic-attention paper use Ω = ½⟨u_i, u_j⟩; HashNet uses a scaled
    sigmoid, Ω = (10/k)·⟨h_i, h_j⟩ in its code.

    Args:
        u: B×k relaxed codes.
        sim: B×B similarity (1 similar, 0 dissimilar).
        omega_scale: the factor in Ω.
        balanced: weight pairs by ``balanced_pair_weights`` (semantic-attention, HashNet).
    """
    b = check_pair_matrix(u, sim)
    if b < 2:
        return u.sum() * 0.0
    i, j = upper_pairs(b, device=u.device)
    omega = omega_scale * (u[i] * u[j]).sum(dim=1)
    s = sim[i, j].to(u.dtype)
    nll = F.softplus(omega) - s * omega
    if balanced:
        nll = nll * balanced_pair_weights(sim)[i, j].to(u.dtype)
    return nll.mean()


def bank_pairwise_likelihood_loss(
    u: Tensor, bank: Tensor, sim: Tensor, *, omega_scale: float = 0.5
) -> Tensor:
    """Mean over the batch i and every training image j of −log p(s_ij | u_i, U_j).

    DPSH (Li 2016) pairs each batch item with the whole training set: U_j are the
    codes of a :class:`cxrhash.methods.code_bank.CodeBank` (no gradient flows into
    them), Ω_ij = omega_scale·⟨u_i, U_j⟩, −log p = softplus(Ω) − s·Ω.

    Args:
        u: B×k relaxed codes of the batch.
        bank: N×k codes of the training set.
        sim: B×N similarity of the batch to the training set.
    """
    if sim.shape != (u.shape[0], bank.shape[0]) or bank.shape[1] != u.shape[1]:
        raise ValueError(
            f"u {tuple(u.shape)}, bank {tuple(bank.shape)} and sim {tuple(sim.shape)} "
            "must be B×k, N×k and B×N"
        )
    omega = omega_scale * (u @ bank.detach().to(u.dtype).T)
    return (F.softplus(omega) - sim.to(u.dtype) * omega).mean()


def sign_quantization_loss(u: Tensor) -> Tensor:
    """‖b − u‖² with b = sign(u) (DPSH's η-term), summed over bits, mean over the batch."""
    if u.shape[0] == 0:
        return u.sum() * 0.0
    b = torch.where(u >= 0, torch.ones_like(u), -torch.ones_like(u))
    return (b - u).pow(2).sum(dim=1).mean()

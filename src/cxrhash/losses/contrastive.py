"""Pairwise contrastive loss L_c of SPEC §1 (eq. 8–9)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cxrhash.losses.pairs import upper_pairs

_EPS = 1e-12


def default_margin(bits: int) -> float:
    """Default margin m = √k for k-bit outputs in [−1, 1]^k.

    D ranges over [0, 2√k] (opposite codes) and two independent random codes
    lie ≈ √(2k) apart; m = √k pushes dissimilar pairs at least half the
    maximal distance apart. (DSH's m = 2k is a margin on *squared* distances.)
    """
    return math.sqrt(bits)


def contrastive_loss(
    f: Tensor, sim: Tensor, margin: float | None = None, pull_margin: float = 0.0
) -> Tensor:
    """Mean over all pairs i < j of L_c = ½(1−y)·D² + ½·y·max(0, m − D)².

    With ``pull_margin`` p > 0 the pull term is ½(1−y)·max(0, D − p)² (the
    double-margin contrastive loss): similar pairs are drawn within distance p
    of each other, not onto one point, so films of one finding keep room for
    the graded differences a float embedding has.

    y = 1 − s_ij (y = 0 for a similar pair, 1 otherwise, as SPEC writes it) and
    D = ‖f_i − f_j‖₂. D² is computed directly from the differences; D itself,
    needed only in the hinge, is √(D² + 1e−12) so the gradient stays finite
    when f_i = f_j.

    Args:
        f: B×k relaxed hash outputs.
        sim: B×B pair similarity (1 similar, 0 dissimilar), e.g. ``pair_similarity``.
        margin: m; ``None`` means ``default_margin(k)`` = √k.

    Returns:
        Scalar loss; 0 (still attached to the graph) for a batch with fewer than 2 items.
    """
    if f.ndim != 2:
        raise ValueError(f"f must be a B×k matrix, got shape {tuple(f.shape)}")
    b = f.shape[0]
    if sim.shape != (b, b):
        raise ValueError(f"sim must be {b}×{b} to match f, got shape {tuple(sim.shape)}")
    if b < 2:
        return f.sum() * 0.0
    m = default_margin(f.shape[1]) if margin is None else margin
    i, j = upper_pairs(b, device=f.device)
    d2 = (f[i] - f[j]).pow(2).sum(dim=1)
    y = 1.0 - sim[i, j].to(f.dtype)
    dist = torch.sqrt(d2 + _EPS)
    hinge = torch.clamp(m - dist, min=0.0)
    pull = d2 if pull_margin <= 0 else torch.clamp(dist - pull_margin, min=0.0).pow(2)
    return (0.5 * (1.0 - y) * pull + 0.5 * y * hinge.pow(2)).mean()

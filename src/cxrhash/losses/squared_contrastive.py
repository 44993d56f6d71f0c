"""Contrastive loss on *squared* distances (DSH, Liu 2016; DRH's retrieval term)."""

from __future__ import annotations

import torch
from torch import Tensor

from cxrhash.losses.pairs import check_pair_matrix, upper_pairs


def squared_contrastive_loss(u: Tensor, sim: Tensor, margin: float) -> Tensor:
    """Mean over pairs i < j of ½·s·D² + ½·(1 − s)·max(m − D², 0), D² = ‖u_i − u_j‖².

    DSH's margin is m = 2k (on squared distances, outputs near ±1).
    """
    b = check_pair_matrix(u, sim)
    if b < 2:
        return u.sum() * 0.0
    i, j = upper_pairs(b, device=u.device)
    d2 = (u[i] - u[j]).pow(2).sum(dim=1)
    s = sim[i, j].to(u.dtype)
    return (0.5 * s * d2 + 0.5 * (1.0 - s) * torch.clamp(margin - d2, min=0.0)).mean()

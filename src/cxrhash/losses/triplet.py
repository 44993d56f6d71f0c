"""Triplet label likelihood used by ATH (Fang 2021), in the DTSH form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cxrhash.losses.pairs import check_pair_matrix


def triplet_likelihood_loss(u: Tensor, sim: Tensor, margin: float) -> Tensor:
    """Mean over in-batch triplets (a, p, n), s_ap = 1, s_an = 0, of −log σ(Θ_ap − Θ_an − margin).

    Θ_ij = ½⟨u_i, u_j⟩. −log σ(x) = softplus(−x) = −(x − log(1 + eˣ)), the
    triplet cross-entropy of ATH/DTSH. Every anchor uses every positive and
    every negative of the batch.

    Returns:
        Scalar loss; 0 (attached to the graph) when the batch has no triplet.
    """
    b = check_pair_matrix(u, sim)
    theta = 0.5 * (u @ u.T)
    eye = torch.eye(b, dtype=torch.bool, device=u.device)
    pos = (sim > 0.5) & ~eye
    neg = sim <= 0.5
    valid = pos.unsqueeze(2) & neg.unsqueeze(1)
    n = valid.sum()
    if n == 0:
        return u.sum() * 0.0
    x = theta.unsqueeze(2) - theta.unsqueeze(1) - margin
    return (F.softplus(-x) * valid).sum() / n

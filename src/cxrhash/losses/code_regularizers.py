"""Code-shape regularisers: bit balance, bit independence, smooth quantisation, variance,
feature geometry."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from cxrhash.losses.pairs import upper_pairs


def bit_balance_loss(u: Tensor) -> Tensor:
    """Σ_bits (mean over the batch of u_bit)²: each bit should be +1 for half the images."""
    if u.shape[0] == 0:
        return u.sum() * 0.0
    return u.mean(dim=0).pow(2).sum()


def bit_decorrelation_loss(u: Tensor) -> Tensor:
    """Mean squared off-diagonal correlation of the bits over the batch.

    Bits that always flip together carry one bit of information; this term
    (0 for uncorrelated bits, 1 when every pair is perfectly correlated) asks
    each bit to tell the batch apart in its own way. Constant bits have zero
    variance and are left to :func:`bit_balance_loss`.
    """
    b, k = u.shape
    if b < 2 or k < 2:
        return u.sum() * 0.0
    c = u - u.mean(dim=0, keepdim=True)
    c = c / (c.pow(2).mean(dim=0, keepdim=True) + 1e-6).sqrt()
    corr = c.T @ c / b
    off = corr - torch.diag(torch.diagonal(corr))
    return off.pow(2).sum() / (k * (k - 1))


def weight_orthogonality_loss(w: Tensor) -> Tensor:
    """‖W Wᵀ − I‖²_F for the k×D hash-layer weight: bits as independent projections (DH, DRH)."""
    gram = w @ w.T
    return (gram - torch.eye(w.shape[0], dtype=w.dtype, device=w.device)).pow(2).sum()


def log_cosh_quantization(u: Tensor) -> Tensor:
    """Σ_bits log cosh(|u| − 1), mean over the batch: DRH's smooth quantisation loss."""
    if u.shape[0] == 0:
        return u.sum() * 0.0
    x = u.abs() - 1.0
    # log cosh x = |x| + log(1 + e^{−2|x|}) − log 2, stable for large |x|
    ax = x.abs()
    return (ax + torch.log1p(torch.exp(-2.0 * ax)) - math.log(2.0)).sum(1).mean()


def variance_loss(u: Tensor) -> Tensor:
    """−(1/N)·tr(Uᵀ U) over the centred batch: DH rewards informative (high-variance) bits."""
    if u.shape[0] < 2:
        return u.sum() * 0.0
    c = u - u.mean(dim=0, keepdim=True)
    return -(c.pow(2).sum()) / u.shape[0]


def feature_geometry_loss(u: Tensor, features: Tensor) -> Tensor:
    """(k/4) · mean over pairs i < j of (cos(u_i, u_j) − cos(c_i, c_j))², c = features centred.

    Asks the codes' pair geometry to follow the float embedding's (detached, centred on the
    batch mean as LSH centres it): for ±1 codes cos = 1 − 2·hamming/k, so the term is the mean
    squared Hamming-distance error in bits divided by k. The label terms place the classes;
    this one keeps the graded order inside and between them that a random projection of the
    embedding keeps and class codewords drop.
    """
    b, k = u.shape
    if b < 2:
        return u.sum() * 0.0
    f = features.detach()
    c = f - f.mean(dim=0, keepdim=True)
    un, cn = F.normalize(u, dim=1, eps=1e-8), F.normalize(c, dim=1, eps=1e-8)
    i, j = upper_pairs(b, device=u.device)
    return 0.25 * k * ((un[i] * un[j]).sum(dim=1) - (cn[i] * cn[j]).sum(dim=1)).pow(2).mean()

"""Pairwise label relations within a batch (SPEC §1 similarity, SPEC §6 levels)."""

from __future__ import annotations

import torch
from torch import Tensor


def _label_matrix(labels: Tensor) -> Tensor:
    if labels.ndim != 2:
        raise ValueError(f"labels must be a B×C matrix, got shape {tuple(labels.shape)}")
    return (torch.nan_to_num(labels.float(), nan=0.0) > 0.5).to(torch.float64)


def pair_levels(labels: Tensor) -> Tensor:
    """Similarity level r_ij = |Y_i ∩ Y_j|, the number of findings items i and j share.

    Args:
        labels: B×C multi-hot labels (1 present, 0 absent, NaN unknown; NaN
            counts as absent).

    Returns:
        B×B tensor of shared-label counts, in ``labels``' float dtype.
    """
    y = _label_matrix(labels)
    dtype = labels.dtype if labels.is_floating_point() else torch.float32
    return (y @ y.T).to(dtype)


def pair_similarity(labels: Tensor) -> Tensor:
    """Pair similarity s_ij = 1 if items i and j share ≥ 1 finding, else 0.

    NaN (unknown) labels count as absent. Normal images carry no finding, so
    callers that want normal–normal pairs to be similar append a "No Finding"
    column first (SPEC §6).

    Args:
        labels: B×C multi-hot labels.

    Returns:
        B×B tensor of 0.0 / 1.0, in ``labels``' float dtype.
    """
    levels = pair_levels(labels)
    return (levels >= 1).to(levels.dtype)


def pair_jaccard(labels: Tensor) -> Tensor:
    """Graded pair similarity s_ij = |Y_i ∩ Y_j| / |Y_i ∪ Y_j| ∈ [0, 1] (Jaccard).

    1 for identical finding sets, 0 for disjoint ones, and in between the share
    of findings the two films have in common: the multi-level similarity of
    OSDH in a form a contrastive loss can take as a soft target. NaN counts as
    absent; two films without any finding (no ``No Finding`` column) get 0.

    Args:
        labels: B×C multi-hot labels.

    Returns:
        B×B tensor in ``labels``' float dtype.
    """
    y = _label_matrix(labels)
    inter = y @ y.T
    sizes = y.sum(dim=1)
    union = sizes[:, None] + sizes[None, :] - inter
    dtype = labels.dtype if labels.is_floating_point() else torch.float32
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter)).to(dtype)


def cross_similarity(labels_a: Tensor, labels_b: Tensor) -> Tensor:
    """s_ij = 1 if item i of ``labels_a`` and item j of ``labels_b`` share ≥ 1 finding (A×B).

    NaN counts as absent, as in :func:`pair_similarity`.
    """
    a, b = _label_matrix(labels_a), _label_matrix(labels_b.to(labels_a.device))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"label widths differ: {a.shape[1]} vs {b.shape[1]}")
    dtype = labels_a.dtype if labels_a.is_floating_point() else torch.float32
    return ((a @ b.T) >= 1).to(dtype)


def upper_pairs(batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Index tensors (i, j) of all pairs i < j of a batch, row by row.

    Returns:
        Two int64 tensors of length B(B−1)/2.
    """
    idx = torch.triu_indices(batch_size, batch_size, offset=1, device=device)
    return idx[0], idx[1]


def check_pair_matrix(u: Tensor, sim: Tensor) -> int:
    """Batch size B of codes ``u`` (B×k), after checking that ``sim`` is B×B."""
    b = u.shape[0]
    if sim.shape != (b, b):
        raise ValueError(f"sim must be {b}×{b} to match u, got shape {tuple(sim.shape)}")
    return b

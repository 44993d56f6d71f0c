"""The C2L loss: InfoNCE over the batch keys and the queue, with image and feature mixup
(the terms are described in :mod:`cxrhash.pretrain.c2l`). Pure functions of unit vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_info_nce(
    q: Tensor, keys: Tensor, queue: Tensor, targets: Tensor, temperature: float
) -> Tensor:
    """Cross-entropy of ``softmax(q·[keys; queue]ᵀ/τ)`` against soft targets over ``keys``.

    Args:
        q: ``B×D`` unit query vectors.
        keys: ``B×D`` unit key vectors of the batch.
        queue: ``K×D`` unit key vectors (negatives: their target is 0).
        targets: ``B×B`` non-negative rows summing to 1 (row a = target over the batch keys).
        temperature: τ.

    Returns:
        The mean over the batch.
    """
    logits = q @ torch.cat([keys, queue]).T / temperature
    log_p = F.log_softmax(logits, dim=1)[:, : keys.shape[0]]
    return -(targets * log_p).sum(dim=1).mean()


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo InfoNCE: q_a's positive is k_a; other batch keys and the queue are negatives."""
    return soft_info_nce(
        q, k, queue, torch.eye(len(q), dtype=q.dtype, device=q.device), temperature
    )


def mixup_targets(perm: Tensor, lam: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """``B×B`` soft targets: λ at column a, 1 − λ at column ``perm[a]`` (summed if equal)."""
    eye = torch.eye(len(perm), dtype=dtype, device=perm.device)
    return lam * eye + (1.0 - lam) * eye[perm]


def c2l_loss(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    *,
    q_mix: Tensor | None = None,
    perm: Tensor | None = None,
    lam: float = 1.0,
    temperature: float = 0.2,
    feature_mixup: bool = True,
) -> dict[str, Tensor]:
    """The C2L loss terms (see the module docstring) and their sum under ``"total"``.

    Args:
        q: ``B×D`` unit queries of the query views.
        k: ``B×D`` unit keys of the key views (no gradient needed).
        queue: ``K×D`` unit keys of earlier batches.
        q_mix: ``B×D`` unit queries of the mixed query views; ``None`` = no mixup terms.
        perm: the permutation π used to mix (required with ``q_mix``).
        lam: the mixing weight λ of image ``a`` (1 − λ goes to ``π(a)``).
        temperature: τ.
        feature_mixup: add the feature-mixup term.
    """
    parts = {"moco": info_nce(q, k, queue, temperature)}
    if q_mix is not None:
        if perm is None:
            raise ValueError("c2l_loss: q_mix needs the permutation perm used to mix")
        targets = mixup_targets(perm, lam, q.dtype)
        parts["image_mixup"] = soft_info_nce(q_mix, k, queue, targets, temperature)
        if feature_mixup:
            k_mix = F.normalize(lam * k + (1.0 - lam) * k[perm], dim=1)
            parts["feature_mixup"] = info_nce(q_mix, k_mix, queue, temperature)
    parts["total"] = torch.stack(list(parts.values())).sum()
    return parts

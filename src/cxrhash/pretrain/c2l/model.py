"""The C2L model: query encoder, momentum key encoder, the queue of past keys, shuffled
batch normalisation (``grouped_forward``) and the per-batch mixup draw."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cxrhash.models.backbones import create_backbone
from cxrhash.pretrain.c2l.config import C2LConfig
from cxrhash.pretrain.c2l.loss import c2l_loss


def grouped_forward(
    encoder: nn.Module, x: Tensor, groups: int, order: Tensor | None = None
) -> Tensor:
    """``encoder`` run on ``groups`` consecutive sub-batches of ``x[order]`` (its batch
    normalisation sees one sub-batch at a time), outputs put back in the order of ``x``.

    ``order`` = ``None`` keeps the batch order. With ``groups`` = 1 and no order this is
    ``encoder(x)``. A short last batch gets fewer groups, of at least 2 images each.
    """
    if order is not None:
        x = x[order]
    parts = x.tensor_split(max(1, min(groups, len(x) // 2)))
    out = torch.cat([encoder(part) for part in parts])
    if order is None:
        return out
    restored = torch.empty_like(out)
    restored[order] = out
    return restored


class ContrastiveEncoder(nn.Module):
    """Backbone (stage 4) → global average pool → MLP projection → unit vector."""

    def __init__(self, backbone: str, dim: int) -> None:
        super().__init__()
        spec = create_backbone(backbone, feature_stage=4)
        self.backbone = spec.module
        width = spec.out_channels
        self.head = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        """B×1×S×S images in [0, 1] → B×dim unit vectors."""
        return F.normalize(self.head(self.backbone(x).mean(dim=(2, 3))), dim=1)


class C2LModel(nn.Module):
    """Query encoder, momentum key encoder and the queue of past keys."""

    queue: Tensor
    queue_ptr: Tensor

    def __init__(self, backbone: str, dim: int, queue: int) -> None:
        super().__init__()
        self.encoder_q = ContrastiveEncoder(backbone, dim)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.encoder_k.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        """θ_k ← m·θ_k + (1 − m)·θ_q for every parameter (BN statistics stay the key's own)."""
        for p_k, p_q in zip(self.encoder_k.parameters(), self.encoder_q.parameters(), strict=True):
            p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` over the oldest queue rows, wrapping around the end."""
        size = self.queue.shape[0]
        keys = keys[-size:]
        rows = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        self.queue[rows] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((int(self.queue_ptr) + len(keys)) % size)

    def forward(
        self,
        view_q: Tensor,
        view_k: Tensor,
        *,
        lam: float | None = None,
        perm: Tensor | None = None,
        temperature: float = 0.2,
        feature_mixup: bool = True,
        bn_groups: int = 1,
        key_order: Tensor | None = None,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Loss terms of one batch and its keys (to enqueue after the step).

        ``lam``/``perm`` = ``None`` computes the MoCo term only. ``bn_groups`` and
        ``key_order`` (a permutation of the batch) give the shuffled batch normalisation of
        the module docstring.
        """
        q = grouped_forward(self.encoder_q, view_q, bn_groups)
        with torch.no_grad():
            k = grouped_forward(self.encoder_k, view_k, bn_groups, key_order)
        q_mix = None
        if lam is not None and perm is not None:
            mixed = lam * view_q + (1.0 - lam) * view_q[perm]
            q_mix = grouped_forward(self.encoder_q, mixed, bn_groups)
        parts = c2l_loss(
            q,
            k,
            self.queue,
            q_mix=q_mix,
            perm=perm,
            lam=1.0 if lam is None else lam,
            temperature=temperature,
            feature_mixup=feature_mixup,
        )
        return parts, k


def draw_mixup(config: C2LConfig, batch_size: int) -> tuple[float | None, Tensor | None]:
    """λ ~ Beta(α, α) and a permutation π of the batch from torch's global RNG (``None`` without
    mixup); the engine seeds that RNG per epoch, so a resumed run draws the same values."""
    if config.mixup_alpha <= 0:
        return None, None
    beta = torch.distributions.Beta(config.mixup_alpha, config.mixup_alpha)
    return float(beta.sample()), torch.randperm(batch_size)

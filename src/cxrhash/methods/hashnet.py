"""`hashnet` baseline (Cao 2017): weighted pairwise likelihood, continuation tanh(β·z)."""

from __future__ import annotations

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.losses.pairs import pair_similarity
from cxrhash.losses.pairwise_likelihood import pairwise_likelihood_loss
from cxrhash.losses.terms import loss_terms
from cxrhash.methods.base import EpochInfo, Method, register_method
from cxrhash.methods.common import deep_hash_net, set_hash_scale
from cxrhash.methods.continuation import hashnet_scale
from cxrhash.models.output import HashOutput

DEFAULTS = {"gamma": 0.005, "power": 0.5, "omega_factor": 10.0}


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """Backbone → FC → tanh(β·z) hash layer."""
    return deep_hash_net(config, num_classes, "tanh")


def loss(
    out: HashOutput, labels: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Balanced pairwise likelihood with the adaptive sigmoid Ω = (10/k)·⟨h_i, h_j⟩."""
    p = HASHNET.params(config)
    scale = p["omega_factor"] / out.hash.shape[1]
    total = pairwise_likelihood_loss(
        out.hash, pair_similarity(labels), omega_scale=scale, balanced=True
    )
    return total, loss_terms(total, likelihood=total)


def on_epoch(model: nn.Module, info: EpochInfo, config: TrainConfig) -> None:
    """β = (1 + γ·step)^power at the epoch's first step (HashNet raises it per step)."""
    p = HASHNET.params(config)
    step = info.epoch * info.steps_per_epoch
    set_hash_scale(model, hashnet_scale(step, p["gamma"], p["power"]))


HASHNET = register_method(
    Method(
        name="hashnet",
        build_model=build_model,
        loss=loss,
        description="baseline HashNet (Cao 2017): balanced pairwise likelihood, continuation",
        defaults=DEFAULTS,
        on_epoch=on_epoch,
        paper="Cao et al., ICCV 2017",
    )
)

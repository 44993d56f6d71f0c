"""`osdh` (Chen 2018, SPEC §2): order-sensitive ranking loss + BCE, continuation tanh(α·h)."""

from __future__ import annotations

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.losses.classification import multilabel_bce
from cxrhash.losses.ranking import order_sensitive_ranking_loss
from cxrhash.losses.terms import loss_terms
from cxrhash.methods.base import EpochInfo, Method, register_method
from cxrhash.methods.common import deep_hash_net, set_hash_scale
from cxrhash.methods.continuation import staged_scale
from cxrhash.models.output import HashOutput

DEFAULTS = {"lambda_r": 0.1, "lambda_c": 1.0, "rho": 5.0, "stages": 10, "alpha_max": 10.0}


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """Backbone → FC → k-unit hash layer → tanh(α·h) → linear classifier."""
    return deep_hash_net(config, num_classes, "tanh")


def loss(
    out: HashOutput, labels: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """λ_R·L_R + λ_C·L_C (weight decay λ_p is the optimiser's)."""
    p = OSDH.params(config)
    l_r = order_sensitive_ranking_loss(out.hash, labels, rho=p["rho"])
    l_c = multilabel_bce(out.logits, labels)
    total = p["lambda_r"] * l_r + p["lambda_c"] * l_c
    return total, loss_terms(total, ranking=l_r, bce=l_c)


def on_epoch(model: nn.Module, info: EpochInfo, config: TrainConfig) -> None:
    """Raise α stage by stage (``staged_scale``)."""
    p = OSDH.params(config)
    set_hash_scale(model, staged_scale(info.epoch, info.epochs, int(p["stages"]), p["alpha_max"]))


OSDH = register_method(
    Method(
        name="osdh",
        build_model=build_model,
        loss=loss,
        description="order-sensitive ranking over shared-label levels + BCE; continuation tanh(αh)",
        defaults=DEFAULTS,
        on_epoch=on_epoch,
        paper="Chen et al., MICCAI 2018 (AlexNet, λ_R=0.1, λ_C=1, ρ=5, 10 α stages to ∞)",
    )
)

"""`dsh` baseline (Liu 2016, Deep Supervised Hashing): squared-distance contrastive + L1 term."""

from __future__ import annotations

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.losses.pairs import pair_similarity
from cxrhash.losses.quantization import quantization_regularizer
from cxrhash.losses.squared_contrastive import squared_contrastive_loss
from cxrhash.losses.terms import loss_terms
from cxrhash.methods.base import Method, register_method
from cxrhash.methods.common import deep_hash_net
from cxrhash.models.output import HashOutput

DEFAULTS = {"alpha": 0.01, "margin_factor": 2.0}


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """Backbone → FC → linear hash layer."""
    return deep_hash_net(config, num_classes, "identity")


def loss(
    out: HashOutput, labels: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """½sD² + ½(1−s)max(m − D², 0) with m = 2k, + α‖|u| − 1‖₁ (α = 0.01)."""
    p = DSH.params(config)
    margin = p["margin_factor"] * out.hash.shape[1]
    l_c = squared_contrastive_loss(out.hash, pair_similarity(labels), margin)
    l_r = quantization_regularizer(out.hash)
    total = l_c + p["alpha"] * l_r
    return total, loss_terms(total, contrastive=l_c, quantization=l_r)


DSH = register_method(
    Method(
        name="dsh",
        build_model=build_model,
        loss=loss,
        description="baseline DSH (Liu 2016): contrastive on squared distances, m = 2k, + L1",
        defaults=DEFAULTS,
        paper="Liu et al., CVPR 2016",
    )
)

"""`dh` baseline (Liong 2015, Deep Hashing): unsupervised quantisation, variance, independence."""

from __future__ import annotations

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.losses.code_regularizers import variance_loss, weight_orthogonality_loss
from cxrhash.losses.pairwise_likelihood import sign_quantization_loss
from cxrhash.losses.terms import loss_terms
from cxrhash.methods.base import Method, register_method
from cxrhash.methods.common import deep_hash_net
from cxrhash.models.output import HashOutput

DEFAULTS = {"lambda_var": 1.0, "lambda_orth": 0.001}


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """Backbone → FC → tanh hash layer (DH's top layer is tanh)."""
    return deep_hash_net(config, num_classes, "tanh")


def loss(
    out: HashOutput, labels: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """½‖B − H‖² − (λ₁/2)·variance + (λ₂/2)·‖WWᵀ − I‖²_F; labels are not used (unsupervised)."""
    p = DH.params(config)
    l_q = sign_quantization_loss(out.hash)
    l_v = variance_loss(out.hash)
    w = out.hash_weight
    l_o = weight_orthogonality_loss(w) if w is not None else l_q * 0.0
    total = 0.5 * l_q + 0.5 * p["lambda_var"] * l_v + 0.5 * p["lambda_orth"] * l_o
    return total, loss_terms(total, quantization=l_q, variance=l_v, orthogonality=l_o)


DH = register_method(
    Method(
        name="dh",
        build_model=build_model,
        loss=loss,
        description="baseline DH (Liong 2015): unsupervised quantisation + variance + independence",
        defaults=DEFAULTS,
        paper="Liong et al., CVPR 2015",
    )
)

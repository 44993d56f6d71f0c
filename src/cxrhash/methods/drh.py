"""`drh` baseline (Conjeti 2017, Deep Residual Hashing): retrieval, quantisation, balance, orth."""

from __future__ import annotations

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.losses.code_regularizers import (
    bit_balance_loss,
    log_cosh_quantization,
    weight_orthogonality_loss,
)
from cxrhash.losses.pairs import pair_similarity
from cxrhash.losses.squared_contrastive import squared_contrastive_loss
from cxrhash.losses.terms import loss_terms
from cxrhash.methods.base import Method, register_method
from cxrhash.methods.common import deep_hash_net
from cxrhash.models.output import HashOutput

DEFAULTS = {"margin_factor": 2.0, "lambda_q": 0.1, "lambda_b": 0.1, "lambda_o": 0.001}


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """Residual backbone → FC → tanh hash layer."""
    return deep_hash_net(config, num_classes, "tanh")


def loss(
    out: HashOutput, labels: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Squared contrastive (m = 2k) + λ_q·Σ log cosh(|u|−1) + λ_b·balance + λ_o·‖WWᵀ−I‖²."""
    p = DRH.params(config)
    margin = p["margin_factor"] * out.hash.shape[1]
    l_s = squared_contrastive_loss(out.hash, pair_similarity(labels), margin)
    l_q = log_cosh_quantization(out.hash)
    l_b = bit_balance_loss(out.hash)
    w = out.hash_weight
    l_o = weight_orthogonality_loss(w) if w is not None else l_s * 0.0
    total = l_s + p["lambda_q"] * l_q + p["lambda_b"] * l_b + p["lambda_o"] * l_o
    return total, loss_terms(total, retrieval=l_s, quantization=l_q, balance=l_b, orthogonality=l_o)


DRH = register_method(
    Method(
        name="drh",
        build_model=build_model,
        loss=loss,
        description="baseline DRH (Conjeti 2017): residual net; retrieval, quantisation, balance",
        defaults=DEFAULTS,
        paper="Conjeti et al., IPMI 2017",
    )
)

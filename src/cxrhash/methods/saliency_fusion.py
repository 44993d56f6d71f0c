"""`saliency-fusion` (Guan 2022, SPEC §4): saliency crop → local net; BCE, quantisation, balance."""

from __future__ import annotations

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.losses.classification import multilabel_bce
from cxrhash.losses.code_regularizers import bit_balance_loss
from cxrhash.losses.quantization import quantization_regularizer
from cxrhash.losses.terms import loss_terms
from cxrhash.methods.base import Method, register_method
from cxrhash.models.output import HashOutput
from cxrhash.models.saliency_fusion import SaliencyFusionNet

DEFAULTS = {"lambda_q": 0.1, "lambda_b": 0.1, "lambda_aux": 1.0}


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """SaliencyFusionNet (the paper: DenseNet-121, optionally C2L-pretrained)."""
    return SaliencyFusionNet(
        bits=config.bits,
        num_classes=num_classes,
        backbone=config.backbone,
        feature_stage=4,
        backbone_weights=config.backbone_weights,
    )


def loss(
    out: HashOutput, labels: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE(hash classifier) + λ_q·‖|u|−1‖₁ + λ_b·Σ(bit mean)² + λ_aux·BCE(global classifier)."""
    p = SALIENCY_FUSION.params(config)
    l_c = multilabel_bce(out.logits, labels)
    l_q = quantization_regularizer(out.hash)
    l_b = bit_balance_loss(out.hash)
    l_a = multilabel_bce(out.aux_logits, labels) if out.aux_logits is not None else l_c * 0.0
    total = l_c + p["lambda_q"] * l_q + p["lambda_b"] * l_b + p["lambda_aux"] * l_a
    return total, loss_terms(total, bce=l_c, quantization=l_q, balance=l_b, bce_global=l_a)


SALIENCY_FUSION = register_method(
    Method(
        name="saliency-fusion",
        build_model=build_model,
        loss=loss,
        description="saliency map → mask crop → local network, fused with the global one; "
        "BCE + quantisation + bit balance",
        defaults=DEFAULTS,
        paper="Guan et al., CMPB 222 (2022) (DenseNet-121 pre-trained by C2L)",
        paper_backbone="densenet121",
    )
)

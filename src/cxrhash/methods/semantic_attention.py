"""`semantic-attention` (Zhu 2022, SPEC §3): Grad-CAM/Otsu region + weighted pair likelihood."""

from __future__ import annotations

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.losses.classification import multilabel_bce
from cxrhash.losses.pairs import pair_similarity
from cxrhash.losses.pairwise_likelihood import pairwise_likelihood_loss, sign_quantization_loss
from cxrhash.losses.terms import loss_terms
from cxrhash.methods.base import Method, register_method
from cxrhash.models.output import HashOutput
from cxrhash.models.semantic_attention import SemanticAttentionNet

DEFAULTS = {"eta": 0.1, "gamma": 1.0}


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """SemanticAttentionNet on the configured backbone and feature stage."""
    return SemanticAttentionNet(
        bits=config.bits,
        num_classes=num_classes,
        backbone=config.backbone,
        feature_stage=config.feature_stage,
        backbone_weights=config.backbone_weights,
    )


def loss(
    out: HashOutput, labels: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Balanced pairwise NLL (Ω = ½⟨u_i,u_j⟩) + η·‖b − u‖² + γ·BCE of the guiding classifier."""
    p = SEMANTIC_ATTENTION.params(config)
    l_p = pairwise_likelihood_loss(out.hash, pair_similarity(labels), balanced=True)
    l_q = sign_quantization_loss(out.hash)
    l_c = multilabel_bce(out.logits, labels)
    total = l_p + p["eta"] * l_q + p["gamma"] * l_c
    return total, loss_terms(total, likelihood=l_p, quantization=l_q, bce=l_c)


SEMANTIC_ATTENTION = register_method(
    Method(
        name="semantic-attention",
        build_model=build_model,
        loss=loss,
        description="classification-guided (Grad-CAM→Otsu) local + global features; "
        "weighted Bayesian pairwise likelihood",
        defaults=DEFAULTS,
        paper="Zhu et al., Computer Science 49(8) 2022 (ChestX-ray14)",
    )
)

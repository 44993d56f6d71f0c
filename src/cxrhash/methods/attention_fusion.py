"""`attention-fusion` (Guan et al. 2023): spatial attention + global/local fusion.

Loss: L = L_c + α·L_r + β·L_cb (SPEC §1), pairs formed within the batch.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.losses import attention_fusion_loss
from cxrhash.methods.base import Method, register_method
from cxrhash.models.attention_fusion import AttentionFusionNet
from cxrhash.models.output import HashOutput


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The attention-fusion network for ``config`` (backbone, bits, ablation variant)."""
    return AttentionFusionNet(
        bits=config.bits,
        num_classes=num_classes,
        backbone=config.backbone,
        feature_stage=config.feature_stage,
        variant=config.variant,
        backbone_weights=config.backbone_weights,
        hash_activation=config.hash_activation,
    )


def loss(
    out: HashOutput, labels: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Joint contrastive + quantisation + BCE loss with the config's α, β and margin."""
    return attention_fusion_loss(
        out, labels, alpha=config.alpha, beta=config.beta, margin=config.margin
    )


ATTENTION_FUSION = register_method(
    Method(
        name="attention-fusion",
        build_model=build_model,
        loss=loss,
        description="spatial attention (3 descriptors) + global/local fusion; contrastive+reg+BCE",
    )
)

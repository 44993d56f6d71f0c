"""DeepHashNet: backbone → global pooling → FC → hash head; the deep baselines and OSDH."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import Tensor

from cxrhash.models.attention import DESCRIPTORS, SpatialAttention
from cxrhash.models.backbones import create_backbone
from cxrhash.models.hash_model import Features, HashModel
from cxrhash.models.output import HashOutput


class DeepHashNet(HashModel):
    """The plain deep-hashing network of DH/DSH/DPSH/HashNet/DRH/OSDH, optionally with attention.

    x → backbone (full: ``feature_stage=4`` by default) → [spatial attention
    M(F) ⊗ F, ATH's three-descriptor module] → global average pooling →
    FC + ReLU (``features``, the float embedding) → hash head.
    """

    def __init__(
        self,
        *,
        bits: int,
        num_classes: int,
        backbone: str = "resnet50",
        feature_stage: int = 4,
        backbone_weights: str | Path | None = None,
        fc_dim: int = 512,
        activation: str = "identity",
        attention: bool = False,
    ) -> None:
        super().__init__()
        spec = create_backbone(backbone, feature_stage=feature_stage, weights=backbone_weights)
        self.backbone = spec.module
        self.attention = SpatialAttention(DESCRIPTORS) if attention else None
        self.build_head(
            spec.out_channels,
            bits=bits,
            num_classes=num_classes,
            fc_dim=fc_dim,
            activation=activation,
        )

    def forward_features(self, x: Tensor) -> Features:
        """GAP of the (attention-weighted) backbone map, and the attention map if any."""
        fmap = self.backbone(x)
        att = None
        if self.attention is not None:
            att = self.attention(fmap)
            fmap = att * fmap
        return Features(fmap.mean(dim=(2, 3)), attention=att)

    def forward_head(self, features: Features) -> HashOutput:
        """The shared head's output with the hash layer's weight, which DH's and DRH's
        losses regularise."""
        return replace(super().forward_head(features), hash_weight=self.head.hash_layer.weight)

"""DeepHashNet: backbone → global pooling → FC → hash head; the deep baselines and OSDH."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from cxrhash.models.attention import DESCRIPTORS, SpatialAttention
from cxrhash.models.backbones import create_backbone
from cxrhash.models.hash_head import HashHead
from cxrhash.models.output import HashModel, HashOutput


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
        self.bits = bits
        self.attention = SpatialAttention(DESCRIPTORS) if attention else None
        self.fc = nn.Sequential(nn.Linear(spec.out_channels, fc_dim), nn.ReLU(inplace=True))
        self.head = HashHead(fc_dim, bits, num_classes, activation)

    def forward(self, x: Tensor) -> HashOutput:
        """Run on B×1×S×S images in [0, 1]."""
        fmap = self.backbone(x)
        att = None
        if self.attention is not None:
            att = self.attention(fmap)
            fmap = att * fmap
        features = self.fc(fmap.mean(dim=(2, 3)))
        u, logits = self.head(features)
        return HashOutput(
            hash=u,
            logits=logits,
            features=features,
            attention=att,
            hash_weight=self.head.hash_layer.weight,
        )

"""SemanticAttentionNet (Zhu 2022, SPEC §3): classification-guided local descriptor + global one."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from cxrhash.models.backbones import create_backbone
from cxrhash.models.hash_model import Features, HashModel
from cxrhash.models.saliency import class_activation_map, normalize_maps, otsu_mask


class SemanticAttentionNet(HashModel):
    """Backbone F → classifier (GAP + linear) → Grad-CAM → Otsu region → local descriptor.

    * global descriptor g = GAP(F);
    * the classification network's logits = Linear(g) (trained with BCE; they
      guide the attention and are ``HashOutput.logits``);
    * saliency = normalised Grad-CAM of the predicted findings (closed form,
      ``models.saliency``), ``HashOutput.attention``;
    * region = saliency > Otsu threshold; local descriptor l = mean of F over
      the region (the region is a hard, non-differentiable selection);
    * features = ReLU(FC([g; l])) → hash layer (linear) → u.
    """

    def __init__(
        self,
        *,
        bits: int,
        num_classes: int,
        backbone: str = "resnet50",
        feature_stage: int = 3,
        backbone_weights: str | Path | None = None,
        fc_dim: int = 512,
    ) -> None:
        super().__init__()
        spec = create_backbone(backbone, feature_stage=feature_stage, weights=backbone_weights)
        self.backbone = spec.module
        self.cls = nn.Linear(spec.out_channels, num_classes)
        self.build_head(2 * spec.out_channels, bits=bits, num_classes=num_classes, fc_dim=fc_dim)

    def forward_features(self, x: Tensor) -> Features:
        """[g; l], the saliency map and the guiding classifier's logits (the network's
        ``HashOutput.logits``; the head's own classifier is not used)."""
        fmap = self.backbone(x)
        g = fmap.mean(dim=(2, 3))
        logits = self.cls(g)
        sal = normalize_maps(class_activation_map(fmap, self.cls.weight, torch.sigmoid(logits)))
        region = otsu_mask(sal).to(fmap.dtype)
        local = (fmap * region).sum(dim=(2, 3)) / region.sum(dim=(2, 3)).clamp_min(1.0)
        return Features(torch.cat([g, local], dim=1), attention=sal, logits=logits)

"""SaliencyFusionNet (Guan 2022, SPEC §4): saliency → mask crop → local network, fused."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from cxrhash.models.backbones import create_backbone
from cxrhash.models.hash_model import Features, HashModel
from cxrhash.models.saliency import class_activation_map, mask_boxes, normalize_maps, otsu_mask


class SaliencyFusionNet(HashModel):
    """Global network → saliency map → Otsu mask → crop of the input → local network.

    * global network: backbone F_g, GAP, its own classifier (``aux_logits``,
      trained with BCE so that its saliency means something);
    * saliency = normalised Grad-CAM of F_g (closed form), upsampled to the
      input size; mask = saliency > Otsu threshold; the crop is the mask's
      bounding box (at least a quarter of the side), resampled to the input
      size with ``roi_align``;
    * local network: a second backbone of the same architecture on the crop, GAP;
    * fusion at the pooling layer: [GAP(F_g); GAP(F_l)] → FC + ReLU (features)
      → hash layer (linear, the quantisation loss pushes it to ±1) →
      classification layer (``logits``), the paper's hash layer "between the
      FC and the classification layer".

    ``backbone_weights`` (e.g. a C2L checkpoint) initialise both networks.
    """

    def __init__(
        self,
        *,
        bits: int,
        num_classes: int,
        backbone: str = "densenet121",
        feature_stage: int = 4,
        backbone_weights: str | Path | None = None,
        fc_dim: int = 512,
        min_crop: float = 0.25,
    ) -> None:
        super().__init__()
        g = create_backbone(backbone, feature_stage=feature_stage, weights=backbone_weights)
        loc = create_backbone(backbone, feature_stage=feature_stage, weights=backbone_weights)
        self.global_net, self.local_net = g.module, loc.module
        self.min_crop = min_crop
        self.global_cls = nn.Linear(g.out_channels, num_classes)
        self.build_head(
            g.out_channels + loc.out_channels, bits=bits, num_classes=num_classes, fc_dim=fc_dim
        )

    def crop_boxes(self, saliency: Tensor, size: tuple[int, int]) -> Tensor:
        """Crop boxes (B×4, pixels) from saliency maps upsampled to ``size``."""
        up = F.interpolate(saliency.detach(), size=size, mode="bilinear", align_corners=False)
        return mask_boxes(otsu_mask(up), self.min_crop)

    def forward_features(self, x: Tensor) -> Features:
        """[GAP(F_g); GAP(F_l)], the saliency map and the global network's logits."""
        fg = self.global_net(x)
        g = fg.mean(dim=(2, 3))
        aux = self.global_cls(g)
        sal = normalize_maps(class_activation_map(fg, self.global_cls.weight, torch.sigmoid(aux)))
        boxes = self.crop_boxes(sal, (x.shape[-2], x.shape[-1]))
        rois = torch.cat([torch.arange(len(x), dtype=x.dtype).unsqueeze(1), boxes.to(x.dtype)], 1)
        crop = roi_align(x, rois, output_size=(x.shape[-2], x.shape[-1]), aligned=True)
        local = self.local_net(crop).mean(dim=(2, 3))
        return Features(torch.cat([g, local], dim=1), attention=sal, aux_logits=aux)

"""AttentionFusionNet: the primary ``attention-fusion`` hashing network (SPEC §1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cxrhash.models.attention import DESCRIPTORS, Padding, SpatialAttention
from cxrhash.models.backbones import create_backbone
from cxrhash.models.hash_head import HASH_ACTIVATIONS
from cxrhash.models.hash_model import Features, HashModel
from cxrhash.models.refinement import FeatureRefinement

VARIANTS = ("full", "no-maxp-avgp", "no-fmax", "global-only", "local-only")
BRANCH_DIM = 256

# variant → (global branch?, attention descriptors or None for no local branch)
_VARIANT_LAYOUT: dict[str, tuple[bool, tuple[str, ...] | None]] = {
    "full": (True, DESCRIPTORS),
    "no-maxp-avgp": (True, ("max",)),
    "no-fmax": (True, ("maxp", "avgp")),
    "global-only": (True, None),
    "local-only": (False, DESCRIPTORS),
}


class AttentionFusionNet(HashModel):
    """Backbone → global + attention-weighted local branches → fused FC → hash layer → classifier.

    Flow for x (B×1×S×S in [0, 1]); ``forward_features`` runs the first four steps,
    the shared ``forward_head`` (``models.hash_model``) the rest:

    * F = backbone(x) (the intermediate map, stride 16 by default);
    * global: F_global = refine_g(F) (256-d);
    * local: F' = MaxPool3×3,s1,p1(F); M = attention(F'); F'' = M ⊗ F'
      (M broadcast over channels); F_local = refine_l(F'') (256-d);
    * z = concat(F_global, F_local) (512-d; 256-d for the one-branch variants);
    * features = ReLU(FC(z)) with ``fc_dim`` units — ``HashOutput.features``,
      the float embedding used for the cosine upper bound;
    * f = head.hash_layer(features) (k units and the ``hash_activation``, one of
      ``HASH_ACTIVATIONS``, see ``models.hash_head`` and ``docs/design.md``) —
      ``HashOutput.hash``;
    * logits = head.classifier(f) (linear k→C) — ``HashOutput.logits``.

    Variants (the paper's ablations, ``VARIANTS``): ``"full"``;
    ``"no-maxp-avgp"`` (attention from F_max only); ``"no-fmax"`` (attention from
    F_maxP and F_avgP); ``"global-only"`` (no local branch, ``attention`` is
    ``None``); ``"local-only"`` (no global branch).

    ``refine_width`` is the channel width inside each ``FeatureRefinement``
    (256 by default; tiny test configurations shrink it); ``attention_padding`` the
    padding mode of the attention's fusion convolution (``SpatialAttention``).
    """

    def __init__(
        self,
        *,
        bits: int,
        num_classes: int,
        backbone: str = "resnet50",
        feature_stage: int = 3,
        variant: str = "full",
        backbone_weights: str | Path | None = None,
        fc_dim: int = 512,
        hash_activation: str = "identity",
        classify_codes: bool = False,
        refine_width: int = 256,
        attention_padding: Padding = "zeros",
    ) -> None:
        super().__init__()
        if variant not in _VARIANT_LAYOUT:
            raise ValueError(f"unknown attention-fusion variant {variant!r}; known: {VARIANTS}")
        if hash_activation not in HASH_ACTIVATIONS:
            raise ValueError(
                f"hash_activation must be one of {HASH_ACTIVATIONS}, got {hash_activation!r}"
            )
        if bits < 1 or num_classes < 1 or fc_dim < 1:
            raise ValueError(
                f"bits, num_classes and fc_dim must be ≥ 1, got {bits}, {num_classes}, {fc_dim}"
            )
        self.variant = variant
        self.hash_activation = hash_activation
        spec = create_backbone(backbone, feature_stage=feature_stage, weights=backbone_weights)
        self.backbone = spec.module
        self.feature_channels = spec.out_channels
        self.stride = spec.stride

        use_global, descriptors = _VARIANT_LAYOUT[variant]
        self.refine_global = (
            FeatureRefinement(spec.out_channels, BRANCH_DIM, refine_width) if use_global else None
        )
        # F' = MaxPool3×3,s1(F); parameter-free, so present in every variant.
        self.local_pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.attention: SpatialAttention | None = None
        self.refine_local: FeatureRefinement | None = None
        if descriptors is not None:
            self.attention = SpatialAttention(descriptors, padding=attention_padding)
            self.refine_local = FeatureRefinement(spec.out_channels, BRANCH_DIM, refine_width)
        fused_dim = BRANCH_DIM * (int(use_global) + int(descriptors is not None))
        self.build_head(
            fused_dim,
            bits=bits,
            num_classes=num_classes,
            fc_dim=fc_dim,
            activation=hash_activation,
            classify_codes=classify_codes,
        )

    def forward_features(self, x: Tensor) -> Features:
        """z = concat(F_global, F_local) and the attention map M (``None`` without it)."""
        fmap = self.backbone(x)
        parts: list[Tensor] = []
        attention = None
        if self.refine_global is not None:
            parts.append(self.refine_global(fmap))
        if self.attention is not None and self.refine_local is not None:
            fp = self.local_pool(fmap)
            attention = self.attention(fp)
            parts.append(self.refine_local(attention * fp))
        return Features(torch.cat(parts, dim=1), attention=attention)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Checkpoints written before the shared HashHead held ``hash_layer.*`` and
        # ``classifier.*`` directly (and no continuation scale).
        for layer in ("hash_layer", "classifier"):
            for name in (f"{layer}.weight", f"{layer}.bias"):
                old, new = prefix + name, prefix + "head." + name
                if old in state_dict and new not in state_dict:
                    state_dict[new] = state_dict.pop(old)
        scale = prefix + "head.hash_layer.scale"
        if prefix + "head.hash_layer.weight" in state_dict and scale not in state_dict:
            state_dict[scale] = torch.tensor(1.0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

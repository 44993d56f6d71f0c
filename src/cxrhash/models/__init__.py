"""Networks: backbones (registry), spatial attention, feature refinement, the shared hashing
head (``HashModel``: ``forward_features`` → ``forward_head``), AttentionFusionNet."""

from cxrhash.models.attention import DESCRIPTORS, SpatialAttention
from cxrhash.models.attention_fusion import VARIANTS, AttentionFusionNet
from cxrhash.models.backbones import (
    BACKBONES,
    BackboneRecipe,
    BackboneSpec,
    BackboneWeightsError,
    create_backbone,
)
from cxrhash.models.hash_model import Features, HashModel
from cxrhash.models.output import HashOutput, binarize
from cxrhash.models.refinement import FeatureRefinement

__all__ = [
    "BACKBONES",
    "DESCRIPTORS",
    "VARIANTS",
    "AttentionFusionNet",
    "BackboneRecipe",
    "BackboneSpec",
    "BackboneWeightsError",
    "FeatureRefinement",
    "Features",
    "HashModel",
    "HashOutput",
    "SpatialAttention",
    "binarize",
    "create_backbone",
]

"""Losses, one per file, re-exported here, and the ``LOSSES`` registry."""

from __future__ import annotations

from collections.abc import Callable

from cxrhash.losses.attention_fusion import attention_fusion_loss
from cxrhash.losses.classification import multilabel_bce
from cxrhash.losses.contrastive import contrastive_loss, default_margin
from cxrhash.losses.pairs import pair_jaccard, pair_levels, pair_similarity, upper_pairs
from cxrhash.losses.quantization import quantization_regularizer
from cxrhash.losses.terms import loss_terms
from cxrhash.registry import Registry

LOSSES: Registry[Callable[..., object]] = Registry("loss")

LOSSES.register("contrastive")(contrastive_loss)
LOSSES.register("quantization")(quantization_regularizer)
LOSSES.register("multilabel-bce")(multilabel_bce)
LOSSES.register("attention-fusion")(attention_fusion_loss)

__all__ = [
    "LOSSES",
    "attention_fusion_loss",
    "contrastive_loss",
    "default_margin",
    "loss_terms",
    "multilabel_bce",
    "pair_jaccard",
    "pair_levels",
    "pair_similarity",
    "quantization_regularizer",
    "upper_pairs",
]

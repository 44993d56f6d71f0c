"""`ath` baseline (Fang 2021, attention triplet hashing): spatial attention + triplet likelihood.

ATH's "triplet cross-entropy loss" is a triplet term on the hash codes plus a
classification cross-entropy; the authors' released code
(github.com/fjssharpsword/ATH, ``loss = hash_loss + type_loss``) adds the
cross-entropy of anchor, positive and negative with weight 1. Our labels are
multi-label, so the classification term is the multi-label BCE on the
classifier over the codes, weight ``lambda_c`` = 1.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.losses.classification import multilabel_bce
from cxrhash.losses.pairs import pair_similarity
from cxrhash.losses.pairwise_likelihood import sign_quantization_loss
from cxrhash.losses.terms import loss_terms
from cxrhash.losses.triplet import triplet_likelihood_loss
from cxrhash.methods.base import Method, register_method
from cxrhash.methods.common import deep_hash_net
from cxrhash.models.output import HashOutput

DEFAULTS = {"margin_factor": 0.25, "eta": 0.1, "lambda_c": 1.0}


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """Backbone → spatial attention (channel max, mean, max-pool descriptors) → GAP → FC → hash."""
    return deep_hash_net(config, num_classes, "identity", attention=True)


def loss(
    out: HashOutput, labels: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Triplet likelihood (margin k/4, Θ = ½⟨u_i,u_j⟩) + λ_c·BCE + η·‖sign(u) − u‖²."""
    p = ATH.params(config)
    margin = p["margin_factor"] * out.hash.shape[1]
    l_t = triplet_likelihood_loss(out.hash, pair_similarity(labels), margin)
    l_c = multilabel_bce(out.logits, labels)
    l_q = sign_quantization_loss(out.hash)
    total = l_t + p["lambda_c"] * l_c + p["eta"] * l_q
    return total, loss_terms(total, triplet=l_t, bce=l_c, quantization=l_q)


ATH = register_method(
    Method(
        name="ath",
        build_model=build_model,
        loss=loss,
        description="baseline ATH (Fang 2021): spatial attention + triplet likelihood + BCE",
        defaults=DEFAULTS,
        paper="Fang et al., Medical Image Analysis 2021 (triplet + classification CE, weight 1)",
    )
)

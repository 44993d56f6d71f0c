"""`dpsh` baseline (Li 2016): pairwise likelihood with Ω = ½⟨u_i,u_j⟩ + η‖b − u‖².

As in the paper, each batch item is paired with every training image through a
bank of their latest codes (``--param bank=1``, the default); ``bank=0`` pairs
the batch only with itself.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.losses.pairs import cross_similarity, pair_similarity
from cxrhash.losses.pairwise_likelihood import (
    bank_pairwise_likelihood_loss,
    pairwise_likelihood_loss,
    sign_quantization_loss,
)
from cxrhash.losses.terms import loss_terms
from cxrhash.methods.base import LossContext, Method, register_method
from cxrhash.methods.common import deep_hash_net
from cxrhash.models.output import HashOutput

DEFAULTS = {"eta": 0.1, "bank": 1.0}


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """Backbone → FC → linear hash layer."""
    return deep_hash_net(config, num_classes, "identity")


def uses_bank(config: TrainConfig) -> bool:
    """Whether the batch is paired with the whole training set (the paper) or with itself."""
    return DPSH.params(config)["bank"] >= 0.5


def loss(
    out: HashOutput,
    labels: torch.Tensor,
    config: TrainConfig,
    context: LossContext | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Pairwise negative log-likelihood (vs the training set's bank, or the batch) + η·‖b − u‖².

    Raises:
        ValueError: ``bank=1`` without a ``context`` (the trainer supplies it).
    """
    p = DPSH.params(config)
    if uses_bank(config):
        if context is None or context.bank is None:
            raise ValueError("dpsh with bank=1 needs the training set's code bank (LossContext)")
        sim = cross_similarity(labels, context.bank.labels)
        l_p = bank_pairwise_likelihood_loss(out.hash, context.bank.codes.to(out.hash.device), sim)
    else:
        l_p = pairwise_likelihood_loss(out.hash, pair_similarity(labels))
    l_q = sign_quantization_loss(out.hash)
    total = l_p + p["eta"] * l_q
    return total, loss_terms(total, likelihood=l_p, quantization=l_q)


DPSH = register_method(
    Method(
        name="dpsh",
        build_model=build_model,
        loss=loss,
        description="baseline DPSH (Li 2016): pairwise likelihood against the training set + "
        "quantisation",
        defaults=DEFAULTS,
        uses_bank=uses_bank,
        paper="Li et al., IJCAI 2016",
    )
)

"""`dpsh` baseline (Li 2016): pairwise likelihood with Ω = ½⟨u_i,u_j⟩ + η‖b − u‖²."""

from __future__ import annotations

import torch
from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.losses.pairs import pair_similarity
from cxrhash.losses.pairwise_likelihood import pairwise_likelihood_loss, sign_quantization_loss
from cxrhash.methods.base import Method, register_method
from cxrhash.methods.common import deep_hash_net
from cxrhash.models.output import HashOutput

DEFAULTS = {"eta": 0.1}


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """Backbone → FC → linear hash layer."""
    return deep_hash_net(config, num_classes, "identity")


def loss(
    out: HashOutput, labels: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Unweighted pairwise negative log-likelihood + η·‖sign(u) − u‖²."""
    p = DPSH.params(config)
    l_p = pairwise_likelihood_loss(out.hash, pair_similarity(labels))
    l_q = sign_quantization_loss(out.hash)
    total = l_p + p["eta"] * l_q
    return total, {
        "likelihood": float(l_p.detach()),
        "quantization": float(l_q.detach()),
        "total": float(total.detach()),
    }


DPSH = register_method(
    Method(
        name="dpsh",
        build_model=build_model,
        loss=loss,
        description="baseline DPSH (Li 2016): pairwise likelihood + quantisation",
        defaults=DEFAULTS,
        paper="Li et al., IJCAI 2016",
    )
)

"""Losses, one per file, and the joint ``attention-fusion`` objective (SPEC §1, eq. 8–12)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from cxrhash.losses.classification import multilabel_bce
from cxrhash.losses.code_regularizers import (
    bit_balance_loss,
    bit_decorrelation_loss,
    feature_geometry_loss,
)
from cxrhash.losses.contrastive import contrastive_loss, default_margin
from cxrhash.losses.pairs import pair_jaccard, pair_levels, pair_similarity, upper_pairs
from cxrhash.losses.quantization import quantization_regularizer
from cxrhash.models.hash_head import straight_through_sign
from cxrhash.models.output import HashOutput
from cxrhash.registry import Registry

LOSSES: Registry[Callable[..., object]] = Registry("loss")


def attention_fusion_loss(
    out: HashOutput,
    labels: Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    margin: float | None = None,
    graded: bool = False,
    balance: float = 0.0,
    decorrelation: float = 0.0,
    geometry: float = 0.0,
    code_pairs: bool = False,
    clip_pairs: bool = False,
    pull_margin: float = 0.0,
    code_weight: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """Joint loss L = L_c + α·L_r + β·L_cb of SPEC §1 (α = β = 0.5), plus opt-in terms.

    Pairs are all i < j within the batch; a pair is similar when it shares ≥ 1
    label of ``labels`` (append "No Finding" beforehand for normal–normal
    pairs). The same ``labels`` are the BCE targets, so their columns must
    match ``out.logits``.

    ``graded`` replaces the 0/1 similarity by the Jaccard share of findings
    (``pair_jaccard``), so L_c pulls a pair with weight s and pushes it with
    weight 1 − s and partly similar films settle at distance ≈ (1 − s)·m.
    ``balance`` weights Σ_bits (batch mean of f)² and ``decorrelation`` the
    mean squared correlation between bits (``losses.code_regularizers``);
    ``geometry`` weights ``feature_geometry_loss`` (the codes' pair cosines
    follow the detached float embedding's).
    ``code_pairs`` computes L_c on the binary codes sign(f) with the gradient
    passed straight through to f (``straight_through_sign``), so the distances
    the loss shapes are the Hamming distances the index ranks by (2·√hamming);
    ``clip_pairs`` computes it on clamp(f, −1, 1), so a unit beyond ±1 adds
    nothing to a distance and the margin must be met by more differing bits.
    ``pull_margin`` > 0 pulls similar pairs only to within that distance
    (``contrastive_loss``). ``code_weight`` multiplies every term but the BCE (a warm-up schedule
    passes < 1 in the first epochs). With all of them at their defaults the
    loss is the paper's.

    Args:
        out: the model output (uses ``hash`` and ``logits``).
        labels: B×C labels (1 / 0 / NaN unknown).
        alpha: weight of the quantisation regulariser L_r.
        beta: weight of the BCE term L_cb.
        margin: contrastive margin; ``None`` = ``default_margin(k)`` = √k.

    Returns:
        The total loss (for ``backward``) and its parts as floats, keys
        ``"contrastive"``, ``"quantization"``, ``"bce"``, ``"total"``.
    """
    sim = pair_jaccard(labels) if graded else pair_similarity(labels)
    if code_pairs:
        pair_f = straight_through_sign(out.hash)
    elif clip_pairs:
        pair_f = out.hash.clamp(-1.0, 1.0)
    else:
        pair_f = out.hash
    l_c = contrastive_loss(pair_f, sim, margin, pull_margin)
    l_r = quantization_regularizer(out.hash)
    l_cb = multilabel_bce(out.logits, labels)
    code_terms = l_c + alpha * l_r
    parts = {
        "contrastive": float(l_c.detach()),
        "quantization": float(l_r.detach()),
        "bce": float(l_cb.detach()),
    }
    if balance:
        l_b = bit_balance_loss(out.hash)
        code_terms = code_terms + balance * l_b
        parts["balance"] = float(l_b.detach())
    if decorrelation:
        l_d = bit_decorrelation_loss(out.hash)
        code_terms = code_terms + decorrelation * l_d
        parts["decorrelation"] = float(l_d.detach())
    if geometry:
        l_g = feature_geometry_loss(out.hash, out.features)
        code_terms = code_terms + geometry * l_g
        parts["geometry"] = float(l_g.detach())
    total = (code_terms if code_weight == 1.0 else code_weight * code_terms) + beta * l_cb
    if code_weight != 1.0:
        parts["code_weight"] = float(code_weight)
    parts["total"] = float(total.detach())
    return total, parts


LOSSES.register("contrastive")(contrastive_loss)
LOSSES.register("quantization")(quantization_regularizer)
LOSSES.register("multilabel-bce")(multilabel_bce)
LOSSES.register("attention-fusion")(attention_fusion_loss)

__all__ = [
    "LOSSES",
    "attention_fusion_loss",
    "contrastive_loss",
    "default_margin",
    "multilabel_bce",
    "pair_jaccard",
    "pair_levels",
    "pair_similarity",
    "quantization_regularizer",
    "upper_pairs",
]

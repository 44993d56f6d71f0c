"""The joint ``attention-fusion`` objective (SPEC §1, eq. 8–12) and its opt-in terms."""

from __future__ import annotations

from torch import Tensor

from cxrhash.losses.classification import multilabel_bce
from cxrhash.losses.code_regularizers import (
    bit_balance_loss,
    bit_decorrelation_loss,
    feature_geometry_loss,
)
from cxrhash.losses.contrastive import contrastive_loss
from cxrhash.losses.pairs import pair_jaccard, pair_similarity
from cxrhash.losses.quantization import quantization_regularizer
from cxrhash.losses.terms import loss_terms
from cxrhash.models.hash_head import straight_through_sign
from cxrhash.models.output import HashOutput


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
    ``balance``, ``decorrelation`` and ``geometry`` weight the code regularisers of
    :func:`code_regularizers`. ``code_pairs`` and ``clip_pairs`` choose what L_c
    measures distances on (:func:`pair_outputs`). ``pull_margin`` > 0 pulls similar
    pairs only to within that distance (``contrastive_loss``). ``code_weight``
    multiplies every term but the BCE (a warm-up schedule passes < 1 in the first
    epochs). With all of them at their defaults the loss is the paper's.

    Args:
        out: the model output (uses ``hash`` and ``logits``; ``features`` with ``geometry``).
        labels: B×C labels (1 / 0 / NaN unknown).
        alpha: weight of the quantisation regulariser L_r.
        beta: weight of the BCE term L_cb.
        margin: contrastive margin; ``None`` = ``default_margin(k)`` = √k.

    Returns:
        The total loss (for ``backward``) and its parts as floats, keys
        ``"contrastive"``, ``"quantization"``, ``"bce"``, then each opt-in term used
        (``"balance"``, ``"decorrelation"``, ``"geometry"``, ``"code_weight"`` when
        ≠ 1) and ``"total"``.
    """
    sim = pair_jaccard(labels) if graded else pair_similarity(labels)
    pair_f = pair_outputs(out.hash, code_pairs=code_pairs, clip_pairs=clip_pairs)
    l_c = contrastive_loss(pair_f, sim, margin, pull_margin)
    l_r = quantization_regularizer(out.hash)
    l_cb = multilabel_bce(out.logits, labels)
    regularizers = code_regularizers(
        out, balance=balance, decorrelation=decorrelation, geometry=geometry
    )
    code_terms = l_c + alpha * l_r
    for weight, term in regularizers.values():
        code_terms = code_terms + weight * term
    total = (code_terms if code_weight == 1.0 else code_weight * code_terms) + beta * l_cb
    schedule = {} if code_weight == 1.0 else {"code_weight": code_weight}
    used = {name: term for name, (_, term) in regularizers.items()}
    return total, loss_terms(total, contrastive=l_c, quantization=l_r, bce=l_cb, **used, **schedule)


def pair_outputs(f: Tensor, *, code_pairs: bool = False, clip_pairs: bool = False) -> Tensor:
    """What L_c measures pair distances on.

    ``code_pairs``: the binary codes sign(f) with the gradient passed straight through
    to f (``straight_through_sign``), so the distances the loss shapes are the Hamming
    distances the index ranks by (2·√hamming); ``clip_pairs``: clamp(f, −1, 1), so a
    unit beyond ±1 adds nothing to a distance and the margin must be met by more
    differing bits; else f itself (the paper).
    """
    if code_pairs:
        return straight_through_sign(f)
    if clip_pairs:
        return f.clamp(-1.0, 1.0)
    return f


def code_regularizers(
    out: HashOutput, *, balance: float = 0.0, decorrelation: float = 0.0, geometry: float = 0.0
) -> dict[str, tuple[float, Tensor]]:
    """The opt-in code terms with a non-zero weight, by name: (weight, term).

    ``balance``: Σ_bits (batch mean of f)²; ``decorrelation``: the mean squared
    correlation between bits; ``geometry``: ``feature_geometry_loss`` (the codes' pair
    cosines follow the detached float embedding's) — ``losses.code_regularizers``.
    """
    terms: dict[str, tuple[float, Tensor]] = {}
    if balance:
        terms["balance"] = (balance, bit_balance_loss(out.hash))
    if decorrelation:
        terms["decorrelation"] = (decorrelation, bit_decorrelation_loss(out.hash))
    if geometry:
        terms["geometry"] = (geometry, feature_geometry_loss(out.hash, out.features))
    return terms

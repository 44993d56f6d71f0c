"""The one output type every hashing model returns, and the binarisation rule."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class HashOutput:
    """What a hashing network returns for a batch of B radiographs.

    Attributes:
        hash: B×k pre-binarisation outputs f of the hash layer (its activation —
            identity, tanh, √k-normalised or batch-normalised — see ``models.hash_head``).
        logits: B×C classifier logits computed on ``hash`` (for the BCE term).
        features: B×D float embedding right before the hash layer; ranked by
            cosine it gives the float upper bound of the evaluation.
        attention: B×1×h×w spatial attention map M(F') (or the class-activation
            saliency map of the CAM-guided models), ``None`` for models without one.
        aux_logits: B×C logits of an auxiliary classifier (the guiding global
            network of ``saliency-fusion``), ``None`` otherwise.
        hash_weight: the k×D hash-layer weight, for losses that regularise it
            (DH's and DRH's bit independence), ``None`` when not exposed.
    """

    hash: Tensor
    logits: Tensor
    features: Tensor
    attention: Tensor | None = None
    aux_logits: Tensor | None = None
    hash_weight: Tensor | None = None


def binarize(h: Tensor) -> Tensor:
    """Binary code of ``h``: ``sign(h)`` with 0 → +1, stored as bits.

    Args:
        h: B×k real-valued hash outputs.

    Returns:
        B×k ``torch.bool`` tensor, True (bit 1) where ``h >= 0`` (sign +1) and
        False (bit 0) where ``h < 0`` (sign −1) — the layout
        ``index.codes.pack_codes`` expects.
    """
    return h.detach() >= 0

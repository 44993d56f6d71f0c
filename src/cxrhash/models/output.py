"""The one output type every hashing model returns, and the binarisation rule."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class HashOutput:
    """What a hashing network returns for a batch of B radiographs.

    Attributes:
        hash: B×k pre-binarisation outputs f in (−1, 1) (tanh of the hash layer).
        logits: B×C classifier logits computed on ``hash`` (for the BCE term).
        features: B×D float embedding right before the hash layer; ranked by
            cosine it gives the float upper bound of the evaluation.
        attention: B×1×h×w spatial attention map M(F'), or ``None`` for models
            without an attention branch.
    """

    hash: Tensor
    logits: Tensor
    features: Tensor
    attention: Tensor | None = None


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

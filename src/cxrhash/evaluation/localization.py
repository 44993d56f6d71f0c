"""Does the heat-map look at the lesion? A pointing game on phantom masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrhash.models.heatmaps import query_heatmaps


@dataclass
class PointingResult:
    """Pointing-game outcome over images that have at least one lesion.

    Attributes:
        hit_rate: fraction of images whose attention peak lies inside a lesion mask.
        chance_rate: mean fraction of the image covered by lesion masks, i.e. the hit
            rate of a peak placed uniformly at random.
        n_images: images scored.
    """

    hit_rate: float
    chance_rate: float
    n_images: int


def attention_peaks(attention: torch.Tensor, size: int) -> np.ndarray:
    """Row/column of the maximum of each attention map after bilinear upsampling to ``size``."""
    up = F.interpolate(attention, size=(size, size), mode="bilinear", align_corners=False)
    flat = up.flatten(1).argmax(dim=1).numpy()
    return np.stack([flat // size, flat % size], axis=1)


@torch.no_grad()
def pointing_game(
    model: nn.Module,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    batch_size: int = 64,
    heatmap: str = "attention",
) -> PointingResult:
    """Score heat-map peaks against lesion masks.

    Args:
        model: a network whose output has an ``attention`` map (B×1×h×w), or any network
            with a backbone for ``heatmap="gradcam"``.
        images: N×S×S float images in [0, 1] at the model's input size.
        masks: N×F×S×S boolean lesion masks (any finding counts); images without
            any lesion are left out.
        heatmap: one of ``models.heatmaps.HEATMAPS``.

    Raises:
        ValueError: the model has no attention map (e.g. the ``global-only`` variant).
    """
    union = np.any(np.asarray(masks, dtype=bool), axis=1, keepdims=False).astype(bool)
    keep = np.flatnonzero(union.reshape(len(union), -1).any(axis=1))
    if len(keep) == 0:
        return PointingResult(float("nan"), float("nan"), 0)
    model.eval()
    hits: list[bool] = []
    size = images.shape[-1]
    for start in range(0, len(keep), batch_size):
        idx = keep[start : start + batch_size]
        x = torch.from_numpy(images[idx, None].astype(np.float32))
        _, maps = query_heatmaps(model, x, heatmap)
        if maps is None:
            raise ValueError("this model has no attention map (global-only variant?)")
        peaks = attention_peaks(maps, size)
        hits.extend(bool(union[i, r, c]) for i, (r, c) in zip(idx, peaks, strict=True))
    chance = float(union[keep].mean())
    return PointingResult(float(np.mean(hits)), chance, len(keep))

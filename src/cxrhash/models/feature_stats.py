"""Per-film statistics of a forward pass, for telling films of another kind.

The hash layer maps almost any input into the region of codes it was trained on (a real
NIH film lands at Hamming distance 0 from phantom films), so how far a film is from the
archive is judged earlier: by the channel means and standard deviations of the
backbone's output map F (B×C×h×w → B×2C), and by statistics of the pixels the backbone
is given (intensity histogram, gradients, Laplacian: :func:`pixel_statistics`), both taken
with hooks while the network runs anyway (docs/closeness.md). The pixel statistics do not
depend on the model: they tell inputs that are plainly no radiograph (noise, a blank) and
films of another kind even under a model whose features place them inside the archive's
spread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from cxrhash.models.backbones import GreyInputAdapter

#: Side of the film (area-averaged) that :func:`pixel_statistics` are taken on.
PIXEL_SIDE = 64
#: Bins of the intensity histogram in :func:`pixel_statistics`.
HIST_BINS = 16
_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
#: Width of :func:`pixel_statistics`: histogram, gradient and Laplacian figures.
PIXEL_DIM = HIST_BINS + 2 * (len(_QUANTILES) + 1)


class FilmStatistics(NamedTuple):
    """One forward's statistics: B×2C map statistics and B×:data:`PIXEL_DIM` pixel
    statistics of the backbone's input (float32)."""

    maps: Tensor
    pixels: Tensor


def backbone_of(model: nn.Module) -> nn.Module | None:
    """The module whose output is the network's feature map: its ``backbone``, else its
    first backbone wrapper (``saliency-fusion``'s global network); ``None`` if it has none."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        return backbone
    return next((m for m in model.modules() if isinstance(m, GreyInputAdapter)), None)


def map_statistics(fmap: Tensor) -> Tensor:
    """B×2C float32: each channel's mean, then each channel's standard deviation over h×w."""
    flat = fmap.detach().float().flatten(2)
    return torch.cat([flat.mean(2), flat.std(2, correction=0)], dim=1).cpu()


def _area_mean(a: np.ndarray, side: int = PIXEL_SIDE) -> np.ndarray:
    """B×H×W films area-averaged to at most ``side`` a side (``adaptive_avg_pool2d``'s
    windows, from an integral image)."""
    out_h, out_w = min(a.shape[1], side), min(a.shape[2], side)
    if (out_h, out_w) == a.shape[1:]:
        return a
    ii = np.pad(a.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))

    def windows(n: int, out: int) -> tuple[np.ndarray, np.ndarray]:
        i = np.arange(out)
        return (i * n) // out, -((-(i + 1) * n) // out)

    (r0, r1), (c0, c1) = windows(a.shape[1], out_h), windows(a.shape[2], out_w)
    total = ii[:, r1][:, :, c1] - ii[:, r0][:, :, c1] - ii[:, r1][:, :, c0] + ii[:, r0][:, :, c0]
    return total / ((r1 - r0)[:, None] * (c1 - c0)[None, :])


def pixel_statistics(images: Tensor) -> Tensor:
    """B×:data:`PIXEL_DIM` float32 per film (B×c×H×W in [0, 1], channels averaged, taken
    to at most :data:`PIXEL_SIDE` px a side by area averaging, which bounds the cost): the
    square roots of its :data:`HIST_BINS`-bin intensity histogram, then quantiles and the
    mean of its gradient magnitude, then the same of its absolute Laplacian (no logs: they
    let phantom films' flat regions pass, docs/design.md).
    A radiograph's histogram and edges differ from a drawing's, noise's or a blank's."""
    # numpy: single-threaded, where torch's thread pool costs more than these few
    # thousand values (tens of ms on a busy machine)
    a = _area_mean(images.detach().cpu().numpy().astype(np.float64).mean(1))
    a = np.clip(a, 0.0, 1.0)
    flat = a.reshape(len(a), -1)
    bins = np.minimum((flat * HIST_BINS).astype(np.int64), HIST_BINS - 1)
    bins += HIST_BINS * np.arange(len(a))[:, None]  # one run of bins per film
    counts = np.bincount(bins.ravel(), minlength=len(a) * HIST_BINS)
    parts = [np.sqrt(counts.reshape(len(a), HIST_BINS) / flat.shape[1])]
    gx, gy = a[:, :-1, 1:] - a[:, :-1, :-1], a[:, 1:, :-1] - a[:, :-1, :-1]
    lap = 4 * a[:, 1:-1, 1:-1] - a[:, :-2, 1:-1] - a[:, 2:, 1:-1] - a[:, 1:-1, :-2] - a[:, 1:-1, 2:]
    for edges in (np.sqrt(gx**2 + gy**2).reshape(len(a), -1), np.abs(lap).reshape(len(a), -1)):
        ranks = [round(q * (edges.shape[1] - 1)) for q in _QUANTILES]
        parts += [np.sort(edges, 1)[:, ranks], edges.mean(1, keepdims=True)]
    return torch.from_numpy(np.concatenate(parts, 1).astype(np.float32))


@contextmanager
def captured_map_statistics(model: nn.Module) -> Iterator[list[FilmStatistics]]:
    """Within the block, every forward of ``model`` appends the :func:`map_statistics` of its
    backbone's output and the :func:`pixel_statistics` of the backbone's input to the yielded
    list (which stays empty for a model without a backbone)."""
    captured: list[FilmStatistics] = []
    backbone = backbone_of(model)
    if backbone is None:
        yield captured
        return
    given: list[Tensor] = []

    def look(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        given[:] = [pixel_statistics(inputs[0])] if inputs and inputs[0].dim() == 4 else []

    def keep(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if isinstance(output, Tensor) and output.dim() == 4 and given:
            captured.append(FilmStatistics(map_statistics(output), given.pop()))

    handles = [backbone.register_forward_pre_hook(look), backbone.register_forward_hook(keep)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()

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


def _running_sums(a: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """B×len(lengths)×W float64: the sums of ``a``'s first ``lengths`` rows (axis 1; 0: none),
    added row after row in float64 as ``a.cumsum(1)`` does (the same values), keeping only the
    rows asked for: a strided cumsum over a whole large film costs several times more."""
    out = np.zeros((a.shape[0], len(lengths), a.shape[2]))
    slots = {int(n): i for i, n in enumerate(lengths)}
    acc = a[:, 0].astype(np.float64)
    for r in range(a.shape[1]):
        if r:
            acc += a[:, r]
        if r + 1 in slots:
            out[:, slots[r + 1]] = acc
    return out


def _windows(n: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of ``adaptive_avg_pool2d``'s ``out`` windows over ``n``."""
    i = np.arange(out)
    return (i * n) // out, -((-(i + 1) * n) // out)


def _area_mean(a: np.ndarray, side: int = PIXEL_SIDE) -> np.ndarray:
    """B×H×W films (any float dtype) area-averaged to at most ``side`` a side, float64
    (``adaptive_avg_pool2d``'s windows, from the corners of an integral image: only its
    rows and columns at the windows' edges are made)."""
    out_h, out_w = min(a.shape[1], side), min(a.shape[2], side)
    if (out_h, out_w) == a.shape[1:]:
        return a.astype(np.float64)
    (r0, r1), (c0, c1) = _windows(a.shape[1], out_h), _windows(a.shape[2], out_w)
    rows, ri = np.unique(np.concatenate([r0, r1]), return_inverse=True)
    cols, ci = np.unique(np.concatenate([c0, c1]), return_inverse=True)
    # the integral image at those rows and columns: row sums, then column sums of them
    ii = _running_sums(_running_sums(a, rows).transpose(0, 2, 1), cols).transpose(0, 2, 1)
    (i0, i1), (j0, j1) = np.split(ri, 2), np.split(ci, 2)
    top, bottom = ii[:, i0], ii[:, i1]
    total = bottom[:, :, j1] - top[:, :, j1] - bottom[:, :, j0] + top[:, :, j0]
    return total / ((r1 - r0)[:, None] * (c1 - c0)[None, :])


def _order_statistics(values: np.ndarray, quantiles: tuple[float, ...]) -> np.ndarray:
    """B×len(quantiles): each row's values at ranks ``round(q·(n-1))``, as float32.

    Sorted as float32: rounding to float32 keeps the order (it never swaps two values), so the
    k-th of the rounded values is the rounded k-th value, bit for bit, and float32 sorts in
    about half the time of float64 (``np.partition`` at six ranks is no faster than a sort)."""
    ranks = [round(q * (values.shape[1] - 1)) for q in quantiles]
    rounded = values.astype(np.float32)
    rounded.sort(1)
    return rounded[:, ranks]


def _histogram(a: np.ndarray) -> np.ndarray:
    """B×:data:`HIST_BINS`: square roots of the share of each film's pixels in each bin."""
    flat = a.reshape(len(a), -1)
    bins = (flat * HIST_BINS).astype(np.int64)
    np.minimum(bins, HIST_BINS - 1, out=bins)
    bins += HIST_BINS * np.arange(len(a))[:, None]  # one run of bins per film
    counts = np.bincount(bins.ravel(), minlength=len(a) * HIST_BINS)
    return np.sqrt(counts.reshape(len(a), HIST_BINS) / flat.shape[1])


def _edges(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """B×n gradient magnitudes and B×m absolute Laplacians of B×H×W films, computed in
    place where the arithmetic allows (the same operations in the same order)."""
    grad = a[:, :-1, 1:] - a[:, :-1, :-1]
    gy = a[:, 1:, :-1] - a[:, :-1, :-1]
    np.square(grad, out=grad)
    grad += np.square(gy, out=gy)
    np.sqrt(grad, out=grad)
    lap = 4 * a[:, 1:-1, 1:-1]
    for shifted in (a[:, :-2, 1:-1], a[:, 2:, 1:-1], a[:, 1:-1, :-2], a[:, 1:-1, 2:]):
        lap -= shifted
    np.abs(lap, out=lap)
    return grad.reshape(len(a), -1), lap.reshape(len(a), -1)


def pixel_statistics(images: Tensor) -> Tensor:
    """B×:data:`PIXEL_DIM` float32 per film (B×c×H×W in [0, 1], channels averaged, taken
    to at most :data:`PIXEL_SIDE` px a side by area averaging, which bounds the cost): the
    square roots of its :data:`HIST_BINS`-bin intensity histogram, then quantiles and the
    mean of its gradient magnitude, then the same of its absolute Laplacian (no logs: they
    let phantom films' flat regions pass, docs/design.md).
    A radiograph's histogram and edges differ from a drawing's, noise's or a blank's."""
    # numpy: single-threaded, where torch's thread pool costs more than these few
    # thousand values (tens of ms on a busy machine); figures in float64 (a film's single
    # channel is not copied to float64 before it is area-averaged: the same values)
    x = images.detach().cpu().numpy()
    a = _area_mean(x[:, 0] if x.shape[1] == 1 else x.astype(np.float64).mean(1))
    a = np.clip(a, 0.0, 1.0, out=a)  # _area_mean's result is a new array
    parts = [_histogram(a)]
    for edges in _edges(a):
        parts += [_order_statistics(edges, _QUANTILES), edges.mean(1, keepdims=True)]
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

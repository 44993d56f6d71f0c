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

import torch
import torch.nn.functional as F
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


def pixel_statistics(images: Tensor) -> Tensor:
    """B×:data:`PIXEL_DIM` float32 per film (B×c×H×W in [0, 1], channels averaged, taken
    to at most :data:`PIXEL_SIDE` px a side by area averaging, which bounds the cost): the
    square roots of its :data:`HIST_BINS`-bin intensity histogram, then quantiles and the
    mean of its gradient magnitude, then the same of its absolute Laplacian (no logs: they
    let phantom films' flat regions pass, docs/design.md).
    A radiograph's histogram and edges differ from a drawing's, noise's or a blank's."""
    x = images.detach().float().mean(1, keepdim=True)
    if max(x.shape[-2:]) > PIXEL_SIDE:
        x = F.adaptive_avg_pool2d(x, PIXEL_SIDE)
    x = x[:, 0].clamp(0, 1)
    flat = x.flatten(1)
    bins = (flat * HIST_BINS).long().clamp(max=HIST_BINS - 1)
    hist = F.one_hot(bins, HIST_BINS).float().mean(1).sqrt()
    gx, gy = x[:, :-1, 1:] - x[:, :-1, :-1], x[:, 1:, :-1] - x[:, :-1, :-1]
    grad = (gx.square() + gy.square()).sqrt().flatten(1)
    lap = (
        4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    ).abs().flatten(1)  # fmt: skip
    parts = [hist]
    for edges in (grad, lap):
        ranks = [round(q * (edges.shape[1] - 1)) for q in _QUANTILES]
        parts += [edges.sort(1).values[:, ranks], edges.mean(1, keepdim=True)]
    return torch.cat(parts, 1).cpu()


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

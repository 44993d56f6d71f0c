"""Per-film statistics of the backbone's feature map, for telling films of another kind.

The hash layer maps almost any input into the region of codes it was trained on (a real
NIH film lands at Hamming distance 0 from phantom films), so how far a film is from the
archive is judged one step earlier: by the channel means and standard deviations of the
backbone's output map F (B×C×h×w → B×2C), taken with a forward hook while the network
runs anyway (docs/closeness.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from cxrhash.models.backbones import GreyInputAdapter


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


@contextmanager
def captured_map_statistics(model: nn.Module) -> Iterator[list[Tensor]]:
    """Within the block, every forward of ``model`` appends :func:`map_statistics` of its
    backbone's output to the yielded list (which stays empty for a model without one)."""
    captured: list[Tensor] = []
    backbone = backbone_of(model)
    if backbone is None:
        yield captured
        return

    def keep(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if isinstance(output, Tensor) and output.dim() == 4:
            captured.append(map_statistics(output))

    handle = backbone.register_forward_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()

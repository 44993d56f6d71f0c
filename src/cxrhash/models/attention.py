"""Spatial attention from three channel descriptors (SPEC §1, eq. 1–3)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

DESCRIPTORS = ("maxp", "avgp", "max")
PADDINGS = ("zeros", "replicate")
Padding = Literal["zeros", "replicate"]


class SpatialAttention(nn.Module):
    """M(F') = tanh(conv3×3([MLP(F_maxP); MLP(F_avgP); MLP(F_max)])), a B×1×h×w map in (−1, 1).

    The descriptors of F' (B×K×h×w), each a 1-channel map:

    * ``"maxp"`` — F_maxP, the maximum over channels at each position;
    * ``"avgp"`` — F_avgP, the mean over channels at each position;
    * ``"max"`` — F_max, 3×3 max-pooling (stride 1, padding 1) of F', then
      averaged over channels.

    SPEC and the paper leave the channel count of F_max open; reducing it to one
    channel gives all three descriptors the same shape, which is what lets ONE
    shared per-position MLP (1×1 conv 1→hidden→1 with ReLU) process each of them.
    Ablations pass fewer descriptors: ``("max",)`` is "without F_maxP + F_avgP",
    ``("maxp", "avgp")`` is "without F_max".

    ``padding`` is the 3×3 fusion convolution's padding mode: ``"zeros"`` (the paper's
    unstated default) gives border cells a signal interior cells lack;
    ``"replicate"`` does not (``docs/benchmarks-notes.md``, "Issue #10", the pointing game).
    """

    def __init__(
        self,
        descriptors: tuple[str, ...] = DESCRIPTORS,
        hidden: int = 8,
        padding: Padding = "zeros",
    ) -> None:
        super().__init__()
        unknown = [d for d in descriptors if d not in DESCRIPTORS]
        if not descriptors or unknown or len(set(descriptors)) != len(descriptors):
            raise ValueError(
                f"descriptors must be a non-empty tuple of distinct names from {DESCRIPTORS}, "
                f"got {descriptors!r}"
            )
        self.descriptors = tuple(descriptors)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.mlp = nn.Sequential(
            nn.Conv2d(1, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1)
        )
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.fuse = nn.Conv2d(len(self.descriptors), 1, 3, padding=1, padding_mode=padding)

    def describe(self, fp: Tensor) -> list[Tensor]:
        """The active descriptors of F' (B×K×h×w), each B×1×h×w, in ``self.descriptors`` order."""
        maps = {
            "maxp": lambda: fp.amax(dim=1, keepdim=True),
            "avgp": lambda: fp.mean(dim=1, keepdim=True),
            "max": lambda: self.pool(fp).mean(dim=1, keepdim=True),
        }
        return [maps[d]() for d in self.descriptors]

    def forward(self, fp: Tensor) -> Tensor:
        """Attention map M(F') of shape B×1×h×w with values in (−1, 1)."""
        if fp.ndim != 4:
            raise ValueError(f"SpatialAttention expects a B×K×h×w map, got {tuple(fp.shape)}")
        mlp_out = [self.mlp(d) for d in self.describe(fp)]
        return self.fuse(torch.cat(mlp_out, dim=1)).tanh()

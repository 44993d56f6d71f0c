"""The hash head shared by the single-branch networks, with a continuation-scaled activation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

ACTIVATIONS = ("identity", "tanh")


class HashHead(nn.Module):
    """features (B×D) → hash layer (k units) → activation → classifier (k → C).

    ``activation="tanh"`` gives tanh(scale·h); ``scale`` is the continuation
    parameter (OSDH's α, HashNet's β) that methods raise epoch by epoch through
    ``set_scale``. It is a buffer, so it is saved with the model. Binary codes
    are sign(h) whatever the scale.
    """

    def __init__(self, in_dim: int, bits: int, num_classes: int, activation: str = "identity"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if bits < 1 or num_classes < 1:
            raise ValueError(f"bits and num_classes must be ≥ 1, got {bits}, {num_classes}")
        self.activation = activation
        self.hash_layer = nn.Linear(in_dim, bits)
        self.classifier = nn.Linear(bits, num_classes)
        self.scale: Tensor
        self.register_buffer("scale", torch.tensor(1.0))

    def set_scale(self, value: float) -> None:
        """Set the continuation scale of tanh(scale·h)."""
        if value <= 0:
            raise ValueError(f"continuation scale must be > 0, got {value}")
        self.scale.fill_(float(value))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(relaxed codes u, classifier logits on u)."""
        h = self.hash_layer(features)
        if self.activation == "tanh":
            h = torch.tanh(self.scale * h)
        return h, self.classifier(h)

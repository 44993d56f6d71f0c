"""Pieces several methods share: the plain deep-hash network and a scale setter."""

from __future__ import annotations

from torch import nn

from cxrhash.config import TrainConfig
from cxrhash.models.deep_hash import DeepHashNet
from cxrhash.models.hash_head import HashHead


def deep_hash_net(
    config: TrainConfig, num_classes: int, activation: str, *, attention: bool = False
) -> DeepHashNet:
    """A DeepHashNet on the whole backbone (stage 4), as the single-branch methods use it."""
    return DeepHashNet(
        bits=config.bits,
        num_classes=num_classes,
        backbone=config.backbone,
        feature_stage=4,
        backbone_weights=config.backbone_weights,
        activation=activation,
        attention=attention,
    )


def set_hash_scale(model: nn.Module, value: float) -> None:
    """Set the continuation scale of every ``HashHead`` in ``model``."""
    heads = [m for m in model.modules() if isinstance(m, HashHead)]
    if not heads:
        raise TypeError(f"{type(model).__name__} has no HashHead to set a scale on")
    for head in heads:
        head.set_scale(value)

"""The settings of a C2L pretraining run, and the error pretraining raises."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from cxrhash.models.backbones import BACKBONES
from cxrhash.training.errors import TrainingError, refuse_invalid

SGD_MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
# Fields that may differ when a run is resumed (the rest fix the model, data or schedule).
RESUMABLE_CHANGES = ("epochs", "num_workers", "probe_images")


class PretrainError(TrainingError):
    """Pretraining cannot start or continue (bad config, no images, incompatible resume)."""


@dataclass
class C2LConfig:
    """Settings of a C2L pretraining run (saved in ``config.json`` and every checkpoint).

    Attributes:
        backbone: a name in ``BACKBONES``.
        image_size: side of the square views in pixels.
        epochs: passes over the images.
        batch_size: images per step (each gives two views).
        lr: initial SGD learning rate (momentum 0.9, weight decay 1e-4), cosine to 0.
        dim: output width of the projection head.
        queue: number of past keys kept as negatives.
        momentum: key-encoder moving-average coefficient m.
        temperature: softmax temperature τ.
        mixup_alpha: Beta(α, α) parameter of λ; 0 turns both mixup terms off.
        feature_mixup: add the feature-mixup term.
        bn_groups: sub-batches each encoder normalises over; the key encoder's are drawn
            from a shuffled batch (1 = one BN batch, no shuffling: the leak above).
        augment_strength: scales the views' crop, rotation and jitter
            (``pretrain.unlabeled.pretraining_augmentation``; 1 = crop 50–100 %, ±10°, ±40 %).
        seed: seeds initialisation, image order, augmentation and mixup.
        num_workers: DataLoader worker processes.
        max_images: use a seeded random subset of this many images.
        probe_images: size of the k-NN probe run after every epoch when the folder's
            ``manifest.csv`` has a ``label`` column (``pretrain.probe``); 0 turns it off.
    """

    backbone: str = "resnet18"
    image_size: int = 64
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.03
    dim: int = 128
    queue: int = 4096
    momentum: float = 0.999
    temperature: float = 0.2
    mixup_alpha: float = 1.0
    feature_mixup: bool = True
    bn_groups: int = 4
    augment_strength: float = 1.0
    seed: int = 0
    num_workers: int = 0
    max_images: int | None = None
    probe_images: int = 600

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise PretrainError(
                f"unknown backbone {self.backbone!r}; known: {', '.join(BACKBONES.names())}"
            )
        checks = {
            "image_size": self.image_size >= 8,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0,
            "dim": self.dim >= 1,
            "queue": self.queue >= 1,
            "momentum": 0.0 <= self.momentum < 1.0,
            "temperature": self.temperature > 0,
            "mixup_alpha": self.mixup_alpha >= 0,
            "bn_groups": 1 <= self.bn_groups <= self.batch_size,
            "augment_strength": 0.0 <= self.augment_strength <= 1.0,
            "num_workers": self.num_workers >= 0,
            "max_images": self.max_images is None or self.max_images >= 2,
            "probe_images": self.probe_images >= 0,
        }
        refuse_invalid(
            self,
            checks,
            what="C2L settings",
            need="image_size ≥ 8, epochs ≥ 1, batch_size ≥ 2, lr > 0, dim ≥ 1, queue ≥ 1, "
            "0 ≤ momentum < 1, temperature > 0, mixup_alpha ≥ 0, 1 ≤ bn_groups ≤ batch_size, "
            "0 ≤ augment_strength ≤ 1, num_workers ≥ 0, max_images ≥ 2, probe_images ≥ 0",
            error=PretrainError,
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> C2LConfig:
        """Build from a dict, ignoring keys that are not fields."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
